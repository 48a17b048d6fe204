package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"

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
			case state.EventCheckpoint, state.EventCheckpointVote:
				select {
				case n.checkpoints <- e:
				default:
					n.met.dropped.WithLabelValues("checkpoint_queue_full").Inc()
				}
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
	if why := n.vouch.blocked(); why != "" {
		// This node's state is in doubt: it takes no part, and says so at once so that
		// the leader schedules another committee instead of waiting for a timeout.
		n.log.Warn("not joining a ceremony: this node's state is not vouched for", "request", r.ID, "why", why)
		n.met.refusedCeremonies.Inc()
		n.spawn(func() { n.reportFailure(r, "ceremony.refused", why, []string{n.cfg.NodeID}) })
		return
	}
	seen := time.Now()
	if !n.spawn(func() {
		defer n.active.Delete(runKey)
		n.activeN.add(1)
		defer n.activeN.add(-1)
		n.run(r, seen)
	}) {
		n.active.Delete(runKey)
	}
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
	marker := sessionMarkerPrefix + sid.String()
	if _, err := n.ks.GetMeta(marker); err == nil {
		log.Debug("session already ran on this node; not starting it again")
		return
	}
	// The request was authenticated and authorised by this node's own FSM when its entry
	// applied (the caller's signature, nonce, permission, key status, at the stamp);
	// what is left to check here is what the FSM cannot: time.
	if late := r.ScheduledAt - r.CreatedAt; late > state.SignatureWindowS*1000 {
		log.Error("refusing to join a ceremony scheduled long after its submission", "late_ms", late)
		n.met.refusedCeremonies.Inc()
		n.reportFailure(r, "ceremony.refused", "scheduled more than the signature window after submission", nil)
		return
	}
	if err := n.ks.PutMeta(marker, []byte(strconv.FormatInt(r.ScheduledAt, 10))); err != nil {
		n.reportFailure(r, "ceremony.failed", "cannot persist session marker: "+err.Error(), nil)
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
	res, err := n.report(rctx, state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, PublicKey: pub, InlinePreParams: inline})
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
		if err := n.checkSharePublicKey(k, protocol.ECDSAPublicKey(&save)); err != nil {
			return ph, err
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
		if err := n.checkSharePublicKey(k, protocol.EdDSAPublicKey(&save)); err != nil {
			return ph, err
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
	res, err := n.report(rctx, state.TypeCeremonyResult, &state.CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, Signature: sig})
	ph.report = time.Since(t2)
	if err != nil {
		return ph, fmt.Errorf("report signature: %w", err)
	}
	if !res.OK() {
		return ph, fmt.Errorf("signature refused by the cluster: %s", res.Detail)
	}
	return ph, nil
}

// errShareMismatch: this node's share does not yield the key's public key.
var errShareMismatch = errors.New("this node's share does not yield the key's public key in the replicated state")

// checkSharePublicKey refuses to use a share whose public key differs from the key's
// public key in this node's own state: a substituted key or a corrupted share must never
// sign. It is loud: an error log and a metric, for the operator to investigate.
func (n *Node) checkSharePublicKey(k *state.Key, sharePub []byte) error {
	if bytes.Equal(sharePub, k.PublicKey) {
		return nil
	}
	n.met.shareMismatch.Inc()
	n.log.Error("REFUSING TO SIGN: the stored share's public key differs from the key's public key in the replicated state; investigate this node and the key's history",
		"key", k.ID)
	return fmt.Errorf("key %s: %w", k.ID, errShareMismatch)
}

func (n *Node) reportFailure(r *state.Request, code, detail string, culprits []string) {
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	if _, err := n.report(ctx, state.TypeCeremonyFailed, &state.CeremonyFailed{
		RequestID: r.ID, Nonce: r.Nonce, Node: n.cfg.NodeID, Code: code, Detail: detail, Culprits: culprits,
	}); err != nil {
		n.log.Warn("could not report a failed ceremony", "request", r.ID, "err", err)
	}
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
// Session markers (keystore meta "session-<id>", valued with the schedule's stamp) keep a
// session from running twice on this node, across restarts too. A schedule is acted on
// only within maxStampSkew of its stamp, so a marker older than sessionMarkerRetention
// guards nothing any more: markers are pruned every sessionMarkerPrune.
const (
	sessionMarkerPrefix    = "session-"
	sessionMarkerRetention = 10 * time.Minute
	sessionMarkerPrune     = 5 * time.Minute
)

// pruneSessionMarkers deletes the session markers that can no longer matter.
func (n *Node) pruneSessionMarkers() {
	cutoff := n.now().Add(-sessionMarkerRetention).UnixMilli()
	deleted, err := n.ks.PruneMeta(sessionMarkerPrefix, func(_ string, v []byte) bool {
		stamp, err := strconv.ParseInt(string(v), 10, 64)
		return err != nil || stamp >= cutoff // keep what it cannot read
	})
	if err != nil {
		n.log.Warn("pruning session markers", "err", err)
	}
	if deleted > 0 {
		n.log.Debug("pruned session markers", "deleted", deleted)
	}
}

func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	// A failed key's share is checked once per process: the key_failed event erases it
	// as it happens, so this only catches what a restart or a snapshot skipped.
	erased := map[string]bool{}
	var pruned time.Time
	for {
		if time.Since(pruned) > sessionMarkerPrune {
			pruned = time.Now()
			n.pruneSessionMarkers()
		}
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
