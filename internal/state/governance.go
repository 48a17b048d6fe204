package state

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/statedb"
)

// Governance (API.md "Governance"): the admin's policies, evaluated here, inside Apply, at
// the entry's stamp, from what the caller signed; approvals, each decision the approver's
// own signed request in the log, verified again here when quorum is reached; velocity
// ledgers kept per policy from entry stamps. A proposer contributes nothing to any of
// it: a member that forges a decision cannot sign as the approver, one that replays a
// decision meets its consumed nonce.

// Limits of governance.
const (
	// MaxPolicies bounds the active policies (archived ones stay on disk, for the audit).
	MaxPolicies = 5000
	// maxReason bounds a decision's reason.
	maxReason = 1024
)

const (
	tPolicy      = "policy"   // policy id → policy.Record
	tApproval    = "apr"      // approval id → Approval
	tApprovalExp = "apr.exp"  // (expires at, approval id) → "" while pending
	tApprovalFor = "apr.user" // (user id, approval id) → "": the initiator's and every approver's
)

// Approval is an approval and its decisions.
type Approval struct {
	ID        string          `json:"id"`
	RequestID string          `json:"request_id"`
	Activity  string          `json:"activity"`
	Initiator api.Initiator   `json:"initiator"`
	Status    string          `json:"status"`
	PolicyIDs []string        `json:"policy_ids"`
	Groups    []ApprovalGroup `json:"groups"`
	// InitiatorCanApprove holds only when every policy that asked allows it; DelayMs is
	// the longest delay they ask for.
	InitiatorCanApprove bool                `json:"initiator_can_approve,omitempty"`
	DelayMs             int64               `json:"delay_ms,omitempty"`
	Summary             api.ApprovalSummary `json:"summary"`
	ExpiresAt           int64               `json:"expires_at_ms"`
	CreatedAt           int64               `json:"created_at_ms"`
	DecidedAt           int64               `json:"decided_at_ms,omitempty"`
}

// ApprovalGroup is a group of an approval with its decisions.
type ApprovalGroup struct {
	Name      string     `json:"name"`
	Quorum    int        `json:"quorum"`
	Members   []uint64   `json:"members"`
	Decisions []Decision `json:"decisions,omitempty"`
}

// Decision is one approver's decision, with the request the approver signed to make it
// (verified again when quorum is reached).
type Decision struct {
	UserID   uint64      `json:"user_id"`
	Decision string      `json:"decision"`
	Reason   string      `json:"reason,omitempty"`
	Time     int64       `json:"time_ms"`
	Signed   *SignedForm `json:"signed"`
}

// member reports whether user u is in any of the approval's groups.
func (ap *Approval) member(u uint64) bool {
	for _, g := range ap.Groups {
		if slices.Contains(g.Members, u) {
			return true
		}
	}
	return false
}

// decided reports whether user u decided already.
func (ap *Approval) decided(u uint64) bool {
	for _, g := range ap.Groups {
		for _, d := range g.Decisions {
			if d.UserID == u {
				return true
			}
		}
	}
	return false
}

// View is the approval object of the API.
func (ap *Approval) View() api.Approval {
	v := api.Approval{
		ApprovalID: ap.ID, RequestID: ap.RequestID, Activity: ap.Activity, Initiator: ap.Initiator,
		Status: ap.Status, PolicyIDs: ap.PolicyIDs, Summary: ap.Summary, InitiatorCanApprove: ap.InitiatorCanApprove,
		Delay: (time.Duration(ap.DelayMs) * time.Millisecond).String(), ExpiresAt: secs(ap.ExpiresAt), CreatedAt: secs(ap.CreatedAt),
		Groups: []api.ApprovalGroupState{},
	}
	if ap.DecidedAt != 0 {
		v.DecidedAt = secs(ap.DecidedAt)
	}
	for _, g := range ap.Groups {
		gs := api.ApprovalGroupState{Name: g.Name, Quorum: g.Quorum, Members: g.Members, Decisions: []api.Decision{}}
		for _, d := range g.Decisions {
			gs.Decisions = append(gs.Decisions, api.Decision{UserID: d.UserID, Decision: d.Decision, Reason: d.Reason, Time: secs(d.Time)})
		}
		v.Groups = append(v.Groups, gs)
	}
	return v
}

func secs(ms int64) time.Time { return time.Unix(ms/1000, 0).UTC() }

func millis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func validApprovalFilter(s string) bool {
	switch s {
	case "", api.ApprovalPending, api.ApprovalApproved, api.ApprovalDenied, api.ApprovalExpired:
		return true
	}
	return false
}

// policies is the batch's active policy set.
func (a *applier) policies() *policy.Set {
	if a.pols == nil || *a.pols == nil {
		return policy.NewSet()
	}
	return *a.pols
}

func (a *applier) setPolicies(s *policy.Set) {
	if a.pols != nil {
		*a.pols = s
	}
}

// loadPolicies compiles the active policies of the database (at open and restore).
func loadPolicies(r readKV) *policy.Set {
	var ps []*policy.Policy
	scanRecords(r, key(tPolicy), statedb.PrefixEnd(key(tPolicy)), func(v []byte) bool {
		var rec policy.Record
		decodeRecord(v, &rec)
		if rec.Status != api.PolicyActive {
			return true
		}
		p, err := policy.Compile(rec)
		if err != nil {
			fault("state: stored policy %s does not compile: %w", rec.ID, err)
		}
		ps = append(ps, p)
		return true
	})
	return policy.NewSet(ps...)
}

// derivedID is an id the FSM gives a governance object it creates: deterministic (the
// entry's index), unique, and sorting by creation.
func (a *applier) derivedID(prefix string) string { return fmt.Sprintf("%s%016x", prefix, a.index) }

// blockedBy is the refusal of a blocked request: the first blocking policy and why.
func blockedBy(res *policy.Result) Result {
	ms := res.With(api.ActionBlock)
	m := ms[0]
	detail := fmt.Sprintf("blocked by policy %s (%q): %s rule: %s", m.Policy.ID, m.Policy.Body.Name, m.Policy.Body.Rule.Kind, m.Why)
	if len(ms) > 1 {
		detail += fmt.Sprintf(" (and %d other blocking policies)", len(ms)-1)
	}
	return refuse(api.CodePolicyBlocked, detail)
}

// auditMatches records every policy that fired on a request: allow policies exist for
// this (logging), the others say why the request waits or was refused.
func (a *applier) auditMatches(actor, object string, res *policy.Result) {
	for _, m := range res.Matched {
		a.audit(actor, "policy."+m.Policy.Body.Action, object+" "+m.Policy.ID, "allowed", "")
	}
}

// block records a blocked keygen or sign request (its object answers GET, status
// blocked) and answers policy.blocked.
func (a *applier) block(r *Request, res *policy.Result) Result {
	refusal := blockedBy(res)
	r.Error = &ErrorInfo{Code: refusal.Code, Detail: refusal.Detail}
	r.Status = StatusBlocked
	a.t.put(keyStr(tRequest, r.ID), r)
	a.t.setRaw(keyAt(tDone, a.stamp, r.ID), nil)
	a.auditMatches(r.Actor, r.ID, res)
	refusal.RequestID = r.ID
	refusal.KeyID = r.KeyID
	a.requestEvent(api.EventRequestSubmitted, r, r.Actor)
	a.requestEvent(api.EventRequestBlocked, r, r.Actor)
	return refusal
}

// requireApproval opens the approval a request waits for, from every require_approval
// policy that fired: all their groups must reach quorum; the initiator may approve only
// if every one of them allows it; the shortest timeout and the longest delay apply.
func (a *applier) requireApproval(r *Request, res *policy.Result, summary api.ApprovalSummary, init api.Initiator) {
	ms := res.With(api.ActionRequireApproval)
	ap := &Approval{ID: a.derivedID("apr_"), RequestID: r.ID, Activity: activityOf(r.Kind), Initiator: init,
		Status: api.ApprovalPending, InitiatorCanApprove: true, Summary: summary, CreatedAt: a.stamp}
	timeout := int64(-1)
	names := map[string]int{}
	for _, m := range ms {
		p := m.Policy
		ap.PolicyIDs = append(ap.PolicyIDs, p.ID)
		for _, g := range p.Groups() {
			name := g.Name
			if names[name]++; names[name] > 1 {
				name = fmt.Sprintf("%s (%s)", g.Name, p.Body.Name)
			}
			ap.Groups = append(ap.Groups, ApprovalGroup{Name: name, Quorum: g.Quorum, Members: slices.Clone(g.Members)})
		}
		ap.InitiatorCanApprove = ap.InitiatorCanApprove && p.Body.InitiatorCanApprove
		if timeout < 0 || p.TimeoutMs < timeout {
			timeout = p.TimeoutMs
		}
		ap.DelayMs = max(ap.DelayMs, p.DelayMs)
	}
	ap.ExpiresAt = a.stamp + timeout
	a.t.put(keyStr(tApproval, ap.ID), ap)
	a.t.setRaw(keyAt(tApprovalExp, ap.ExpiresAt, ap.ID), nil)
	users := []uint64{}
	if !init.Admin {
		users = append(users, init.UserID)
	}
	for _, g := range ap.Groups {
		users = append(users, g.Members...)
	}
	slices.Sort(users)
	for _, u := range slices.Compact(users) {
		a.t.setRaw(approvalForKey(u, ap.ID), nil)
	}
	a.m.PendingApprovals++
	r.Status = StatusPendingApproval
	r.ApprovalID = ap.ID
	a.auditMatches(r.Actor, r.ID, res)
	a.audit(r.Actor, "approval.requested", ap.ID, "allowed", "")
	a.requestEvent(api.EventRequestPendingApproval, r, r.Actor)
	a.emit(EventApproval, r.ID, r.KeyID)
}

func approvalForKey(user uint64, id string) []byte {
	return statedb.AppendString(keyU64(tApprovalFor, user), id)
}

func activityOf(kind string) string {
	switch kind {
	case KindSign:
		return api.ActivitySign
	case KindKeygen:
		return api.ActivityKeygen
	case KindDelete:
		return api.ActivityKeyDelete
	case KindMemberChange:
		return api.ActivityMemberChange
	}
	return kind
}

func (a *applier) approval(id string) *Approval { return get[Approval](a.t, keyStr(tApproval, id)) }

// closeApproval ends a pending approval (denied or expired), and its request as denied.
func (a *applier) closeApproval(ap *Approval, status, code, detail, actor string) {
	a.unpend(ap, status)
	a.audit(actor, "approval."+status, ap.ID, "refused", code)
	if r := a.request(ap.RequestID); r != nil && !Final(r.Status) && r.ApprovalID == ap.ID {
		a.deny(r, code, detail, actor)
	}
}

// unpend moves an approval out of pending.
func (a *applier) unpend(ap *Approval, status string) {
	if ap.Status == api.ApprovalPending {
		a.t.delRaw(keyAt(tApprovalExp, ap.ExpiresAt, ap.ID))
		a.m.PendingApprovals--
	}
	ap.Status = status
	ap.DecidedAt = a.stamp
}

// deny ends a request as denied.
func (a *applier) deny(r *Request, code, detail, actor string) {
	r.Error = &ErrorInfo{Code: code, Detail: truncate(detail, 256)}
	a.uncount(r)
	a.settle(r, StatusDenied)
	a.audit(actor, r.Kind+".denied", r.ID, "refused", code)
	typ := api.EventRequestDenied
	if code == api.CodeRequestCancelled {
		typ = api.EventRequestCancelled
	}
	a.requestEvent(typ, r, actor)
	a.emit(EventSettled, r.ID, r.KeyID)
}

// due lists the ids a (time, id) index table holds for times up to this entry's stamp,
// oldest first, at most pruneBatch of them (the rest at the next entries).
func (a *applier) due(table string) []string {
	var ids []string
	scanKeys(a.t, key(table), keyAtBound(table, a.stamp+1), func(k []byte) bool {
		d := statedb.NewKeyDecoder(k)
		d.Table()
		d.Int64()
		ids = append(ids, d.Text())
		return len(ids) < pruneBatch
	})
	return ids
}

// expireApprovals closes the pending approvals whose time ran out by this entry's stamp
// (bounded per entry; the rest at the next ones).
func (a *applier) expireApprovals() {
	if a.m.PendingApprovals <= 0 {
		return
	}
	for _, id := range a.due(tApprovalExp) {
		if ap := a.approval(id); ap != nil && ap.Status == api.ApprovalPending {
			a.closeApproval(ap, api.ApprovalExpired, api.CodeApprovalExpired,
				"the approval was not complete by "+secs(ap.ExpiresAt).Format(time.RFC3339), "cluster")
		}
	}
}

// decide applies an approver's decision (POST /v1/approvals/{id}/decisions). Only users
// decide (an access key cannot: a decision is a person's), with the key pinned at their
// first decision. Checks in API.md's order: permission, the approval exists,
// membership, field values, then the approval's state.
func (a *applier) decide(c *Call, p principal) Result {
	if p.ak != nil {
		return refuse(api.CodePermDenied, "approval decisions are made by users themselves, not by access keys")
	}
	if !p.has(PermApprovalDecide) {
		return refuse(api.CodePermDenied, "missing permission approvals:decide")
	}
	u := p.user
	ap := a.approval(c.ApprovalID)
	if ap == nil {
		return refuse(api.CodeApprovalNotFound, "no such approval")
	}
	// Membership is the decision's permission (API.md: "not a member → 403"), judged
	// before visibility as permissions are: one who may decide and is in no group gets
	// 403 whether or not it initiated the request (approval ids are not guessable).
	if !ap.member(u.ID) {
		return refuse(api.CodePermDenied, "you are not a member of any of this approval's groups")
	}
	d := c.Decision
	if d == nil || (d.Decision != api.DecisionApprove && d.Decision != api.DecisionDeny) {
		return refuse(api.CodeRequestMalformed, `decision must be "approve" or "deny"`)
	}
	if len(d.Reason) > maxReason || !utf8.ValidString(d.Reason) {
		return refuse(api.CodeRequestMalformed, fmt.Sprintf("reason must be at most %d bytes of UTF-8", maxReason))
	}
	if ap.Status == api.ApprovalPending && a.stamp >= ap.ExpiresAt {
		a.closeApproval(ap, api.ApprovalExpired, api.CodeApprovalExpired,
			"the approval was not complete by "+secs(ap.ExpiresAt).Format(time.RFC3339), "cluster")
	}
	if ap.Status != api.ApprovalPending {
		return refuse(api.CodeApprovalClosed, "the approval is "+ap.Status+"; no more decisions are taken")
	}
	if !ap.Initiator.Admin && ap.Initiator.UserID == u.ID && !ap.InitiatorCanApprove {
		return refuse(api.CodeApprovalSelfApproval, "the initiator cannot decide its own request (no policy that asked allows it)")
	}
	if ap.decided(u.ID) {
		return refuse(api.CodeApprovalAlreadyDecided, "you decided this approval already")
	}
	pub := c.Caller.PublicKey
	if len(u.ApproverKey) == 0 {
		u.ApproverKey = slices.Clone(pub)
	} else if !equalBytes(u.ApproverKey, pub) {
		return refuse(api.CodeAuthSignatureInvalid, "decisions of this user are signed with the key of its first decision; this token names another key")
	}
	dec := Decision{UserID: u.ID, Decision: d.Decision, Reason: d.Reason, Time: a.stamp, Signed: c.Signed}
	owner := ap.Initiator.UserID
	if ap.Initiator.Admin {
		owner = 0
	}
	a.record(api.EventApprovalDecided, owner, ap.deciders(), api.EventData{ApprovalID: ap.ID, RequestID: ap.RequestID,
		UserID: u.ID, Actor: c.Caller.Actor(), Decision: d.Decision, Detail: d.Reason})
	for i := range ap.Groups {
		if slices.Contains(ap.Groups[i].Members, u.ID) {
			ap.Groups[i].Decisions = append(ap.Groups[i].Decisions, dec)
		}
	}
	actor := c.Caller.Actor()
	if d.Decision == api.DecisionDeny {
		detail := fmt.Sprintf("denied by user %d", u.ID)
		if d.Reason != "" {
			detail += ": " + d.Reason
		}
		a.closeApproval(ap, api.ApprovalDenied, api.CodeApprovalDenied, detail, actor)
		return Result{ApprovalID: ap.ID, RequestID: ap.RequestID}
	}
	if a.quorate(ap) {
		a.approve(ap, actor)
	}
	return Result{ApprovalID: ap.ID, RequestID: ap.RequestID}
}

// quorate reports whether every group reached its quorum, counting only approvals that
// still hold now: each decision's signed request verifies again (it is in the state as
// signed, never as a proposer's claim), and its signer is still an active user holding
// approvals:decide, with the key pinned at its first decision.
func (a *applier) quorate(ap *Approval) bool {
	for _, g := range ap.Groups {
		n := 0
		for i := range g.Decisions {
			if g.Decisions[i].Decision == api.DecisionApprove && a.stillApproves(ap, &g.Decisions[i]) {
				n++
			}
		}
		if n < g.Quorum {
			return false
		}
	}
	return true
}

func (a *applier) stillApproves(ap *Approval, d *Decision) bool {
	u := a.user(d.UserID)
	if u == nil || u.Status != UserActive || !u.Has(PermApprovalDecide) || d.Signed == nil {
		return false
	}
	p, err := a.authn.Verify(d.Signed, time.UnixMilli(d.Time), dirView{a.t, a.m})
	if err != nil || p.Kind != CallerUser || p.UserID != d.UserID || !equalBytes(p.PublicKey, u.ApproverKey) {
		return false
	}
	c := ParseRequest(d.Signed)
	return c.Op == OpApprovalDecide && c.ApprovalID == ap.ID && c.Decision != nil && c.Decision.Decision == api.DecisionApprove
}

// approve closes an approval as approved: its request runs after the delay — a change
// at once (when there is no delay), a ceremony when the leader schedules it.
func (a *applier) approve(ap *Approval, actor string) {
	a.unpend(ap, api.ApprovalApproved)
	a.audit(actor, "approval.approved", ap.ID, "allowed", "")
	r := a.request(ap.RequestID)
	if r == nil || Final(r.Status) || r.ApprovalID != ap.ID || r.Status != StatusPendingApproval {
		// An approval runs only the request it was opened for.
		return
	}
	r.Status = StatusScheduled
	r.NotBefore = a.stamp + ap.DelayMs
	r.UpdatedAt = a.stamp
	r.ScheduledAt = a.stamp
	a.requestEvent(api.EventRequestApproved, r, actor)
	if ap.DelayMs == 0 && (r.Kind == KindPolicyModify || r.Kind == KindAccessGrant) {
		a.execute(r)
		return
	}
	a.emit(EventApproved, r.ID, r.KeyID)
}

// cancel ends a request waiting for approval or in its delay (POST
// /v1/requests/{id}/cancel): by its initiator or any approver.
func (a *applier) cancel(c *Call, p principal) Result {
	r := a.request(c.RequestID)
	if r == nil {
		return refuse(api.CodeRequestNotFound, "no such request")
	}
	var ap *Approval
	if r.ApprovalID != "" {
		ap = a.approval(r.ApprovalID)
	}
	admin := c.Caller.Kind == CallerAdmin
	initiator := (admin && r.Owner == 0) || (p.user != nil && r.Owner == p.user.ID && r.Owner != 0 && (p.ak == nil || p.ak.Covers(r.KeyID)))
	// Cancelling is a denial: an approver cancels with the standing a decision needs
	// (approvals:decide, and the key pinned at its first decision).
	approver := p.user != nil && p.ak == nil && ap != nil && ap.member(p.user.ID) && p.has(PermApprovalDecide) &&
		(len(p.user.ApproverKey) == 0 || equalBytes(p.user.ApproverKey, c.Caller.PublicKey))
	if !initiator && !approver {
		return refuse(api.CodeRequestNotFound, "no such request")
	}
	if r.Kind == KindDelete && r.Attempt > 0 && !Final(r.Status) {
		return refuse(api.CodeRequestConflict, "this deletion is scheduled; POST /v1/keys/"+r.KeyID+"/restore cancels it")
	}
	waiting := r.Status == StatusPendingApproval || (r.Status == StatusScheduled && r.Attempt == 0 && r.ApprovalID != "")
	if !waiting {
		return refuse(api.CodeRequestConflict, "only a request waiting for approval or in its delay can be cancelled; this one is "+r.Status)
	}
	who := c.Caller.Actor()
	if ap != nil && ap.Status == api.ApprovalPending {
		a.unpend(ap, api.ApprovalDenied)
		a.audit(who, "approval.cancelled", ap.ID, "refused", api.CodeRequestCancelled)
	}
	a.deny(r, api.CodeRequestCancelled, "cancelled by "+who, who)
	return Result{RequestID: r.ID, KeyID: r.KeyID}
}

// release runs a request whose approval passed and whose delay is over: the leader's
// Reschedule of its attempt 0 (a ceremony needs the leader's committee and session
// nonce), judged here like any scheduling.
func (a *applier) release(r *Request, c *Reschedule, actor string) Result {
	if r.Status != StatusScheduled || r.ApprovalID == "" {
		return refuse(api.CodeRequestConflict, "the request is not approved and waiting")
	}
	if a.stamp < r.NotBefore {
		return refuse(api.CodeRequestConflict, "the request's delay has not passed")
	}
	if a.stamp-r.NotBefore > SignatureWindowS*1000 {
		a.failRequest(r, "ceremony.failed", fmt.Sprintf("not run within %d s of its approval", SignatureWindowS), actor)
		return Result{RequestID: r.ID}
	}
	switch r.Kind {
	case KindPolicyModify, KindAccessGrant:
		a.execute(r)
		return Result{RequestID: r.ID}
	case KindDelete:
		return a.releaseDeletion(r, actor)
	case KindMemberChange:
		if r.Change == nil {
			return refuse(api.CodeRequestConflict, "not a membership change")
		}
		if res := a.rejudge(r); !res.OK() {
			a.failRequest(r, res.Code, "not run: "+res.Detail, actor)
			return Result{RequestID: r.ID}
		}
		a.recount(r)
		a.startChange(r)
		return Result{RequestID: r.ID}
	case KindKeygen:
		u := a.user(r.Owner)
		if u == nil || u.Status != UserActive || !u.Has(PermKeysCreate) {
			a.failRequest(r, api.CodePermDenied, "not run: the initiator is disabled or no longer holds keys:create", actor)
			return Result{RequestID: r.ID}
		}
		if res := a.rejudge(r); !res.OK() {
			a.failRequest(r, res.Code, "not run: "+res.Detail, actor)
			return Result{RequestID: r.ID}
		}
		members := a.memberIDs()
		if !slices.Equal(sortedCopy(c.Committee), members) {
			return refuse("cluster.unavailable", "keygen committee must be every member; retry")
		}
		if a.key(r.KeyID) != nil {
			a.failRequest(r, "cluster.unavailable", "key id collision", actor)
			return Result{RequestID: r.ID}
		}
		if res := a.useSessionNonce(c.Nonce); !res.OK() {
			return res
		}
		sf := ParseRequest(r.Signed)
		k := &Key{
			ID: r.KeyID, Owner: r.Owner, Label: sf.Label, Curve: sf.Curve, Threshold: sf.Threshold,
			Parties: len(members), Members: members, Status: KeyGenerating, RequestID: r.ID,
			CreatedAt: a.stamp, Reports: map[string][]byte{}, ChainCode: r.ChainCode,
		}
		a.addKey(k)
		r.Committee, r.Nonce = members, slices.Clone(c.Nonce)
	case KindSign:
		if res := a.reauthorise(r); !res.OK() {
			a.failRequest(r, res.Code, "not run: "+res.Detail, actor)
			return Result{RequestID: r.ID}
		}
		if res := a.assign(r, a.key(r.KeyID), c.Committee, c.Nonce); !res.OK() {
			return res
		}
	default:
		return refuse(api.CodeRequestConflict, "nothing to run for a "+r.Kind+" request")
	}
	a.recount(r)
	r.Attempt = 1
	r.Retry = false
	r.ScheduledAt = a.stamp
	r.UpdatedAt = a.stamp
	a.audit(actor, r.Kind+".released", r.ID, "allowed", "")
	a.emit(EventScheduled, r.ID, r.KeyID)
	return Result{RequestID: r.ID, KeyID: r.KeyID}
}

// rejudge judges an approved sign or keygen again by the policies active now, when the
// leader runs it (DESIGN.md invariant 3: policy is judged again when a ceremony is
// scheduled): a block policy that fires now — a freeze added during the approval or the
// delay, a time window, a velocity limit — keeps it from running. Its approval answered
// the require_approval policies; the request's own ledger entries are not counted twice.
func (a *applier) rejudge(r *Request) Result {
	if a.policies().Len() == 0 {
		return Result{}
	}
	pr := &policy.Request{UserID: r.Owner, AccessKeyID: r.AccessKeyID, StampMs: a.stamp}
	switch r.Kind {
	case KindSign:
		k := a.key(r.KeyID)
		if k == nil {
			return refuse(api.CodeKeyNotActive, "the key is no longer active")
		}
		pr.Activity, pr.KeyID, pr.KeyLabel, pr.Amount = api.ActivitySign, k.ID, k.Label, r.Amount
		if r.PSBT != nil {
			pr.Outputs = r.PSBT.Outputs()
		}
	case KindKeygen:
		pr.Activity, pr.KeyLabel = api.ActivityKeygen, ParseRequest(r.Signed).Label
	case KindDelete:
		k := a.key(r.KeyID)
		if k == nil {
			return refuse(api.CodeKeyNotActive, "the key is gone")
		}
		pr.Activity, pr.KeyID, pr.KeyLabel = api.ActivityKeyDelete, k.ID, k.Label
	case KindMemberChange:
		pr.Activity, pr.Admin = api.ActivityMemberChange, true
	default:
		return Result{}
	}
	res := a.policies().Evaluate(pr, ledgerWithout{a: a, r: r})
	if res.Decision != api.ActionBlock {
		return Result{}
	}
	a.auditMatches(r.Actor, r.ID, &res)
	return blockedBy(&res)
}

// execute applies an approved change (policy.modify, access.grant) from the request its
// initiator signed, judged again at this stamp.
func (a *applier) execute(r *Request) {
	a.recount(r)
	c := ParseRequest(r.Signed)
	var res Result
	switch r.Kind {
	case KindPolicyModify:
		res = a.changePolicy(c)
		r.Made = res.PolicyID
	case KindAccessGrant:
		u := a.user(r.Owner)
		switch {
		case u == nil || u.Status != UserActive:
			res = refuse(api.CodeAuthUserDisabled, "the grantor is disabled")
		case !u.Has(PermAccessManage):
			res = refuse(api.CodePermDenied, "the grantor no longer holds access:manage")
		default:
			c.Schedule = &Schedule{AccessKeyID: r.Made}
			res = a.accessCreate(c, u, false)
		}
	}
	if !res.OK() {
		a.failRequest(r, res.Code, "not applied: "+res.Detail, "cluster")
		return
	}
	a.settle(r, StatusActive)
	a.audit("cluster", r.Kind+".applied", r.ID, "allowed", "")
	a.emit(EventSettled, r.ID, r.KeyID)
}

// governedChange runs an admin's policy change or a user's access grant through the
// policy.modify or access.grant policies: refused when blocked, a request waiting for
// approval when one is required, done now otherwise.
func (a *applier) governedChange(c *Call, kind string, pr *policy.Request, do func() Result, made string) Result {
	res := a.evaluate(pr)
	switch res.Decision {
	case api.ActionBlock:
		a.auditMatches(c.Caller.Actor(), kind, &res)
		return blockedBy(&res)
	case api.ActionRequireApproval:
		if a.openRequests() >= MaxOpenRequests {
			return refuse("rate.limited", "too many requests in flight")
		}
		if res := a.freshRequestID(a.derivedID("req_")); !res.OK() {
			return res
		}
		r := &Request{
			ID: a.derivedID("req_"), Kind: kind, KeyID: "", Owner: pr.UserID, Actor: c.Caller.Actor(),
			CreatedAt: a.stamp, UpdatedAt: a.stamp, Signed: c.Signed, Made: made, Status: StatusPendingApproval,
		}
		if c.Caller.Kind == CallerAccessKey {
			r.AccessKeyID = c.Caller.AccessKeyID
		}
		a.addRequest(r)
		a.count(r, &res)
		route := c.Signed.Method + " " + c.Signed.Path
		body := string(c.Signed.Body)
		a.requireApproval(r, &res, api.ApprovalSummary{Route: route, Body: truncate(body, 16<<10)},
			api.Initiator{UserID: pr.UserID, AccessKeyID: pr.AccessKeyID, Admin: pr.Admin})
		return Result{RequestID: r.ID, ApprovalID: r.ApprovalID}
	}
	out := do()
	if out.OK() {
		a.auditMatches(c.Caller.Actor(), kind, &res)
		if len(res.Counted) > 0 {
			// A change that is done at once counts under a synthetic request id.
			r := &Request{ID: a.derivedID("chg_"), CreatedAt: a.stamp}
			a.count(r, &res)
		}
	}
	return out
}

// policyOp serves the policy routes: the admin changes and reads; users with
// policies:read read.
func (a *applier) policyOp(c *Call, p principal) Result {
	admin := c.Caller.Kind == CallerAdmin
	switch c.Op {
	case OpPolicyList, OpPolicyGet:
		if !admin && !p.has(PermPoliciesRead) {
			return refuse(api.CodePermDenied, "missing permission policies:read")
		}
		if c.Op == OpPolicyGet && a.policyRecord(c.PolicyID) == nil {
			return refuse(api.CodePolicyNotFound, "no such policy")
		}
		return Result{PolicyID: c.PolicyID}
	}
	if !admin {
		return refuse(api.CodePermDenied, "policies are changed by the admin")
	}
	if c.Op != OpPolicyCreate {
		rec := a.policyRecord(c.PolicyID)
		if rec == nil {
			return refuse(api.CodePolicyNotFound, "no such policy")
		}
	}
	if c.Op != OpPolicyArchive {
		if r := a.validPolicy(c.Policy); !r.OK() {
			return r
		}
	}
	if r := a.policyConflict(c); !r.OK() {
		return r
	}
	return a.governedChange(c, KindPolicyModify, &policy.Request{Activity: api.ActivityPolicyModify, Admin: true},
		func() Result { return a.changePolicy(c) }, "")
}

// validPolicy checks a policy body's fields, and that every approver is a user.
func (a *applier) validPolicy(b *api.PolicyBody) Result {
	if b == nil {
		return refuse(api.CodeRequestMalformed, "no policy in the request")
	}
	if err := policy.Validate(b); err != nil {
		return refuse(api.CodeRequestMalformed, err.Error())
	}
	for i, g := range b.ApprovalGroups {
		for _, m := range g.Members {
			if a.user(m) == nil {
				return refuse(api.CodeRequestMalformed, fmt.Sprintf("approval_groups[%d].members: user %d does not exist", i, m))
			}
		}
	}
	return Result{}
}

// policyConflict judges a policy change against the state: the limit on active
// policies, and that only an active policy is replaced or archived.
func (a *applier) policyConflict(c *Call) Result {
	switch c.Op {
	case OpPolicyCreate:
		if a.policies().Len() >= MaxPolicies {
			return refuse(api.CodeRequestConflict, fmt.Sprintf("at most %d active policies; archive one first", MaxPolicies))
		}
	default:
		if rec := a.policyRecord(c.PolicyID); rec.Status != api.PolicyActive {
			return refuse(api.CodeRequestConflict, "the policy is archived; create a new one")
		}
	}
	return Result{}
}

func (a *applier) policyRecord(id string) *policy.Record {
	return get[policy.Record](a.t, keyStr(tPolicy, id))
}

// changePolicy creates, replaces or archives a policy (judged again: it may run after an
// approval, on a state that changed meanwhile).
func (a *applier) changePolicy(c *Call) Result {
	if c.Op != OpPolicyArchive {
		if r := a.validPolicy(c.Policy); !r.OK() {
			return r
		}
	}
	if c.Op != OpPolicyCreate && a.policyRecord(c.PolicyID) == nil {
		return refuse(api.CodePolicyNotFound, "no such policy")
	}
	if r := a.policyConflict(c); !r.OK() {
		return r
	}
	var rec *policy.Record
	switch c.Op {
	case OpPolicyCreate:
		rec = &policy.Record{ID: a.derivedID("pol_"), Body: *c.Policy, Status: api.PolicyActive, Version: 1, CreatedAt: a.stamp, UpdatedAt: a.stamp}
		a.t.put(keyStr(tPolicy, rec.ID), rec)
		a.m.Policies++
	case OpPolicyReplace:
		rec = a.policyRecord(c.PolicyID)
		rec.Body = *c.Policy
		rec.Version++
		rec.UpdatedAt = a.stamp
	case OpPolicyArchive:
		rec = a.policyRecord(c.PolicyID)
		rec.Status = api.PolicyArchived
		rec.Version++
		rec.UpdatedAt = a.stamp
		a.m.Policies--
		a.dropLedger(rec.ID)
		a.setPolicies(a.policies().Without(rec.ID))
		a.audit("admin", "policy.archived", rec.ID, "allowed", "")
		a.record(api.EventPolicyChanged, 0, nil, api.EventData{PolicyID: rec.ID, Actor: "admin", Status: rec.Status})
		return Result{PolicyID: rec.ID}
	}
	p, err := policy.Compile(*rec)
	if err != nil {
		return refuse(api.CodeRequestMalformed, err.Error())
	}
	a.setPolicies(a.policies().With(p))
	a.audit("admin", "policy.v"+strconv.Itoa(rec.Version), rec.ID, "allowed", "")
	a.record(api.EventPolicyChanged, 0, nil, api.EventData{PolicyID: rec.ID, Actor: "admin", Status: rec.Status})
	return Result{PolicyID: rec.ID}
}

// evaluateOp serves POST /v1/policies/evaluate: the decision a request would meet now,
// and why, with no effect but the nonce (velocity ledgers are read, never written).
func (a *applier) evaluateOp(c *Call, p principal) Result {
	e := c.Evaluate
	if e == nil {
		return refuse(api.CodeRequestMalformed, "no request to evaluate")
	}
	method, path, ok := strings.Cut(e.Route, " ")
	if !ok || !strings.HasPrefix(path, "/v1/") || strings.ContainsAny(path, "?#") {
		return refuse(api.CodeRequestMalformed, `route must be "METHOD /v1/path", e.g. "POST /v1/keys/key_…/sign"`)
	}
	var body []byte
	if e.Body != nil {
		var err error
		if body, err = json.Marshal(e.Body); err != nil {
			return refuse(api.CodeRequestMalformed, "body: "+err.Error())
		}
	}
	inner := ParseRequest(&SignedForm{Method: method, Path: path, Body: body})
	if inner.Malformed != "" {
		return refuse(api.CodeRequestMalformed, "the evaluated request: "+inner.Malformed)
	}
	admin := c.Caller.Kind == CallerAdmin
	pr := &policy.Request{Admin: admin}
	if p.user != nil {
		pr.UserID = p.user.ID
	}
	if p.ak != nil {
		pr.AccessKeyID = p.ak.ID
	}
	switch inner.Op {
	case OpKeySign:
		k := a.key(inner.KeyID)
		if k == nil || (!admin && !p.sees(k)) {
			return refuse(api.CodeKeyNotFound, "no such key")
		}
		if admin {
			pr.UserID, pr.Admin = k.Owner, false
		}
		pr.Activity, pr.KeyID, pr.KeyLabel = api.ActivitySign, k.ID, k.Label
	case OpKeyPSBT:
		k := a.key(inner.KeyID)
		if k == nil || (!admin && !p.sees(k)) {
			return refuse(api.CodeKeyNotFound, "no such key")
		}
		ps, res := planPSBT(inner.PSBT, k)
		if !res.OK() {
			return res
		}
		if admin {
			pr.UserID, pr.Admin = k.Owner, false
		}
		amount := ps.Plan.SentSats + ps.Plan.FeeSats
		pr.Activity, pr.KeyID, pr.KeyLabel, pr.Amount, pr.Outputs = api.ActivitySign, k.ID, k.Label, &amount, ps.Outputs()
	case OpKeyCreate:
		pr.Activity, pr.KeyLabel = api.ActivityKeygen, inner.Label
	case OpAccessCreate:
		pr.Activity = api.ActivityAccessGrant
		if inner.Grant != nil {
			// As a grant: key_ids must be the caller's keys (else key.not_found), so
			// that no one reads the policies on another user's keys.
			for _, id := range inner.Grant.KeyIDs {
				if k := a.key(id); k == nil || admin || p.user == nil || k.Owner != p.user.ID {
					return refuse(api.CodeKeyNotFound, "key_ids names a key the grantor does not own")
				}
			}
			pr.GrantKeyIDs = inner.Grant.KeyIDs
		}
	case OpPolicyCreate, OpPolicyReplace, OpPolicyArchive:
		if !admin && (p.ak != nil || !p.has(PermPoliciesRead)) {
			return refuse(api.CodePermDenied, "policy changes are the admin's; reading their policies needs policies:read")
		}
		pr = &policy.Request{Activity: api.ActivityPolicyModify, Admin: true}
	default:
		return refuse(api.CodeRequestMalformed, "no policy governs "+method+" "+path+" (governed: signing, keygen, access grants, policy changes)")
	}
	pr.StampMs = a.stamp
	// A dry run: the ledger is read without dropping its stale entries.
	res := a.policies().Evaluate(pr, readLedger{a})
	return Result{Evaluation: &api.Evaluation{Decision: res.Decision, Matched: res.MatchedView()}}
}

// approvalOp serves the approval reads and decisions.
func (a *applier) approvalOp(c *Call, p principal) Result {
	switch c.Op {
	case OpApprovalDecide:
		if c.Caller.Kind == CallerAdmin {
			return refuse(api.CodePermDenied, "approvals are decided by users (members of the approval's groups)")
		}
		return a.decide(c, p)
	case OpApprovalGet:
		ap := a.approval(c.ApprovalID)
		if ap == nil || !a.mayse(c, p, ap) {
			return refuse(api.CodeApprovalNotFound, "no such approval")
		}
		return Result{ApprovalID: ap.ID}
	}
	return Result{}
}

// mayse reports whether the caller may see an approval: the admin all, a user those it
// may decide and those it initiated.
func (a *applier) mayse(c *Call, p principal, ap *Approval) bool {
	if c.Caller.Kind == CallerAdmin {
		return true
	}
	if p.user == nil {
		return false
	}
	if p.ak != nil {
		// An access key sees what its grantor initiated on the keys it covers, never
		// what the grantor may decide (an access key decides nothing).
		return ApprovalVisibleToAccessKey(ap, p.user.ID, p.ak)
	}
	return ap.member(p.user.ID) || (!ap.Initiator.Admin && ap.Initiator.UserID == p.user.ID)
}

// governSign judges a sign request by the policies: nil to go on (the request is
// counted in the velocity ledgers when admitted), or the request's answer (blocked, or
// waiting for approval).
func (a *applier) governSign(r *Request, k *Key, p principal) (*policy.Result, *Result) {
	pr := &policy.Request{Activity: api.ActivitySign, UserID: p.user.ID, KeyID: k.ID, KeyLabel: k.Label, Amount: r.Amount}
	sum := api.ApprovalSummary{KeyID: k.ID, Message: fmt.Sprintf("%x", r.Message), DerivationPath: r.Path}
	if r.PSBT != nil {
		fee := r.PSBT.Plan.FeeSats
		pr.Outputs = r.PSBT.Outputs()
		sum.Message, sum.Outputs, sum.FeeSats = "", pr.Outputs, &fee
	}
	if p.ak != nil {
		pr.AccessKeyID = p.ak.ID
	}
	return a.govern(r, pr, sum)
}

// governKeygen is governSign for a keygen.
func (a *applier) governKeygen(r *Request, label string, u *User) (*policy.Result, *Result) {
	sum := api.ApprovalSummary{Route: r.Signed.Method + " " + r.Signed.Path, Body: truncate(string(r.Signed.Body), 16<<10)}
	return a.govern(r, &policy.Request{Activity: api.ActivityKeygen, UserID: u.ID, KeyLabel: label}, sum)
}

// govern evaluates a keygen or sign request and blocks it or opens its approval.
func (a *applier) govern(r *Request, pr *policy.Request, sum api.ApprovalSummary) (*policy.Result, *Result) {
	if res := a.freshRequestID(r.ID); !res.OK() {
		return nil, &res
	}
	res := a.evaluate(pr)
	switch res.Decision {
	case api.ActionBlock:
		out := a.block(r, &res)
		return nil, &out
	case api.ActionRequireApproval:
		r.Status = StatusPendingApproval
		a.addRequest(r)
		a.count(r, &res)
		a.requireApproval(r, &res, sum, api.Initiator{UserID: pr.UserID, AccessKeyID: pr.AccessKeyID})
		return nil, &Result{RequestID: r.ID, KeyID: r.KeyID, ApprovalID: r.ApprovalID}
	}
	a.auditMatches(r.Actor, r.ID, &res)
	return &res, nil
}

// freshRequestID refuses a request id that is already a request's: the id the FSM derives
// from an entry's index ("req_" + index) can have been given by a compromised leader to
// an earlier request, and a governed request stored under it would overwrite that one
// (and inherit its approval).
func (a *applier) freshRequestID(id string) Result {
	if a.request(id) != nil {
		return refuse("cluster.unavailable", "request id collision; retry")
	}
	return Result{}
}

// dropApproval forgets an approval and its index entries (with its request, at the
// request's retention).
func (a *applier) dropApproval(id string) {
	ap := a.approval(id)
	if ap == nil {
		return
	}
	if ap.Status == api.ApprovalPending {
		a.unpend(ap, api.ApprovalExpired)
	}
	users := []uint64{ap.Initiator.UserID}
	for _, g := range ap.Groups {
		users = append(users, g.Members...)
	}
	for _, u := range users {
		a.t.delRaw(approvalForKey(u, id))
	}
	a.t.del(keyStr(tApproval, id))
}

// ApprovalVisibleToAccessKey reports whether an access key of grantor may see an
// approval: one its grantor initiated on a key the access key covers.
func ApprovalVisibleToAccessKey(ap *Approval, grantor uint64, ak *AccessKey) bool {
	return !ap.Initiator.Admin && ap.Initiator.UserID == grantor && ap.Summary.KeyID != "" && ak.Covers(ap.Summary.KeyID)
}
