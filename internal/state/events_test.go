package state

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
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
