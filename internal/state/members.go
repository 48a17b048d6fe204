package state

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/statedb"
)

// Membership (API.md "Key lifecycle", Members): the admin adds a node, removes one, or
// replaces a dead one; each is a request of kind member.change that the cluster carries
// out by itself, in phases, with the replicated member list as the one truth:
//
//   - add: the node is a member with status joining (the gater admits it; it takes part
//     in nothing yet). The leader adds it to raft as a non-voter, waits until it caught
//     up, makes it a voter and reports it joined: it is active (keygens include it).
//     Then every key is reshared to include it (same threshold), one reshare per key,
//     each a normal reshare the leader schedules for the change.
//   - remove: the node is leaving (no keygen includes it); every key that includes it is
//     reshared away from it (same threshold, which must fit the remaining members);
//     then it is dropped from the member list (the gater refuses it, the leader removes
//     it from raft).
//   - replace: add and remove at once, for a dead node: the new node joins, and every key
//     of the dead one is reshared from k of the others to (members − dead + new).
//
// The leader's part is bounded: it says when a joining node caught up (a node that did
// not only fails the reshares that need it), which key to reshare next and with which
// old committee and nonce (checked as for any reshare), and that no key is left — which
// the FSM checks itself over every key before it completes the change. One change runs
// at a time. A key's reshare that fails is tried again by the leader; the change fails
// only when the leader gives up (the keys done keep their new committee: every key is
// always usable under exactly one committee).

// KindMemberChange is a membership change request.
const KindMemberChange = api.KindMemberChange

// Member statuses ("" in records written before membership changes = active).
const (
	MemberActive  = api.MemberActive
	MemberJoining = api.MemberJoining
	MemberLeaving = api.MemberLeaving
)

// Membership change kinds (the request's Change).
const (
	ChangeAdd     = "add"
	ChangeRemove  = "remove"
	ChangeReplace = "replace"
)

// Membership phases (the request's Phase).
const (
	PhaseJoining   = "joining"
	PhaseResharing = "resharing"
)

// TypeMemberStep is the leader's report of a membership change's progress: a joining
// node caught up and is a raft voter ("joined"), or no key needs resharing any more
// ("reshared").
const TypeMemberStep = "member.step"

// TypeMemberReshare is the leader's scheduling of one key's reshare for a membership
// change.
const TypeMemberReshare = "member.reshare"

// MemberStep is a TypeMemberStep report.
type MemberStep struct {
	RequestID string `json:"request_id"`
	Step      string `json:"step"`
}

// MemberReshare is a TypeMemberReshare report: reshare KeyID for the change RequestID,
// as request ReshareID, from the old committee Committee with session nonce Nonce.
type MemberReshare struct {
	RequestID string   `json:"request_id"`
	KeyID     string   `json:"key_id"`
	ReshareID string   `json:"reshare_id"`
	Committee []string `json:"committee"`
	Nonce     []byte   `json:"nonce"`
}

// MemberChange is a membership change request's own part.
type MemberChange struct {
	Change string `json:"change"`
	// Member is the node added (add, replace); Target the node removed (remove,
	// replace).
	Member *Member `json:"member,omitempty"`
	Target string  `json:"target,omitempty"`
	Phase  string  `json:"phase,omitempty"`
	// KeysTotal is how many keys needed resharing when the resharing phase began;
	// KeysDone how many reshares for this change completed.
	KeysTotal int `json:"keys_total"`
	KeysDone  int `json:"keys_done"`
}

var nodeIDForm = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// active reports whether a member takes part in keygens and may be in a key's committee.
func (m *Member) active() bool { return m.Status == "" || m.Status == MemberActive }

// memberByID returns the member with id, or nil.
func (a *applier) memberByID(id string) *Member { return a.m.member(id) }

// changeRunning is the open membership change, or nil.
func (a *applier) changeRunning() *Request {
	if a.m.MemberChange == "" {
		return nil
	}
	if r := a.request(a.m.MemberChange); r != nil && !Final(r.Status) {
		return r
	}
	return nil
}

// validNewMember checks a node to add: a fresh id and peer id, addresses and API URL of
// bounded size. The peer id and the addresses are parsed as every node's gater parses
// them (libp2p's own parsers: pure functions, the same verdict on every node), so that a
// member list no node can dial or admit is refused here, with the field named, rather
// than stored.
func (a *applier) validNewMember(b *api.MemberBody) (*Member, Result) {
	if b == nil {
		return nil, refuse(api.CodeRequestMalformed, "no body")
	}
	if len(a.m.Members) >= MaxMembers {
		return nil, refuse(api.CodeRequestConflict, fmt.Sprintf("a cluster has at most %d members", MaxMembers))
	}
	switch {
	case !nodeIDForm.MatchString(b.ID):
		return nil, refuse(api.CodeRequestMalformed, "id must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-', starting with a letter or digit")
	case a.memberByID(b.ID) != nil:
		return nil, refuse(api.CodeRequestConflict, fmt.Sprintf("%q is already a member", b.ID))
	case len(b.PeerID) > 128:
		return nil, refuse(api.CodeRequestMalformed, "peer_id is too long")
	case len(b.P2PAddrs) == 0 || len(b.P2PAddrs) > 8:
		return nil, refuse(api.CodeRequestMalformed, "p2p_addrs must list 1 to 8 multiaddrs the members dial the node at")
	case len(b.API) > 256 || !(strings.HasPrefix(b.API, "http://") || strings.HasPrefix(b.API, "https://")):
		return nil, refuse(api.CodeRequestMalformed, "api must be the node's API URL (http:// or https://)")
	}
	pid, err := peer.Decode(b.PeerID)
	if err != nil {
		return nil, refuse(api.CodeRequestMalformed, "peer_id must be the node's libp2p peer id (custosd init prints it)")
	}
	for _, m := range a.m.Members {
		if m.PeerID == b.PeerID {
			return nil, refuse(api.CodeRequestConflict, fmt.Sprintf("peer id already belongs to member %q", m.ID))
		}
	}
	for i, s := range b.P2PAddrs {
		addr, err := ma.NewMultiaddr(s)
		if len(s) > 256 || err != nil {
			return nil, refuse(api.CodeRequestMalformed, fmt.Sprintf("p2p_addrs[%d] must be a multiaddr such as /ip4/10.0.0.4/tcp/7801", i))
		}
		if v, err := addr.ValueForProtocol(ma.P_P2P); err == nil && v != pid.String() {
			return nil, refuse(api.CodeRequestMalformed, fmt.Sprintf("p2p_addrs[%d] names another peer than peer_id", i))
		}
	}
	return &Member{ID: b.ID, PeerID: b.PeerID, P2PAddrs: slices.Clone(b.P2PAddrs), API: b.API, Status: MemberJoining}, Result{}
}

// memberOp serves the admin's membership routes.
func (a *applier) memberOp(c *Call) Result {
	if c.Op == OpMemberList {
		return Result{}
	}
	if r := a.changeRunning(); r != nil {
		return refuse(api.CodeRequestConflict, "a membership change is running ("+r.ID+"); wait for it to end")
	}
	ch := &MemberChange{}
	switch c.Op {
	case OpMemberAdd:
		m, res := a.validNewMember(c.Member)
		if !res.OK() {
			return res
		}
		ch.Change, ch.Member = ChangeAdd, m
	case OpMemberRemove, OpMemberReplace:
		t := a.memberByID(c.MemberID)
		if t == nil {
			return refuse(api.CodeMemberNotFound, fmt.Sprintf("no member %q", truncate(c.MemberID, 64)))
		}
		if t.Status == MemberJoining {
			return refuse(api.CodeRequestConflict, fmt.Sprintf("%q is still joining", t.ID))
		}
		ch.Target = t.ID
		if c.Op == OpMemberReplace {
			m, res := a.validNewMember(c.Member)
			if !res.OK() {
				return res
			}
			ch.Change, ch.Member = ChangeReplace, m
		} else {
			ch.Change = ChangeRemove
		}
		if res := a.removable(t.ID); !res.OK() {
			return res
		}
	}
	if c.Unschedulable != "" {
		return refuse(api.CodeClusterUnavailable, c.Unschedulable)
	}
	s := c.Schedule
	if s == nil || s.RequestID == "" || (a.m.Strict && !validLeaderID("req_", s.RequestID)) || a.request(s.RequestID) != nil {
		return refuse(api.CodeClusterUnavailable, "membership change not scheduled by the leader; retry")
	}
	r := &Request{
		ID: s.RequestID, Kind: KindMemberChange, Status: StatusScheduled, Actor: c.Caller.Actor(),
		CreatedAt: a.stamp, UpdatedAt: a.stamp, Signed: c.Signed, Change: ch,
	}
	if a.policies().Len() > 0 {
		res := a.evaluate(&policy.Request{Activity: api.ActivityMemberChange, Admin: true})
		switch res.Decision {
		case api.ActionBlock:
			return a.block(r, &res)
		case api.ActionRequireApproval:
			r.Status = StatusPendingApproval
			a.addRequest(r)
			a.count(r, &res)
			a.m.MemberChange = r.ID
			a.requireApproval(r, &res, api.ApprovalSummary{Route: c.Signed.Method + " " + c.Signed.Path, Body: truncate(string(c.Signed.Body), 16<<10)},
				api.Initiator{Admin: true})
			return Result{RequestID: r.ID, ApprovalID: r.ApprovalID}
		}
		a.auditMatches(r.Actor, r.ID, &res)
		a.addRequest(r)
		a.count(r, &res)
	} else {
		a.addRequest(r)
	}
	a.m.MemberChange = r.ID
	a.startChange(r)
	return Result{RequestID: r.ID}
}

// removable refuses removing a node when a key's threshold would not fit the members
// left, or when too few members would be left.
func (a *applier) removable(id string) Result {
	left := 0
	for _, m := range a.m.Members {
		if m.ID != id && m.active() {
			left++
		}
	}
	if left < 2 {
		return refuse(api.CodeRequestConflict, "a cluster needs at least 2 members")
	}
	var tooHigh []string
	a.eachKey(func(k *Key) bool {
		if holdsShares(k) && slices.Contains(k.Members, id) && k.Threshold > len(k.Members)-1 {
			tooHigh = append(tooHigh, k.ID)
		}
		return len(tooHigh) < 8
	})
	if len(tooHigh) > 0 {
		return refuse(api.CodeRequestConflict, fmt.Sprintf("keys %s need every one of their members (threshold = members): reshare them to a lower threshold first, or, if %s's share is lost, delete them (they cannot sign again)", strings.Join(tooHigh, ", "), id))
	}
	return Result{}
}

// holdsShares reports whether a key's members hold shares that a membership change
// must move.
func holdsShares(k *Key) bool {
	return k.Status == KeyActive || k.Status == KeyDeletionScheduled
}

// startChange begins a membership change (at once, or when its approval released it).
func (a *applier) startChange(r *Request) {
	ch := r.Change
	r.Status, r.Attempt, r.UpdatedAt = StatusScheduled, 1, a.stamp
	switch ch.Change {
	case ChangeAdd, ChangeReplace:
		a.m.Members = append(a.m.Members, *ch.Member)
		slices.SortFunc(a.m.Members, func(x, y Member) int { return cmpString(x.ID, y.ID) })
		ch.Phase = PhaseJoining
	case ChangeRemove:
		ch.Phase = PhaseResharing
		ch.KeysTotal = a.keysNeeding(ch)
	}
	if ch.Target != "" {
		a.memberByID(ch.Target).Status = MemberLeaving
	}
	a.audit(r.Actor, "member."+ch.Change, memberOf(ch), "allowed", "")
	a.memberEvent(r, "started")
	a.emit(EventMembers, r.ID, "")
}

func memberOf(ch *MemberChange) string {
	if ch.Member != nil {
		if ch.Target != "" {
			return ch.Target + "->" + ch.Member.ID
		}
		return ch.Member.ID
	}
	return ch.Target
}

// memberEvent records a member.changed event.
func (a *applier) memberEvent(r *Request, what string) {
	ch := r.Change
	a.record(api.EventMemberChanged, 0, nil, api.EventData{RequestID: r.ID, Kind: r.Kind, Actor: r.Actor, Status: r.Status,
		Detail: fmt.Sprintf("%s %s: %s (%d of %d keys reshared)", ch.Change, memberOf(ch), what, ch.KeysDone, ch.KeysTotal)})
}

// needsReshare reports whether key k must be reshared for change ch, and to which
// members and threshold.
func needsReshare(k *Key, ch *MemberChange) (members []string, threshold int, ok bool) {
	if !holdsShares(k) {
		return nil, 0, false
	}
	switch ch.Change {
	case ChangeAdd:
		if slices.Contains(k.Members, ch.Member.ID) {
			return nil, 0, false
		}
		members = append(slices.Clone(k.Members), ch.Member.ID)
	case ChangeRemove, ChangeReplace:
		if !slices.Contains(k.Members, ch.Target) {
			return nil, 0, false
		}
		for _, m := range k.Members {
			if m != ch.Target {
				members = append(members, m)
			}
		}
		if ch.Change == ChangeReplace {
			members = append(members, ch.Member.ID)
		}
	}
	slices.Sort(members)
	return members, k.Threshold, k.Threshold <= len(members)
}

// eachKey calls fn with every key as this entry sees it (the batch's changes included:
// a plain scan would make the verdict depend on raft's batch boundaries), until fn says
// stop.
func (a *applier) eachKey(fn func(*Key) bool) {
	eachObject(a.t, key(tKey), statedb.PrefixEnd(key(tKey)), fn)
}

// keysNeeding counts the keys change ch must reshare.
func (a *applier) keysNeeding(ch *MemberChange) int {
	n := 0
	a.eachKey(func(k *Key) bool {
		if _, _, ok := needsReshare(k, ch); ok {
			n++
		}
		return true
	})
	return n
}

// memberStep applies the leader's report of a change's progress.
func (a *applier) memberStep(c *MemberStep, actor string) Result {
	r := a.request(c.RequestID)
	if r == nil || r.Kind != KindMemberChange || r.Status != StatusScheduled || r.Change == nil || r.Attempt == 0 {
		return refuse(api.CodeRequestConflict, "no membership change under way with that id")
	}
	ch := r.Change
	switch {
	case c.Step == "joined" && ch.Phase == PhaseJoining:
		m := a.memberByID(ch.Member.ID)
		if m == nil {
			return refuse(api.CodeRequestConflict, "the joining member is gone")
		}
		m.Status = MemberActive
		ch.Phase = PhaseResharing
		ch.KeysTotal = a.keysNeeding(ch)
		r.UpdatedAt = a.stamp
		a.audit(actor, "member.joined", m.ID, "allowed", "")
		a.memberEvent(r, "joined")
		a.emit(EventMembers, r.ID, "")
		return Result{RequestID: r.ID}
	case c.Step == "reshared" && ch.Phase == PhaseResharing:
		var left []string
		a.eachKey(func(k *Key) bool {
			if _, _, ok := needsReshare(k, ch); ok {
				left = append(left, k.ID)
			}
			return len(left) < 4
		})
		if len(left) > 0 {
			return refuse(api.CodeRequestConflict, "keys still to reshare: "+strings.Join(left, ", "))
		}
		if ch.Target != "" {
			a.m.Members = slices.DeleteFunc(a.m.Members, func(m Member) bool { return m.ID == ch.Target })
		}
		a.settle(r, StatusActive)
		a.audit(actor, "member."+ch.Change+"d", memberOf(ch), "allowed", "")
		a.memberEvent(r, "done")
		a.emit(EventMembers, r.ID, "")
		a.emit(EventSettled, r.ID, "")
		return Result{RequestID: r.ID}
	}
	return refuse(api.CodeRequestConflict, fmt.Sprintf("step %q does not follow phase %q", truncate(c.Step, 32), ch.Phase))
}

// memberReshare applies the leader's scheduling of one key's reshare for a change.
func (a *applier) memberReshare(c *MemberReshare, actor string) Result {
	r := a.request(c.RequestID)
	if r == nil || r.Kind != KindMemberChange || r.Status != StatusScheduled || r.Change == nil || r.Change.Phase != PhaseResharing {
		return refuse(api.CodeRequestConflict, "no membership change resharing with that id")
	}
	k := a.key(c.KeyID)
	if k == nil {
		return refuse(api.CodeKeyNotFound, "no such key")
	}
	members, threshold, ok := needsReshare(k, r.Change)
	if !ok {
		return refuse(api.CodeRequestConflict, "the key needs no reshare for this change")
	}
	return a.startReshare(k, members, threshold, &Schedule{RequestID: c.ReshareID, Committee: c.Committee, Nonce: c.Nonce}, actor, nil, r.ID)
}

// changeReshared counts a completed reshare of a membership change.
func (a *applier) changeReshared(changeID string) {
	if r := a.request(changeID); r != nil && r.Change != nil && !Final(r.Status) {
		r.Change.KeysDone++
		r.UpdatedAt = a.stamp
	}
}

// ActiveMembers are the members that take part in keygens (sorted ids).
func (f *FSM) ActiveMembers() []string {
	_, _, ms := f.Cluster()
	var out []string
	for _, m := range ms {
		if m.active() {
			out = append(out, m.ID)
		}
	}
	return out
}

// undoChange puts the member list back after a membership change failed: a node that
// was still joining is dropped, a node that was leaving is active again (the keys not
// yet reshared still count on it). Keys already reshared keep their new committee.
func (a *applier) undoChange(r *Request) {
	ch := r.Change
	if ch == nil {
		return
	}
	if ch.Member != nil {
		if m := a.memberByID(ch.Member.ID); m != nil && m.Status == MemberJoining {
			a.m.Members = slices.DeleteFunc(a.m.Members, func(m Member) bool { return m.ID == ch.Member.ID })
		}
	}
	if ch.Target != "" {
		if m := a.memberByID(ch.Target); m != nil && m.Status == MemberLeaving {
			m.Status = MemberActive
		}
	}
	a.memberEvent(r, "failed")
	a.emit(EventMembers, r.ID, "")
}

// MemberChange is the membership change running ("" when none).
func (f *FSM) MemberChange() string {
	id := f.meta().MemberChange
	if id == "" {
		return ""
	}
	if r := f.Request(id); r != nil && !Final(r.Status) {
		return id
	}
	return ""
}

// NeedsReshare reports whether key k must be reshared for the membership change ch, and
// to which members and threshold (for the leader's driver; the FSM checks it again).
func NeedsReshare(k *Key, ch *MemberChange) (members []string, threshold int, ok bool) {
	return needsReshare(k, ch)
}
