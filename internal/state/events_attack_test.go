package state

import (
	"bytes"
	"math"
	"testing"

	"github.com/custos/custos/internal/api"
)

// TestAttackRefusedDeliveryReportMovesNoCursor: a delivery report refused (an attempt
// names an event the log does not hold) must change nothing; a refusal does not roll
// the entry back, so the cursor must not have moved before the check.
func TestAttackRefusedDeliveryReportMovesNoCursor(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	r := h.submit("n1", h.admin("POST", "/v1/admin/webhooks", `{"url":"https://hooks.example.com/","events":["*"]}`),
		&Schedule{WebhookID: "wh_" + randHex(), WebhookSecret: bytes.Repeat([]byte{7}, 60)})
	if !r.OK() {
		t.Fatal(r)
	}
	before := h.f.Webhook(r.WebhookID).Through
	h.activeKey()
	top := h.f.EventSeq()
	res := h.reportAs("n1", "n1", TypeWebhookDelivery, &WebhookDelivery{WebhookID: r.WebhookID, Through: top,
		Attempts: []WebhookAttempt{{EventSeq: top + 100, Time: h.stamp, StatusCode: 204}}})
	if res.Code != api.CodeRequestConflict {
		t.Fatalf("report: %+v", res)
	}
	if w := h.f.Webhook(r.WebhookID); w.Through != before {
		t.Fatalf("a refused report moved the cursor from %d to %d", before, w.Through)
	}
}

// TestAttackEventsAfterTheLastSeq: after = the largest seq must not wrap around to the
// start of the log (a stream resumed with Last-Event-ID 18446744073709551615 would serve
// the oldest events again and again).
func TestAttackEventsAfterTheLastSeq(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	h.activeKey()
	if h.f.EventSeq() == 0 {
		t.Fatal("no events")
	}
	if evs, last := h.f.Events(0, true, math.MaxUint64, 10, 100); len(evs) != 0 || last != math.MaxUint64 {
		t.Fatalf("after the last seq: %d events, last %d", len(evs), last)
	}
}
