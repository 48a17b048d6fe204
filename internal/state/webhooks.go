package state

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/statedb"
)

// Webhooks (API.md "Events"): the admin's subscriptions to the event log, delivered by the
// leader (internal/webhook) from a replicated cursor: each webhook's Through is the seq up
// to which its events were delivered (or skipped, not subscribed), moved only by the
// leader's signed report after the receiver answered 2xx, so that a new leader goes on
// where the old one stopped (duplicates possible, losses not). The secret is in the state
// only sealed under the cluster's webhook key (webhooks.secret_key_file, the same on every
// node), chosen and sealed by the leader when it stamps the creation: never in a snapshot,
// log line or answer in clear, except the answer to its creation.

const (
	tWebhook    = "webhook"     // webhook id → Webhook
	tWebhookLog = "webhook.log" // (webhook id, n) → WebhookAttempt
	// MaxWebhooks bounds the webhooks of a cluster; maxWebhookLog the attempts each keeps
	// (the newest); maxReportAttempts the attempts one report may carry.
	MaxWebhooks       = 32
	maxWebhookLog     = 200
	maxReportAttempts = 64
	maxWebhookURL     = 2048
)

// TypeWebhookDelivery is the leader's report of delivery attempts.
const TypeWebhookDelivery = "webhook.delivery"

// Webhook is a webhook as the state keeps it.
type Webhook struct {
	ID          string   `json:"id"`
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description,omitempty"`
	// SecretCT is the secret sealed under the cluster's webhook key (internal/webhook).
	SecretCT  []byte `json:"secret_ct"`
	CreatedAt int64  `json:"created_at_ms"`
	// Through is the seq of the last event delivered or skipped; Failing the failed
	// attempts since the last success; LogNext the last attempt's number.
	Through uint64 `json:"through"`
	Failing int    `json:"failing,omitempty"`
	LogNext uint64 `json:"log_next,omitempty"`
}

// View is the webhook as the API shows it (never its secret).
func (w *Webhook) View() api.Webhook {
	return api.Webhook{WebhookID: w.ID, URL: w.URL, Events: w.Events, Description: w.Description,
		CreatedAt: secs(w.CreatedAt), DeliveredThrough: w.Through, Failing: w.Failing}
}

// WebhookAttempt is one delivery attempt.
type WebhookAttempt struct {
	N          uint64 `json:"n"`
	EventSeq   uint64 `json:"event_seq"`
	EventID    string `json:"event_id"`
	Time       int64  `json:"time_ms"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
	NextTry    int64  `json:"next_try_ms,omitempty"`
}

// View is the attempt as the API shows it.
func (d *WebhookAttempt) View() api.Delivery {
	v := api.Delivery{EventID: d.EventID, Seq: d.EventSeq, Time: millis(d.Time), StatusCode: d.StatusCode, Error: d.Error}
	if d.NextTry != 0 {
		t := millis(d.NextTry)
		v.NextTry = &t
	}
	return v
}

// WebhookDelivery is the leader's report: the cursor it delivered through and its
// attempts.
type WebhookDelivery struct {
	WebhookID string           `json:"webhook_id"`
	Through   uint64           `json:"through"`
	Attempts  []WebhookAttempt `json:"attempts,omitempty"`
}

// CheckWebhookURL is the check every node makes of a webhook's URL when it is created: an
// http(s) URL with a host and no credentials, and no literal address a node must never
// reach (link-local, cloud metadata, unspecified, multicast). It resolves nothing (Apply
// is deterministic): where a host name leads is checked by the leader at each delivery,
// where loopback, too, is refused unless its configuration allows it.
func CheckWebhookURL(raw string) error {
	if raw == "" || len(raw) > maxWebhookURL || !utf8.ValidString(raw) {
		return fmt.Errorf("url must be 1–%d bytes", maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url does not parse: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url must be http or https")
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("url has no host")
	}
	if u.User != nil {
		return fmt.Errorf("url must not carry credentials")
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		ip = ip.Unmap()
		switch {
		case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
			return fmt.Errorf("url names %s, an address webhooks never reach (link-local, metadata, unspecified or multicast)", ip)
		case ip == netip.MustParseAddr("fd00:ec2::254"), ip == netip.MustParseAddr("100.100.100.200"):
			return fmt.Errorf("url names %s, a cloud metadata address", ip)
		}
	}
	return nil
}

func (a *applier) webhook(id string) *Webhook { return get[Webhook](a.t, keyStr(tWebhook, id)) }

func webhookLogKey(id string, n uint64) []byte {
	return statedb.AppendUint64(statedb.AppendString(key(tWebhookLog), id), n)
}

// webhookOp serves the admin's webhook routes.
func (a *applier) webhookOp(c *Call) Result {
	switch c.Op {
	case OpWebhookList:
		return Result{}
	case OpWebhookDelete, OpWebhookDeliveries:
		w := a.webhook(c.WebhookID)
		if w == nil {
			return refuse(api.CodeWebhookNotFound, "no such webhook")
		}
		if c.Op == OpWebhookDelete {
			a.t.del(keyStr(tWebhook, w.ID))
			prefix := statedb.AppendString(key(tWebhookLog), w.ID)
			a.t.delRange(prefix, statedb.PrefixEnd(prefix))
			a.m.Webhooks--
		}
		return Result{WebhookID: w.ID}
	}
	b := c.Webhook
	if b == nil {
		return refuse(api.CodeRequestMalformed, "no webhook in the request")
	}
	if err := CheckWebhookURL(b.URL); err != nil {
		return refuse(api.CodeRequestMalformed, err.Error())
	}
	if len(b.Events) == 0 || len(b.Events) > 32 {
		return refuse(api.CodeRequestMalformed, `events must list 1–32 event types, or ["*"]`)
	}
	for i, e := range b.Events {
		if (e != "*" && !slices.Contains(api.EventTypes(), e)) || slices.Contains(b.Events[:i], e) || (e == "*" && len(b.Events) > 1) {
			return refuse(api.CodeRequestMalformed, fmt.Sprintf("events[%d]: %q is not an event type (or is repeated; \"*\" stands alone); the types: %s", i, e, strings.Join(api.EventTypes(), ", ")))
		}
	}
	if len(b.Description) > 256 || !utf8.ValidString(b.Description) {
		return refuse(api.CodeRequestMalformed, "description must be at most 256 bytes of UTF-8")
	}
	if a.m.Webhooks >= MaxWebhooks {
		return refuse(api.CodeRequestConflict, fmt.Sprintf("at most %d webhooks; delete one first", MaxWebhooks))
	}
	s := c.Schedule
	if c.Unschedulable != "" {
		return refuse(api.CodeClusterUnavailable, c.Unschedulable)
	}
	if s == nil || !validLeaderID("wh_", s.WebhookID) || len(s.WebhookSecret) < 32 || len(s.WebhookSecret) > 128 {
		return refuse(api.CodeClusterUnavailable, "the leader gave the webhook no id or sealed secret; retry")
	}
	if a.webhook(s.WebhookID) != nil {
		return refuse(api.CodeClusterUnavailable, "webhook id collision; retry")
	}
	w := &Webhook{ID: s.WebhookID, URL: b.URL, Events: slices.Clone(b.Events), Description: b.Description,
		SecretCT: slices.Clone(s.WebhookSecret), CreatedAt: a.stamp, Through: a.m.EventSeq}
	a.t.put(keyStr(tWebhook, w.ID), w)
	a.m.Webhooks++
	return Result{WebhookID: w.ID}
}

// webhookDelivery applies the leader's delivery report: the attempts go into the
// webhook's log, and its cursor moves forward (never back, never past the log). The
// leader reports what the receivers answered; it cannot change an event.
func (a *applier) webhookDelivery(d *WebhookDelivery, actor string) Result {
	w := a.webhook(d.WebhookID)
	if w == nil {
		return refuse(api.CodeWebhookNotFound, "no such webhook (deleted?)")
	}
	if d.Through > a.m.EventSeq {
		return refuse(api.CodeRequestConflict, fmt.Sprintf("the report names events the log does not hold (%d > %d)", d.Through, a.m.EventSeq))
	}
	if len(d.Attempts) > maxReportAttempts {
		return refuse(api.CodeRequestMalformed, fmt.Sprintf("at most %d attempts a report", maxReportAttempts))
	}
	// Every check before any change: a refused report changes nothing (a refusal does not
	// roll the entry back).
	for _, at := range d.Attempts {
		if at.EventSeq > a.m.EventSeq {
			return refuse(api.CodeRequestConflict, "an attempt names an event the log does not hold")
		}
	}
	if d.Through > w.Through {
		w.Through = d.Through
	}
	for _, at := range d.Attempts {
		w.LogNext++
		at.N = w.LogNext
		at.EventID = EventID(at.EventSeq)
		at.Error = truncate(at.Error, 256)
		a.t.setRaw(webhookLogKey(w.ID, at.N), mustJSON(&at))
		if w.LogNext > maxWebhookLog {
			a.t.delRaw(webhookLogKey(w.ID, w.LogNext-maxWebhookLog))
		}
		if at.Error != "" {
			w.Failing++
		} else {
			w.Failing = 0
		}
	}
	return Result{WebhookID: w.ID}
}

// Webhooks returns copies of every webhook.
func (f *FSM) Webhooks() []Webhook {
	out := []Webhook{}
	f.read(func(r readKV, _ *meta) {
		scanRecords(r, key(tWebhook), statedb.PrefixEnd(key(tWebhook)), func(v []byte) bool {
			var w Webhook
			decodeRecord(v, &w)
			out = append(out, w)
			return true
		})
	})
	return out
}

// Webhook returns a copy of a webhook, or nil.
func (f *FSM) Webhook(id string) *Webhook {
	var w *Webhook
	f.read(func(r readKV, _ *meta) { w, _ = load[Webhook](r, keyStr(tWebhook, id)) })
	return w
}

// WebhookLog returns a webhook's newest attempts, oldest first.
func (f *FSM) WebhookLog(id string) []WebhookAttempt {
	out := []WebhookAttempt{}
	f.read(func(r readKV, _ *meta) {
		prefix := statedb.AppendString(key(tWebhookLog), id)
		scanRecords(r, prefix, statedb.PrefixEnd(prefix), func(v []byte) bool {
			var at WebhookAttempt
			decodeRecord(v, &at)
			out = append(out, at)
			return true
		})
	})
	return out
}
