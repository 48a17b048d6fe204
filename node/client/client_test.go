package client

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
)

var adminKey = bytes.Repeat([]byte{7}, 32)

func userKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

// fakeNode authenticates like a node (token, digest, profile, window, signature, nonce
// once) with the auth package, then serves a few routes from memory.
type fakeNode struct {
	t        *testing.T
	verifier *auth.TokenVerifier
	// accessKeys maps access key ids to their public keys.
	accessKeys map[string]ed25519.PublicKey

	mu       sync.Mutex
	grants   []json.RawMessage // bodies of POST /v1/access-keys
	revoked  []string          // ids of DELETE /v1/access-keys/{id}
	nonces   map[string]bool
	polls    int
	lastBody []byte
	calls    []string
}

func newFakeNode(t *testing.T) (*fakeNode, *httptest.Server) {
	v, err := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey, Audience: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{t: t, verifier: v, nonces: map[string]bool{}, accessKeys: map[string]ed25519.PublicKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/keys", f.keygen)
	mux.HandleFunc("GET /v1/keys", f.listKeys)
	mux.HandleFunc("GET /v1/keys/{key_id}", f.getKey)
	mux.HandleFunc("POST /v1/keys/{key_id}/sign", f.sign)
	mux.HandleFunc("GET /v1/requests/{id}", f.getRequest)
	f.registerAccessRoutes(mux)
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"name": "dev", "threshold": 2, "parties": 3, "leader": "node1",
			"members": []map[string]any{{"id": "node1", "api": "http://127.0.0.1:7701", "peer_id": "12D3", "healthy": true, "leader": true}}})
	})
	mux.HandleFunc("GET /v1/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		problem(w, 429, "rate.limited", "slow down")
	})
	mux.HandleFunc("GET /v1/plain", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		io.WriteString(w, "bad gateway")
	})
	srv := httptest.NewServer(f.authenticate(mux))
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, code, detail string, extra ...any) {
	p := map[string]any{"type": "about:blank", "title": "error", "status": status, "code": code, "detail": detail, "request_id": "rq-1"}
	if len(extra) == 2 {
		p[extra[0].(string)] = extra[1]
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Request-Id", "rq-1")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func (f *fakeNode) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		now := time.Now()
		fail := func(err error) {
			problem(w, 401, auth.CodeOf(err), err.Error())
		}
		if err := auth.CheckContentDigest(r.Header.Get("Content-Digest"), body); err != nil {
			fail(err)
			return
		}
		if len(body) > 0 && r.Header.Get("Content-Type") != "application/json" {
			problem(w, 400, "request.malformed", "content type")
			return
		}
		parts := auth.RequestPartsFromHTTP(r, body)
		sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
		if err != nil {
			fail(err)
			return
		}
		if err := auth.CheckProfile(sig, parts); err != nil {
			fail(err)
			return
		}
		if err := auth.CheckWindow(sig, now); err != nil {
			fail(err)
			return
		}
		var pub ed25519.PublicKey
		if authz := r.Header.Get("Authorization"); authz != "" {
			claims, err := f.verifier.VerifyUser(strings.TrimPrefix(authz, "Bearer "), now)
			if err != nil {
				fail(err)
				return
			}
			if sig.KeyID != auth.UserKeyID(claims.UserID) {
				problem(w, 401, auth.CodeSignatureInvalid, "keyid")
				return
			}
			pub = claims.PublicKey
		} else {
			pub = f.accessKeys[sig.KeyID]
			if pub == nil {
				problem(w, 401, auth.CodeTokenInvalid, "unknown access key")
				return
			}
		}
		if err := auth.VerifyEd25519(pub, sig, parts); err != nil {
			fail(err)
			return
		}
		f.mu.Lock()
		reused := f.nonces[sig.KeyID+"|"+sig.Nonce]
		f.nonces[sig.KeyID+"|"+sig.Nonce] = true
		f.lastBody = body
		f.calls = append(f.calls, r.Method+" "+r.RequestURI)
		f.mu.Unlock()
		if reused {
			problem(w, 401, "auth.nonce_reused", "nonce already used")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func testKey(id, curve string) map[string]any {
	return map[string]any{"key_id": id, "label": "l", "curve": curve, "threshold": 2, "parties": 3,
		"public_key": strings.Repeat("ab", 32), "status": "active", "created_at": "2026-01-02T03:04:05Z"}
}

func (f *fakeNode) keygen(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Curve          string `json:"curve"`
		Threshold      int    `json:"threshold"`
		Label          string `json:"label"`
		IdempotencyKey string `json:"idempotency_key"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || b.Threshold != 2 {
		problem(w, 400, "request.malformed", "bad body")
		return
	}
	if b.Curve == "ed25519" {
		writeJSON(w, 201, testKey("k_ed", "ed25519"))
		return
	}
	writeJSON(w, 202, map[string]any{"request_id": "r_kg", "kind": "keygen", "status": "scheduled", "key_id": "k_ec",
		"created_at": "2026-01-02T03:04:05Z", "idempotency_key": b.IdempotencyKey})
}

func (f *fakeNode) listKeys(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Query().Get("after") {
	case "":
		writeJSON(w, 200, map[string]any{"keys": []any{testKey("k1", "ed25519"), testKey("k2", "ed25519")}, "next": "k2"})
	case "k2":
		writeJSON(w, 200, map[string]any{"keys": []any{testKey("k3", "secp256k1")}})
	default:
		problem(w, 400, "request.malformed", "after")
	}
}

func (f *fakeNode) getKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("key_id")
	if id != "k1" && id != "a/b" {
		problem(w, 404, "key.not_found", "no such key")
		return
	}
	k := testKey(id, "secp256k1")
	k["chain_code"] = strings.Repeat("cd", 32)
	writeJSON(w, 200, k)
}

func (f *fakeNode) sign(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Message        string `json:"message"`
		DerivationPath string `json:"derivation_path"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		problem(w, 400, "request.malformed", "bad body")
		return
	}
	req := map[string]any{"request_id": "r_s", "kind": "sign", "key_id": r.PathValue("key_id"), "created_at": "2026-01-02T03:04:05Z", "message": b.Message}
	switch r.PathValue("key_id") {
	case "k_blocked":
		req["status"] = "blocked"
		req["error"] = map[string]any{"code": "policy.blocked", "detail": "velocity"}
		problem(w, 403, "policy.blocked", "velocity", "request", req)
	case "k_slow":
		req["status"] = "scheduled"
		writeJSON(w, 202, req)
	default:
		req["status"] = "signed"
		req["derivation_path"] = b.DerivationPath
		req["signature"] = map[string]any{"r": strings.Repeat("01", 32), "s": strings.Repeat("02", 32), "recovery_id": 1, "der": "3006020101020101"}
		writeJSON(w, 200, req)
	}
}

func (f *fakeNode) getRequest(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.polls++
	n := f.polls
	f.mu.Unlock()
	req := map[string]any{"request_id": r.PathValue("id"), "kind": "sign", "key_id": "k_slow", "created_at": "2026-01-02T03:04:05Z", "status": "signing"}
	if r.PathValue("id") == "r_never" {
		writeJSON(w, 200, req)
		return
	}
	if n >= 3 {
		req["status"] = "signed"
		req["signature"] = map[string]any{"signature": strings.Repeat("ee", 64)}
	}
	writeJSON(w, 200, req)
}

func userClient(t *testing.T, srv *httptest.Server) (*Client, ed25519.PrivateKey) {
	t.Helper()
	priv := userKey(5)
	iss, _ := auth.NewHS256Issuer(adminKey)
	tok, err := iss.UserToken(42, hex.EncodeToString(priv.Public().(ed25519.PublicKey)), time.Hour, "dev", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, tok, priv)
	if err != nil {
		t.Fatal(err)
	}
	return c, priv
}

func TestUserModeRoutes(t *testing.T) {
	f, srv := newFakeNode(t)
	c, _ := userClient(t, srv)
	ctx := context.Background()

	k, r, err := c.CreateKey(ctx, "ed25519", 2, "agent", "")
	if err != nil || r != nil || k == nil || k.KeyID != "k_ed" || k.Parties != 3 || k.CreatedAt.IsZero() {
		t.Fatalf("CreateKey 201: %+v %+v %v", k, r, err)
	}
	if string(f.lastBody) != `{"curve":"ed25519","threshold":2,"label":"agent"}` {
		t.Fatalf("body sent: %s", f.lastBody)
	}
	k, r, err = c.CreateKey(ctx, "secp256k1", 2, "", "idem-1")
	if err != nil || k != nil || r == nil || r.RequestID != "r_kg" || r.Status != "scheduled" || r.IdempotencyKey != "idem-1" {
		t.Fatalf("CreateKey 202: %+v %+v %v", k, r, err)
	}
	keys, err := c.ListKeys(ctx)
	if err != nil || len(keys) != 3 || keys[2].KeyID != "k3" {
		t.Fatalf("ListKeys: %+v %v", keys, err)
	}
	got, err := c.GetKey(ctx, "a/b")
	if err != nil || got.KeyID != "a/b" || got.ChainCode == "" {
		t.Fatalf("GetKey with an escaped id: %+v %v", got, err)
	}
	digest := bytes.Repeat([]byte{0xaa}, 32)
	sr, err := c.Sign(ctx, "k1", digest, "m/0/7", "")
	if err != nil || sr.Status != "signed" || sr.Signature == nil || sr.Signature.RecoveryID == nil || *sr.Signature.RecoveryID != 1 || sr.DerivationPath != "m/0/7" {
		t.Fatalf("Sign: %+v %v", sr, err)
	}
	if sr.Message != hex.EncodeToString(digest) {
		t.Fatal("message not sent as hex")
	}
	cl, err := c.Cluster(ctx)
	if err != nil || cl.Name != "dev" || len(cl.Members) != 1 || !cl.Members[0].Leader {
		t.Fatalf("Cluster: %+v %v", cl, err)
	}
}

func TestAPIErrors(t *testing.T) {
	_, srv := newFakeNode(t)
	c, _ := userClient(t, srv)
	ctx := context.Background()

	_, err := c.GetKey(ctx, "nope")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "key.not_found" || ae.RequestID != "rq-1" || ae.Detail != "no such key" {
		t.Fatalf("404: %#v", err)
	}
	_, err = c.Sign(ctx, "k_blocked", make([]byte, 32), "", "")
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "policy.blocked" || ae.Request == nil || ae.Request.Status != "blocked" || ae.Request.Error.Code != "policy.blocked" {
		t.Fatalf("403: %#v", err)
	}
	err = c.Do(ctx, "GET", "/v1/slow", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter != 3*time.Second || CodeOf(err) != "rate.limited" {
		t.Fatalf("429: %#v", err)
	}
	err = c.Do(ctx, "GET", "/v1/plain", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || ae.Detail != "bad gateway" {
		t.Fatalf("502: %#v", err)
	}
	if !strings.Contains(ae.Error(), "502") {
		t.Fatal(ae.Error())
	}
}

func TestWaitRequest(t *testing.T) {
	_, srv := newFakeNode(t)
	c, _ := userClient(t, srv)
	ctx := context.Background()
	r, err := c.Sign(ctx, "k_slow", []byte("hello"), "", "")
	if err != nil || r.Status != "scheduled" {
		t.Fatalf("Sign 202: %+v %v", r, err)
	}
	done, err := c.WaitRequest(ctx, r.RequestID, 10*time.Millisecond)
	if err != nil || done.Status != "signed" || done.Signature.Signature == "" {
		t.Fatalf("WaitRequest: %+v %v", done, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitRequest(cctx, "r_never", 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRequest must stop with its context: %v", err)
	}
}

func TestEveryCallIsSignedAfresh(t *testing.T) {
	f, srv := newFakeNode(t)
	c, _ := userClient(t, srv)
	for i := 0; i < 5; i++ {
		// The fake node answers auth.nonce_reused to a repeated nonce.
		if _, err := c.GetKey(context.Background(), "k1"); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if len(f.nonces) != 5 {
		t.Fatalf("%d distinct nonces for 5 calls", len(f.nonces))
	}
}

func TestAccessKeyMode(t *testing.T) {
	f, srv := newFakeNode(t)
	key := userKey(9)
	f.accessKeys["ak_123"] = key.Public().(ed25519.PublicKey)
	c, err := NewAccessKey(srv.URL, "ak_123", key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(context.Background(), "k1", make([]byte, 32), "", "i1"); err != nil {
		t.Fatal(err)
	}
	if string(f.lastBody) != `{"message":"`+strings.Repeat("00", 32)+`","idempotency_key":"i1"}` {
		t.Fatalf("body %s", f.lastBody)
	}
	// Another key under that id fails verification.
	bad, _ := NewAccessKey(srv.URL, "ak_123", userKey(10))
	if _, err := bad.GetKey(context.Background(), "k1"); CodeOf(err) != auth.CodeSignatureInvalid {
		t.Fatalf("wrong access key: %v", err)
	}
}

func TestWrongUserKeyIsRefused(t *testing.T) {
	_, srv := newFakeNode(t)
	iss, _ := auth.NewHS256Issuer(adminKey)
	tok, _ := iss.UserToken(42, hex.EncodeToString(userKey(5).Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	c, err := New(srv.URL, tok, userKey(6))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cluster(context.Background()); CodeOf(err) != auth.CodeSignatureInvalid {
		t.Fatalf("got %v", err)
	}
}

func TestConstructorsAndLimits(t *testing.T) {
	iss, _ := auth.NewHS256Issuer(adminKey)
	tok, _ := iss.UserToken(42, hex.EncodeToString(userKey(5).Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	adminTok, _ := iss.AdminToken(time.Now())
	bad := []struct {
		name string
		f    func() error
	}{
		{"empty token", func() error { _, err := New("http://x", "", userKey(5)); return err }},
		{"admin token", func() error { _, err := New("http://x", adminTok, userKey(5)); return err }},
		{"garbage token", func() error { _, err := New("http://x", "abc", userKey(5)); return err }},
		{"short key", func() error { _, err := New("http://x", tok, userKey(5)[:32]); return err }},
		{"ftp url", func() error { _, err := New("ftp://x", tok, userKey(5)); return err }},
		{"no host", func() error { _, err := New("http://", tok, userKey(5)); return err }},
		{"query in base", func() error { _, err := New("http://x/?a=1", tok, userKey(5)); return err }},
		{"empty access key id", func() error { _, err := NewAccessKey("http://x", "", userKey(5)); return err }},
		{"nil authenticator", func() error { _, err := NewCustom("http://x", nil); return err }},
	}
	for _, b := range bad {
		if b.f() == nil {
			t.Errorf("%s accepted", b.name)
		}
	}
	c, err := New("http://127.0.0.1:1/", tok, userKey(5))
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "http://127.0.0.1:1" {
		t.Fatal(c.BaseURL())
	}
	if err := c.Do(context.Background(), "POST", "/v1/keys", make([]byte, MaxRequestBody+1), nil); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversized body: %v", err)
	}
	if err := c.Do(context.Background(), "GET", "v1/keys", nil, nil); err == nil {
		t.Fatal("relative path accepted")
	}
}

func TestJSONShapes(t *testing.T) {
	// Ed25519 signatures carry no recovery id; secp256k1 ones do, even when it is 0.
	var r Request
	if err := json.Unmarshal([]byte(`{"request_id":"r","status":"signed","created_at":"2026-01-02T03:04:05Z","signature":{"r":"01","s":"02","recovery_id":0,"der":"30"}}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Signature.RecoveryID == nil || *r.Signature.RecoveryID != 0 {
		t.Fatal("recovery_id 0 lost")
	}
	out, _ := json.Marshal(Signature{Signature: "ee"})
	if string(out) != `{"signature":"ee"}` {
		t.Fatalf("marshal: %s", out)
	}
	for in, want := range map[string]string{`"k2"`: "k2", `17`: "17", `null`: "", ``: ""} {
		if got := NextCursor(json.RawMessage(in)); got != want {
			t.Errorf("NextCursor(%s) = %q", in, got)
		}
	}
	if !Final("denied") || Final("signing") || Final("pending_approval") {
		t.Fatal("Final")
	}
}
