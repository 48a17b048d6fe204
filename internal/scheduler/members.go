package scheduler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state"
)

// The leader's part of membership changes (state/members.go): it keeps raft's
// configuration in line with the replicated member list — a joining member is added as
// a non-voter and made a voter once it caught up, a member the list dropped is removed —
// and it drives the running change: it reports the joined step, schedules each key's
// reshare (a few at a time, each with an old committee it picks and a fresh nonce),
// retries a key whose reshare failed, and reports the reshared step once no key needs
// one. Everything it reports, the FSM judges again.

// RaftServer is one server of raft's configuration.
type RaftServer struct {
	ID, PeerID string
	Voter      bool
}

// Raft is the leader's handle on raft membership (raftnode.Node, adapted by the node).
type Raft interface {
	AddNonvoter(ctx context.Context, id, peerID string) error
	AddVoter(ctx context.Context, id, peerID string) error
	RemoveServer(ctx context.Context, id string) error
	Servers() ([]RaftServer, error)
	// PeerApplied is how far member id's state has applied; AppliedIndex this node's.
	PeerApplied(ctx context.Context, id string) (uint64, error)
	AppliedIndex() uint64
}

// Membership driving bounds.
const (
	// caughtUpWithin: a non-voter within this many entries of the leader is caught up.
	caughtUpWithin = 64
	// maxMemberReshares run at once for a change.
	maxMemberReshares = 2
	// maxKeyReshareFailures: a key whose reshare failed this many times fails the change.
	maxKeyReshareFailures = 3
)

// memberDriver is the leader-local bookkeeping of the running change.
type memberDriver struct {
	change   string            // the change the counters are about
	failures map[string]int    // key id → reshares of it that failed for this change
	counted  map[string]bool   // reshare request ids already counted as failures
	last     map[string]string // key id → the last reshare scheduled for it
}

// members runs one step of the membership driver (leader only, from the loop, at most
// one at a time: it waits for its own raft operations).
func (n *Scheduler) members(ctx context.Context, p Proposer) {
	if n.raft == nil {
		return
	}
	name, _, members := n.fsm.Cluster()
	if name == "" || len(members) < 2 {
		return // not initialised: raft's bootstrap configuration is all there is
	}
	servers, err := n.raft.Servers()
	if err != nil {
		n.log.Warn("membership: reading raft's configuration", "err", err)
		return
	}
	inRaft := map[string]RaftServer{}
	for _, s := range servers {
		inRaft[s.ID] = s
	}
	changeID := n.fsm.MemberChange()
	var change *state.Request
	if changeID != "" {
		change = n.fsm.Request(changeID)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, m := range members {
		s, ok := inRaft[m.ID]
		switch {
		case m.Status == state.MemberJoining && !ok:
			if err := n.raft.AddNonvoter(rctx, m.ID, m.PeerID); err != nil {
				n.log.Warn("membership: adding a joining member to raft as a non-voter", "member", m.ID, "err", err)
			} else {
				n.log.Info("membership: joining member added to raft as a non-voter; it catches up", "member", m.ID)
			}
		case m.Status == state.MemberJoining && !s.Voter:
			applied, err := n.raft.PeerApplied(rctx, m.ID)
			if err != nil || applied+caughtUpWithin < n.raft.AppliedIndex() {
				n.log.Info("membership: joining member catching up", "member", m.ID, "applied", applied, "leader_applied", n.raft.AppliedIndex(), "err", err)
				continue
			}
			if err := n.raft.AddVoter(rctx, m.ID, m.PeerID); err != nil {
				n.log.Warn("membership: promoting a caught-up member to voter", "member", m.ID, "err", err)
				continue
			}
			n.log.Info("membership: member caught up and is a voter", "member", m.ID)
			fallthrough
		case m.Status == state.MemberJoining && s.Voter:
			if change != nil && change.Change != nil && change.Change.Phase == state.PhaseJoining {
				n.reportQuiet(ctx, p, state.TypeMemberStep, &state.MemberStep{RequestID: change.ID, Step: "joined"})
			}
		}
	}
	// Raft servers the member list no longer has are removed (the leader itself last:
	// removing itself makes it step down).
	var drop []string
	for _, s := range servers {
		if !slices.ContainsFunc(members, func(m state.Member) bool { return m.ID == s.ID }) {
			drop = append(drop, s.ID)
		}
	}
	slices.SortFunc(drop, func(a, b string) int {
		switch {
		case a == n.cfg.NodeID:
			return 1
		case b == n.cfg.NodeID:
			return -1
		}
		return 0
	})
	for _, id := range drop {
		if err := n.raft.RemoveServer(rctx, id); err != nil {
			n.log.Warn("membership: removing a former member from raft", "member", id, "err", err)
			continue
		}
		n.log.Info("membership: former member removed from raft", "member", id)
	}
	if change != nil && change.Change != nil && change.Status == state.StatusScheduled && change.Change.Phase == state.PhaseResharing {
		n.reshareForChange(ctx, p, change)
	}
}

// reshareForChange schedules the next keys' reshares for a change in its resharing
// phase, or reports that none is left.
func (n *Scheduler) reshareForChange(ctx context.Context, p Proposer, change *state.Request) {
	d := &n.memberDrive
	if d.change != change.ID {
		*d = memberDriver{change: change.ID, failures: map[string]int{}, counted: map[string]bool{}, last: map[string]string{}}
	}
	running, pending := 0, 0
	var next []*state.Key
	for _, k := range n.fsm.AllKeys() {
		if _, _, ok := state.NeedsReshare(k, change.Change); !ok {
			continue
		}
		pending++
		if k.Resharing != nil {
			running++
			continue
		}
		if last := n.lastChangeReshare(k, change.ID); last != nil && last.Status == state.StatusFailed && !d.counted[last.ID] {
			d.counted[last.ID] = true
			d.failures[k.ID]++
		}
		if d.failures[k.ID] >= maxKeyReshareFailures {
			n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: change.ID, Code: api.CodeCeremonyFailed,
				Detail: fmt.Sprintf("key %s could not be reshared (%d attempts); the keys done keep their new committee, the others their old one", k.ID, d.failures[k.ID])})
			return
		}
		next = append(next, k)
	}
	if pending == 0 {
		n.reportQuiet(ctx, p, state.TypeMemberStep, &state.MemberStep{RequestID: change.ID, Step: "reshared"})
		return
	}
	for _, k := range next {
		if running >= maxMemberReshares {
			return
		}
		var avoid []string
		if change.Change.Target != "" {
			avoid = []string{change.Change.Target}
		}
		committee, ok := n.pickCommittee(k, "", avoid)
		if !ok {
			n.log.Warn("membership: not enough live members of a key to reshare it; retrying", "key", k.ID, "threshold", k.Threshold)
			continue
		}
		id := newID("req_")
		n.reportQuiet(ctx, p, state.TypeMemberReshare, &state.MemberReshare{RequestID: change.ID, KeyID: k.ID, ReshareID: id, Committee: committee, Nonce: randomBytes(32)})
		d.last[k.ID] = id
		running++
	}
}

// lastChangeReshare is the last reshare this leader scheduled for key k in change id.
func (n *Scheduler) lastChangeReshare(k *state.Key, _ string) *state.Request {
	id := n.memberDrive.last[k.ID]
	if id == "" {
		return nil
	}
	return n.fsm.Request(id)
}
