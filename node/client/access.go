package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/auth"
)

// Permissions a user or an access key can hold (API.md's whitelist).
const (
	PermKeysCreate      = "keys:create"
	PermKeysRead        = "keys:read"
	PermKeysSign        = "keys:sign"
	PermKeysDelete      = "keys:delete"
	PermAccessManage    = "access:manage"
	PermApprovalsDecide = "approvals:decide"
)

// Access-key schemes: how the key's holder signs its requests.
const (
	// SchemeEd25519 access keys sign with custos's RFC 9421 profile (NewAccessKey).
	SchemeEd25519 = "ed25519"
	// SchemeSecp256k1 access keys send bitcoin-auth's X-Auth-Token (NewXAuth).
	SchemeSecp256k1 = "secp256k1"
)

// X-Auth-Token schemes for NewXAuth.
const (
	// XAuthBSM is the Bitcoin Signed Message scheme.
	XAuthBSM = auth.XAuthSchemeBSM
	// XAuthBRC77 is the BRC-77 signed-message scheme (bitcoin-auth's default).
	XAuthBRC77 = auth.XAuthSchemeBRC77
)

// ErrXAuthMethod is returned (before anything is sent) when an X-Auth-Token client is
// asked for a DELETE or PUT: the token does not sign the method, so nodes refuse it there.
var ErrXAuthMethod = errors.New("client: an X-Auth-Token does not sign the HTTP method; DELETE and PUT need a user or an Ed25519 access key")

// AccessKeyGrant is the body of POST /v1/access-keys: what a user grants an extra public
// key. Permissions must be a subset of the grantor's and never access:manage; KeyIDs
// (optional) limits the access key to those keys of the grantor; a zero ExpiresAt means
// it never expires. The node validates every field.
type AccessKeyGrant struct {
	Label string
	// Scheme is SchemeEd25519 or SchemeSecp256k1.
	Scheme string
	// PublicKey is lowercase hex: a 32-byte Ed25519 key or a 33-byte compressed
	// secp256k1 key.
	PublicKey   string
	Permissions []string
	KeyIDs      []string
	ExpiresAt   time.Time
}

// MarshalJSON writes the grant as the API's JSON (expires_at as RFC 3339 UTC, omitted
// when zero; label and key_ids omitted when empty).
func (g AccessKeyGrant) MarshalJSON() ([]byte, error) {
	w := struct {
		Label       string   `json:"label,omitempty"`
		Scheme      string   `json:"scheme"`
		PublicKey   string   `json:"public_key"`
		Permissions []string `json:"permissions"`
		KeyIDs      []string `json:"key_ids,omitempty"`
		ExpiresAt   string   `json:"expires_at,omitempty"`
	}{Label: g.Label, Scheme: g.Scheme, PublicKey: g.PublicKey, Permissions: g.Permissions, KeyIDs: g.KeyIDs}
	if w.Permissions == nil {
		w.Permissions = []string{}
	}
	if !g.ExpiresAt.IsZero() {
		w.ExpiresAt = g.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// AccessKey is an access key as the API shows it. ExpiresAt is zero when it never
// expires, RevokedAt zero while it is not revoked.
type AccessKey struct {
	ID          string
	Label       string
	Scheme      string
	PublicKey   string
	Permissions []string
	KeyIDs      []string
	ExpiresAt   time.Time
	CreatedAt   time.Time
	RevokedAt   time.Time
}

type accessKeyWire struct {
	ID          string   `json:"id"`
	Label       string   `json:"label"`
	Scheme      string   `json:"scheme"`
	PublicKey   string   `json:"public_key"`
	Permissions []string `json:"permissions"`
	KeyIDs      []string `json:"key_ids"`
	ExpiresAt   *string  `json:"expires_at"`
	CreatedAt   *string  `json:"created_at"`
	RevokedAt   *string  `json:"revoked_at"`
}

// optionalTime parses an RFC 3339 time that may be null or empty (zero time).
func optionalTime(field string, s *string) (time.Time, error) {
	if s == nil || *s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return time.Time{}, fmt.Errorf("client: access key %s: %w", field, err)
	}
	return t, nil
}

// UnmarshalJSON reads the API's access-key object; expires_at and revoked_at may be null,
// empty or absent.
func (k *AccessKey) UnmarshalJSON(b []byte) error {
	var w accessKeyWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := AccessKey{ID: w.ID, Label: w.Label, Scheme: w.Scheme, PublicKey: w.PublicKey, Permissions: w.Permissions, KeyIDs: w.KeyIDs}
	var err error
	if out.ExpiresAt, err = optionalTime("expires_at", w.ExpiresAt); err != nil {
		return err
	}
	if out.CreatedAt, err = optionalTime("created_at", w.CreatedAt); err != nil {
		return err
	}
	if out.RevokedAt, err = optionalTime("revoked_at", w.RevokedAt); err != nil {
		return err
	}
	*k = out
	return nil
}

// MarshalJSON writes the API's access-key object (zero times as null).
func (k AccessKey) MarshalJSON() ([]byte, error) {
	opt := func(t time.Time) *string {
		if t.IsZero() {
			return nil
		}
		s := t.UTC().Format(time.RFC3339Nano)
		return &s
	}
	return json.Marshal(accessKeyWire{ID: k.ID, Label: k.Label, Scheme: k.Scheme, PublicKey: k.PublicKey,
		Permissions: k.Permissions, KeyIDs: k.KeyIDs, ExpiresAt: opt(k.ExpiresAt), CreatedAt: opt(k.CreatedAt), RevokedAt: opt(k.RevokedAt)})
}

// Revoked reports whether the key was revoked at or before now.
func (k *AccessKey) Revoked(now time.Time) bool {
	return !k.RevokedAt.IsZero() && !k.RevokedAt.After(now)
}

// Expired reports whether the key had expired at now.
func (k *AccessKey) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now)
}

// AccessLogEntry is one use of an access key, allowed or refused, from its own log.
type AccessLogEntry struct {
	// Seq numbers the key's uses, ascending (zero when the node does not send it).
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time"`
	// Route is what the key was used for (the node's name for the route).
	Route string `json:"route"`
	// Object is the key, request or other object the use concerned, when there was one.
	Object string `json:"object,omitempty"`
	// Outcome is "allowed" or "refused".
	Outcome string `json:"outcome"`
	// Code is the error code of a refusal, empty when allowed.
	Code string `json:"code,omitempty"`
}

func accessKeyPath(id, suffix string) (string, error) {
	if id == "" {
		return "", errors.New("client: empty access key id")
	}
	return "/v1/access-keys/" + url.PathEscape(id) + suffix, nil
}

// CreateAccessKey grants an access key (POST /v1/access-keys; needs access:manage) and
// returns it; its ID is the keyid (Ed25519) the holder signs with.
func (c *Client) CreateAccessKey(ctx context.Context, g AccessKeyGrant) (*AccessKey, error) {
	var k AccessKey
	if err := c.Do(ctx, http.MethodPost, "/v1/access-keys", g, &k); err != nil {
		return nil, err
	}
	if k.ID == "" {
		return nil, errors.New("client: node answered without an access key id")
	}
	return &k, nil
}

// ListAccessKeys returns every access key the caller granted, revoked and expired ones
// included (GET /v1/access-keys, following pages).
func (c *Client) ListAccessKeys(ctx context.Context) ([]AccessKey, error) {
	return listAll[AccessKey](ctx, c, "/v1/access-keys", "access_keys")
}

// RevokeAccessKey revokes an access key (DELETE /v1/access-keys/{id}); it takes effect
// cluster-wide as soon as the node answers.
func (c *Client) RevokeAccessKey(ctx context.Context, id string) error {
	p, err := accessKeyPath(id, "")
	if err != nil {
		return err
	}
	return c.Do(ctx, http.MethodDelete, p, nil, nil)
}

// AccessKeyLog returns an access key's uses, oldest first (GET /v1/access-keys/{id}/log,
// following pages; the grantor only).
func (c *Client) AccessKeyLog(ctx context.Context, id string) ([]AccessLogEntry, error) {
	p, err := accessKeyPath(id, "/log")
	if err != nil {
		return nil, err
	}
	return listAll[AccessLogEntry](ctx, c, p, "entries")
}

// xauthStamper hands out strictly increasing millisecond timestamps. A node accepts each
// (public key, path, timestamp, body) once, so two identical calls in the same
// millisecond would otherwise collide.
type xauthStamper struct {
	mu   sync.Mutex
	last time.Time
}

func (s *xauthStamper) next(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now.UTC().Truncate(time.Millisecond)
	if !t.After(s.last) {
		t = s.last.Add(time.Millisecond)
	}
	s.last = t
	return t
}

// NewXAuth returns a client for a secp256k1 access key: every request carries a fresh
// bitcoin-auth X-Auth-Token (scheme XAuthBSM or XAuthBRC77) made with key, and no other
// credential. The token signs the request's path and query, a timestamp and the body's
// hash, but not the HTTP method: nodes refuse it on DELETE and PUT, and this client
// refuses to send those (ErrXAuthMethod). Each token is accepted once, cluster-wide; the
// client keeps its timestamps strictly increasing, so use one Client per key (it is safe
// for concurrent use) and WithBaseURL for other nodes, rather than a constructor call per
// goroutine or node. The token names the path as this client sends it (base URL prefix
// included), so a proxy in front of the node must not rewrite paths.
func NewXAuth(baseURL string, key *btcec.PrivateKey, scheme string, opts ...Option) (*Client, error) {
	if key == nil {
		return nil, errors.New("client: no secp256k1 private key")
	}
	var mint func(*btcec.PrivateKey, string, []byte, time.Time) (string, error)
	switch scheme {
	case XAuthBSM:
		mint = auth.SignXAuthTokenBSM
	case XAuthBRC77:
		mint = auth.SignXAuthTokenBRC77
	default:
		return nil, fmt.Errorf("client: X-Auth-Token scheme must be %q or %q, got %q", XAuthBSM, XAuthBRC77, scheme)
	}
	stamps := &xauthStamper{}
	return NewCustom(baseURL, func(req *http.Request, body []byte, now time.Time) error {
		if strings.EqualFold(req.Method, http.MethodDelete) || strings.EqualFold(req.Method, http.MethodPut) {
			return ErrXAuthMethod
		}
		for _, h := range []string{"Authorization", "Signature-Input", "Signature", "Content-Digest"} {
			req.Header.Del(h)
		}
		tok, err := mint(key, req.URL.RequestURI(), body, stamps.next(now))
		if err != nil {
			return fmt.Errorf("client: X-Auth-Token: %w", err)
		}
		req.Header.Set("X-Auth-Token", tok)
		return nil
	}, opts...)
}
