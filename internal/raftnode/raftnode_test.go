package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/state/statetest"
)

// noScheduler schedules nothing: these tests propose no client request.
type noScheduler struct{}

func (noScheduler) Schedule(*state.Submit, string) {}

// noSignatures refuses every threshold signature (no ceremony runs here).
type noSignatures struct{}

func (noSignatures) VerifySignature(string, []byte, []byte, []uint32, []byte, *state.Signature) error {
	return errors.New("no signatures in this test")
}

// member is one raft member of the test cluster, over a real libp2p host and a real FSM.
type member struct {
	id   string
	host *p2p.Host
	fsm  *state.FSM
	node *Node
}

// startMembers starts n raft members on loopback, each with its own data dir.
func startMembers(t *testing.T, n int) []*member { t.Helper(); return startMembersJoin(t, n, 0) }

// startMembersJoin is startMembers whose last join members are configured with
// cluster.join: the others bootstrap raft with one another, every host admits all n.
func startMembersJoin(t *testing.T, n, join int) []*member {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	an, err := authn.New(authn.Config{Audience: "test", HMACKey: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	ms := make([]*member, n)
	var pms []p2p.Member
	var cms []config.Member
	for i := range ms {
		key, err := p2p.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		h, err := p2p.New(p2p.Config{Identity: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		id := fmt.Sprintf("n%d", i+1)
		pid, _ := peer.IDFromPrivateKey(key)
		var addrs []string
		for _, a := range h.ListenAddrs() {
			addrs = append(addrs, a.String())
		}
		pm, err := p2p.ParseMember(id, pid.String(), addrs)
		if err != nil {
			t.Fatal(err)
		}
		pms = append(pms, pm)
		cms = append(cms, config.Member{ID: id, PeerID: pid.String(), P2PAddrs: addrs})
		ms[i] = &member{id: id, host: h, fsm: statetest.Open(t, noSignatures{}, an, nil)}
		defer func() {
			cfg := &config.Config{NodeID: id, DataDir: t.TempDir()}
			// The bootstrapping members list one another; a joining member lists them
			// and itself.
			cfg.Cluster.Members = cms[:n-join]
			if cfg.Cluster.Join = i >= n-join; cfg.Cluster.Join {
				cfg.Cluster.Members = cms
			}
			node, err := New(Config{Config: cfg, Logger: log, Identity: key, Host: h, FSM: ms[i].fsm, Scheduler: noScheduler{}, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			ms[i].node = node
		}()
	}
	for _, m := range ms {
		if err := m.host.SetMembers(pms); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}

// TestProposeAndForward: three real raft members over libp2p. The leader stamps and
// commits its own entry; a follower's report is forwarded to the leader and Propose
// returns only once the entry applied on the follower too; what a member may not propose
// is refused by the leader's gate and never retried; stamps never decrease.
func TestProposeAndForward(t *testing.T) {
	ms := startMembers(t, 3)
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The leader's first entry. Propose retries across elections (ErrUnavailable) until
	// ctx ends, so whichever member leads takes it.
	var leader, follower *member
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for leader == nil {
		for _, m := range ms {
			if m.node.IsLeader() {
				leader = m
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader elected")
		case <-tick.C:
		}
	}
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	init := &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Events: true}
	for _, m := range ms {
		init.Members = append(init.Members, state.Member{ID: m.id, PeerID: m.host.ID().String()})
	}
	res, err := leader.node.Propose(ctx, state.TypeClusterInit, init)
	if err != nil || !res.OK() {
		t.Fatalf("first entry: %v %+v", err, res)
	}
	if name, k, _ := leader.fsm.Cluster(); name != "test" || k != 2 {
		t.Fatalf("leader's state after the first entry: %q %d", name, k)
	}
	first := leader.fsm.LastStamp()

	// A follower's own report goes through the leader and is applied here on return.
	res, err = follower.node.Report(ctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: follower.id, Reason: "test"})
	if err != nil || !res.OK() {
		t.Fatalf("forwarded report: %v %+v", err, res)
	}
	if got := follower.fsm.AppliedIndex(); got < res.Index {
		t.Fatalf("Propose returned before the entry applied on the follower: applied %d, entry %d", got, res.Index)
	}
	if last := follower.fsm.LastStamp(); last < first {
		t.Fatalf("stamp decreased: %d after %d", last, first)
	}

	// The leader's entries never come over the wire: refused at once, not retried.
	start := time.Now()
	_, err = follower.node.Propose(ctx, state.TypeClusterInit, init)
	if !errors.Is(err, ErrProposalRefused) {
		t.Fatalf("forwarded first entry: %v, want ErrProposalRefused", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a refused proposal was retried for %v", d)
	}
	// A report whose body names another member passes the gate (signed by the follower,
	// in its own name) and is refused by every FSM.
	res, err = follower.node.Report(ctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: leader.id})
	if err != nil || res.Code != "auth.signature_invalid" {
		t.Fatalf("report naming another member: %v %+v, want auth.signature_invalid", err, res)
	}
	if leader.node.Leader() != leader.id || follower.node.Leader() != leader.id {
		t.Fatalf("leader ids: %q %q, want %s", leader.node.Leader(), follower.node.Leader(), leader.id)
	}
	if r := follower.node.NotReady(); len(r) != 0 {
		t.Fatalf("follower not ready: %v", r)
	}
}
