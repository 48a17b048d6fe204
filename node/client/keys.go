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
)

// Key is a threshold key as the API shows it.
type Key struct {
	KeyID     string `json:"key_id"`
	Label     string `json:"label"`
	Curve     string `json:"curve"`
	Threshold int    `json:"threshold"`
	Parties   int    `json:"parties"`
	// PublicKey is hex: 33-byte compressed secp256k1 or 32-byte Ed25519.
	PublicKey string    `json:"public_key"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	// ChainCode is the BIP32 chain code (hex) of secp256k1 keys, for non-hardened
	// derivation.
	ChainCode string `json:"chain_code,omitempty"`
	// PreParamsInline (keygen answers only) lists the nodes that had no ECDSA
	// pre-parameters ready and generated them during the keygen.
	PreParamsInline []string `json:"preparams_inline,omitempty"`
}

// Signature is a finished signature: R, S (hex, low-S), RecoveryID and DER for
// secp256k1; Signature (hex, 64 bytes) for Ed25519.
type Signature struct {
	R          string `json:"r,omitempty"`
	S          string `json:"s,omitempty"`
	RecoveryID *int   `json:"recovery_id,omitempty"`
	DER        string `json:"der,omitempty"`
	Signature  string `json:"signature,omitempty"`
}

// RequestError is the error of a failed, blocked or denied request.
type RequestError struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Request is a keygen, sign or delete request and its state.
type Request struct {
	RequestID string    `json:"request_id"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is zero when the node does not report it.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Message is the hex message of a sign request.
	Message        string `json:"message,omitempty"`
	DerivationPath string `json:"derivation_path,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// SessionID is the MPC session of the request's current attempt (for log correlation).
	SessionID string        `json:"session_id,omitempty"`
	Signature *Signature    `json:"signature,omitempty"`
	Key       *Key          `json:"key,omitempty"`
	Error     *RequestError `json:"error,omitempty"`
	// PreParamsInline (keygen) lists the nodes that generated ECDSA pre-parameters
	// during the keygen because their pool was empty.
	PreParamsInline []string `json:"preparams_inline,omitempty"`
}

// Request statuses (API.md).
const (
	StatusSubmitted       = "submitted"
	StatusPendingApproval = "pending_approval"
	StatusScheduled       = "scheduled"
	StatusSigning         = "signing"
	StatusSigned          = "signed"
	StatusActive          = "active"
	StatusBlocked         = "blocked"
	StatusDenied          = "denied"
	StatusFailed          = "failed"
)

// Final reports whether a request status is final (signed, active, failed, blocked,
// denied).
func Final(status string) bool {
	switch status {
	case StatusSigned, StatusActive, StatusFailed, StatusBlocked, StatusDenied:
		return true
	}
	return false
}

// Member is one node of the cluster.
type Member struct {
	ID      string `json:"id"`
	API     string `json:"api"`
	PeerID  string `json:"peer_id"`
	Healthy bool   `json:"healthy"`
	Leader  bool   `json:"leader"`
}

// Cluster is GET /v1/cluster.
type Cluster struct {
	Name      string   `json:"name"`
	Threshold int      `json:"threshold"`
	Parties   int      `json:"parties"`
	Leader    string   `json:"leader"`
	Members   []Member `json:"members"`
}

type keygenBody struct {
	Curve          string `json:"curve"`
	Threshold      int    `json:"threshold"`
	Label          string `json:"label,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

type signBody struct {
	Message        string `json:"message"`
	DerivationPath string `json:"derivation_path,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// CreateKey runs a keygen (POST /v1/keys). A 201 returns the key; a 202 (keygen still
// running after the node's wait) returns the request to poll with WaitRequest.
// idempotencyKey may be empty.
func (c *Client) CreateKey(ctx context.Context, curve string, threshold int, label string, idempotencyKey string) (*Key, *Request, error) {
	var raw json.RawMessage
	status, err := c.do(ctx, http.MethodPost, "/v1/keys", keygenBody{Curve: curve, Threshold: threshold, Label: label, IdempotencyKey: idempotencyKey}, &raw)
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
	body := signBody{Message: hex.EncodeToString(message), DerivationPath: derivationPath, IdempotencyKey: idempotencyKey}
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
// (Final) or ctx ends. Each poll is a new signed request.
func (c *Client) WaitRequest(ctx context.Context, id string, poll time.Duration) (*Request, error) {
	if poll <= 0 {
		poll = time.Second
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: waiting for request %s: %w", id, ctx.Err())
		case <-t.C:
		}
		r, err := c.GetRequest(ctx, id)
		if err != nil {
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
