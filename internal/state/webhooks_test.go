package state

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
)

func TestWebhooksAndTheirDeliveryReports(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	sealed := bytes.Repeat([]byte{7}, 60)
	create := func(body string, s *Schedule) Result {
		return h.submit("n1", h.admin("POST", "/v1/admin/webhooks", body), s)
	}
	sched := func() *Schedule { return &Schedule{WebhookID: "wh_" + randHex(), WebhookSecret: sealed} }
	for _, c := range []struct{ body, code, detail string }{
		{`{"url":"ftp://x/","events":["*"]}`, api.CodeRequestMalformed, "http or https"},
		{`{"url":"http://169.254.169.254/","events":["*"]}`, api.CodeRequestMalformed, "never reach"},
		{`{"url":"http://[::ffff:169.254.1.1]/","events":["*"]}`, api.CodeRequestMalformed, "never reach"},
		{`{"url":"http://0.0.0.0/","events":["*"]}`, api.CodeRequestMalformed, "never reach"},
		{`{"url":"http://u:p@example.com/","events":["*"]}`, api.CodeRequestMalformed, "credentials"},
		{`{"url":"https://example.com/","events":["request.teleported"]}`, api.CodeRequestMalformed, "not an event type"},
		{`{"url":"https://example.com/","events":["*","request.signed"]}`, api.CodeRequestMalformed, "alone"},
		{`{"url":"https://example.com/","events":[]}`, api.CodeRequestMalformed, "1–32"},
		{`{"url":"https://example.com/","events":["*"],"secret":"mine"}`, api.CodeRequestMalformed, "unknown field"},
	} {
		if r := create(c.body, sched()); r.Code != c.code || !strings.Contains(r.Detail, c.detail) {
			t.Errorf("%s: %+v", c.body, r)
		}
	}
	// Without the leader's id and sealed secret: refused, nothing stored.
	if r := create(`{"url":"https://example.com/","events":["*"]}`, nil); r.Code != api.CodeClusterUnavailable {
		t.Fatalf("no schedule: %+v", r)
	}
	if r := create(`{"url":"https://example.com/","events":["*"]}`, &Schedule{WebhookID: "wh_1", WebhookSecret: sealed}); r.Code != api.CodeClusterUnavailable {
		t.Fatalf("an id of another form: %+v", r)
	}
	// A user cannot.
	if r := h.submit("n1", h.userReq("GET", "/v1/admin/webhooks", "", 0), nil); r.Code != api.CodePermDenied {
		t.Fatalf("user lists webhooks: %+v", r)
	}
	r := create(`{"url":"https://hooks.example.com/custos","events":["request.signed","key.created"],"description":"ops"}`, sched())
	if !r.OK() || r.WebhookID == "" {
		t.Fatal(r)
	}
	w := h.f.Webhook(r.WebhookID)
	if w == nil || w.Through != h.f.EventSeq() || !bytes.Equal(w.SecretCT, sealed) || w.View().Secret != "" {
		t.Fatalf("webhook: %+v", w)
	}
	h.activeKey() // events: request.submitted, key.created
	top := h.f.EventSeq()
	// The leader's report: attempts logged, the cursor moved; never past the log, never
	// back; another member's report of the leader's kind is refused only by its signature
	// check (every member may report: the FSM takes the cursor, bounded, not the events).
	rep := func(through uint64, attempts ...WebhookAttempt) Result {
		return h.reportAs("n1", "n1", TypeWebhookDelivery, &WebhookDelivery{WebhookID: w.ID, Through: through, Attempts: attempts})
	}
	if res := rep(top + 1); res.OK() {
		t.Fatal("a cursor past the log was accepted")
	}
	if res := rep(top-1, WebhookAttempt{EventSeq: top - 1, Time: h.stamp, StatusCode: 503, Error: "503 Service Unavailable", NextTry: h.stamp + 1000}); !res.OK() {
		t.Fatal(res)
	}
	if res := rep(top, WebhookAttempt{EventSeq: top, Time: h.stamp, StatusCode: 204}); !res.OK() {
		t.Fatal(res)
	}
	if res := rep(top - 1); !res.OK() {
		t.Fatal(res)
	}
	w = h.f.Webhook(w.ID)
	if w.Through != top || w.Failing != 0 {
		t.Fatalf("cursor %d (want %d), failing %d", w.Through, top, w.Failing)
	}
	log := h.f.WebhookLog(w.ID)
	if len(log) != 2 || log[0].StatusCode != 503 || log[0].NextTry == 0 || log[1].EventID != EventID(top) {
		t.Fatalf("log: %+v", log)
	}
	// The log keeps the newest attempts only.
	for i := range maxWebhookLog/maxReportAttempts + 1 {
		var as []WebhookAttempt
		for range maxReportAttempts {
			as = append(as, WebhookAttempt{EventSeq: top, Time: h.stamp, Error: fmt.Sprintf("try %d", i)})
		}
		if res := rep(top, as...); !res.OK() {
			t.Fatal(res)
		}
	}
	if got := len(h.f.WebhookLog(w.ID)); got != maxWebhookLog {
		t.Fatalf("log of %d attempts, want %d", got, maxWebhookLog)
	}
	if h.f.Webhook(w.ID).Failing == 0 {
		t.Fatal("failures not counted")
	}
	// Deleted: gone, with its log; reports about it refused.
	if res := h.submit("n1", h.admin("DELETE", "/v1/admin/webhooks/"+w.ID, ""), nil); !res.OK() {
		t.Fatal(res)
	}
	if h.f.Webhook(w.ID) != nil || len(h.f.WebhookLog(w.ID)) != 0 {
		t.Fatal("deleted webhook kept")
	}
	if res := rep(top); res.Code != api.CodeWebhookNotFound {
		t.Fatalf("report about a deleted webhook: %+v", res)
	}
}
