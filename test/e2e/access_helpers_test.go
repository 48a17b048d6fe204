//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// noRateLimit is the "rate" configuration that turns the per-caller limit off, for
// clusters whose tests are about something else (a quick run of calls never meets a 429).
func noRateLimit() map[string]any { return map[string]any{"per_caller_rps": 0} }

// allPerms is every permission a user can hold.
func allPerms() []string {
	return []string{client.PermKeysCreate, client.PermKeysRead, client.PermKeysSign, client.PermKeysDelete,
		client.PermAccessManage, client.PermApprovalsDecide}
}

// apiErr returns the HTTP status and code of an SDK error (0 and "" for nil or a
// transport error).
func apiErr(err error) (int, string) {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status, ae.Code
	}
	return 0, ""
}

// wantOK fails the test when err is not nil.
func wantOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErr fails the test unless err is an API error with that status and code.
func wantErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	s, c := apiErr(err)
	if s != status || c != code {
		t.Fatalf("%s: got %d %q (%v), want %d %q", what, s, c, err, status, code)
	}
}

// newEdPair returns a fresh Ed25519 key pair and the public key in hex.
func newEdPair(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, hex.EncodeToString(pub)
}

// newUserWith creates a user whose token mint makes (e.g. with an audience), with one SDK
// client per node. perms nil means the node's defaults.
func (c *cluster) newUserWith(ctx context.Context, name string, mint func(id uint64, pubHex string) (string, error), perms ...string) *user {
	c.t.Helper()
	id, err := c.Admin().CreateUser(ctx, name, perms...)
	if err != nil {
		c.t.Fatalf("create user %s: %v", name, err)
	}
	priv, pubHex := newEdPair(c.t)
	tok, err := mint(id, pubHex)
	if err != nil {
		c.t.Fatal(err)
	}
	clients, err := c.Clients(tok, priv)
	c.must(err)
	return &user{&testcluster.User{ID: id, Token: tok, Key: priv, Clients: clients}}
}

// reissue gives u a new token (and new clients) from mint, keeping its key.
func (c *cluster) reissue(u *user, tok string) {
	c.t.Helper()
	clients, err := c.Clients(tok, u.Key)
	c.must(err)
	u.Token, u.Clients = tok, clients
}

// edKey runs an Ed25519 keygen (fast, unlike ECDSA's) for u through node i.
func (u *user) edKey(ctx context.Context, t *testing.T, node int, label string) *client.Key {
	t.Helper()
	k, req, err := u.Clients[node].CreateKey(ctx, "ed25519", 2, label, "")
	if err != nil || k == nil {
		t.Fatalf("ed25519 keygen for user %d: %v (request %+v)", u.ID, err, req)
	}
	return k
}

// signReq has u sign msg with key and returns the request id.
func (u *user) signReq(ctx context.Context, t *testing.T, node int, keyID string, msg string) string {
	t.Helper()
	r, err := u.Clients[node].Sign(ctx, keyID, []byte(msg), "", "")
	if err != nil || r.Status != client.StatusSigned {
		t.Fatalf("sign: %v %+v", err, r)
	}
	return r.RequestID
}

// accessKey is a granted Ed25519 access key and a client for it on every node.
type accessKey struct {
	*client.AccessKey
	priv    ed25519.PrivateKey
	clients []*client.Client
}

// grantEd25519 has u grant a fresh Ed25519 key perms (limited to keyIDs when given).
func (c *cluster) grantEd25519(ctx context.Context, t *testing.T, u *user, perms []string, keyIDs []string, expires time.Time) *accessKey {
	t.Helper()
	priv, pubHex := newEdPair(t)
	k, err := u.Clients[0].CreateAccessKey(ctx, client.AccessKeyGrant{Label: "test", Scheme: client.SchemeEd25519,
		PublicKey: pubHex, Permissions: perms, KeyIDs: keyIDs, ExpiresAt: expires})
	if err != nil {
		t.Fatalf("grant %v to an Ed25519 key: %v", perms, err)
	}
	if !strings.HasPrefix(k.ID, "ak_") || k.Scheme != client.SchemeEd25519 || k.PublicKey != pubHex || !slices.Equal(k.Permissions, perms) || k.CreatedAt.IsZero() {
		t.Fatalf("granted access key %+v", k)
	}
	return &accessKey{AccessKey: k, priv: priv, clients: c.accessKeyClients(t, k.ID, priv)}
}

// accessKeyClients returns an Ed25519 access-key client per node.
func (c *cluster) accessKeyClients(t *testing.T, id string, priv ed25519.PrivateKey) []*client.Client {
	t.Helper()
	var out []*client.Client
	for i := range c.N() {
		cl, err := client.NewAccessKey(c.API(i), id, priv)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cl)
	}
	return out
}

// xauthClients returns X-Auth-Token clients for key on every node, sharing their
// timestamps (WithBaseURL).
func (c *cluster) xauthClients(t *testing.T, key *btcec.PrivateKey, scheme string) []*client.Client {
	t.Helper()
	first, err := client.NewXAuth(c.API(0), key, scheme)
	if err != nil {
		t.Fatal(err)
	}
	out := []*client.Client{first}
	for i := 1; i < c.N(); i++ {
		cl, err := first.WithBaseURL(c.API(i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cl)
	}
	return out
}

// xauthRequest builds a request carrying an X-Auth-Token minted by mint for its path,
// query and body.
func xauthRequest(t *testing.T, method, url string, body []byte, mint func(*btcec.PrivateKey, string, []byte, time.Time) (string, error), key *btcec.PrivateKey, now time.Time) *http.Request {
	t.Helper()
	req := rawRequest(t, method, url, body)
	tok, err := mint(key, req.URL.RequestURI(), body, now)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", tok)
	return req
}

// rawRequest is an unauthenticated request with a JSON body (when not empty).
func rawRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// resend sends a copy of req's headers (and body) to another node.
func resend(t *testing.T, req *http.Request, base string, body []byte) *http.Request {
	t.Helper()
	r := rawRequest(t, req.Method, base+req.URL.RequestURI(), body)
	r.Header = req.Header.Clone()
	return r
}

// keyPairAdmin returns key-pair admin SDKs for every node of c.
func (c *cluster) keyPairAdmins(t *testing.T, priv ed25519.PrivateKey, opts ...admin.Option) []*admin.Admin {
	t.Helper()
	var out []*admin.Admin
	for i := range c.N() {
		a, err := admin.NewKeyPair(priv, c.API(i), opts...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// hsIssuer is an HS256 issuer with the cluster's shared admin key.
func (c *cluster) hsIssuer() *auth.Issuer {
	c.t.Helper()
	iss, err := auth.NewHS256Issuer(c.adminKey())
	c.must(err)
	return iss
}
