//go:build linux

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestEventStreamResumesExactlyOnce: a user reads the activity stream (SSE) from one
// node while it creates a key and signs, disconnects, acts more (one signing blocked by a
// policy), and resumes from another node with Last-Event-ID: across the reconnection it
// sees every one of its events exactly once, in order, as the JSON pages list them; another
// user sees none of them.
func TestEventStreamResumesExactlyOnce(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	bob := c.newUser(ctx, "bob")

	var seen []client.Event
	read := func(node int, after uint64, until func() bool) {
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		for e, err := range alice.Clients[node].Events(sctx, after) {
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			seen = append(seen, *e)
			if until() {
				return // the consumer goes away: the stream is closed
			}
		}
	}
	count := func(typ string) int {
		n := 0
		for _, e := range seen {
			if e.Type == typ {
				n++
			}
		}
		return n
	}
	done := make(chan struct{})
	var key *client.Key
	go func() {
		defer close(done)
		var err error
		if key, _, err = alice.Clients[0].CreateKey(ctx, "ed25519", 2, "events", ""); err != nil {
			t.Error(err)
			return
		}
		for i := range 3 {
			if _, err := alice.Clients[i].Sign(ctx, key.KeyID, []byte(fmt.Sprintf("m%d", i)), "", ""); err != nil {
				t.Error(err)
			}
		}
	}()
	read(1, 0, func() bool { return count(api.EventRequestSigned) == 3 })
	<-done
	if t.Failed() {
		return
	}
	last := seen[len(seen)-1].Seq
	// Disconnected: two more signatures and one blocked by a policy.
	for i := range 2 {
		if _, err := alice.Clients[2].Sign(ctx, key.KeyID, []byte(fmt.Sprintf("n%d", i)), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Admin().CreatePolicy(ctx, api.PolicyBody{Name: "freeze", Activity: "sign", Rule: api.PolicyRule{Kind: "always"},
		Filters: &api.PolicyFilters{KeyIDs: []string{key.KeyID}}, Action: "block"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Clients[0].Sign(ctx, key.KeyID, []byte("x"), "", ""); apiCode(err) != "policy.blocked" {
		t.Fatalf("blocked sign: %v", err)
	}
	// Resumed from another node.
	read(2, last, func() bool { return count(api.EventRequestBlocked) == 1 })
	// Every event of alice's, once, in order: as the JSON pages list them.
	var listed []client.Event
	after := uint64(0)
	for {
		page, err := alice.Clients[0].EventPage(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, page.Events...)
		if page.Next == "" {
			break
		}
		fmt.Sscan(page.Next, &after)
	}
	if len(seen) != len(listed) {
		t.Fatalf("the stream gave %d events, the pages list %d", len(seen), len(listed))
	}
	for i := range seen {
		if seen[i].Seq != listed[i].Seq || seen[i].Type != listed[i].Type || seen[i].ID != listed[i].ID {
			t.Fatalf("event %d: stream %+v, page %+v", i, seen[i], listed[i])
		}
		if i > 0 && seen[i].Seq <= seen[i-1].Seq {
			t.Fatalf("event %d out of order or repeated: %d after %d", i, seen[i].Seq, seen[i-1].Seq)
		}
	}
	if count(api.EventKeyCreated) != 1 || count(api.EventRequestSigned) != 5 || count(api.EventRequestBlocked) != 1 || count(api.EventPolicyChanged) != 0 {
		t.Fatalf("event kinds seen: %v", kinds(seen))
	}
	// Bob sees none of it.
	page, err := bob.Clients[1].EventPage(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 0 {
		t.Fatalf("bob sees %v", kinds(page.Events))
	}
}

func kinds(evs []client.Event) map[string]int {
	m := map[string]int{}
	for _, e := range evs {
		m[e.Type]++
	}
	return m
}
