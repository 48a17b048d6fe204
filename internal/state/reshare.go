package state

import (
	"fmt"
	"slices"
	"strings"

	"github.com/custos/custos/internal/api"
)

// Reshare and refresh (API.md "Key lifecycle"): a key's shares move to a new committee
// and/or threshold, with the same public key. The admin asks (POST
// /v1/admin/keys/{key_id}/reshare or …/refresh); the leader picks the old signing
// committee (k of the key's current members, live) and the session nonce; every node in
// the old committee or the new one starts its part when it applies the entry. Each new
// party stores its new share aside (the current share stays) and reports, signed, the
// public key its new share yields. The FSM compares every report with the key's public
// key itself — tss-lib v2.0.2's own round-1 check of the old committee's key compares one
// message on every loop, so it checks nothing — and when every new party reported the
// key, it commits the new committee, threshold and generation at once: from that entry on
// the new shares sign, the new parties put them in place and the parties left out erase
// theirs. Until then the old committee signs; a failure or a timeout leaves the key as it
// was (the new parties drop what they stored aside). So an interrupted reshare leaves
// every key usable under exactly one committee.
//
// Generations: a key's shares sit at x-coordinates derived from the node id and the
// key's generation (protocol.PartyKeyAt), so that a node in both committees has distinct
// old and new party ids (tss-lib #128) and a refresh to the same committee is a reshare
// between distinct parties (tss-lib PR #321).

// MaxMembers bounds a reshare's new committee.
const MaxMembers = 64

// KindReshare is a reshare or refresh request.
const KindReshare = api.KindReshare

// TypeReshareStored is a new party's report of its new share (a Report kind).
const TypeReshareStored = "reshare.stored"

// ReshareStored reports that a node of a reshare's new committee stored its new share
// aside, and the public key that share yields.
type ReshareStored struct {
	RequestID  string `json:"request_id"`
	Nonce      []byte `json:"nonce"`
	Node       string `json:"node"`
	PublicKey  []byte `json:"public_key"`
	Generation uint32 `json:"generation"`
}

// Resharing is a key's running reshare.
type Resharing struct {
	RequestID  string   `json:"request_id"`
	Members    []string `json:"members"`
	Threshold  int      `json:"threshold"`
	Generation uint32   `json:"generation"`
	// Reports holds, per new party, the public key it reported.
	Reports map[string][]byte `json:"reports,omitempty"`
}

// Participants are the nodes that take part in a request's current ceremony: its
// committee and, for a reshare, the new committee too (sorted, distinct). For every
// other kind it is the committee itself (not a copy: it is on the signing path).
func (r *Request) Participants() []string {
	if r.Kind != KindReshare {
		return r.Committee
	}
	out := append(slices.Clone(r.Committee), r.NewMembers...)
	slices.Sort(out)
	return slices.Compact(out)
}

// keyReshare judges an admin's reshare or refresh of a key. Checks in order: the key
// exists and is active, no reshare of it runs, the body (members known, distinct; 2 ≤ k ≤
// n), then the leader's schedule (an old committee of exactly k of the key's members, a
// fresh session nonce, a leader-form request id).
func (a *applier) keyReshare(c *Call) Result {
	k := a.key(c.KeyID)
	if k == nil {
		return refuse(api.CodeKeyNotFound, "no such key")
	}
	if k.Status != KeyActive {
		return refuse(api.CodeKeyNotActive, "key is "+k.Status)
	}
	if k.Resharing != nil {
		return refuse(api.CodeRequestConflict, "a reshare of this key is running ("+k.Resharing.RequestID+"); wait for it to end")
	}
	members, threshold := slices.Clone(k.Members), k.Threshold
	if c.Op == OpKeyReshare {
		b := c.Reshare
		if b == nil {
			return refuse(api.CodeRequestMalformed, "no body")
		}
		if len(b.Members) > 0 {
			if len(b.Members) > MaxMembers {
				return refuse(api.CodeRequestMalformed, fmt.Sprintf("at most %d members", MaxMembers))
			}
			members = slices.Clone(b.Members)
			slices.Sort(members)
			if len(slices.Compact(slices.Clone(members))) != len(members) {
				return refuse(api.CodeRequestMalformed, "members must be distinct")
			}
			known := a.memberIDs()
			for _, m := range members {
				if !slices.Contains(known, m) {
					return refuse(api.CodeMemberNotFound, fmt.Sprintf("%q is not a member of the cluster (members: %s)", truncate(m, 64), strings.Join(known, ", ")))
				}
			}
		}
		if b.Threshold != 0 {
			threshold = b.Threshold
		}
	}
	if threshold < 2 || threshold > len(members) {
		return refuse(api.CodeRequestMalformed, fmt.Sprintf("threshold must be between 2 and %d (the number of members)", len(members)))
	}
	if c.Unschedulable != "" {
		return refuse(api.CodeMemberUnavailable, c.Unschedulable)
	}
	return a.startReshare(k, members, threshold, c.Schedule, c.Caller.Actor(), c.Signed, "")
}

// startReshare schedules a reshare of k to members and threshold with the leader's
// schedule s (request id, old committee, nonce), for an admin's request (signed) or for
// a membership change (changeID).
func (a *applier) startReshare(k *Key, members []string, threshold int, s *Schedule, actor string, signed *SignedForm, changeID string) Result {
	if k.Resharing != nil {
		return refuse(api.CodeRequestConflict, "a reshare of this key is running ("+k.Resharing.RequestID+"); wait for it to end")
	}
	if !holdsShares(k) {
		return refuse(api.CodeKeyNotActive, "key is "+k.Status)
	}
	if s == nil || s.RequestID == "" || len(s.Nonce) != 32 {
		return refuse(api.CodeClusterUnavailable, "reshare not scheduled by the leader; retry")
	}
	if a.m.Strict && !validLeaderID("req_", s.RequestID) {
		return refuse(api.CodeClusterUnavailable, "the leader chose a request id of another form; retry")
	}
	if a.request(s.RequestID) != nil {
		return refuse(api.CodeClusterUnavailable, "request id collision; retry")
	}
	old := sortedCopy(s.Committee)
	if len(old) != k.Threshold || len(slices.Compact(slices.Clone(old))) != len(old) {
		return refuse(api.CodeClusterUnavailable, fmt.Sprintf("the old committee must be %d distinct members of the key; retry", k.Threshold))
	}
	for _, m := range old {
		if !slices.Contains(k.Members, m) {
			return refuse(api.CodeClusterUnavailable, "the old committee must be members of the key; retry")
		}
	}
	if a.openRequests() >= MaxOpenRequests {
		return refuse(api.CodeRateLimited, "too many requests in flight")
	}
	gen := max(k.Generation, k.LastGeneration) + 1
	if gen == 0 {
		return refuse(api.CodeRequestConflict, "the key's generations are exhausted")
	}
	if r := a.useSessionNonce(s.Nonce); !r.OK() {
		return r
	}
	r := &Request{
		ID: s.RequestID, Kind: KindReshare, Status: StatusScheduled, KeyID: k.ID, Owner: k.Owner, Actor: actor,
		CreatedAt: a.stamp, UpdatedAt: a.stamp, Signed: signed, Committee: old, Nonce: slices.Clone(s.Nonce),
		Attempt: 1, ScheduledAt: a.stamp, NewMembers: members, NewThreshold: threshold, ForChange: changeID,
	}
	a.addRequest(r)
	k.LastGeneration = gen
	k.Resharing = &Resharing{RequestID: r.ID, Members: members, Threshold: threshold, Generation: gen}
	a.audit(actor, "key.reshare_scheduled", k.ID, "allowed", "")
	a.emit(EventScheduled, r.ID, k.ID)
	return Result{RequestID: r.ID, KeyID: k.ID}
}

// reshareStored applies a new party's signed report. A public key other than the key's
// fails the reshare and names the node; when every new party reported the key, the new
// committee, threshold and generation are the key's.
func (a *applier) reshareStored(c *ReshareStored) Result {
	r := a.request(c.RequestID)
	if r == nil || r.Kind != KindReshare || r.Status != StatusScheduled || !equalBytes(r.Nonce, c.Nonce) {
		return refuse(api.CodeRequestConflict, "no reshare in progress for that session")
	}
	k := a.key(r.KeyID)
	rs := k.Resharing
	if rs == nil || rs.RequestID != r.ID || !slices.Contains(rs.Members, c.Node) || c.Generation != rs.Generation {
		return refuse(api.CodeRequestConflict, "report from a node outside the reshare's new committee, or of another generation")
	}
	if !equalBytes(c.PublicKey, k.PublicKey) {
		a.audit("node:"+c.Node, "key.reshare_report", r.ID, "refused", api.CodeCeremonyFailed)
		r.Failures = append(r.Failures, Failure{Node: c.Node, Attempt: r.Attempt, Code: api.CodeCeremonyFailed,
			Detail: "reported a public key other than the key's", Culprits: []string{c.Node}})
		a.failRequest(r, api.CodeCeremonyFailed, "node "+c.Node+" reported a public key other than the key's: the reshare is abandoned and the old committee keeps the key", "node:"+c.Node)
		return Result{RequestID: r.ID}
	}
	if rs.Reports == nil {
		rs.Reports = map[string][]byte{}
	}
	if _, dup := rs.Reports[c.Node]; dup {
		return Result{RequestID: r.ID, Existing: true}
	}
	rs.Reports[c.Node] = slices.Clone(c.PublicKey)
	if len(rs.Reports) < len(rs.Members) {
		return Result{RequestID: r.ID}
	}
	// Every new party holds a share of the same key: the new committee takes over.
	k.Members, k.Threshold, k.Parties, k.Generation = rs.Members, rs.Threshold, len(rs.Members), rs.Generation
	k.Resharing = nil
	a.settle(r, StatusActive)
	if r.ForChange != "" {
		a.changeReshared(r.ForChange)
	}
	a.audit("node:"+c.Node, "key.reshared", k.ID, "allowed", "")
	a.record(api.EventKeyReshared, k.Owner, nil, api.EventData{RequestID: r.ID, Kind: r.Kind, KeyID: k.ID, UserID: k.Owner, Actor: r.Actor, Status: k.Status,
		Detail: fmt.Sprintf("%d of %s, generation %d", k.Threshold, strings.Join(k.Members, ","), k.Generation)})
	a.emit(EventReshared, r.ID, k.ID)
	a.emit(EventSettled, r.ID, k.ID)
	return Result{RequestID: r.ID, KeyID: k.ID}
}

// abandonReshare ends a failed reshare: the key stays with its committee; the new
// parties drop the shares they stored aside.
func (a *applier) abandonReshare(r *Request) {
	k := a.key(r.KeyID)
	if k == nil || k.Resharing == nil || k.Resharing.RequestID != r.ID {
		return
	}
	k.Resharing = nil
	a.emit(EventReshareFailed, r.ID, k.ID)
}
