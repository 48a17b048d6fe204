package httpapi

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/internal/state"
)

// secs is a key, request or user time as the API writes it: whole seconds, UTC.
func secs(ms int64) time.Time { return time.Unix(ms/1000, 0).UTC() }

// keyView is the key object of API.md.
func keyView(k *state.Key) api.Key {
	v := api.Key{
		KeyID: k.ID, Label: k.Label, Curve: k.Curve, Threshold: k.Threshold, Parties: k.Parties,
		PublicKey: hex.EncodeToString(k.PublicKey), Status: k.Status, CreatedAt: secs(k.CreatedAt),
	}
	if len(k.ChainCode) > 0 && k.Status == state.KeyActive {
		v.ChainCode = hex.EncodeToString(k.ChainCode)
	}
	if k.Status == state.KeyDeletionScheduled && k.DeleteAt > 0 {
		t := secs(k.DeleteAt)
		v.DeleteAt = &t
	}
	if k.Status == state.KeyDeleted && k.DeletedAt > 0 {
		t := secs(k.DeletedAt)
		v.DeletedAt = &t
	}
	v.Members, v.Generation = k.Members, k.Generation
	if k.Resharing != nil {
		v.Resharing = k.Resharing.RequestID
	}
	return v
}

// signatureView is a finished signature: Ed25519's, or ECDSA's r, s, recovery id and DER.
func signatureView(sig *state.Signature) *api.Signature {
	if len(sig.Sig) > 0 {
		return &api.Signature{Signature: hex.EncodeToString(sig.Sig)}
	}
	rec := sig.RecoveryID
	return &api.Signature{R: hex.EncodeToString(sig.R), S: hex.EncodeToString(sig.S), RecoveryID: &rec, DER: hex.EncodeToString(sig.DER)}
}

// requestView is the request object of API.md.
func (s *Server) requestView(r *state.Request) api.Request {
	v := api.Request{
		RequestID: r.ID, Kind: r.Kind, Status: r.Status, KeyID: r.KeyID,
		CreatedAt: secs(r.CreatedAt), UpdatedAt: secs(r.UpdatedAt), IdempotencyKey: r.IdempotencyKey,
		// The nodes whose pre-parameter pool was empty: they generated safe primes
		// during the keygen, which is why it was slow.
		PreParamsInline: r.InlinePreParams,
	}
	if r.Kind == state.KindSign {
		v.Message = hex.EncodeToString(r.Message)
		v.DerivationPath = r.Path
	}
	if k := s.st.Key(r.KeyID); k != nil && len(r.Nonce) == 32 {
		// The current attempt's ceremony session, for correlating node logs.
		v.SessionID = s.session(r, k)
	}
	if r.Signature != nil && r.Status == state.StatusSigned {
		v.Signature = signatureView(r.Signature)
	}
	if (r.Kind == state.KindKeygen && r.Status == state.StatusActive) || r.Kind == state.KindDelete || r.Kind == state.KindReshare {
		if k := s.st.Key(r.KeyID); k != nil {
			kv := keyView(k)
			v.Key = &kv
		}
	}
	if r.Error != nil {
		v.Error = &api.RequestError{Code: r.Error.Code, Detail: r.Error.Detail}
	}
	v.ApprovalID = r.ApprovalID
	if r.ApprovalID != "" && r.Status == state.StatusScheduled && r.Attempt == 0 && r.NotBefore > 0 {
		nb := secs(r.NotBefore)
		v.NotBefore = &nb
	}
	if ps := r.PSBT; ps != nil {
		fee, sent := ps.Plan.FeeSats, ps.Plan.SentSats
		v.FeeSats, v.SentSats, v.Outputs = &fee, &sent, ps.Outputs()
		if r.Status == state.StatusSigned {
			v.PSBT = base64.StdEncoding.EncodeToString(ps.Final)
			v.TxHex, v.TxID = ps.TxHex, ps.TxID
		}
		if ps.Broadcasted {
			v.Broadcast = &api.Broadcast{TxID: ps.BroadcastTxID}
			if e := ps.BroadcastError; e != nil {
				v.Broadcast.Error = &api.RequestError{Code: e.Code, Detail: e.Detail}
			}
		}
	}
	if ch := r.Change; ch != nil {
		v.Membership = &api.Membership{Change: ch.Change, Target: ch.Target, Phase: ch.Phase, KeysTotal: ch.KeysTotal, KeysDone: ch.KeysDone}
		if ch.Member != nil {
			v.Membership.Member = ch.Member.ID
		}
	}
	if r.Status == state.StatusActive {
		switch r.Kind {
		case state.KindPolicyModify:
			v.PolicyID = r.Made
		case state.KindAccessGrant:
			v.AccessKeyID = r.Made
		}
	}
	return v
}

// userView is the user object of API.md.
func userView(u *state.User) api.User {
	return api.User{UserID: u.ID, Name: u.Name, Status: u.Status, Permissions: u.Permissions, CreatedAt: secs(u.CreatedAt)}
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

// page fills one page of a list fetched with limit+1 items: the extra item only tells
// that there is more, and the last item kept is the next cursor ("" when there is no
// more). The list is never nil, so that an empty one is written [].
func page[T, V any](items []T, limit int, cursor func(T) string, view func(T) V) (list []V, next string) {
	if len(items) > limit {
		items = items[:limit]
		next = cursor(items[limit-1])
	}
	list = make([]V, 0, len(items))
	for _, it := range items {
		list = append(list, view(it))
	}
	return list, next
}

func (s *Server) hCluster(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	name, threshold, members := s.st.Cluster()
	leaderID := s.leader()
	// No members (never in a running cluster) is written null, as it always was.
	var ms []api.Member
	parties := 0
	for _, m := range members {
		v := api.Member{ID: m.ID, API: m.API, PeerID: m.PeerID, Healthy: s.live(m.ID), Leader: leaderID == m.ID}
		if m.Status != "" && m.Status != state.MemberActive {
			v.Status = m.Status
		} else {
			parties++
		}
		ms = append(ms, v)
	}
	x.json(http.StatusOK, api.Cluster{Name: name, Threshold: threshold, Parties: parties, Leader: leaderID, Members: ms})
	return nil
}

// hMembers answers the admin's membership routes: the list, or a change's request (202,
// to poll: the change runs by itself).
func (s *Server) hMembers(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	if res.RequestID == "" {
		after, limit, bad := pageParams(x)
		if bad != "" {
			return errf(api.CodeRequestMalformed, "%s", bad)
		}
		_, _, members := s.st.Cluster()
		members = slices.DeleteFunc(slices.Clone(members), func(m state.Member) bool { return m.ID <= after })
		slices.SortFunc(members, func(a, b state.Member) int { return strings.Compare(a.ID, b.ID) })
		leaderID := s.leader()
		out := api.MemberList{Change: s.st.MemberChange()}
		out.Members, out.Next = page(members, limit, func(m state.Member) string { return m.ID }, func(m state.Member) api.Member {
			st := m.Status
			if st == "" {
				st = state.MemberActive
			}
			return api.Member{ID: m.ID, API: m.API, PeerID: m.PeerID, P2PAddrs: m.P2PAddrs, Healthy: s.live(m.ID), Leader: leaderID == m.ID, Status: st}
		})
		x.json(http.StatusOK, out)
		return nil
	}
	return s.accepted(x, res.RequestID)
}

func (s *Server) hUserCreate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	x.json(http.StatusCreated, api.UserCreated{UserID: res.UserID, Name: state.ParseRequest(x.signed).UserName})
	return nil
}

// hSigpairCreate serves Sigpair's admin SDK: the user's name is the token's name claim.
func (s *Server) hSigpairCreate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	x.json(http.StatusOK, api.SigpairUserCreated{UserID: res.UserID})
	return nil
}

func (s *Server) hUserList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a user id")
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	var out api.UserList
	out.Users, out.Next = page(s.st.Users(after, limit+1), limit,
		func(u state.User) string { return strconv.FormatUint(u.ID, 10) },
		func(u state.User) api.User { return userView(&u) })
	x.json(http.StatusOK, out)
	return nil
}

func (s *Server) hUserOp(x *exchange) *apiError {
	{
		res, aerr := s.commit(x)
		if aerr != nil {
			return aerr
		}
		u := s.st.User(res.UserID)
		if u == nil {
			return errf(api.CodeUserNotFound, "no such user")
		}
		x.json(http.StatusOK, userView(u))
		return nil
	}
}

func (s *Server) hKeyCreate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	r := s.awaitRequest(x, res.RequestID)
	switch {
	case r == nil:
		return errf(api.CodeInternal, "request vanished")
	case r.Status == state.StatusActive:
		kv := keyView(s.st.Key(r.KeyID))
		kv.PreParamsInline = r.InlinePreParams
		x.json(http.StatusCreated, kv)
	case r.Status == state.StatusFailed:
		return s.requestProblem(r)
	default:
		x.json(http.StatusAccepted, s.requestView(r))
	}
	return nil
}

func (s *Server) hKeySign(x *exchange) *apiError {
	handled := time.Now()
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	committed := time.Now()
	r := s.awaitRequest(x, res.RequestID)
	if r != nil {
		// The entry node's phases (test/bench -phases): authentication (from the
		// request's arrival: body read, token, signature, rate limit), the request's
		// commit and its local apply, and the wait for the outcome.
		s.observePhases("sign_request", phase{"auth", handled.Sub(x.start)}, phase{"commit", committed.Sub(handled)}, phase{"wait", time.Since(committed)})
	}
	return s.answerRequest(x, r, state.StatusSigned)
}

// requestProblem is the answer about a failed, blocked or denied request: its error's
// problem, with the request object.
func (s *Server) requestProblem(r *state.Request) *apiError {
	e := &apiError{Status: api.StatusOf(r.Error.Code), Code: r.Error.Code, Detail: r.Error.Detail}
	rv := s.requestView(r)
	e.Request = &rv
	return e
}

// awaitRequest holds the response until the request settles (and a signed transaction
// asked to be broadcast was) or the wait timeout passes.
func (s *Server) awaitRequest(x *exchange, id string) *state.Request {
	t := time.NewTimer(s.c.API.WaitTimeout.Duration)
	defer t.Stop()
	for {
		ch, stop := s.waiters.wait(id)
		r := s.st.Request(id)
		if r == nil || r.Status == state.StatusPendingApproval || (state.Final(r.Status) && !broadcastDue(r)) {
			// A request waiting for approval is answered at once (202), with its approval.
			stop()
			return r
		}
		select {
		case <-ch:
			stop()
		case <-t.C:
			stop()
			return s.st.Request(id)
		case <-x.r.Context().Done():
			stop()
			return s.st.Request(id)
		}
	}
}

// broadcastDue reports whether a signed transaction still waits for its broadcast.
func broadcastDue(r *state.Request) bool {
	return r.PSBT != nil && r.PSBT.Broadcast && r.Status == state.StatusSigned && !r.PSBT.Broadcasted
}

func (s *Server) hKeyList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	owner, only, aerr := s.keyScope(x)
	if aerr != nil {
		return aerr
	}
	var out api.KeyList
	out.Keys, out.Next = page(s.st.KeysIn(owner, only, after, limit+1), limit, func(k *state.Key) string { return k.ID }, keyView)
	x.json(http.StatusOK, out)
	return nil
}

func (s *Server) hKeyGet(x *exchange) *apiError {
	id := x.r.PathValue("key_id")
	if _, err := s.commit(x); err != nil {
		return err
	}
	k := s.st.Key(id)
	if k == nil {
		return errf(api.CodeKeyNotFound, "no such key")
	}
	x.json(http.StatusOK, keyView(k))
	return nil
}

// hKeyDerive answers POST /v1/keys/{key_id}/derive: the FSM judged the caller, the key
// and the body; the child is computed here from the key the state holds.
func (s *Server) hKeyDerive(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	var b api.DeriveBody
	if msg := state.DecodeBody(x.body, &b); msg != "" {
		return errf(api.CodeRequestMalformed, "%s", msg)
	}
	k := s.st.Key(x.r.PathValue("key_id"))
	if k == nil {
		return errf(api.CodeKeyNotFound, "no such key")
	}
	p := state.DerivePath(&b)
	path, err := state.ParsePath(p)
	if err != nil {
		return errf(api.CodeRequestMalformed, "path: %v", err)
	}
	ext, err := btc.Derive(k.PublicKey, k.ChainCode, path, state.NetworkOf(&b))
	if err != nil {
		return errf(api.CodeRequestMalformed, "%v", err)
	}
	x.json(http.StatusOK, api.Derived{Path: p, PublicKey: hex.EncodeToString(ext.PublicKey), ChainCode: hex.EncodeToString(ext.ChainCode), XPub: ext.XPub})
	return nil
}

// hKeyDelete answers DELETE /v1/keys/{key_id}: 202 with the deletion request (the key
// inside, deletion_scheduled with its delete_at), 202 waiting for approval, or the
// refusal (a block keeps its request object).
func (s *Server) hKeyDelete(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	return s.accepted(x, res.RequestID)
}

// accepted answers with a request the cluster carries out by itself: 202 with it, or the
// refusal of one that ended at once (failed, blocked, denied).
func (s *Server) accepted(x *exchange, id string) *apiError {
	return s.answerRequest(x, s.st.Request(id), "")
}

// answerRequest answers with a request: 200 when it reached done (signed, active; ""
// for none), the problem of one that failed, was blocked or denied (with the request
// object), 202 with it otherwise (to poll).
func (s *Server) answerRequest(x *exchange, r *state.Request, done string) *apiError {
	switch {
	case r == nil:
		return errf(api.CodeInternal, "request vanished")
	case done != "" && r.Status == done:
		x.json(http.StatusOK, s.requestView(r))
	case r.Status == state.StatusFailed || r.Status == state.StatusBlocked || r.Status == state.StatusDenied:
		return s.requestProblem(r)
	default:
		x.json(http.StatusAccepted, s.requestView(r))
	}
	return nil
}

// hKeyReshare answers POST /v1/admin/keys/{key_id}/reshare and …/refresh: held until the
// reshare settles or the wait passes — 200 with the request active (the key inside, its
// new committee in force), the failure's problem, or 202 with the request to poll.
func (s *Server) hKeyReshare(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	return s.answerRequest(x, s.awaitRequest(x, res.RequestID), state.StatusActive)
}

// hKeyRestore answers POST /v1/keys/{key_id}/restore: the key, active again.
func (s *Server) hKeyRestore(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	k := s.st.Key(x.r.PathValue("key_id"))
	if k == nil {
		return errf(api.CodeKeyNotFound, "no such key")
	}
	x.json(http.StatusOK, keyView(k))
	return nil
}

func (s *Server) hRequestGet(x *exchange) *apiError {
	id := x.r.PathValue("request_id")
	if _, err := s.commit(x); err != nil {
		return err
	}
	r := s.st.Request(id)
	if r == nil {
		return errf(api.CodeRequestNotFound, "no such request")
	}
	x.json(http.StatusOK, s.requestView(r))
	return nil
}

func (s *Server) hAudit(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a sequence number")
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	page := s.st.AuditPage(after, limit)
	entries, more := page.Entries, page.More
	out := api.AuditList{Entries: make([]api.AuditEntry, 0, len(entries))}
	for _, e := range entries {
		// The entry exactly as the state holds it: its hash covers these fields.
		out.Entries = append(out.Entries, api.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action,
			Object: e.Object, Outcome: e.Outcome, Code: e.Code, PrevHash: e.PrevHash, Hash: e.Hash})
	}
	if more && len(entries) > 0 {
		out.Next = strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	if page.PrunedSeq != 0 {
		out.Pruned = &api.AuditAnchor{Seq: page.PrunedSeq, HeadHash: page.PrunedHash}
	}
	x.json(http.StatusOK, out)
	return nil
}

// hAuditPrune drops the audit entries the admin exported (POST /v1/admin/audit/prune).
func (s *Server) hAuditPrune(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	seq, hash := s.st.AuditPruned()
	x.json(http.StatusOK, api.AuditAnchor{Seq: seq, HeadHash: hash})
	return nil
}

// hRetention answers and sets the cluster's retention settings (GET and PUT
// /v1/admin/retention).
func (s *Server) hRetention(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	x.json(http.StatusOK, s.st.Retention())
	return nil
}

// hAdminKeyRotate replaces the admin public key (key-pair mode) by the admin's own signed
// request; from the entry on, only the new key's tokens and signatures are accepted.
func (s *Server) hAdminKeyRotate(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	_, cur := s.st.AdminKeys()
	x.json(http.StatusOK, api.AdminKey{PublicKey: hex.EncodeToString(cur)})
	return nil
}

// phase is one timed step of an event, for custos_phase_seconds.
type phase struct {
	name string
	d    time.Duration
}

// observePhases records the phases of one event in custos_phase_seconds, labelled with
// this node's role now.
func (s *Server) observePhases(event string, phases ...phase) {
	if s.phases == nil {
		return
	}
	role := "follower"
	if s.isLeader() {
		role = "leader"
	}
	for _, p := range phases {
		s.phases.WithLabelValues(event, p.name, role).Observe(p.d.Seconds())
	}
}
