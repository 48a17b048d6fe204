package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

// maxStampSkew is how far an entry's stamp may be from this node's clock for the node to
// act on it (DESIGN.md invariant 3).
const maxStampSkew = 30 * time.Second

type atomicCounter struct{ v atomic.Int64 }

func (c *atomicCounter) add(d int64) int64 { return c.v.Add(d) }
func (c *atomicCounter) load() int64       { return c.v.Load() }

// onEvent is called by the FSM inside Apply: it only queues.
func (n *Node) onEvent(e state.Event) {
	select {
	case n.events <- e:
	default:
		// The queue is full: the reconcile loop finds scheduled work from the state
		// itself, so a dropped hint delays a ceremony but loses nothing.
		n.met.dropped.WithLabelValues("event_queue_full").Inc()
	}
}

func (n *Node) dispatchEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-n.events:
			switch e.Kind {
			case state.EventScheduled:
				n.maybeRun(e.RequestID)
			case state.EventSettled:
				n.waiters.notify(e.RequestID)
			case state.EventKeyFailed:
				n.eraseShare(e.KeyID)
			case state.EventRetry:
				n.kickLeader()
			}
		}
	}
}

// maybeRun starts this node's party for a scheduled request if it is in the committee,
// the schedule is fresh, and the session has never run here.
func (n *Node) maybeRun(requestID string) {
	r := n.fsm.Request(requestID)
	if r == nil || r.Status != state.StatusScheduled || !slices.Contains(r.Committee, n.cfg.NodeID) {
		return
	}
	skew := n.now().Sub(time.UnixMilli(r.ScheduledAt))
	if skew > maxStampSkew || skew < -maxStampSkew {
		n.log.Debug("not acting on a schedule stamped too far from this node's clock", "request", r.ID, "skew", skew.String())
		return
	}
	runKey := r.ID + "/" + strconv.Itoa(r.Attempt)
	if _, loaded := n.active.LoadOrStore(runKey, struct{}{}); loaded {
		return
	}
	n.ceremonies.Add(1)
	seen := time.Now()
	go func() {
		defer n.ceremonies.Done()
		defer n.active.Delete(runKey)
		n.activeN.add(1)
		defer n.activeN.add(-1)
		n.run(r, seen)
	}()
}

func (n *Node) sessionParams(r *state.Request, k *state.Key) protocol.SessionParams {
	kind := "sign/"
	if r.Kind == state.KindKeygen {
		kind = "keygen/"
	}
	if k.Curve == state.CurveSecp256k1 {
		kind += "ecdsa"
	} else {
		kind += "eddsa"
	}
	var nonce [32]byte
	copy(nonce[:], r.Nonce)
	return protocol.SessionParams{Kind: kind, KeyID: k.ID, RequestID: r.ID, Payload: r.Message, Path: r.PathIdx, Committee: r.Committee, Nonce: nonce}
}

// run executes one ceremony attempt and reports its outcome through raft. seen is when
// this node saw the schedule applied (for the phase timings of test/bench -phases).
func (n *Node) run(r *state.Request, seen time.Time) {
	k := n.fsm.Key(r.KeyID)
	if k == nil {
		return
	}
	sid := protocol.NewSessionID(n.sessionParams(r, k))
	log := n.log.With("request", r.ID, "session", sid.String()[:16], "kind", r.Kind, "curve", k.Curve)
	// A session id is never reused, also across restarts: its marker is persisted (a
	// synced write) before the party starts. The write runs while the request is
	// verified, and the party starts only once both are done.
	marker := "session-" + sid.String()
	if _, err := n.ks.GetMeta(marker); err == nil {
		log.Debug("session already ran on this node; not starting it again")
		return
	}
	markerErr := make(chan error, 1)
	go func() { markerErr <- n.ks.PutMeta(marker, []byte(strconv.FormatInt(r.ScheduledAt, 10))) }()
	verr := n.verifyScheduled(r, k)
	if err := <-markerErr; err != nil {
		n.reportFailure(r, "ceremony.failed", "cannot persist session marker: "+err.Error(), nil)
		return
	}
	if verr != nil {
		log.Error("refusing to join a ceremony: the request does not verify from the replicated log", "err", verr)
		n.met.refusedCeremonies.Inc()
		n.reportFailure(r, "ceremony.refused", verr.Error(), nil)
		return
	}
	start := time.Now()
	var err error
	var ph phases
	switch r.Kind {
	case state.KindKeygen:
		err = n.runKeygen(r, k, sid)
	case state.KindSign:
		ph, err = n.runSign(r, k, sid)
	}
	n.met.ceremonyDur.WithLabelValues(r.Kind, k.Curve, outcome(err)).Observe(time.Since(start).Seconds())
	if err != nil {
		var ce *protocol.CeremonyError
		var culprits []string
		if errors.As(err, &ce) {
			culprits = ce.Culprits
			if len(culprits) == 0 {
				// The retry's committee must avoid a member that gave up on us
				// (its own report, if it is honest, names the real culprit).
				culprits = ce.Aborted
			}
		}
		log.Warn("ceremony failed", "err", err, "culprits", culprits)
		n.reportFailure(r, "ceremony.failed", err.Error(), culprits)
		return
	}
	log.Info("ceremony done", "ms", time.Since(start).Milliseconds())
	if r.Kind == state.KindSign && log.Enabled(n.ctx, slog.LevelDebug) {
		// The committee member's phases, for test/bench -phases: from the schedule's
		// stamp to this node seeing it applied (stamps have millisecond resolution),
		// the marker and re-verification, loading the share, the MPC itself, and the
		// result's commit (with its local apply).
		log.Debug("ceremony timing", "leader", n.isLeader(), "sched_lag_ms", seen.UnixMilli()-r.ScheduledAt,
			"prep_us", start.Sub(seen).Microseconds(), "load_us", ph.load.Microseconds(),
			"mpc_us", ph.mpc.Microseconds(), "report_us", ph.report.Microseconds())
	}
}

// phases are the durations of a sign attempt's parts on this node.
type phases struct{ load, mpc, report time.Duration }

func outcome(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}

func (n *Node) ceremonyCtx(kind string) (context.Context, context.CancelFunc) {
	d := n.cfg.Ceremony.SignTimeout.Duration
	if kind == state.KindKeygen {
		d = n.cfg.Ceremony.KeygenTimeout.Duration
	}
	return context.WithTimeout(n.ctx, d)
}

func (n *Node) runKeygen(r *state.Request, k *state.Key, sid protocol.SessionID) error {
	ctx, cancel := n.ceremonyCtx(r.Kind)
	defer cancel()
	var share, pub []byte
	inline := false
	switch k.Curve {
	case state.CurveSecp256k1:
		pre, gen, err := n.pool.take(ctx)
		inline = gen
		if err != nil {
			return fmt.Errorf("pre-parameters: %w", err)
		}
		save, err := n.engine.KeygenECDSA(ctx, sid, r.Committee, k.Threshold, pre)
		if err != nil {
			return err
		}
		pub = protocol.ECDSAPublicKey(save)
		if share, err = json.Marshal(save); err != nil {
			return fmt.Errorf("encode share: %w", err)
		}
	case state.CurveEd25519:
		save, err := n.engine.KeygenEdDSA(ctx, sid, r.Committee, k.Threshold)
		if err != nil {
			return err
		}
		pub = protocol.EdDSAPublicKey(save)
		var err2 error
		if share, err2 = json.Marshal(save); err2 != nil {
			return fmt.Errorf("encode share: %w", err2)
		}
	}
	if err := n.ks.PutShare(k.ID, share); err != nil {
		return fmt.Errorf("store share: %w", err)
	}
	rctx, rcancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer rcancel()
	res, err := n.propose(rctx, state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, PublicKey: pub, InlinePreParams: inline})
	if err != nil {
		return fmt.Errorf("report share stored: %w", err)
	}
	if !res.OK() {
		n.log.Warn("share report refused", "request", r.ID, "code", res.Code, "detail", res.Detail)
	}
	return nil
}

func (n *Node) runSign(r *state.Request, k *state.Key, sid protocol.SessionID) (phases, error) {
	var ph phases
	ctx, cancel := n.ceremonyCtx(r.Kind)
	defer cancel()
	t0 := time.Now()
	raw, err := n.ks.GetShare(k.ID)
	if err != nil {
		return ph, fmt.Errorf("load share: %w", err)
	}
	var sig state.Signature
	switch k.Curve {
	case state.CurveSecp256k1:
		var save ecdsakeygen.LocalPartySaveData
		if err := json.Unmarshal(raw, &save); err != nil {
			return ph, fmt.Errorf("decode share: %w", err)
		}
		t1 := time.Now()
		ph.load = t1.Sub(t0)
		s, err := n.engine.SignECDSA(ctx, sid, r.Committee, k.Threshold, &save, r.Message, k.ChainCode, r.PathIdx)
		ph.mpc = time.Since(t1)
		if err != nil {
			return ph, err
		}
		sig = state.Signature{R: s.R[:], S: s.S[:], RecoveryID: int(s.RecoveryID), DER: s.DER}
	case state.CurveEd25519:
		var save eddsakeygen.LocalPartySaveData
		if err := json.Unmarshal(raw, &save); err != nil {
			return ph, fmt.Errorf("decode share: %w", err)
		}
		t1 := time.Now()
		ph.load = t1.Sub(t0)
		s, err := n.engine.SignEdDSA(ctx, sid, r.Committee, k.Threshold, &save, r.Message)
		ph.mpc = time.Since(t1)
		if err != nil {
			return ph, err
		}
		sig = state.Signature{Sig: s}
	}
	t2 := time.Now()
	rctx, rcancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer rcancel()
	res, err := n.propose(rctx, state.TypeCeremonyResult, &state.CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, Signature: sig})
	ph.report = time.Since(t2)
	if err != nil {
		return ph, fmt.Errorf("report signature: %w", err)
	}
	if !res.OK() {
		return ph, fmt.Errorf("signature refused by the cluster: %s", res.Detail)
	}
	return ph, nil
}

func (n *Node) reportFailure(r *state.Request, code, detail string, culprits []string) {
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	if _, err := n.propose(ctx, state.TypeCeremonyFailed, &state.CeremonyFailed{
		RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, Code: code, Detail: detail, Culprits: culprits,
	}); err != nil {
		n.log.Warn("could not report a failed ceremony", "request", r.ID, "err", err)
	}
}

// verifyScheduled is DESIGN.md invariant 2: before its party starts, this node re-verifies
// from its own replicated state the caller's signed request — token, request signature
// or X-Auth-Token, content digest, that the body asks for exactly what is scheduled — and
// judges user status, revocation, permission and key status again. A request made by an
// access key is verified with the access key's public key, whose grant is itself
// re-verified from the grantor's signed request, so a leader cannot make up either.
func (n *Node) verifyScheduled(r *state.Request, k *state.Key) error {
	s := r.Signed
	if s == nil {
		return errors.New("no signed request in the log")
	}
	if k.Owner != r.Owner {
		return errors.New("the key is not the request owner's")
	}
	at := time.UnixMilli(r.CreatedAt)
	var has func(string) bool
	if r.AccessKeyID != "" {
		if r.Kind != state.KindSign {
			return errors.New("only sign requests may come from an access key")
		}
		h, err := n.verifyAccessKeyRequest(r, k, s, at)
		if err != nil {
			return err
		}
		has = h
	} else {
		claims, err := n.verifyUserSigned(s, at)
		if err != nil {
			return err
		}
		if claims.UserID != r.Owner {
			return errors.New("token user is not the request's owner")
		}
		u := n.fsm.User(r.Owner)
		if u == nil || u.Status != state.UserActive || claims.IssuedAt.Unix() < u.TokensNotBefore {
			return errors.New("user is unknown, disabled or its token was revoked")
		}
		has = u.Has
	}
	switch r.Kind {
	case state.KindSign:
		if !has(state.PermKeysSign) {
			return errors.New("caller lacks keys:sign")
		}
		if k.Status != state.KeyActive {
			return errors.New("key is not active")
		}
		if s.Method != http.MethodPost || s.Path != "/v1/keys/"+k.ID+"/sign" {
			return errors.New("signed request is not a sign request for this key")
		}
		var body signBody
		if err := json.Unmarshal(s.Body, &body); err != nil {
			return fmt.Errorf("signed body: %w", err)
		}
		msg, err := hex.DecodeString(body.Message)
		if err != nil || !bytes.Equal(msg, r.Message) {
			return errors.New("the message scheduled differs from the one the caller signed")
		}
		if body.DerivationPath != r.Path {
			return errors.New("the derivation path scheduled differs from the one the caller signed")
		}
	case state.KindKeygen:
		if !has(state.PermKeysCreate) {
			return errors.New("user lacks keys:create")
		}
		if s.Method != http.MethodPost || s.Path != "/v1/keys" {
			return errors.New("signed request is not a keygen request")
		}
		var body keygenBody
		if err := json.Unmarshal(s.Body, &body); err != nil {
			return fmt.Errorf("signed body: %w", err)
		}
		if body.Curve != k.Curve || body.Threshold != k.Threshold {
			return errors.New("the key scheduled differs from the one the caller asked for")
		}
	}
	return nil
}

// verifyUserSigned re-verifies a user's stored request at its submission time: the user
// token, the RFC 9421 signature's keyid, profile, window and content digest, and the
// signature by the token's public key.
func (n *Node) verifyUserSigned(s *state.SignedForm, at time.Time) (*auth.UserClaims, error) {
	token, ok := bearer(s.Authorization)
	if !ok {
		return nil, errors.New("signed request carries no user token")
	}
	claims, err := n.tokens.VerifyUser(token, at)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	sig, err := auth.ParseSignature(s.SignatureInput, s.Signature)
	if err != nil {
		return nil, fmt.Errorf("signature headers: %w", err)
	}
	if sig.KeyID != "user:"+strconv.FormatUint(claims.UserID, 10) {
		return nil, errors.New("signature keyid does not name the token's user")
	}
	if err := verifyStoredSignature(s, sig, claims.PublicKey, at); err != nil {
		return nil, err
	}
	return claims, nil
}

// verifyStoredSignature checks a stored RFC 9421 signature's profile, window, content
// digest and signature by pub.
func verifyStoredSignature(s *state.SignedForm, sig *auth.Signature, pub []byte, at time.Time) error {
	h := http.Header{}
	if s.Authorization != "" {
		h.Set("Authorization", s.Authorization)
	}
	if s.ContentDigest != "" {
		h.Set("Content-Digest", s.ContentDigest)
	}
	parts := auth.RequestParts{Method: s.Method, Path: s.Path, RawQuery: s.RawQuery, Header: h, Body: s.Body}
	if err := auth.CheckProfile(sig, parts); err != nil {
		return fmt.Errorf("signature profile: %w", err)
	}
	if err := auth.CheckWindow(sig, at); err != nil {
		return fmt.Errorf("signature window: %w", err)
	}
	if err := auth.CheckContentDigest(s.ContentDigest, s.Body); err != nil {
		return fmt.Errorf("content digest: %w", err)
	}
	if err := auth.VerifyEd25519(pub, sig, parts); err != nil {
		return fmt.Errorf("request signature: %w", err)
	}
	return nil
}

// verifyAccessKeyRequest re-verifies a sign request made by an access key: the key's
// grant (signed by its grantor), that the key was live (never revoked, not expired at
// this attempt's schedule), its grantor active, the key in its scope, and the request's
// own signature (RFC 9421 or X-Auth-Token at the submission stamp). It returns the
// access key's effective permissions: grant ∩ the grantor's current ones.
func (n *Node) verifyAccessKeyRequest(r *state.Request, k *state.Key, s *state.SignedForm, at time.Time) (func(string) bool, error) {
	ak := n.fsm.AccessKey(r.AccessKeyID)
	if ak == nil {
		return nil, errors.New("unknown access key")
	}
	if ak.Grantor != r.Owner {
		return nil, errors.New("the access key's grantor is not the request's owner")
	}
	if err := n.verifyGrant(ak); err != nil {
		return nil, fmt.Errorf("access key grant: %w", err)
	}
	if ak.CreatedAt > r.CreatedAt {
		return nil, errors.New("the access key was created after the request")
	}
	if ak.RevokedAt != 0 {
		return nil, errors.New("the access key is revoked")
	}
	if ak.ExpiresAt != 0 && ak.ExpiresAt <= max(r.CreatedAt, r.ScheduledAt) {
		return nil, errors.New("the access key has expired")
	}
	u := n.fsm.User(ak.Grantor)
	if u == nil || u.Status != state.UserActive {
		return nil, errors.New("the access key's grantor is unknown or disabled")
	}
	if !ak.Covers(k.ID) {
		return nil, errors.New("the key is outside the access key's key_ids")
	}
	switch ak.Scheme {
	case state.SchemeEd25519:
		if s.Authorization != "" || s.XAuthToken != "" {
			return nil, errors.New("an Ed25519 access key's request carries other credentials")
		}
		sig, err := auth.ParseSignature(s.SignatureInput, s.Signature)
		if err != nil {
			return nil, fmt.Errorf("signature headers: %w", err)
		}
		if sig.KeyID != ak.ID {
			return nil, errors.New("signature keyid does not name the access key")
		}
		if err := verifyStoredSignature(s, sig, ak.PublicKey, at); err != nil {
			return nil, err
		}
	case state.SchemeSecp256k1:
		if s.Authorization != "" || s.SignatureInput != "" || s.Signature != "" {
			return nil, errors.New("an X-Auth-Token request carries other credentials")
		}
		tok, err := auth.ParseXAuthToken(s.XAuthToken)
		if err != nil {
			return nil, fmt.Errorf("X-Auth-Token: %w", err)
		}
		if !bytes.Equal(tok.PubKey, ak.PublicKey) {
			return nil, errors.New("X-Auth-Token is not by the access key")
		}
		pq := s.Path
		if s.RawQuery != "" || strings.HasSuffix(tok.RequestPath, "?") {
			pq += "?" + s.RawQuery
		}
		if err := auth.VerifyXAuthToken(tok, s.Method, pq, s.Body, at); err != nil {
			return nil, fmt.Errorf("X-Auth-Token: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown access-key scheme %q", ak.Scheme)
	}
	eff := ak.Effective(u)
	return func(p string) bool { return slices.Contains(eff, p) }, nil
}

// verifyGrant re-verifies that the access key's grantor asked for exactly this access
// key: the stored POST /v1/access-keys request verifies as the grantor's (token and
// signature at the key's creation stamp) and its body names this scheme, public key,
// permissions, key ids, expiry and label.
func (n *Node) verifyGrant(ak *state.AccessKey) error {
	g := ak.Grant
	if g == nil {
		return errors.New("no signed grant in the log")
	}
	claims, err := n.verifyUserSigned(g, time.UnixMilli(ak.CreatedAt))
	if err != nil {
		return err
	}
	if claims.UserID != ak.Grantor {
		return errors.New("the grant was not signed by the grantor")
	}
	if g.Method != http.MethodPost || g.Path != "/v1/access-keys" {
		return errors.New("the signed request is not a grant")
	}
	fields, bad := grantFromBody(g.Body)
	if bad != "" {
		return errors.New("signed grant body: " + bad)
	}
	v, err := state.ParseGrant(fields)
	if err != nil {
		return fmt.Errorf("signed grant: %w", err)
	}
	if v.Scheme != ak.Scheme || !bytes.Equal(v.PublicKey, ak.PublicKey) || !slices.Equal(v.Permissions, ak.Permissions) ||
		!slices.Equal(v.KeyIDs, ak.KeyIDs) || v.ExpiresAt != ak.ExpiresAt || v.Label != ak.Label {
		return errors.New("the access key differs from the grant its grantor signed")
	}
	return nil
}

func (n *Node) eraseShare(keyID string) {
	if keyID == "" {
		return
	}
	if err := n.ks.DeleteShare(keyID); err != nil {
		n.log.Error("could not erase the share of a failed key", "key", keyID, "err", err)
	}
}

// reconcileLoop catches up on what event hints may have missed (restarts, snapshots, a
// full queue): shares of failed keys are erased and fresh schedules are joined.
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	// A failed key's share is checked once per process: the key_failed event erases it
	// as it happens, so this only catches what a restart or a snapshot skipped.
	erased := map[string]bool{}
	for {
		for _, k := range n.fsm.AllKeys() {
			if k.Status == state.KeyFailed && !erased[k.ID] {
				if ok, _ := n.ks.HasShare(k.ID); ok {
					n.eraseShare(k.ID)
				}
				erased[k.ID] = true
			}
		}
		for _, r := range n.fsm.OpenRequests() {
			n.maybeRun(r.ID)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
