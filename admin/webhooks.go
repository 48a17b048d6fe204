package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/custos/custos/internal/api"
)

// Webhooks (API.md "Events"): the admin subscribes HTTP receivers to the cluster's events,
// delivered as Standard Webhooks (a receiver checks each delivery with
// client.VerifyWebhook and the webhook's secret). The objects are internal/api's.
type (
	// WebhookBody is CreateWebhook's body: the receiver's URL, the event types it gets
	// (client.EventTypes, or ["*"] for all) and an optional description.
	WebhookBody = api.WebhookBody
	// Webhook is a webhook as the API shows it. Secret ("whsec_<base64>") is set only in
	// CreateWebhook's answer: the node never shows it again.
	Webhook = api.Webhook
	// Delivery is one delivery attempt of an event to a webhook: its HTTP status code or
	// error, and when a failed one is tried again.
	Delivery = api.Delivery
)

// WebhookAllEvents is the Events entry that subscribes a webhook to every event type,
// those added later included.
const WebhookAllEvents = "*"

func webhookPath(id, suffix string) (string, error) {
	if id == "" {
		return "", errors.New("admin: empty webhook id")
	}
	return "/v1/admin/webhooks/" + url.PathEscape(id) + suffix, nil
}

// CreateWebhook creates a webhook (POST /v1/admin/webhooks) and returns it with its
// Secret, which only this answer holds: give it to the receiver, which needs it to check
// the deliveries' signatures. The node validates the URL and the event types (400
// request.malformed naming the field).
func (a *Admin) CreateWebhook(ctx context.Context, body WebhookBody) (*Webhook, error) {
	if body.URL == "" {
		return nil, errors.New("admin: empty webhook url")
	}
	if len(body.Events) == 0 {
		return nil, errors.New(`admin: a webhook needs event types (or ["*"] for all)`)
	}
	var w Webhook
	if err := a.c.Do(ctx, http.MethodPost, "/v1/admin/webhooks", body, &w); err != nil {
		return nil, err
	}
	if w.WebhookID == "" {
		return nil, errors.New("admin: node answered without a webhook_id")
	}
	return &w, nil
}

// ListWebhooks returns every webhook, without their secrets (GET /v1/admin/webhooks);
// empty, not nil, when there is none.
func (a *Admin) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	var out api.WebhookList
	if err := a.c.Do(ctx, http.MethodGet, "/v1/admin/webhooks", nil, &out); err != nil {
		return nil, err
	}
	if out.Webhooks == nil {
		out.Webhooks = []Webhook{}
	}
	return out.Webhooks, nil
}

// DeleteWebhook deletes a webhook (DELETE /v1/admin/webhooks/{webhook_id}): no event is
// delivered to it any more.
func (a *Admin) DeleteWebhook(ctx context.Context, id string) error {
	p, err := webhookPath(id, "")
	if err != nil {
		return err
	}
	return a.c.Do(ctx, http.MethodDelete, p, nil, nil)
}

// WebhookDeliveries returns a webhook's latest delivery attempts, oldest first (GET
// /v1/admin/webhooks/{webhook_id}/deliveries); empty, not nil, when there is none.
func (a *Admin) WebhookDeliveries(ctx context.Context, id string) ([]Delivery, error) {
	p, err := webhookPath(id, "/deliveries")
	if err != nil {
		return nil, err
	}
	var out api.DeliveryList
	if err := a.c.Do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, err
	}
	if out.Deliveries == nil {
		out.Deliveries = []Delivery{}
	}
	return out.Deliveries, nil
}
