package raftnode

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
)

// startAll starts every member's raft and stops it when the test ends.
func startAll(t *testing.T, ms []*member) {
	t.Helper()
	for _, m := range ms {
		if err := m.node.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := m.node.Stop(); err != nil {
				t.Errorf("stop %s: %v", m.id, err)
			}
		})
	}
}

// waitLeader waits until one of ms leads and returns it.
func waitLeader(ctx context.Context, t *testing.T, ms []*member) *member {
	t.Helper()
	for {
		for _, m := range ms {
			if m.node.IsLeader() {
				return m
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader elected")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// eventually polls cond until it holds or ctx ends.
func eventually(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func serverOf(ss []Server, id string) (Server, bool) {
	i := slices.IndexFunc(ss, func(s Server) bool { return s.ID == id })
	if i < 0 {
		return Server{}, false
	}
	return ss[i], true
}

// TestMembershipAddCatchUpPromoteRemove: three members bootstrap, a fourth starts with
// cluster.join and waits, not ready, without a configuration; followers refuse every
// change (ErrNotLeader); the leader adds it as a nonvoter (idempotently, refusing a
// conflicting peer id), sees it catch up through the applied RPC, promotes it, refuses to
// remove itself, and removes it again (idempotently). The removed member keeps running and
// connected, and the cluster's leader and term do not move.
func TestMembershipAddCatchUpPromoteRemove(t *testing.T) {
	ms := startMembersJoin(t, 4, 1)
	startAll(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	joiner := ms[3]
	leader := waitLeader(ctx, t, ms[:3])
	init := &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Events: true}
	for _, m := range ms[:3] {
		init.Members = append(init.Members, state.Member{ID: m.id, PeerID: m.host.ID().String()})
	}
	if res, err := leader.node.Propose(ctx, state.TypeClusterInit, init); err != nil || !res.OK() {
		t.Fatalf("first entry: %v %+v", err, res)
	}
	var follower *member
	for _, m := range ms[:3] {
		if m != leader {
			follower = m
			break
		}
	}

	// The joining node did not bootstrap: no configuration, no log, no leader, not ready
	// (and it stays so past several election timeouts: it never campaigns).
	time.Sleep(3 * time.Second)
	if ss, err := joiner.node.Servers(); err != nil || len(ss) != 0 {
		t.Fatalf("joining node's configuration: %v %v, want none", ss, err)
	}
	if li := joiner.node.raft.LastIndex(); li != 0 || joiner.node.IsLeader() || joiner.node.Leader() != "" {
		t.Fatalf("joining node: last index %d, leader %v / %q", li, joiner.node.IsLeader(), joiner.node.Leader())
	}
	if r := joiner.node.NotReady(); !slices.Contains(r, ReasonWaitingToJoin) {
		t.Fatalf("joining node's reasons: %q, want %q", r, ReasonWaitingToJoin)
	}
	ss, err := leader.node.Servers()
	if err != nil || len(ss) != 3 {
		t.Fatalf("leader's configuration: %v %v", ss, err)
	}
	for _, s := range ss {
		if !s.Voter || s.PeerID == "" {
			t.Fatalf("bootstrap server %+v", s)
		}
	}

	jid, jpeer := joiner.id, joiner.host.ID().String()
	// Followers refuse every change with ErrNotLeader.
	for name, err := range map[string]error{
		"add nonvoter": follower.node.AddNonvoter(ctx, jid, jpeer),
		"add voter":    follower.node.AddVoter(ctx, jid, jpeer),
		"remove":       follower.node.RemoveServer(ctx, leader.id),
		"transfer":     follower.node.TransferLeadership(ctx),
	} {
		if !errors.Is(err, ErrNotLeader) {
			t.Fatalf("%s on a follower: %v, want ErrNotLeader", name, err)
		}
	}
	if err := joiner.node.AddNonvoter(ctx, jid, jpeer); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("add on the joining node: %v, want ErrNotLeader", err)
	}

	// Add as nonvoter, twice; a conflicting peer id or node id is refused.
	for range 2 {
		if err := leader.node.AddNonvoter(ctx, jid, jpeer); err != nil {
			t.Fatalf("add nonvoter: %v", err)
		}
	}
	if err := leader.node.AddNonvoter(ctx, jid, follower.host.ID().String()); !errors.Is(err, ErrServerConflict) {
		t.Fatalf("add with another member's peer id: %v, want ErrServerConflict", err)
	}
	if err := leader.node.AddNonvoter(ctx, "n9", jpeer); !errors.Is(err, ErrServerConflict) {
		t.Fatalf("add the same peer under another id: %v, want ErrServerConflict", err)
	}
	if err := leader.node.AddNonvoter(ctx, "n9", "not-a-peer-id"); err == nil {
		t.Fatal("bad peer id accepted")
	}
	ss, _ = leader.node.Servers()
	if s, ok := serverOf(ss, jid); !ok || s.Voter || s.PeerID != jpeer {
		t.Fatalf("after add nonvoter: %+v", ss)
	}

	// It catches up: the applied RPC answers from the new member, and it becomes ready.
	start := time.Now()
	eventually(ctx, t, "the nonvoter to catch up", func() bool {
		ok, _, err := leader.node.CaughtUp(ctx, jid)
		return err == nil && ok
	})
	target := leader.node.AppliedIndex()
	eventually(ctx, t, "the nonvoter to apply what the leader applied", func() bool {
		applied, err := leader.node.PeerApplied(ctx, jid)
		if err != nil || applied > leader.node.AppliedIndex() {
			t.Fatalf("PeerApplied(%s) = %d, %v (leader at %d)", jid, applied, err, leader.node.AppliedIndex())
		}
		return applied >= target
	})
	if own, err := leader.node.PeerApplied(ctx, leader.id); err != nil || own != leader.node.AppliedIndex() {
		t.Fatalf("PeerApplied(self) = %d, %v", own, err)
	}
	if _, err := leader.node.PeerApplied(ctx, "nobody"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("PeerApplied(unknown): %v, want ErrUnknownServer", err)
	}
	if name, _, _ := joiner.fsm.Cluster(); name != "test" {
		t.Fatalf("the new member's state after catching up: cluster %q", name)
	}
	eventually(ctx, t, "the nonvoter to be ready", func() bool { return len(joiner.node.NotReady()) == 0 })
	t.Logf("nonvoter caught up and ready in %v", time.Since(start).Round(time.Millisecond))

	// Promote, twice.
	for range 2 {
		if err := leader.node.AddVoter(ctx, jid, jpeer); err != nil {
			t.Fatalf("add voter: %v", err)
		}
	}
	ss, _ = leader.node.Servers()
	if s, ok := serverOf(ss, jid); !ok || !s.Voter {
		t.Fatalf("after add voter: %+v", ss)
	}
	// AddNonvoter never demotes.
	if err := leader.node.AddNonvoter(ctx, jid, jpeer); err != nil {
		t.Fatalf("add nonvoter on a voter: %v", err)
	}
	if ss, _ = leader.node.Servers(); !ss[slices.IndexFunc(ss, func(s Server) bool { return s.ID == jid })].Voter {
		t.Fatal("AddNonvoter demoted a voter")
	}
	eventually(ctx, t, "the new voter to see the configuration", func() bool {
		js, err := joiner.node.Servers()
		s, ok := serverOf(js, jid)
		return err == nil && ok && s.Voter && len(js) == 4
	})
	// A change made against a stale configuration index is refused, not interleaved.
	_, idx, err := leader.node.configuration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = leader.node.raft.AddNonvoter("n9", raft.ServerAddress(jpeer), idx-1, time.Second).Error()
	if !errors.Is(mapMembershipErr(err), ErrConfigurationChanged) {
		t.Fatalf("stale prevIndex: %v, want ErrConfigurationChanged", err)
	}

	// The leader does not remove itself.
	if err := leader.node.RemoveServer(ctx, leader.id); !errors.Is(err, ErrRemoveSelf) {
		t.Fatalf("remove self: %v, want ErrRemoveSelf", err)
	}
	// Remove the new member, twice.
	for range 2 {
		if err := leader.node.RemoveServer(ctx, jid); err != nil {
			t.Fatalf("remove: %v", err)
		}
	}
	ss, _ = leader.node.Servers()
	if _, ok := serverOf(ss, jid); ok || len(ss) != 3 {
		t.Fatalf("after remove: %+v", ss)
	}

	// The removed member keeps running, still admitted by every host (the replicated
	// member list would drop it; here it does not): raft's pre-vote and the members'
	// refusal of votes from outside the configuration keep it from moving the term.
	term := leader.node.raft.CurrentTerm()
	eventually(ctx, t, "the removed member to lose its leader", func() bool { return joiner.node.Leader() == "" })
	time.Sleep(8 * time.Second) // several election timeouts
	if l := waitLeader(ctx, t, ms[:3]); l != leader || leader.node.raft.CurrentTerm() != term {
		t.Fatalf("the cluster was disturbed: leader %s (was %s), term %d (was %d)", l.id, leader.id, leader.node.raft.CurrentTerm(), term)
	}
	if r := joiner.node.NotReady(); len(r) == 0 {
		t.Fatal("the removed member says it is ready")
	} else {
		t.Logf("removed member's reasons: %q (raft %s, term %d; cluster term %d)", r, joiner.node.State(), joiner.node.raft.CurrentTerm(), term)
	}
	// And the cluster still commits.
	if res, err := follower.node.Report(ctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: follower.id, Reason: "test"}); err != nil || !res.OK() {
		t.Fatalf("commit after removal: %v %+v", err, res)
	}

	// Once the hosts drop it, it cannot even reach them.
	var rest []p2p.Member
	for _, m := range ms[:3] {
		rest = append(rest, p2p.Member{NodeID: m.id, PeerID: m.host.ID(), Addrs: m.host.ListenAddrs()})
	}
	for _, m := range ms[:3] {
		if err := m.host.SetMembers(rest); err != nil {
			t.Fatal(err)
		}
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	if _, err := joiner.host.Call(cctx, leader.host.ID(), rpcApplied, nil); err == nil {
		t.Fatal("a removed member's call was served")
	}
}

// TestJoinDoesNotBootstrap: a node configured with cluster.join and no raft state opens
// raft without a configuration and stays a follower that knows no leader, saying why it
// is not ready; the same node without join bootstraps.
func TestJoinDoesNotBootstrap(t *testing.T) {
	ms := startMembersJoin(t, 2, 1)
	joiner := ms[1]
	if err := joiner.node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = joiner.node.Stop() })
	time.Sleep(2500 * time.Millisecond) // past an election timeout
	if ss, err := joiner.node.Servers(); err != nil || len(ss) != 0 {
		t.Fatalf("configuration %v %v, want none", ss, err)
	}
	if st := joiner.node.State(); st != raft.Follower {
		t.Fatalf("state %s, want Follower", st)
	}
	if r := joiner.node.NotReady(); len(r) != 1 || r[0] != ReasonWaitingToJoin {
		t.Fatalf("reasons %q, want only %q", r, ReasonWaitingToJoin)
	}
	// The other member, not joining, bootstraps (here: a configuration of itself).
	boot := ms[0]
	if err := boot.node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = boot.node.Stop() })
	if ss, err := boot.node.Servers(); err != nil || len(ss) != 1 || ss[0].ID != boot.id || !ss[0].Voter {
		t.Fatalf("bootstrapped configuration %v %v", ss, err)
	}
}

// TestRemovedWhileDownDoesNotDisturb: a voter removed while it was down comes back
// believing it is a voter of the old configuration and campaigns; pre-vote and the
// members' refusal of votes from outside their configuration keep the cluster's leader
// and term where they were, and the node says it knows no leader.
func TestRemovedWhileDownDoesNotDisturb(t *testing.T) {
	ms := startMembersJoin(t, 4, 1)
	startAll(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	gone := ms[3]
	leader := waitLeader(ctx, t, ms[:3])
	if err := leader.node.AddNonvoter(ctx, gone.id, gone.host.ID().String()); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, "the nonvoter to catch up", func() bool {
		ok, applied, err := leader.node.CaughtUp(ctx, gone.id)
		return err == nil && ok && applied > 0
	})
	if err := leader.node.AddVoter(ctx, gone.id, gone.host.ID().String()); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, "the new voter to know it votes", func() bool {
		ss, err := gone.node.Servers()
		s, ok := serverOf(ss, gone.id)
		return err == nil && ok && s.Voter
	})

	// Down, removed, back.
	if err := gone.node.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := leader.node.RemoveServer(ctx, gone.id); err != nil {
		t.Fatal(err)
	}
	term := leader.node.raft.CurrentTerm()
	node, err := New(Config{Config: gone.node.cfg, Logger: gone.node.log, Identity: gone.node.identity, Host: gone.host, FSM: gone.fsm, Scheduler: noScheduler{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	gone.node = node // startAll's cleanup stops this one
	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ss, _ := node.Servers(); len(ss) != 4 {
		t.Fatalf("the removed node's own configuration: %+v, want the old 4 servers", ss)
	}
	time.Sleep(8 * time.Second) // several election timeouts
	if l := waitLeader(ctx, t, ms[:3]); l != leader || leader.node.raft.CurrentTerm() != term {
		t.Fatalf("the cluster was disturbed: leader %s (was %s), term %d (was %d)", l.id, leader.id, leader.node.raft.CurrentTerm(), term)
	}
	if node.IsLeader() || node.Leader() != "" || len(node.NotReady()) == 0 {
		t.Fatalf("the removed node: leader %v / %q, reasons %q", node.IsLeader(), node.Leader(), node.NotReady())
	}
	t.Logf("removed node: raft %s, its term %d, the cluster's %d, reasons %q", node.State(), node.raft.CurrentTerm(), term, node.NotReady())
}
