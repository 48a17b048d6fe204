//go:build linux

package hostile

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/protocol"
)

// pendingFlood: a member sends one tiny message for each of 64 sessions that do not exist.
// Honest nodes hold messages for sessions that have not started yet (a committee member's
// first messages routinely arrive before the receiver applied the schedule); that holding
// area must not be one that a single member can fill for everybody. Ceremonies between
// the two honest nodes must keep working and no honest message may be dropped as
// pending_full. It must run last on its cluster: the junk is held for 30 s.
func pendingFlood(ctx context.Context, t *testing.T, e *env) {
	c, hp := e.c, e.hp
	hp.SetActs(actGarbage)

	// Fill the hold area: protocol.DefaultMaxSessions sessions, one message each. The
	// messages live for protocol.DefaultPendingTTL (30 s), longer than the signing below.
	for _, i := range e.honest {
		for range protocol.DefaultMaxSessions {
			hp.sendMsg(c.NodeID(i), &protocol.Message{Session: randomSession(), Kind: protocol.MsgTSS, Payload: []byte{1}})
		}
	}
	// One more proves the area is full (the hostile peer's own message is refused).
	base := map[int]map[string]float64{}
	for _, i := range e.honest {
		m, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		hp.sendMsg(c.NodeID(i), &protocol.Message{Session: randomSession(), Kind: protocol.MsgTSS, Payload: []byte{1}})
		base[i] = waitDrops(ctx, t, c, i, m, "pending_full", 1)
	}

	// Sign through the non-leader: the committee is {leader, other}, two honest nodes.
	// Bursts of concurrent requests: the leader's first messages then often reach the
	// other node before it has applied the schedule.
	const n, burst = 16, 4
	var wg sync.WaitGroup
	outs := make([]signOutcome, n)
	start := time.Now()
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[k] = signAndVerify(ctx, e.u, e.other, e.ed, nil)
		}()
		if k%burst == burst-1 {
			time.Sleep(300 * time.Millisecond)
		}
	}
	wg.Wait()
	// An attempt between two honest nodes must not fail: find every ceremony failure the
	// honest nodes logged for these requests.
	lost := map[string]int{}
	for _, i := range e.honest {
		lines, err := readLog(c, i)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.Msg == "ceremony failed" && l.Request != "" {
				lost[l.Request]++
			}
		}
	}
	failed := 0
	for _, o := range outs {
		if o.Err != nil {
			failed++
			t.Errorf("sign via %s (request %s): %s %s: %v", c.NodeID(o.Entry), o.RequestID, o.Status, o.Code, o.Err)
		} else if lost[o.RequestID] > 0 {
			t.Errorf("sign via %s (request %s) between two honest nodes lost an attempt (%d ceremony failures logged)", c.NodeID(o.Entry), o.RequestID, lost[o.RequestID])
		}
	}
	t.Logf("%d/%d honest-committee signs (leader %s, entry %s) failed under the flood (%v)", failed, n, c.NodeID(e.leader), c.NodeID(e.other), time.Since(start).Round(time.Millisecond))
	for _, i := range e.honest {
		now, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		d := diff(now, base[i])
		t.Logf("%s drops while signing: %v", c.NodeID(i), d)
		if d["pending_full"] > 0 {
			t.Errorf("%s dropped %v honest ceremony messages as pending_full: one member's junk filled the hold area of not-yet-started sessions", c.NodeID(i), d["pending_full"])
		}
	}
}
