package state

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state/oracle"
)

func eventTypes(evs []EventRecord) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestEventLogFollowsTheChanges(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	alice := h.user
	start := h.f.EventSeq()
	// A sign waiting for approval, approved, run, signed.
	res := h.sign(k, digest)
	h.decide(ps[0], res.ApprovalID, "approve")
	h.decide(ps[1], res.ApprovalID, "approve")
	h.release(res.RequestID, h.nodes[:2])
	r := h.f.Request(res.RequestID)
	h.reportAs("n1", "n1", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signature: Signature{Sig: []byte("good")}})
	// One denied, one blocked.
	res2 := h.sign(k, digest)
	h.decide(ps[2], res2.ApprovalID, "deny")
	h.policy(fmt.Sprintf(`{"name":"freeze","activity":"sign","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, k.ID))
	res3 := h.sign(k, digest)
	if res3.Code != api.CodePolicyBlocked {
		t.Fatal(res3)
	}
	all, _ := h.f.Events(0, true, start, 1000, 100000)
	want := []string{
		api.EventRequestSubmitted, api.EventRequestPendingApproval, api.EventApprovalDecided, api.EventApprovalDecided,
		api.EventRequestApproved, api.EventRequestSigned,
		api.EventRequestSubmitted, api.EventRequestPendingApproval, api.EventApprovalDecided, api.EventRequestDenied,
		api.EventPolicyChanged, api.EventRequestSubmitted, api.EventRequestBlocked,
	}
	if got := eventTypes(all); !slices.Equal(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	for i, e := range all {
		if e.Seq != start+uint64(i)+1 || e.Time == 0 {
			t.Fatalf("event %d: seq %d time %d", i, e.Seq, e.Time)
		}
		if v := e.View(); v.ID != EventID(e.Seq) || strings.Contains(fmt.Sprint(v.Data), "Bearer") {
			t.Fatalf("view: %+v", v)
		}
	}
	// Alice sees her requests' events and the decisions on them, not the policy change;
	// an approver sees the approval's events; a stranger nothing.
	mine, _ := h.f.Events(alice, false, start, 1000, 100000)
	if len(mine) != len(all)-1 || slices.Contains(eventTypes(mine), api.EventPolicyChanged) {
		t.Fatalf("alice sees %v", eventTypes(mine))
	}
	bob, _ := h.f.Events(ps[0].id, false, start, 1000, 100000)
	if len(bob) == 0 || slices.Contains(eventTypes(bob), api.EventRequestBlocked) {
		t.Fatalf("an approver sees %v", eventTypes(bob))
	}
	stranger := h.newPerson("eve", PermKeysCreate)
	if evs, _ := h.f.Events(stranger.id, false, start, 1000, 100000); len(evs) != 0 {
		t.Fatalf("a stranger sees %v", eventTypes(evs))
	}
	// Paging: limit and scan bounds, last tells where to go on.
	page, last := h.f.Events(0, true, start, 3, 100000)
	if len(page) != 3 || last != start+3 {
		t.Fatalf("page of 3: %d, last %d", len(page), last)
	}
	page, last = h.f.Events(stranger.id, false, start, 3, 5)
	if len(page) != 0 || last != start+5 {
		t.Fatalf("a scan of 5 for a stranger: %d, last %d", len(page), last)
	}
}

func TestEventsKeptForTheirRetention(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	h.activeKey()
	if h.f.EventSeq() == 0 || h.f.OldestEvent() == 0 {
		t.Fatal("no events")
	}
	if r := h.submit("n1", h.admin("PUT", "/v1/admin/retention", `{"events_s":3600}`), nil); !r.OK() {
		t.Fatal(r)
	}
	if got := h.f.Retention().EventsS; got != 3600 {
		t.Fatalf("events_s %d", got)
	}
	if r := h.submit("n1", h.admin("PUT", "/v1/admin/retention", `{"events_s":60}`), nil); r.Code != api.CodeRequestMalformed {
		t.Fatalf("events_s below an hour: %+v", r)
	}
	newest := h.f.EventSeq()
	h.stamp += 3600_000 + 1
	h.submit("n1", h.userReq("GET", "/v1/keys", "", 0), nil)
	if old := h.f.OldestEvent(); old != 0 && old <= newest {
		t.Fatalf("events older than an hour kept: oldest %d, newest before %d", old, newest)
	}
}

// TestUpgradedNodesAgreeWhateverTheirSnapshots: nodes of a cluster older than the event
// log upgrade from their own old snapshots, taken at different entries, and replay the
// log after them. Had this binary recorded events for the old entries it replays, each
// node's event log would begin where its snapshot ended and the nodes' states would differ
// (their signed checkpoints too, so they would stop signing); events start at the entry
// that turns them on, the same on every node.
func TestUpgradedNodesAgreeWhateverTheirSnapshots(t *testing.T) {
	h := newSignedHarnessEvents(t, 3, 2, false)
	k := h.activeKey()
	for i := range 6 {
		if res := h.sign(k, fmt.Sprintf("%064x", i+1)); !res.OK() {
			t.Fatal(res)
		}
	}
	log := h.log
	// The leader of the upgraded cluster turns the event log on, then a signing follows.
	h.apply(TypeUpgrade, &Upgrade{Events: true})
	h.sign(k, strings.Repeat("cd", 32))
	tail := h.log[len(log):]
	var hashes []string
	for _, at := range []int{len(log) / 3, len(log) - 2} {
		o := oracle.NewFSM(oracleOK{}, h.f.authn, nil)
		for _, l := range log[:at] {
			o.Apply(l)
		}
		snap, err := o.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var s sink
		if err := snap.Persist(&s); err != nil {
			t.Fatal(err)
		}
		g := openTestFSM(t, okVerifier{}, h.f.authn, nil)
		// As a node upgrading converts its own newest snapshot (the old format).
		if err := g.RestoreLocal(io.NopCloser(bytes.NewReader(s.Bytes()))); err != nil {
			t.Fatal(err)
		}
		for _, l := range append(slices.Clone(log[at:]), tail...) {
			g.Apply(l)
		}
		if g.Halted() != "" {
			t.Fatal(g.Halted())
		}
		_, hash := g.Hash()
		hashes = append(hashes, hash)
		evs, _ := g.Events(0, true, 0, 100, 1000)
		if len(evs) == 0 || evs[0].Type != api.EventRequestSubmitted {
			t.Fatalf("events after the upgrade entry: %+v", evs)
		}
	}
	if hashes[0] != hashes[1] {
		t.Fatalf("nodes upgraded from snapshots at different entries disagree: %s vs %s", hashes[0], hashes[1])
	}
}
