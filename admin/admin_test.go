package admin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
)

var hsKey = bytes.Repeat([]byte{3}, 32)

func edKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

// fakeNode checks admin credentials the way a node does (token; in key-pair mode also an
// RFC 9421 signature with keyid "admin"; jti once) and records the calls.
type fakeNode struct {
	verifier *auth.TokenVerifier
	adminPub ed25519.PublicKey // nil in HS256 mode

	mu     sync.Mutex
	jtis   map[string]bool
	calls  []string
	bodies []string
}

func newFakeNode(t *testing.T, cfg auth.VerifierConfig) (*fakeNode, *httptest.Server) {
	t.Helper()
	v, err := auth.NewTokenVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{verifier: v, adminPub: cfg.AdminPublicKey, jtis: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/admin/users", func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b["name"] == "" {
			problem(w, 400, "request.malformed", "bad body")
			return
		}
		writeJSON(w, 201, map[string]any{"user_id": 7, "name": b["name"]})
	})
	mux.HandleFunc("GET /v1/admin/users", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("after") == "" {
			writeJSON(w, 200, map[string]any{"users": []any{user(1), user(2)}, "next": "2"})
			return
		}
		writeJSON(w, 200, map[string]any{"users": []any{user(3)}})
	})
	mux.HandleFunc("GET /v1/admin/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "7" {
			problem(w, 404, "user.not_found", "no such user")
			return
		}
		writeJSON(w, 200, user(7))
	})
	for _, op := range []string{"disable", "enable", "revoke-tokens"} {
		mux.HandleFunc("POST /v1/admin/users/{id}/"+op, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, user(7)) })
	}
	mux.HandleFunc("PUT /v1/admin/users/{id}/permissions", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, user(7)) })
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"name": "dev", "threshold": 2, "parties": 3, "leader": "node2", "members": []any{}})
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"entries": []any{map[string]any{"seq": 4, "time": "2026-01-02T03:04:05.123Z", "actor": "admin", "action": "user.create",
			"object": "user:7", "outcome": "ok", "code": "", "prev_hash": strings.Repeat("0", 64), "hash": strings.Repeat("a", 64)}}})
	})
	srv := httptest.NewServer(f.authenticate(mux))
	t.Cleanup(srv.Close)
	return f, srv
}

func user(id int) map[string]any {
	return map[string]any{"user_id": id, "name": "u", "status": "active", "permissions": []string{"keys:read"}, "created_at": "2026-01-02T03:04:05Z"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": "error", "status": status, "code": code, "detail": detail, "request_id": "rq"})
}

func (f *fakeNode) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		now := time.Now()
		fail := func(err error) { problem(w, 401, auth.CodeOf(err), err.Error()) }
		if err := auth.CheckContentDigest(r.Header.Get("Content-Digest"), body); err != nil {
			fail(err)
			return
		}
		claims, err := f.verifier.VerifyAdmin(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), now)
		if err != nil {
			fail(err)
			return
		}
		signed := r.Header.Get("Signature-Input") != ""
		if f.adminPub == nil && signed {
			problem(w, 401, auth.CodeTokenInvalid, "HS256-mode admin requests are not signed")
			return
		}
		if f.adminPub != nil {
			parts := auth.RequestPartsFromHTTP(r, body)
			sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
			if err == nil {
				err = auth.CheckProfile(sig, parts)
			}
			if err == nil && sig.KeyID != "admin" {
				err = &auth.Error{Code: auth.CodeSignatureInvalid, Detail: "keyid"}
			}
			if err == nil {
				err = auth.CheckWindow(sig, now)
			}
			if err == nil {
				err = auth.VerifyEd25519(f.adminPub, sig, parts)
			}
			if err != nil {
				fail(err)
				return
			}
		}
		f.mu.Lock()
		reused := claims.ID == "" || f.jtis[claims.ID]
		f.jtis[claims.ID] = true
		f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
		f.bodies = append(f.bodies, string(body))
		f.mu.Unlock()
		if reused {
			problem(w, 401, "auth.nonce_reused", "jti reused or missing")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func exercise(t *testing.T, a *Admin, f *fakeNode) {
	t.Helper()
	ctx := context.Background()
	id, err := a.CreateUser(ctx, "alice", "keys:read", "keys:sign")
	if err != nil || id != 7 {
		t.Fatalf("CreateUser: %d %v", id, err)
	}
	if f.bodies[len(f.bodies)-1] != `{"name":"alice","permissions":["keys:read","keys:sign"]}` {
		t.Fatalf("create body %s", f.bodies[len(f.bodies)-1])
	}
	if _, err := a.CreateUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if f.bodies[len(f.bodies)-1] != `{"name":"bob"}` {
		t.Fatalf("default permissions must omit the list: %s", f.bodies[len(f.bodies)-1])
	}
	users, err := a.ListUsers(ctx)
	if err != nil || len(users) != 3 || users[2].UserID != 3 || users[0].Permissions[0] != "keys:read" {
		t.Fatalf("ListUsers: %+v %v", users, err)
	}
	u, err := a.GetUser(ctx, 7)
	if err != nil || u.UserID != 7 || u.CreatedAt.IsZero() {
		t.Fatalf("GetUser: %+v %v", u, err)
	}
	_, err = a.GetUser(ctx, 8)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "user.not_found" {
		t.Fatalf("GetUser 404: %#v", err)
	}
	for _, op := range []func(context.Context, uint64) error{a.DisableUser, a.EnableUser, a.RevokeTokens} {
		if err := op(ctx, 7); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetPermissions(ctx, 7, nil); err != nil {
		t.Fatal(err)
	}
	if f.bodies[len(f.bodies)-1] != `{"permissions":[]}` {
		t.Fatalf("permissions body %s", f.bodies[len(f.bodies)-1])
	}
	cl, err := a.Cluster(ctx)
	if err != nil || cl.Leader != "node2" {
		t.Fatalf("Cluster: %+v %v", cl, err)
	}
	es, err := a.Audit(ctx, 3, 50)
	if err != nil || len(es) != 1 || es[0].Seq != 4 || es[0].Time != "2026-01-02T03:04:05.123Z" {
		t.Fatalf("Audit: %+v %v", es, err)
	}
	want := []string{
		"POST /v1/admin/users", "POST /v1/admin/users",
		"GET /v1/admin/users?limit=1000", "GET /v1/admin/users?after=2&limit=1000",
		"GET /v1/admin/users/7", "GET /v1/admin/users/8",
		"POST /v1/admin/users/7/disable", "POST /v1/admin/users/7/enable", "POST /v1/admin/users/7/revoke-tokens",
		"PUT /v1/admin/users/7/permissions", "GET /v1/cluster", "GET /v1/audit?after=3&limit=50",
	}
	if strings.Join(f.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s", strings.Join(f.calls, "\n"))
	}
	if len(f.jtis) != len(want) {
		t.Fatal("every call needs its own admin token")
	}
}

func TestHS256Mode(t *testing.T) {
	f, srv := newFakeNode(t, auth.VerifierConfig{HMACKey: hsKey, Audience: "dev"})
	a, err := New(hsKey, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, a, f)
}

func TestKeyPairMode(t *testing.T) {
	priv := edKey(1)
	f, srv := newFakeNode(t, auth.VerifierConfig{AdminPublicKey: priv.Public().(ed25519.PublicKey), Audience: "dev"})
	a, err := NewKeyPair(priv, srv.URL, WithAudience("dev"), WithHTTPClient(&http.Client{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, a, f)

	// Another admin key is refused.
	other, _ := NewKeyPair(edKey(2), srv.URL)
	if _, err := other.Cluster(context.Background()); client.CodeOf(err) != auth.CodeTokenInvalid {
		t.Fatalf("foreign admin key: %v", err)
	}
}

func TestWrongAudience(t *testing.T) {
	_, srv := newFakeNode(t, auth.VerifierConfig{HMACKey: hsKey, Audience: "dev"})
	a, _ := New(hsKey, srv.URL, WithAudience("prod"))
	if _, err := a.Cluster(context.Background()); client.CodeOf(err) != auth.CodeWrongAudience {
		t.Fatalf("got %v", err)
	}
}

func TestGenUserToken(t *testing.T) {
	pub := edKey(9).Public().(ed25519.PublicKey)
	pubHex := hex.EncodeToString(pub)
	// Offline: a base URL that cannot be reached is fine.
	a, err := New(hsKey, "http://offline.invalid", WithAudience("dev"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.GenUserToken(12, pubHex, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: hsKey, Audience: "dev", RequireAudience: true})
	c, err := v.VerifyUser(tok, time.Now())
	if err != nil || c.UserID != 12 || !c.PublicKey.Equal(pub) || c.ExpiresAt.Sub(c.IssuedAt) != time.Hour {
		t.Fatalf("user token: %+v %v", c, err)
	}
	if _, err := a.GenUserToken(12, "zz", time.Hour); err == nil {
		t.Fatal("bad public key accepted")
	}

	kp, _ := NewKeyPair(edKey(1), "http://offline.invalid")
	tok, _ = kp.GenUserToken(12, pubHex, time.Minute)
	ev, _ := auth.NewTokenVerifier(auth.VerifierConfig{AdminPublicKey: edKey(1).Public().(ed25519.PublicKey)})
	if _, err := ev.VerifyUser(tok, time.Now()); err != nil {
		t.Fatalf("EdDSA user token: %v", err)
	}
}

func TestConstructors(t *testing.T) {
	if _, err := New(hsKey[:31], "http://x"); err == nil {
		t.Error("short admin key accepted")
	}
	if _, err := New(hsKey, "not a url"); err == nil {
		t.Error("bad URL accepted")
	}
	if _, err := NewKeyPair(edKey(1)[:32], "http://x"); err == nil {
		t.Error("short Ed25519 key accepted")
	}
	if k, err := ParseAdminKeyHex(hex.EncodeToString(hsKey) + "\n"); err != nil || !bytes.Equal(k, hsKey) {
		t.Errorf("ParseAdminKeyHex: %x %v", k, err)
	}
	if _, err := ParseAdminKeyHex("abcd"); err == nil {
		t.Error("short hex key accepted")
	}
	a, _ := New(hsKey, "http://x")
	if _, err := a.CreateUser(context.Background(), ""); err == nil {
		t.Error("empty name accepted")
	}
}
