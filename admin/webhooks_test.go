package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

const (
	whJSON = `{"webhook_id":"wh_1","url":"https://hooks.example.com/custos","events":["request.signed","approval.decided"],` +
		`"description":"treasury bot","created_at":"2026-01-02T03:04:05Z","delivered_through":0}`
	whCreatedJSON = `{"webhook_id":"wh_1","url":"https://hooks.example.com/custos","events":["request.signed","approval.decided"],` +
		`"description":"treasury bot","secret":"whsec_c2VjcmV0IGtleSBieXRlcw==","created_at":"2026-01-02T03:04:05Z","delivered_through":0}`
)

func TestWebhookAdmin(t *testing.T) {
	body := WebhookBody{URL: "https://hooks.example.com/custos", Events: []string{api.EventRequestSigned, api.EventApprovalDecided}, Description: "treasury bot"}
	wire := `{"url":"https://hooks.example.com/custos","events":["request.signed","approval.decided"],"description":"treasury bot"}`
	a, n := govAdmin(t,
		govCall{"POST /v1/admin/webhooks", wire, 201, whCreatedJSON},
		govCall{"POST /v1/admin/webhooks", `{"url":"https://h.example","events":["*"]}`, 201,
			`{"webhook_id":"wh_2","url":"https://h.example","events":["*"],"secret":"whsec_AAAA","created_at":"2026-01-02T03:04:05Z","delivered_through":0}`},
		govCall{"POST /v1/admin/webhooks", `{"url":"ftp://x","events":["*"]}`, 400,
			`{"type":"about:blank","title":"malformed request","status":400,"code":"request.malformed","detail":"url: must be an http or https URL","request_id":"rq_test"}`},
		govCall{"POST /v1/admin/webhooks", `{"url":"https://h.example","events":["*"]}`, 201, `{"url":"https://h.example"}`},
		govCall{"GET /v1/admin/webhooks", "", 200, `{"webhooks":[` + whJSON + `,` +
			`{"webhook_id":"wh_2","url":"https://h.example","events":["*"],"created_at":"2026-01-02T03:04:05Z","delivered_through":41,"failing":3}]}`},
		govCall{"GET /v1/admin/webhooks", "", 200, `{"webhooks":null}`},
		govCall{"GET /v1/admin/webhooks/wh_2/deliveries", "", 200, `{"deliveries":[` +
			`{"event_id":"evt_40","seq":40,"time":"2026-01-02T03:04:05Z","status_code":204},` +
			`{"event_id":"evt_41","seq":41,"time":"2026-01-02T03:05:05Z","status_code":500,"error":"HTTP 500","next_try":"2026-01-02T03:06:05Z"}]}`},
		govCall{"GET /v1/admin/webhooks/wh%2F3/deliveries", "", 200, `{"deliveries":[]}`},
		govCall{"DELETE /v1/admin/webhooks/wh_2", "", 204, ""},
		govCall{"DELETE /v1/admin/webhooks/wh_2", "", 404, `{"code":"webhook.not_found","status":404,"detail":"no such webhook"}`},
	)
	ctx := context.Background()

	w, err := a.CreateWebhook(ctx, body)
	if err != nil || w.WebhookID != "wh_1" || w.Secret != "whsec_c2VjcmV0IGtleSBieXRlcw==" || len(w.Events) != 2 || w.Description != "treasury bot" ||
		!w.CreatedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("CreateWebhook: %+v %v", w, err)
	}
	if w, err = a.CreateWebhook(ctx, WebhookBody{URL: "https://h.example", Events: []string{WebhookAllEvents}}); err != nil || w.WebhookID != "wh_2" || w.Events[0] != "*" {
		t.Fatalf("CreateWebhook of every event: %+v %v", w, err)
	}
	_, err = a.CreateWebhook(ctx, WebhookBody{URL: "ftp://x", Events: []string{"*"}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != api.CodeRequestMalformed || !strings.HasPrefix(ae.Detail, "url:") {
		t.Fatalf("CreateWebhook refused: %v", err)
	}
	if w, err = a.CreateWebhook(ctx, WebhookBody{URL: "https://h.example", Events: []string{"*"}}); err == nil || !strings.Contains(err.Error(), "webhook_id") {
		t.Fatalf("CreateWebhook answered without an id: %+v %v", w, err)
	}
	ws, err := a.ListWebhooks(ctx)
	if err != nil || len(ws) != 2 || ws[0].Secret != "" || ws[1].DeliveredThrough != 41 || ws[1].Failing != 3 {
		t.Fatalf("ListWebhooks: %+v %v", ws, err)
	}
	if ws, err = a.ListWebhooks(ctx); err != nil || ws == nil || len(ws) != 0 {
		t.Fatalf("ListWebhooks of none: %#v %v", ws, err)
	}
	ds, err := a.WebhookDeliveries(ctx, "wh_2")
	if err != nil || len(ds) != 2 || ds[0].StatusCode != 204 || ds[0].NextTry != nil || ds[1].Error != "HTTP 500" || ds[1].NextTry == nil ||
		!ds[1].NextTry.Equal(time.Date(2026, 1, 2, 3, 6, 5, 0, time.UTC)) {
		t.Fatalf("WebhookDeliveries: %+v %v", ds, err)
	}
	if ds, err = a.WebhookDeliveries(ctx, "wh/3"); err != nil || ds == nil || len(ds) != 0 {
		t.Fatalf("WebhookDeliveries of an escaped id: %#v %v", ds, err)
	}
	if err := a.DeleteWebhook(ctx, "wh_2"); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	if err := a.DeleteWebhook(ctx, "wh_2"); client.CodeOf(err) != api.CodeWebhookNotFound {
		t.Fatalf("DeleteWebhook of an unknown webhook: %v", err)
	}

	// Refused before any call.
	for name, err := range map[string]error{
		"CreateWebhook without url":    func() error { _, err := a.CreateWebhook(ctx, WebhookBody{Events: []string{"*"}}); return err }(),
		"CreateWebhook without events": func() error { _, err := a.CreateWebhook(ctx, WebhookBody{URL: "https://h.example"}); return err }(),
		"DeleteWebhook":                a.DeleteWebhook(ctx, ""),
		"WebhookDeliveries":            func() error { _, err := a.WebhookDeliveries(ctx, ""); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.steps) > 0 {
		t.Errorf("%d scripted calls not made, first %s", len(n.steps), n.steps[0].call)
	}
}
