package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/webhook"
)

// Wiring of webhook delivery (internal/webhook) to this node's state and raft: adapters
// only.

// webhookKeyring reads the cluster's webhook key (webhooks.secret_key_file); nil when the
// node has none (creating a webhook is then refused, and this node cannot deliver).
func webhookKeyring(cfg *config.Config) (*webhook.Keyring, error) {
	if cfg.Webhooks.SecretKeyFile == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(cfg.Webhooks.SecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("webhooks.secret_key_file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("webhooks.secret_key_file must hold 64 hex characters (32 bytes)")
	}
	kr, err := webhook.NewKeyring(key)
	if err != nil {
		return nil, fmt.Errorf("webhooks.secret_key_file: %w", err)
	}
	return kr, nil
}

// sealWebhookSecret makes a new webhook's secret and seals it (the leader, at stamping).
func sealWebhookSecret(kr *webhook.Keyring) func(id string) ([]byte, error) {
	if kr == nil {
		return nil
	}
	return func(id string) ([]byte, error) {
		secret, err := webhook.NewSecret(rand.Reader)
		if err != nil {
			return nil, err
		}
		return kr.Seal(id, secret, rand.Reader)
	}
}

// openWebhookSecret opens a new webhook's secret for the answer to its creation.
func openWebhookSecret(kr *webhook.Keyring) func(id string, sealed []byte) (string, error) {
	if kr == nil {
		return nil
	}
	return func(id string, sealed []byte) (string, error) {
		secret, err := kr.Open(id, sealed)
		if err != nil {
			return "", err
		}
		return webhook.FormatSecret(secret), nil
	}
}

// webhookState is the deliverer's view of the state: the webhooks and the event log.
type webhookState struct{ f *state.FSM }

func (s webhookState) Webhooks() []webhook.Hook {
	var out []webhook.Hook
	for _, w := range s.f.Webhooks() {
		out = append(out, webhook.Hook{ID: w.ID, URL: w.URL, Events: w.Events, SecretCT: w.SecretCT, Through: w.Through})
	}
	return out
}

func (s webhookState) Events(after uint64, limit int) ([]api.Event, uint64) {
	recs, last := s.f.Events(0, true, after, limit, limit)
	out := make([]api.Event, len(recs))
	for i := range recs {
		out[i] = recs[i].View()
	}
	return out, last
}

// webhookReporter commits the deliverer's reports as the leader's signed reports.
type webhookReporter struct{ r *raftnode.Node }

func (w webhookReporter) Delivered(ctx context.Context, rep webhook.Report) error {
	d := &state.WebhookDelivery{WebhookID: rep.WebhookID, Through: rep.Through}
	for _, a := range rep.Attempts {
		at := state.WebhookAttempt{EventSeq: a.EventSeq, Time: a.Time.UnixMilli(), StatusCode: a.StatusCode, Error: a.Error}
		if !a.NextTry.IsZero() {
			at.NextTry = a.NextTry.UnixMilli()
		}
		d.Attempts = append(d.Attempts, at)
	}
	res, err := w.r.Report(ctx, state.TypeWebhookDelivery, d)
	if err != nil {
		return err
	}
	if !res.OK() {
		return fmt.Errorf("delivery report refused: %s: %s", res.Code, res.Detail)
	}
	return nil
}

// newDeliverer builds the webhook deliverer. It acts only while this node leads and
// trusts its state: a leader whose state is a snapshot not yet vouched for (or that
// diverged) would sign, with the cluster's webhook key, events the log never held.
func (n *Node) newDeliverer(kr *webhook.Keyring) *webhook.Deliverer {
	timeout := n.cfg.Webhooks.Timeout.Duration
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	guard := webhook.Guard{AllowLoopback: n.cfg.Webhooks.AllowLoopback, AllowLinkLocal: n.cfg.Webhooks.AllowLinkLocal}
	return webhook.New(webhook.Config{
		State: webhookState{n.fsm}, Reporter: webhookReporter{n.raft}, Keyring: kr,
		Client: webhook.NewHTTPClient(guard, timeout), IsLeader: func() bool { return n.isLeader() && n.vouch.Blocked() == "" }, Now: n.now, Logger: n.log.With("component", "webhooks"),
	})
}
