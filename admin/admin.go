// Package admin is the Go admin SDK for custos: it creates and manages users, issues
// their tokens offline (GenUserToken), reads the cluster and its audit log, and verifies
// the audit log's hash chain itself (VerifyAudit, AuditChain: RFC 8785 canonical JSON and
// SHA-256, written independently of the node's code).
//
// Two modes, matching the node's configuration. With New (Sigpair model) the SDK holds
// the shared 32-byte ADMIN_KEY and mints an HS256 admin JWT for every call. With
// NewKeyPair it holds the admin's Ed25519 private key: tokens are EdDSA and every request
// also carries an RFC 9421 signature with keyid="admin", so nodes hold no secret that can
// mint tokens. Each call gets a fresh token (with a random jti, accepted once) and a fresh
// signature. API errors are *client.APIError. The package never logs and never sends a
// key anywhere.
package admin

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
)

// Admin calls one custos node as the admin.
type Admin struct {
	iss      *auth.Issuer
	audience string
	c        *client.Client
}

type options struct {
	hc       *http.Client
	tls      *tls.Config
	audience string
}

// Option configures an Admin.
type Option func(*options)

// WithHTTPClient sets the HTTP client.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// WithTLSConfig sets the TLS configuration of the default HTTP client (see
// client.WithTLSConfig): RootCAs for a node whose certificate a private CA signed,
// Certificates for mutual TLS. It cannot be combined with WithHTTPClient.
func WithTLSConfig(tc *tls.Config) Option { return func(o *options) { o.tls = tc } }

// WithAudience puts aud = audience (the cluster name) in the admin and user tokens the
// SDK mints, for clusters that check or require it.
func WithAudience(audience string) Option { return func(o *options) { o.audience = audience } }

// New returns an admin client in HS256 mode (Sigpair model): adminKey is the raw 32-byte
// ADMIN_KEY (ParseAdminKeyHex decodes its 64-character hex form). It makes no call.
func New(adminKey []byte, baseURL string, opts ...Option) (*Admin, error) {
	iss, err := auth.NewHS256Issuer(adminKey)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return build(iss, nil, baseURL, opts)
}

// NewKeyPair returns an admin client in key-pair mode: tokens are signed EdDSA with priv
// and every request carries an RFC 9421 signature by priv with keyid="admin". It makes
// no call.
func NewKeyPair(priv ed25519.PrivateKey, baseURL string, opts ...Option) (*Admin, error) {
	iss, err := auth.NewEdDSAIssuer(priv)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	signer := &auth.Signer{KeyID: "admin", Key: priv}
	return build(iss, signer, baseURL, opts)
}

func build(iss *auth.Issuer, signer *auth.Signer, baseURL string, opts []Option) (*Admin, error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	a := &Admin{iss: iss, audience: o.audience}
	authn := func(req *http.Request, body []byte, now time.Time) error {
		tok, err := iss.AdminTokenFor(o.audience, now)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if signer != nil {
			return signer.Sign(req, body, now)
		}
		// HS256 mode: no request signature (the node would take it for a user's), but
		// the body is still bound by its digest.
		if len(body) > 0 {
			req.Header.Set("Content-Digest", auth.ContentDigest(body))
		}
		return nil
	}
	var copts []client.Option
	if o.hc != nil {
		copts = append(copts, client.WithHTTPClient(o.hc))
	}
	if o.tls != nil {
		copts = append(copts, client.WithTLSConfig(o.tls))
	}
	c, err := client.NewCustom(baseURL, authn, copts...)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a.c = c
	return a, nil
}

// ParseAdminKeyHex decodes an ADMIN_KEY written as 64 hex characters (surrounding
// whitespace ignored) into the 32 raw bytes New takes.
func ParseAdminKeyHex(s string) ([]byte, error) {
	k, err := auth.ParseAdminKeyHex(s)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return k, nil
}

// The admin API's objects: internal/api's types (the one definition the nodes marshal),
// named here so that code outside the module can use them.
type (
	// User is a user as the admin API shows it.
	User = api.User
	// Cluster is GET /v1/cluster.
	Cluster = api.Cluster
	// AuditEntry is one hash-chained audit entry. Time is kept as the node wrote it,
	// since the hash covers the entry's exact JSON (RFC 8785).
	AuditEntry = api.AuditEntry
	// Retention is the cluster's retention settings (GET/PUT /v1/admin/retention).
	Retention = api.Retention
)

// GenUserToken issues a user token offline (no call to a node): Sigpair's
// {"user_id","iat","exp","public_key"} (plus aud with WithAudience), valid for ttl.
// publicKeyHex is the user's Ed25519 public key as 64 hex characters.
func (a *Admin) GenUserToken(userID uint64, publicKeyHex string, ttl time.Duration) (string, error) {
	tok, err := a.iss.UserToken(userID, publicKeyHex, ttl, a.audience, time.Now())
	if err != nil {
		return "", fmt.Errorf("admin: %w", err)
	}
	return tok, nil
}

// CreateUser creates a user (POST /v1/admin/users) and returns its id. Without
// permissions the node grants its defaults.
func (a *Admin) CreateUser(ctx context.Context, name string, permissions ...string) (uint64, error) {
	if name == "" {
		return 0, errors.New("admin: empty user name")
	}
	body := api.UserBody{Name: name}
	if len(permissions) > 0 {
		body.Permissions = &permissions
	}
	var out api.UserCreated
	if err := a.c.Do(ctx, http.MethodPost, "/v1/admin/users", body, &out); err != nil {
		return 0, err
	}
	if out.UserID == 0 {
		return 0, errors.New("admin: node answered without a user_id")
	}
	return out.UserID, nil
}

// ListUsers returns every user (GET /v1/admin/users, following pages).
func (a *Admin) ListUsers(ctx context.Context) ([]User, error) {
	var out []User
	err := a.c.ListAll(ctx, "/v1/admin/users", 1000, func(data json.RawMessage) (json.RawMessage, error) {
		var page struct {
			Users []User          `json:"users"`
			Next  json.RawMessage `json:"next"`
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, fmt.Errorf("admin: decode user list: %w", err)
		}
		out = append(out, page.Users...)
		return page.Next, nil
	})
	return out, err
}

func userPath(id uint64, suffix string) string {
	return "/v1/admin/users/" + strconv.FormatUint(id, 10) + suffix
}

// GetUser returns one user (GET /v1/admin/users/{id}).
func (a *Admin) GetUser(ctx context.Context, id uint64) (*User, error) {
	var u User
	if err := a.c.Do(ctx, http.MethodGet, userPath(id, ""), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// DisableUser disables a user: all its tokens stop working at once.
func (a *Admin) DisableUser(ctx context.Context, id uint64) error {
	return a.c.Do(ctx, http.MethodPost, userPath(id, "/disable"), nil, nil)
}

// EnableUser re-enables a disabled user.
func (a *Admin) EnableUser(ctx context.Context, id uint64) error {
	return a.c.Do(ctx, http.MethodPost, userPath(id, "/enable"), nil, nil)
}

// RevokeTokens refuses every token of the user issued before now.
func (a *Admin) RevokeTokens(ctx context.Context, id uint64) error {
	return a.c.Do(ctx, http.MethodPost, userPath(id, "/revoke-tokens"), nil, nil)
}

// SetPermissions replaces a user's permissions (PUT /v1/admin/users/{id}/permissions);
// nil or empty removes them all.
func (a *Admin) SetPermissions(ctx context.Context, id uint64, perms []string) error {
	if perms == nil {
		perms = []string{}
	}
	return a.c.Do(ctx, http.MethodPut, userPath(id, "/permissions"), api.PermissionsBody{Permissions: perms}, nil)
}

// RotateAdminKey replaces the cluster's admin public key (key-pair mode; PUT
// /v1/admin/admin-key) with newPublicKeyHex (64 hex characters). The request is signed
// with the current key; from the entry on, only the new key's tokens and signatures are
// accepted, so build a new Admin with the new private key afterwards. The nodes'
// admin.public_key keeps naming the cluster's first key.
func (a *Admin) RotateAdminKey(ctx context.Context, newPublicKeyHex string) error {
	return a.c.Do(ctx, http.MethodPut, "/v1/admin/admin-key", api.AdminKey{PublicKey: newPublicKeyHex}, nil)
}

// Retention returns how long the cluster keeps what it prunes (GET /v1/admin/retention).
func (a *Admin) Retention(ctx context.Context) (*Retention, error) {
	var out Retention
	if err := a.c.Do(ctx, http.MethodGet, "/v1/admin/retention", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetRetention replaces the writable retention settings that r gives (non-zero
// FinishedRequestsS, DeadAccessKeysS, EventsS, KeyDeletionDelayS; seconds) for the whole
// cluster, from the entry on, and returns the settings now in force (PUT
// /v1/admin/retention).
func (a *Admin) SetRetention(ctx context.Context, r Retention) (*Retention, error) {
	body := Retention{FinishedRequestsS: r.FinishedRequestsS, DeadAccessKeysS: r.DeadAccessKeysS, EventsS: r.EventsS, KeyDeletionDelayS: r.KeyDeletionDelayS}
	var out Retention
	if err := a.c.Do(ctx, http.MethodPut, "/v1/admin/retention", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Cluster returns GET /v1/cluster.
func (a *Admin) Cluster(ctx context.Context) (*Cluster, error) {
	return a.c.Cluster(ctx)
}

// Audit returns up to limit audit entries with seq > after, ascending (GET /v1/audit).
// limit <= 0 means the node's default; the node clamps it to 1000.
func (a *Admin) Audit(ctx context.Context, after uint64, limit int) ([]AuditEntry, error) {
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.AuditList
	if err := a.c.Do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// Do sends an admin call to a route without a helper (see client.Client.Do).
func (a *Admin) Do(ctx context.Context, method, path string, body, out any) error {
	return a.c.Do(ctx, method, path, body, out)
}
