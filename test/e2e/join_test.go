//go:build linux

package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestJoinPlumbing: a node added to a running 3-node cluster with cluster.join starts,
// does not bootstrap, and waits not ready, saying it is waiting to be added; the running
// members' configurations are unchanged, they do not admit it (it is in no replicated
// member list), and the cluster is undisturbed: the same leader, and a key made before
// the node came still signs, as does one made after. The joining node stops and starts
// like the others. (Adding it through the admin API is the membership e2e's.)
func TestJoinPlumbing(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	before, _, err := alice.Clients[0].CreateKey(ctx, client.CurveEd25519, 2, "before", "")
	if err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(ctx)
	c.must(err)
	var cfgs [][]byte
	for i := range c.N() {
		b, err := os.ReadFile(c.ConfigPath(i))
		c.must(err)
		cfgs = append(cfgs, b)
	}

	start := time.Now()
	j, m, err := c.AddNode(ctx)
	c.must(err)
	if j != 3 || c.N() != 4 || c.NodeID(j) != m.ID || c.API(j) != m.API || m.PeerID == "" || len(m.P2PAddrs) != 1 {
		t.Fatalf("added node %d %+v (N %d, id %s, api %s)", j, m, c.N(), c.NodeID(j), c.API(j))
	}
	if pid, err := c.PeerID(j); err != nil || pid != m.PeerID {
		t.Fatalf("PeerID(%d) = %q, %v, want %s", j, pid, err, m.PeerID)
	}
	cfg, err := os.ReadFile(c.ConfigPath(j))
	c.must(err)
	if !strings.Contains(string(cfg), `"join": true`) {
		t.Fatalf("the new node's configuration does not join:\n%s", cfg)
	}
	for i, b := range cfgs {
		now, err := os.ReadFile(c.ConfigPath(i))
		c.must(err)
		if string(now) != string(b) {
			t.Fatalf("node %d's configuration changed", i+1)
		}
	}

	// It starts, serves its API, and waits to be added.
	waitReason := func() {
		t.Helper()
		var reasons []string
		err := testcluster.Until(ctx, func() bool {
			if !c.Running(j) {
				t.Fatalf("the joining node exited:\n%s", c.LogTail(j, 40))
			}
			var ready bool
			ready, reasons, err = c.Readiness(ctx, j)
			if ready {
				t.Fatalf("the joining node is ready before it was added")
			}
			return err == nil && slices.Contains(reasons, raftnode.ReasonWaitingToJoin)
		})
		if err != nil {
			t.Fatalf("the joining node's reasons: %q (%v)\n%s", reasons, err, c.LogTail(j, 40))
		}
	}
	waitReason()
	t.Logf("joining node up and waiting in %v", time.Since(start).Round(time.Millisecond))
	ds, err := c.DebugState(ctx, j)
	c.must(err)
	if ds.Leader != "" || ds.RaftState != "Follower" || ds.Index != 0 {
		t.Fatalf("the joining node: leader %q, raft %s, applied index %d", ds.Leader, ds.RaftState, ds.Index)
	}

	// The cluster is undisturbed, several election timeouts later.
	time.Sleep(6 * time.Second)
	if ready, reasons, err := c.Readiness(ctx, j); err != nil || ready || !slices.Contains(reasons, raftnode.ReasonWaitingToJoin) {
		t.Fatalf("the joining node later: ready %v, reasons %q, %v", ready, reasons, err)
	}
	if l, err := c.Leader(ctx); err != nil || l != leader {
		t.Fatalf("leader %d (%v), was %d", l, err, leader)
	}
	c.waitReady(0, 1, 2)
	signVerify(ctx, t, alice, 0, before, "before the join")
	after, _, err := alice.Clients[1].CreateKey(ctx, client.CurveEd25519, 2, "after", "")
	if err != nil {
		t.Fatal(err)
	}
	signVerify(ctx, t, alice, 2, after, "after the join")
	if ds, err := c.DebugState(ctx, j); err != nil || ds.Shares != 0 || ds.Leader != "" {
		t.Fatalf("the joining node took part: %+v %v", ds, err)
	}

	// Stop and Start work for it like for the others.
	c.stop(j)
	if c.Running(j) {
		t.Fatal("still running after Stop")
	}
	c.start(j)
	waitReason()
}
