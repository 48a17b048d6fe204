//go:build linux

package hostile

import (
	"context"
	"sync"
	"testing"
)

// abortingMember: a member that answers every ceremony it is scheduled into with MsgAbort
// ("I gave up") and never reports anything through raft. Its honest partner fails quickly
// (it does not wait for the timeout) but blames no one on the aborter's word, so the
// failure report names no culprit. The retry must still not put the aborter back into the
// same request's next committee: otherwise one member fails every request whose attempts
// keep drawing it (1 in 8 requests through the leader in a 3-node, 2-of-3 cluster)
// without ever being named.
func abortingMember(ctx context.Context, t *testing.T, e *env) {
	c, hp := e.c, e.hp
	hp.SetActs(actAbort)
	already := len(hp.Invitations())

	// Requests through the leader: first committee {leader, random other}, so half of
	// them draw the hostile peer.
	const n = 16
	outs := make([]signOutcome, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[k] = signAndVerify(ctx, e.u, e.leader, e.ed, nil)
		}()
		if k%4 == 3 {
			wg.Wait()
		}
	}
	wg.Wait()

	// Which request each of the hostile peer's ceremonies belonged to, from the honest
	// party's log.
	invs := hp.Invitations()[already:]
	if len(invs) == 0 {
		t.Fatal("the hostile peer was never scheduled")
	}
	bySession := map[string]string{}
	for _, i := range e.honest {
		lines, err := readLog(c, i)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.Request != "" && l.Session != "" {
				bySession[l.Session] = l.Request
			}
		}
	}
	attempts := map[string]int{}
	for _, inv := range invs {
		req, ok := bySession[inv.Session.String()[:16]]
		if !ok {
			t.Errorf("no request found for the hostile peer's session %s", inv.Session.String()[:16])
			continue
		}
		attempts[req]++
	}
	failed := 0
	for _, o := range outs {
		if o.Err != nil {
			failed++
			t.Errorf("request %s: %s %s: %v (the hostile peer was in %d of its attempts)", o.RequestID, o.Status, o.Code, o.Err, attempts[o.RequestID])
		}
	}
	for req, k := range attempts {
		if k > 1 {
			t.Errorf("request %s drew the aborting member into %d attempts: the retry did not avoid it", req, k)
		}
	}
	t.Logf("%d requests, %d failed; the hostile peer was in %d ceremonies of %d requests", n, failed, len(invs), len(attempts))
}
