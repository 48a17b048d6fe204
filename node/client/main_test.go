package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/nodetest"
)

// The tests of this package run against real nodes (node/nodetest): one in-process
// cluster shared by every test, started on first use. Each test makes its own users;
// the one ECDSA key (a keygen costs seconds) is shared through ecdsaKey.
var shared = nodetest.Shared{Options: nodetest.Options{
	// Short enough that a secp256k1 keygen answers 202 and is polled (WaitRequest),
	// long enough that an Ed25519 keygen and a sign usually answer at once.
	WaitTimeout: 5 * time.Second,
}}

// sharedECDSA is the package's one secp256k1 key, made by the first test that needs it.
var sharedECDSA ecdsaFixture

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

func testCluster(t *testing.T) *nodetest.Cluster {
	t.Helper()
	return shared.Cluster(t)
}

// adminCaller calls node i as the admin, minting an HS256 admin token per call as the
// admin SDK does (these tests cannot import it: it imports this package).
func adminCaller(t *testing.T, cl *nodetest.Cluster, i int) *Client {
	t.Helper()
	iss, err := auth.NewHS256Issuer(cl.AdminKey())
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCustom(cl.URL(i), func(req *http.Request, body []byte, now time.Time) error {
		tok, err := iss.AdminTokenFor(cl.Name(), now)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if len(body) > 0 {
			req.Header.Set("Content-Digest", auth.ContentDigest(body))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testUser is a user of the shared cluster with its Ed25519 key and a client on node 0.
type testUser struct {
	id   uint64
	priv ed25519.PrivateKey
	iss  *auth.Issuer
	cl   *nodetest.Cluster
	c    *Client
}

// newUser creates a user through the admin API (the node's default permissions when
// perms is empty).
func newUser(t *testing.T, perms ...string) *testUser {
	t.Helper()
	cl := testCluster(t)
	body := api.UserBody{Name: t.Name()}
	if len(perms) > 0 {
		body.Permissions = &perms
	}
	var created api.UserCreated
	if err := adminCaller(t, cl, 0).Do(context.Background(), http.MethodPost, "/v1/admin/users", body, &created); err != nil {
		t.Fatalf("create user: %v", err)
	}
	if created.UserID == 0 || created.Name != t.Name() {
		t.Fatalf("created %+v", created)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewHS256Issuer(cl.AdminKey())
	if err != nil {
		t.Fatal(err)
	}
	u := &testUser{id: created.UserID, priv: priv, iss: iss, cl: cl}
	u.c = u.client(t, 0)
	return u
}

func (u *testUser) pubHex() string { return hex.EncodeToString(u.priv.Public().(ed25519.PublicKey)) }

// token mints a user token issued at iat, valid for ttl, for audience.
func (u *testUser) token(t *testing.T, iat time.Time, ttl time.Duration, audience string) string {
	t.Helper()
	tok, err := u.iss.UserToken(u.id, u.pubHex(), ttl, audience, iat)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client returns a user-mode client for node i.
func (u *testUser) client(t *testing.T, i int) *Client {
	t.Helper()
	c, err := New(u.cl.URL(i), u.token(t, time.Now(), time.Hour, u.cl.Name()), u.priv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// settle polls a request that answered 202 until it is final.
func settle(t *testing.T, c *Client, r *Request) *Request {
	t.Helper()
	if Final(r.Status) {
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done, err := c.WaitRequest(ctx, r.RequestID, 250*time.Millisecond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", r.RequestID, err)
	}
	return done
}

// createKey runs a keygen and returns the active key, polling when it answers 202.
func createKey(t *testing.T, c *Client, curve, label string) *Key {
	t.Helper()
	k, r, err := c.CreateKey(context.Background(), curve, 2, label, "")
	if err != nil {
		t.Fatalf("keygen %s: %v", curve, err)
	}
	if k == nil {
		r = settle(t, c, r)
		if r.Status != StatusActive || r.Key == nil {
			t.Fatalf("keygen %s ended %+v", curve, r)
		}
		k = r.Key
	}
	return k
}

// ecdsaFixture is a secp256k1 key made once for the package, with how its keygen went.
type ecdsaFixture struct {
	mu    sync.Mutex
	owner *testUser
	key   *Key
	// accepted is the keygen's 202 answer (nil when it answered 201 at once) and
	// replayed the answer to the same keygen sent again with its idempotency key.
	accepted, replayed *Request
	replayedKey        *Key
}

// ecdsaKey returns the package's secp256k1 key and its owner, making it on first use.
func ecdsaKey(t *testing.T) *ecdsaFixture {
	t.Helper()
	f := &sharedECDSA
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key != nil {
		return f
	}
	owner := newUser(t)
	ctx := context.Background()
	k, r, err := owner.c.CreateKey(ctx, CurveSecp256k1, 2, "treasury", "keygen-once")
	if err != nil {
		t.Fatalf("secp256k1 keygen: %v", err)
	}
	if r != nil {
		f.accepted = r
		f.replayedKey, f.replayed, err = owner.c.CreateKey(ctx, CurveSecp256k1, 2, "treasury", "keygen-once")
		if err != nil {
			t.Fatalf("keygen replayed with its idempotency key: %v", err)
		}
		done := settle(t, owner.c, r)
		if done.Status != StatusActive || done.Key == nil {
			t.Fatalf("secp256k1 keygen ended %+v", done)
		}
		k = done.Key
	}
	f.owner, f.key = owner, k
	return f
}

// wantAPIError checks that err is the node's problem answer with code, and that its
// status and title are the ones internal/api's table gives the code.
func wantAPIError(t *testing.T, err error, code string) *APIError {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want %s, got %v", code, err)
	}
	if ae.Code != code || ae.Status != api.StatusOf(code) || ae.Title != api.Title(code) || ae.RequestID == "" || ae.Detail == "" {
		t.Fatalf("want %s (HTTP %d %q), got %#v", code, api.StatusOf(code), api.Title(code), ae)
	}
	if CodeOf(err) != code {
		t.Fatalf("CodeOf = %q", CodeOf(err))
	}
	return ae
}
