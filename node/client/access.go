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

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
)

// Permissions a user or an access key can hold (API.md's whitelist).
const (
	PermKeysCreate      = api.PermKeysCreate
	PermKeysRead        = api.PermKeysRead
	PermKeysSign        = api.PermKeysSign
	PermKeysDelete      = api.PermKeysDelete
	PermAccessManage    = api.PermAccessManage
	PermApprovalsDecide = api.PermApprovalsDecide
)

// Access-key schemes: how the key's holder signs its requests.
const (
	// SchemeEd25519 access keys sign with custos's RFC 9421 profile (NewAccessKey).
	SchemeEd25519 = api.SchemeEd25519
	// SchemeSecp256k1 access keys send bitcoin-auth's X-Auth-Token (NewXAuth).
	SchemeSecp256k1 = api.SchemeSecp256k1
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

// MarshalJSON writes the grant as the API's JSON (api.AccessKeyBody: expires_at as
// RFC 3339 UTC, omitted when zero; label and key_ids omitted when empty; permissions
// always a list).
func (g AccessKeyGrant) MarshalJSON() ([]byte, error) {
	w := api.AccessKeyBody{Label: g.Label, Scheme: g.Scheme, PublicKey: g.PublicKey, Permissions: g.Permissions, KeyIDs: g.KeyIDs}
	if w.Permissions == nil {
		w.Permissions = []string{}
	}
	if !g.ExpiresAt.IsZero() {
		exp := g.ExpiresAt.UTC().Format(time.RFC3339Nano)
		w.ExpiresAt = &exp
	}
	return json.Marshal(w)
}

// AccessKey is an access key as the API shows it (api.AccessKey). ExpiresAt is zero
// when it never expires, RevokedAt zero while it is not revoked; Revoked and Expired
// tell them at a given time.
type AccessKey = api.AccessKey

// AccessLogEntry is one use of an access key, allowed or refused, from its own log
// (api.AccessLogEntry).
type AccessLogEntry = api.AccessLogEntry

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
