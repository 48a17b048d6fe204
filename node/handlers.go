package node

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

func keyView(k *state.Key) map[string]any {
	v := map[string]any{
		"key_id": k.ID, "label": k.Label, "curve": k.Curve, "threshold": k.Threshold,
		"parties": k.Parties, "public_key": hex.EncodeToString(k.PublicKey), "status": k.Status,
		"created_at": rfc3339(k.CreatedAt),
	}
	if len(k.ChainCode) > 0 && k.Status == state.KeyActive {
		v["chain_code"] = hex.EncodeToString(k.ChainCode)
	}
	return v
}

func (n *Node) requestView(r *state.Request) map[string]any {
	v := map[string]any{
		"request_id": r.ID, "kind": r.Kind, "status": r.Status, "key_id": r.KeyID,
		"created_at": rfc3339(r.CreatedAt), "updated_at": rfc3339(r.UpdatedAt),
	}
	if r.Kind == state.KindSign {
		v["message"] = hex.EncodeToString(r.Message)
		if r.Path != "" {
			v["derivation_path"] = r.Path
		}
	}
	if r.IdempotencyKey != "" {
		v["idempotency_key"] = r.IdempotencyKey
	}
	if k := n.fsm.Key(r.KeyID); k != nil && len(r.Nonce) == 32 {
		// The current attempt's ceremony session, for correlating node logs.
		v["session_id"] = protocol.NewSessionID(n.sessionParams(r, k)).String()
	}
	if s := r.Signature; s != nil && r.Status == state.StatusSigned {
		if len(s.Sig) > 0 {
			v["signature"] = map[string]any{"signature": hex.EncodeToString(s.Sig)}
		} else {
			v["signature"] = map[string]any{"r": hex.EncodeToString(s.R), "s": hex.EncodeToString(s.S), "recovery_id": s.RecoveryID, "der": hex.EncodeToString(s.DER)}
		}
	}
	if r.Kind == state.KindKeygen && r.Status == state.StatusActive {
		if k := n.fsm.Key(r.KeyID); k != nil {
			v["key"] = keyView(k)
		}
	}
	if len(r.InlinePreParams) > 0 {
		// The nodes whose pre-parameter pool was empty: they generated safe primes
		// during the keygen, which is why it was slow.
		v["preparams_inline"] = r.InlinePreParams
	}
	if r.Error != nil {
		v["error"] = map[string]any{"code": r.Error.Code, "detail": r.Error.Detail}
	}
	return v
}

func userView(u *state.User) map[string]any {
	return map[string]any{"user_id": u.ID, "name": u.Name, "status": u.Status, "permissions": u.Permissions, "created_at": rfc3339(u.CreatedAt)}
}

func pageParams(x *exchange) (after string, limit int, bad string) {
	q := x.r.URL.Query()
	limit = 100
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return "", 0, "limit must be a positive integer"
		}
		limit = min(v, 1000)
	}
	return q.Get("after"), limit, ""
}

// numericPageParams is pageParams for lists whose cursor is a number (ids, sequences).
func numericPageParams(x *exchange, what string) (after uint64, limit int, bad string) {
	afterS, limit, bad := pageParams(x)
	if afterS != "" && bad == "" {
		v, err := strconv.ParseUint(afterS, 10, 64)
		if err != nil {
			return 0, limit, "after must be " + what
		}
		after = v
	}
	return after, limit, bad
}

// writePage answers one page of a list fetched with limit+1 items: the extra item only
// tells that there is more, and the last item kept is the next cursor.
func writePage[T any](x *exchange, field string, items []T, limit int, cursor func(T) string, view func(T) map[string]any) {
	out := map[string]any{}
	if len(items) > limit {
		items = items[:limit]
		out["next"] = cursor(items[limit-1])
	}
	list := make([]map[string]any, 0, len(items))
	for _, it := range items {
		list = append(list, view(it))
	}
	out[field] = list
	x.json(http.StatusOK, out)
}

func (n *Node) hCluster(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	name, threshold, members := n.fsm.Cluster()
	_, leaderID := n.raft.LeaderWithID()
	var ms []map[string]any
	for _, m := range members {
		ms = append(ms, map[string]any{"id": m.ID, "api": m.API, "peer_id": m.PeerID, "healthy": n.live(m.ID), "leader": string(leaderID) == m.ID})
	}
	x.json(http.StatusOK, map[string]any{"name": name, "threshold": threshold, "parties": len(members), "leader": string(leaderID), "members": ms})
	return nil
}

func (n *Node) hUserCreate(x *exchange) *apiError {
	res, err := n.commit(x)
	if err != nil {
		return err
	}
	x.json(http.StatusCreated, map[string]any{"user_id": res.UserID, "name": state.ParseRequest(x.signed).UserName})
	return nil
}

// hSigpairCreate serves Sigpair's admin SDK: the user's name is the token's name claim.
func (n *Node) hSigpairCreate(x *exchange) *apiError {
	res, err := n.commit(x)
	if err != nil {
		return err
	}
	x.json(http.StatusOK, map[string]any{"user_id": res.UserID})
	return nil
}

func (n *Node) hUserList(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a user id")
	if bad != "" {
		return errf("request.malformed", "%s", bad)
	}
	users := n.fsm.Users(after, limit+1)
	writePage(x, "users", users, limit,
		func(u state.User) string { return strconv.FormatUint(u.ID, 10) },
		func(u state.User) map[string]any { return userView(&u) })
	return nil
}

func (n *Node) hUserOp(x *exchange) *apiError {
	{
		res, aerr := n.commit(x)
		if aerr != nil {
			return aerr
		}
		u := n.fsm.User(res.UserID)
		if u == nil {
			return errf("user.not_found", "no such user")
		}
		x.json(http.StatusOK, userView(u))
		return nil
	}
}

func (n *Node) hKeyCreate(x *exchange) *apiError {
	res, err := n.commit(x)
	if err != nil {
		return err
	}
	r := n.awaitRequest(x, res.RequestID)
	switch {
	case r == nil:
		return errf("internal", "request vanished")
	case r.Status == state.StatusActive:
		kv := keyView(n.fsm.Key(r.KeyID))
		if len(r.InlinePreParams) > 0 {
			kv["preparams_inline"] = r.InlinePreParams
		}
		x.json(http.StatusCreated, kv)
	case r.Status == state.StatusFailed:
		return &apiError{Status: statusOf(r.Error.Code), Code: r.Error.Code, Detail: r.Error.Detail, Extra: map[string]any{"request": n.requestView(r)}}
	default:
		x.json(http.StatusAccepted, n.requestView(r))
	}
	return nil
}

func (n *Node) hKeySign(x *exchange) *apiError {
	handled := time.Now()
	res, err := n.commit(x)
	if err != nil {
		return err
	}
	committed := time.Now()
	r := n.awaitRequest(x, res.RequestID)
	if n.log.Enabled(x.r.Context(), slog.LevelDebug) && r != nil {
		// The entry node's phases, for test/bench -phases: authentication (from the
		// request's arrival), the request's commit and its local apply, and the wait
		// for the outcome.
		n.log.Debug("sign timing", "request", r.ID, "status", r.Status, "leader", n.isLeader(), "auth_us", handled.Sub(x.start).Microseconds(),
			"commit_us", committed.Sub(handled).Microseconds(), "wait_us", time.Since(committed).Microseconds())
	}
	switch {
	case r == nil:
		return errf("internal", "request vanished")
	case r.Status == state.StatusSigned:
		x.json(http.StatusOK, n.requestView(r))
	case r.Status == state.StatusFailed || r.Status == state.StatusBlocked || r.Status == state.StatusDenied:
		return &apiError{Status: statusOf(r.Error.Code), Code: r.Error.Code, Detail: r.Error.Detail, Extra: map[string]any{"request": n.requestView(r)}}
	default:
		x.json(http.StatusAccepted, n.requestView(r))
	}
	return nil
}

// awaitRequest holds the response until the request settles or the wait timeout passes.
func (n *Node) awaitRequest(x *exchange, id string) *state.Request {
	ch, stop := n.waiters.wait(id)
	defer stop()
	if r := n.fsm.Request(id); r == nil || state.Final(r.Status) {
		return r
	}
	t := time.NewTimer(n.cfg.API.WaitTimeout.Duration)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-x.r.Context().Done():
	}
	return n.fsm.Request(id)
}

func (n *Node) hKeyList(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf("request.malformed", "%s", bad)
	}
	owner, only, aerr := n.keyScope(x)
	if aerr != nil {
		return aerr
	}
	keys := n.fsm.KeysIn(owner, only, after, limit+1)
	writePage(x, "keys", keys, limit, func(k *state.Key) string { return k.ID }, keyView)
	return nil
}

func (n *Node) hKeyGet(x *exchange) *apiError {
	id := x.r.PathValue("key_id")
	if _, err := n.commit(x); err != nil {
		return err
	}
	k := n.fsm.Key(id)
	if k == nil {
		return errf("key.not_found", "no such key")
	}
	x.json(http.StatusOK, keyView(k))
	return nil
}

func (n *Node) hRequestGet(x *exchange) *apiError {
	id := x.r.PathValue("request_id")
	if _, err := n.commit(x); err != nil {
		return err
	}
	r := n.fsm.Request(id)
	if r == nil {
		return errf("request.not_found", "no such request")
	}
	x.json(http.StatusOK, n.requestView(r))
	return nil
}

func (n *Node) hAudit(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a sequence number")
	if bad != "" {
		return errf("request.malformed", "%s", bad)
	}
	entries, more := n.fsm.Audit(after, limit)
	out := map[string]any{"entries": entries}
	if entries == nil {
		out["entries"] = []state.AuditEntry{}
	}
	if more {
		out["next"] = strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	x.json(http.StatusOK, out)
	return nil
}

// hAdminKeyRotate replaces the admin public key (key-pair mode) by the admin's own signed
// request; from the entry on, only the new key's tokens and signatures are accepted.
func (n *Node) hAdminKeyRotate(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	_, cur := n.fsm.AdminKeys()
	x.json(http.StatusOK, map[string]any{"public_key": hex.EncodeToString(cur)})
	return nil
}

// adminKeyMismatch says why this node's admin configuration disagrees with the cluster's
// replicated state, or "". In key-pair mode the state holds the admin public key the
// cluster started with (then rotations by signed admin requests); a node configured with
// another key, or with the shared key on a key-pair cluster (or the reverse), would judge
// admin requests differently from its peers, so it does not serve until fixed.
func (n *Node) adminKeyMismatch() string {
	if !n.fsm.Strict() {
		return ""
	}
	genesis, _ := n.fsm.AdminKeys()
	switch {
	case len(n.adminPub) == 0 && len(genesis) == 0:
		return ""
	case len(n.adminPub) == 0:
		return "the cluster uses an admin key pair but this node is configured with the shared admin key: set admin.public_key to the cluster's first admin public key " + hex.EncodeToString(genesis)
	case len(genesis) == 0:
		return "the cluster uses the shared admin key but this node is configured with admin.public_key: configure the shared key"
	case !bytes.Equal(genesis, n.adminPub):
		return "admin.public_key differs from the admin public key the cluster started with (" + hex.EncodeToString(genesis) + "): fix this node's configuration"
	}
	return ""
}
