//go:build linux

package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestMembershipAddRemoveReplace: a 4th node joins (non-voter, caught up, voter) and
// every key is reshared to include it; a node is removed (every key reshared away from
// it first); a killed node is replaced by a fresh one (its keys reshared from the k that
// remain). After each step the same public keys sign through the new committees, the
// nodes left out hold no share, and the cluster kept signing during the changes.
func TestMembershipAddRemoveReplace(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"rate":     noRateLimit(),
		"ceremony": map[string]any{"sign_timeout": "15s", "keygen_timeout": "40s"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	adm := c.Admin()

	secp, _, err := alice.Clients[0].CreateKey(ctx, client.CurveSecp256k1, 2, "btc", "")
	if err != nil {
		t.Fatal(err)
	}
	ed, _, err := alice.Clients[0].CreateKey(ctx, client.CurveEd25519, 2, "ed", "")
	if err != nil {
		t.Fatal(err)
	}

	// follow waits for a membership change, logging its progress, and signs meanwhile
	// (the cluster keeps signing during the change).
	follow := func(r *client.Request, signer int) {
		t.Helper()
		start := time.Now()
		signed := 0
		last := ""
		for !client.Final(r.Status) {
			if m := r.Membership; m != nil {
				if line := fmt.Sprintf("%s %s/%d of %d", r.Status, m.Phase, m.KeysDone, m.KeysTotal); line != last {
					t.Logf("  %s: %s (%s)", r.RequestID, line, time.Since(start).Round(time.Second))
					last = line
				}
			}
			if _, err := alice.Clients[signer].Sign(ctx, ed.KeyID, []byte(fmt.Sprintf("during %d", signed)), "", ""); err == nil {
				signed++
			}
			time.Sleep(500 * time.Millisecond)
			if r, err = adm.GetRequest(ctx, r.RequestID); err != nil {
				t.Fatal(err)
			}
			if time.Since(start) > 4*time.Minute {
				t.Fatalf("membership change never ended: %+v %+v", r, r.Membership)
			}
		}
		if r.Status != client.StatusActive {
			// What each node holds (a node whose state hash differs at the same index
			// diverged).
			for i := range c.N() {
				if ds, err := c.DebugState(ctx, i); err == nil {
					t.Logf("node %d: %+v", i+1, *ds)
				}
				if ok, why, err := c.Readiness(ctx, i); err == nil {
					t.Logf("node %d ready %v %v", i+1, ok, why)
				}
			}
			t.Fatalf("membership change ended %s: %+v", r.Status, r.Error)
		}
		t.Logf("%s %s done in %s (%d keys reshared; %d signatures meanwhile)", r.Membership.Change, r.Membership.Member+r.Membership.Target,
			time.Since(start).Round(time.Second), r.Membership.KeysDone, signed)
	}
	via := 0 // the node the test reads keys through (a member)
	keysOn := func(want []string) {
		t.Helper()
		for _, k := range []*client.Key{secp, ed} {
			got, err := alice.Clients[via].GetKey(ctx, k.KeyID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Members, want) || got.PublicKey != k.PublicKey || got.Threshold != 2 {
				t.Fatalf("key %s: members %v (want %v), threshold %d", k.KeyID, got.Members, want, got.Threshold)
			}
		}
	}
	memberIDs := func() []string {
		t.Helper()
		l, err := adm.ListMembers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range l.Members {
			if m.Status != api.MemberActive {
				t.Fatalf("member %s is %s", m.ID, m.Status)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}

	// clientOn gives alice a client on node i, added by AddNode.
	clientOn := func(i int) {
		t.Helper()
		cl, err := alice.Clients[0].WithBaseURL(c.API(i))
		if err != nil || len(alice.Clients) != i {
			t.Fatalf("client for node %d: %v", i+1, err)
		}
		alice.Clients = append(alice.Clients, cl)
	}

	// Add node 4.
	i4, m4, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clientOn(i4)
	r, err := adm.AddMember(ctx, admin.MemberBody(m4))
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != api.KindMemberChange || r.Membership == nil || r.Membership.Change != "add" {
		t.Fatalf("add: %+v", r)
	}
	if _, err := adm.RemoveMember(ctx, c.NodeID(1)); client.CodeOf(err) != api.CodeRequestConflict {
		t.Fatalf("a second change while one runs: %v", err)
	}
	follow(r, 0)
	all := []string{c.NodeID(0), c.NodeID(1), c.NodeID(2), m4.ID}
	slices.Sort(all)
	keysOn(all)
	if got := memberIDs(); !slices.Equal(got, all) {
		t.Fatalf("members %v", got)
	}
	c.waitReady(i4)
	signVerify(ctx, t, alice, i4, secp, "through the new node")
	signVerify(ctx, t, alice, i4, ed, "through the new node")

	// Remove the leader: every key is reshared away from it, it erases its shares, it
	// hands its leadership over and the next leader removes it from raft.
	cl, err := adm.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gone := c.Index(cl.Leader)
	var up []int
	for _, i := range []int{0, 1, 2, i4} {
		if i != gone {
			up = append(up, i)
		}
	}
	// The node removed no longer vouches for requests (the FSM refuses entries from a
	// non-member): the admin talks to another one from here on.
	if adm, err = c.AdminFor(up[0]); err != nil {
		t.Fatal(err)
	}
	via = up[0]
	r, err = adm.RemoveMember(ctx, cl.Leader)
	if err != nil {
		t.Fatal(err)
	}
	follow(r, i4)
	rest := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == cl.Leader })
	keysOn(rest)
	if got := memberIDs(); !slices.Equal(got, rest) {
		t.Fatalf("members after the removal %v", got)
	}
	for _, k := range []*client.Key{secp, ed} {
		waitLog(t, c, gone, 30*time.Second, `"msg":"erased the share of a key reshared away from this node"`, `"key":"`+k.KeyID+`"`)
	}
	c.stop(gone)
	signVerify(ctx, t, alice, up[0], secp, "without the removed node")
	signVerify(ctx, t, alice, up[1], ed, "without the removed node")

	// Replace a killed node by a fresh node 5.
	if adm, err = c.AdminFor(up[1]); err != nil {
		t.Fatal(err)
	}
	dead := up[0]
	via = up[1]
	c.kill(dead)
	i5, m5, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clientOn(i5)
	r, err = adm.ReplaceMember(ctx, c.NodeID(dead), admin.MemberBody(m5))
	if err != nil {
		t.Fatal(err)
	}
	follow(r, up[1])
	final := []string{c.NodeID(up[1]), c.NodeID(up[2]), m5.ID}
	slices.Sort(final)
	keysOn(final)
	if got := memberIDs(); !slices.Equal(got, final) {
		t.Fatalf("members after the replacement %v", got)
	}
	c.waitReady(i5)
	for _, i := range []int{up[1], up[2], i5} {
		signVerify(ctx, t, alice, i, secp, fmt.Sprintf("after the replacement through node %d", i+1))
	}
	signVerify(ctx, t, alice, i5, ed, "after the replacement")
}
