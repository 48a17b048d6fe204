package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/custos/custos/internal/api"
)

// The API's objects. They are internal/api's types (the one definition the nodes
// marshal), named here so that code outside the module can use them.
type (
	// Key is a threshold key as the API shows it.
	Key = api.Key
	// Signature is a finished signature: R, S (hex, low-S), RecoveryID and DER for
	// secp256k1; Signature (hex, 64 bytes) for Ed25519.
	Signature = api.Signature
	// RequestError is the error of a failed, blocked or denied request.
	RequestError = api.RequestError
	// Request is a keygen or sign request and its state.
	Request = api.Request
	// Member is one node of the cluster.
	Member = api.Member
	// Cluster is GET /v1/cluster.
	Cluster = api.Cluster
)

// Request statuses (API.md), as internal/api defines them.
const (
	StatusSubmitted       = api.StatusSubmitted
	StatusPendingApproval = api.StatusPendingApproval
	StatusScheduled       = api.StatusScheduled
	StatusSigning         = api.StatusSigning
	StatusSigned          = api.StatusSigned
	StatusActive          = api.StatusActive
	StatusBlocked         = api.StatusBlocked
	StatusDenied          = api.StatusDenied
	StatusFailed          = api.StatusFailed
)

// Curves a key can be on (CreateKey's curve).
const (
	CurveSecp256k1 = api.CurveSecp256k1
	CurveEd25519   = api.CurveEd25519
)

// Final reports whether a request status is final (signed, active, failed, blocked,
// denied): api.Final, for callers outside the module.
func Final(status string) bool { return api.Final(status) }

// CreateKey runs a keygen (POST /v1/keys). A 201 returns the key; a 202 (keygen still
// running after the node's wait) returns the request to poll with WaitRequest.
// idempotencyKey may be empty.
func (c *Client) CreateKey(ctx context.Context, curve string, threshold int, label string, idempotencyKey string) (*Key, *Request, error) {
	var raw json.RawMessage
	status, err := c.do(ctx, http.MethodPost, "/v1/keys", api.KeygenBody{Curve: curve, Threshold: threshold, Label: label, IdempotencyKey: idempotencyKey}, &raw)
	if err != nil {
		return nil, nil, err
	}
	switch status {
	case http.StatusAccepted:
		var r Request
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, nil, fmt.Errorf("client: decode keygen request: %w", err)
		}
		return nil, &r, nil
	case http.StatusOK, http.StatusCreated:
		var k Key
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, nil, fmt.Errorf("client: decode key: %w", err)
		}
		return &k, nil, nil
	default:
		return nil, nil, fmt.Errorf("client: unexpected HTTP %d from POST /v1/keys", status)
	}
}

// ListKeys returns all the caller's keys (GET /v1/keys, following pages).
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	return listAll[Key](ctx, c, "/v1/keys", "keys")
}

// listAll collects every item of a paged list route whose page holds them under field.
func listAll[T any](ctx context.Context, c *Client, path, field string) ([]T, error) {
	var out []T
	err := c.ListAll(ctx, path, 1000, func(data json.RawMessage) (json.RawMessage, error) {
		var page map[string]json.RawMessage
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, fmt.Errorf("client: decode %s page: %w", path, err)
		}
		var items []T
		if raw, ok := page[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("client: decode %s page: %w", path, err)
			}
		}
		out = append(out, items...)
		return page["next"], nil
	})
	return out, err
}

// GetKey returns one key (GET /v1/keys/{key_id}).
func (c *Client) GetKey(ctx context.Context, id string) (*Key, error) {
	if id == "" {
		return nil, errors.New("client: empty key id")
	}
	var k Key
	if err := c.Do(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(id), nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// Sign asks for a signature over message (POST /v1/keys/{key_id}/sign): for secp256k1 a
// 32-byte digest, for Ed25519 the raw message. derivationPath ("m/0/7") and
// idempotencyKey may be empty. It returns the request, signed (200) or still pending
// (202: poll with WaitRequest). A blocked, denied or failed request is an *APIError whose
// Request field holds the request.
func (c *Client) Sign(ctx context.Context, keyID string, message []byte, derivationPath string, idempotencyKey string) (*Request, error) {
	if keyID == "" {
		return nil, errors.New("client: empty key id")
	}
	var r Request
	body := api.SignBody{Message: hex.EncodeToString(message), DerivationPath: derivationPath, IdempotencyKey: idempotencyKey}
	if err := c.Do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(keyID)+"/sign", body, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetRequest returns a request's state (GET /v1/requests/{request_id}).
func (c *Client) GetRequest(ctx context.Context, id string) (*Request, error) {
	if id == "" {
		return nil, errors.New("client: empty request id")
	}
	var r Request
	if err := c.Do(ctx, http.MethodGet, "/v1/requests/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// WaitRequest polls a request every poll (1 s when poll <= 0) until its status is final
// (Final) or ctx ends. Each poll is a new signed request. An answer that says to come
// back later (503, e.g. cluster.unavailable while a new leader is elected, or 429) does
// not end the wait: it polls again after max(poll, Retry-After). Any other error does.
func (c *Client) WaitRequest(ctx context.Context, id string, poll time.Duration) (*Request, error) {
	if poll <= 0 {
		poll = time.Second
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var transient error
	for {
		select {
		case <-ctx.Done():
			if transient != nil {
				return nil, fmt.Errorf("client: waiting for request %s: %w (last answer: %w)", id, ctx.Err(), transient)
			}
			return nil, fmt.Errorf("client: waiting for request %s: %w", id, ctx.Err())
		case <-t.C:
		}
		r, err := c.GetRequest(ctx, id)
		var ae *APIError
		switch {
		case errors.As(err, &ae) && (ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests):
			transient = err
			t.Reset(max(poll, ae.RetryAfter))
			continue
		case err != nil:
			return nil, err
		}
		if Final(r.Status) {
			return r, nil
		}
		t.Reset(poll)
	}
}

// Cluster returns GET /v1/cluster.
func (c *Client) Cluster(ctx context.Context) (*Cluster, error) {
	var cl Cluster
	if err := c.Do(ctx, http.MethodGet, "/v1/cluster", nil, &cl); err != nil {
		return nil, err
	}
	return &cl, nil
}
