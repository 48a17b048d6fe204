package scheduler

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/custos/custos/internal/state"
)

// fakeRaft is raft's membership as the driver sees it.
type fakeRaft struct {
	mu      sync.Mutex
	servers []RaftServer
	applied map[string]uint64
	leader  uint64
	calls   []string
}

func (f *fakeRaft) AddNonvoter(_ context.Context, id, peerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "nonvoter "+id)
	f.servers = append(f.servers, RaftServer{ID: id, PeerID: peerID})
	return nil
}

func (f *fakeRaft) AddVoter(_ context.Context, id, peerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "voter "+id)
	for i := range f.servers {
		if f.servers[i].ID == id {
			f.servers[i].Voter = true
		}
	}
	return nil
}

func (f *fakeRaft) RemoveServer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+id)
	f.servers = slices.DeleteFunc(f.servers, func(s RaftServer) bool { return s.ID == id })
	return nil
}

func (f *fakeRaft) Servers() ([]RaftServer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.servers), nil
}

func (f *fakeRaft) PeerApplied(_ context.Context, id string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.applied[id]
	if !ok {
		return 0, errors.New("unreachable")
	}
	return a, nil
}

func (f *fakeRaft) AppliedIndex() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.leader }

func (f *fakeRaft) took() []string { f.mu.Lock(); defer f.mu.Unlock(); return slices.Clone(f.calls) }

// bufRecorder records the leader's reports without blocking.
type bufRecorder struct {
	mu  sync.Mutex
	got []any
}

func (r *bufRecorder) Propose(_ context.Context, _ string, p any) (state.Result, error) {
	return r.Report(context.Background(), "", p)
}

func (r *bufRecorder) Report(_ context.Context, _ string, p any) (state.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, p)
	return state.Result{}, nil
}

func TestMembershipDriverJoinsThenReshares(t *testing.T) {
	members := []state.Member{{ID: "n1", PeerID: "p1"}, {ID: "n2", PeerID: "p2"}, {ID: "n3", PeerID: "p3"}, {ID: "n4", PeerID: "p4", Status: state.MemberJoining}}
	change := &state.Request{ID: "req_c", Kind: state.KindMemberChange, Status: state.StatusScheduled, Attempt: 1,
		Change: &state.MemberChange{Change: state.ChangeAdd, Member: &members[3], Phase: state.PhaseJoining}}
	keys := map[string]*state.Key{}
	for _, id := range []string{"k1", "k2", "k3"} {
		keys[id] = &state.Key{ID: id, Status: state.KeyActive, Threshold: 2, Members: []string{"n1", "n2", "n3"}}
	}
	st := &fakeState{name: "test", strict: true, members: members, keys: keys, requests: []*state.Request{change}, change: change.ID}
	fr := &fakeRaft{servers: []RaftServer{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: true}, {ID: "n9", Voter: true}},
		applied: map[string]uint64{"n4": 10}, leader: 1000}
	s := newTestScheduler(t, st, func(string) bool { return true }, true)
	s.raft = fr
	rec := &bufRecorder{}
	ctx := context.Background()

	// Step 1: the joining node is added as a non-voter; a server the list lacks goes.
	s.members(ctx, rec)
	if got := fr.took(); !slices.Equal(got, []string{"nonvoter n4", "remove n9"}) {
		t.Fatalf("raft calls: %v", got)
	}
	// Behind: no promotion. Caught up: voter, then the joined step.
	s.members(ctx, rec)
	if slices.Contains(fr.took(), "voter n4") || len(rec.got) != 0 {
		t.Fatalf("promoted a node 990 entries behind: %v %v", fr.took(), rec.got)
	}
	fr.mu.Lock()
	fr.applied["n4"] = 990
	fr.mu.Unlock()
	s.members(ctx, rec)
	if !slices.Contains(fr.took(), "voter n4") || len(rec.got) != 1 || rec.got[0].(*state.MemberStep).Step != "joined" {
		t.Fatalf("after catching up: %v %v", fr.took(), rec.got)
	}
	// Step 2: resharing, at most maxMemberReshares at once, committees of live members.
	st.mu.Lock()
	members[3].Status = state.MemberActive
	change.Change.Phase = state.PhaseResharing
	st.mu.Unlock()
	rec.got = nil
	s.members(ctx, rec)
	if len(rec.got) != maxMemberReshares {
		t.Fatalf("reshares scheduled: %d", len(rec.got))
	}
	for _, p := range rec.got {
		mr := p.(*state.MemberReshare)
		if mr.RequestID != change.ID || len(mr.Committee) != 2 || len(mr.Nonce) != 32 || mr.ReshareID == "" {
			t.Fatalf("reshare: %+v", mr)
		}
	}
	// Every key done: the reshared step.
	st.mu.Lock()
	for _, k := range keys {
		k.Members = []string{"n1", "n2", "n3", "n4"}
	}
	st.mu.Unlock()
	rec.got = nil
	s.members(ctx, rec)
	if len(rec.got) != 1 || rec.got[0].(*state.MemberStep).Step != "reshared" {
		t.Fatalf("after every key: %v", rec.got)
	}
}

func TestMembershipDriverGivesUpOnAKeyThatKeepsFailing(t *testing.T) {
	members := []state.Member{{ID: "n1"}, {ID: "n2"}, {ID: "n3", Status: state.MemberLeaving}}
	change := &state.Request{ID: "req_c", Kind: state.KindMemberChange, Status: state.StatusScheduled, Attempt: 1,
		Change: &state.MemberChange{Change: state.ChangeRemove, Target: "n3", Phase: state.PhaseResharing}}
	keys := map[string]*state.Key{"k1": {ID: "k1", Status: state.KeyActive, Threshold: 2, Members: []string{"n1", "n2", "n3"}}}
	st := &fakeState{name: "test", strict: true, members: members, keys: keys, requests: []*state.Request{change}, change: change.ID}
	fr := &fakeRaft{servers: []RaftServer{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: true}}}
	s := newTestScheduler(t, st, func(string) bool { return true }, true)
	s.raft = fr
	rec := &bufRecorder{}
	for i := 0; i <= maxKeyReshareFailures; i++ {
		rec.got = nil
		s.members(context.Background(), rec)
		if len(rec.got) != 1 {
			t.Fatalf("round %d: %v", i, rec.got)
		}
		if f, ok := rec.got[0].(*state.Fail); ok {
			if i != maxKeyReshareFailures {
				t.Fatalf("gave up after %d failures", i)
			}
			if f.RequestID != change.ID {
				t.Fatalf("fail: %+v", f)
			}
			return
		}
		mr := rec.got[0].(*state.MemberReshare)
		if slices.Contains(mr.Committee, "n3") {
			t.Fatalf("the leaving node is in the old committee: %v", mr.Committee)
		}
		// The reshare the leader scheduled failed.
		st.mu.Lock()
		st.requests = append(st.requests, &state.Request{ID: mr.ReshareID, Kind: state.KindReshare, Status: state.StatusFailed})
		st.mu.Unlock()
	}
	t.Fatal("never gave up")
}
