package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/auth"
)

// registerAccessRoutes serves the access-key routes from memory: two pages of keys, two
// pages of log, 404 for unknown ids.
func (f *fakeNode) registerAccessRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/access-keys", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.grants = append(f.grants, json.RawMessage(b))
		f.mu.Unlock()
		var g map[string]any
		_ = json.Unmarshal(b, &g)
		out := map[string]any{"id": "ak_1", "label": g["label"], "scheme": g["scheme"], "public_key": g["public_key"],
			"permissions": g["permissions"], "key_ids": g["key_ids"], "expires_at": g["expires_at"],
			"created_at": "2026-01-02T03:04:05Z", "revoked_at": nil}
		writeJSON(w, 201, out)
	})
	mux.HandleFunc("GET /v1/access-keys", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") == "" {
			problem(w, 400, "request.malformed", "no limit")
			return
		}
		switch r.URL.Query().Get("after") {
		case "":
			writeJSON(w, 200, map[string]any{"access_keys": []map[string]any{
				{"id": "ak_1", "scheme": "ed25519", "public_key": strings.Repeat("aa", 32), "permissions": []string{"keys:read"},
					"key_ids": []string{}, "expires_at": nil, "created_at": "2026-01-02T03:04:05Z", "revoked_at": nil},
			}, "next": "ak_1"})
		case "ak_1":
			writeJSON(w, 200, map[string]any{"access_keys": []map[string]any{
				{"id": "ak_2", "scheme": "secp256k1", "public_key": "02" + strings.Repeat("bb", 32), "permissions": []string{"keys:sign"},
					"key_ids": []string{"k1"}, "expires_at": "2027-01-01T00:00:00Z", "created_at": "2026-01-02T03:04:05.250Z",
					"revoked_at": "2026-02-01T00:00:00Z"},
			}})
		default:
			problem(w, 400, "request.malformed", "bad cursor")
		}
	})
	mux.HandleFunc("DELETE /v1/access-keys/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "ak_1" {
			problem(w, 404, "key.not_found", "no such access key")
			return
		}
		f.mu.Lock()
		f.revoked = append(f.revoked, r.PathValue("id"))
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/access-keys/{id}/log", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "ak_1" {
			problem(w, 404, "key.not_found", "no such access key")
			return
		}
		if r.URL.Query().Get("after") == "" {
			writeJSON(w, 200, map[string]any{"entries": []map[string]any{
				{"seq": 1, "time": "2026-01-02T03:04:05Z", "route": "keys.list", "object": "", "outcome": "allowed", "code": ""},
			}, "next": 1})
			return
		}
		writeJSON(w, 200, map[string]any{"entries": []map[string]any{
			{"seq": 2, "time": "2026-01-02T03:04:06Z", "route": "keys.sign", "object": "k1", "outcome": "refused", "code": "perm.denied"},
		}})
	})
}

func TestAccessKeyRoutes(t *testing.T) {
	f, srv := newFakeNode(t)
	c, _ := userClient(t, srv)
	ctx := context.Background()
	exp := time.Date(2027, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("x", 3600))
	k, err := c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeEd25519, PublicKey: strings.Repeat("cd", 32),
		Permissions: []string{PermKeysRead, PermKeysSign}, KeyIDs: []string{"k1"}, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	wantBody := `{"scheme":"ed25519","public_key":"` + strings.Repeat("cd", 32) + `","permissions":["keys:read","keys:sign"],"key_ids":["k1"],"expires_at":"2027-01-02T02:04:05.6Z"}`
	if string(f.grants[0]) != wantBody {
		t.Fatalf("grant body\n got %s\nwant %s", f.grants[0], wantBody)
	}
	if k.ID != "ak_1" || !k.ExpiresAt.Equal(exp) || !k.RevokedAt.IsZero() || k.CreatedAt.IsZero() || len(k.KeyIDs) != 1 {
		t.Fatalf("created %+v", k)
	}
	// A grant without the optional fields leaves them out; permissions is always a list.
	if _, err := c.CreateAccessKey(ctx, AccessKeyGrant{Label: "bot", Scheme: SchemeSecp256k1, PublicKey: "02ab"}); err != nil {
		t.Fatal(err)
	}
	if got := string(f.grants[1]); got != `{"label":"bot","scheme":"secp256k1","public_key":"02ab","permissions":[]}` {
		t.Fatalf("minimal grant body %s", got)
	}

	ks, err := c.ListAccessKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	if len(ks) != 2 || ks[0].ID != "ak_1" || ks[1].ID != "ak_2" || !ks[0].ExpiresAt.IsZero() || !ks[1].Revoked(now) || ks[0].Revoked(now) ||
		ks[1].Expired(now) || !ks[1].Expired(time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("list %+v", ks)
	}

	if err := c.RevokeAccessKey(ctx, "ak_1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeAccessKey(ctx, "ak_nope"); CodeOf(err) != "key.not_found" {
		t.Fatalf("revoke unknown: %v", err)
	}
	var ae *APIError
	if err := c.RevokeAccessKey(ctx, "ak_nope"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("revoke unknown: %v", err)
	}
	if len(f.revoked) != 1 || f.revoked[0] != "ak_1" {
		t.Fatalf("revoked %v", f.revoked)
	}

	log, err := c.AccessKeyLog(ctx, "ak_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 2 || log[0].Route != "keys.list" || log[0].Seq != 1 || log[1].Outcome != "refused" || log[1].Code != "perm.denied" ||
		log[1].Time.IsZero() || log[1].Object != "k1" || log[1].Seq != 2 {
		t.Fatalf("log %+v", log)
	}
	for name, err := range map[string]error{
		"revoke": c.RevokeAccessKey(ctx, ""),
		"log":    func() error { _, err := c.AccessKeyLog(ctx, ""); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "empty access key id") {
			t.Errorf("%s with empty id: %v", name, err)
		}
	}
	// Ids are path-escaped, never spliced raw into the path.
	f.calls = nil
	_, _ = c.AccessKeyLog(ctx, "ak_1/../../admin")
	if len(f.calls) != 1 || !strings.Contains(f.calls[0], "ak_1%2F..%2F..%2Fadmin") {
		t.Fatalf("escaped path: %v", f.calls)
	}
}

func TestAccessKeyJSON(t *testing.T) {
	tests := []struct {
		name, in        string
		expires, revoke bool
		wantErr         bool
	}{
		{"nulls", `{"id":"ak_1","expires_at":null,"revoked_at":null,"created_at":"2026-01-02T03:04:05Z"}`, false, false, false},
		{"absent", `{"id":"ak_1"}`, false, false, false},
		{"empty strings", `{"id":"ak_1","expires_at":"","revoked_at":""}`, false, false, false},
		{"set", `{"id":"ak_1","expires_at":"2026-01-02T03:04:05.123Z","revoked_at":"2026-01-02T03:04:05+02:00"}`, true, true, false},
		{"bad time", `{"id":"ak_1","expires_at":"tomorrow"}`, false, false, true},
		{"bad type", `{"id":"ak_1","revoked_at":17}`, false, false, true},
		{"not an object", `[]`, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k AccessKey
			err := json.Unmarshal([]byte(tt.in), &k)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				return
			}
			if k.ExpiresAt.IsZero() == tt.expires || k.RevokedAt.IsZero() == tt.revoke || k.ID != "ak_1" {
				t.Fatalf("%+v", k)
			}
			// Round trip.
			b, err := json.Marshal(k)
			if err != nil {
				t.Fatal(err)
			}
			var k2 AccessKey
			if err := json.Unmarshal(b, &k2); err != nil || !k2.ExpiresAt.Equal(k.ExpiresAt) || !k2.RevokedAt.Equal(k.RevokedAt) || k2.ID != k.ID {
				t.Fatalf("round trip %s: %+v %v", b, k2, err)
			}
		})
	}
}

// xauthNode verifies X-Auth-Tokens with the auth package and accepts each replay key
// once, like a node.
type xauthNode struct {
	t    *testing.T
	pub  []byte
	mu   sync.Mutex
	seen map[[32]byte]bool
	hits int
}

func (x *xauthNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Authorization") != "" || r.Header.Get("Signature") != "" {
		problem(w, 401, "auth.missing", "mixed credentials")
		return
	}
	tok, err := auth.ParseXAuthToken(r.Header.Get("X-Auth-Token"))
	if err != nil {
		problem(w, 401, auth.CodeOf(err), err.Error())
		return
	}
	if !bytes.Equal(tok.PubKey, x.pub) {
		problem(w, 401, "auth.token_invalid", "unknown access key")
		return
	}
	if err := auth.VerifyXAuthToken(tok, r.Method, r.URL.RequestURI(), body, time.Now()); err != nil {
		problem(w, 401, auth.CodeOf(err), err.Error())
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.hits++
	rk := tok.ReplayKey(body)
	if x.seen[rk] {
		problem(w, 401, "auth.nonce_reused", "token already used")
		return
	}
	x.seen[rk] = true
	writeJSON(w, 200, map[string]any{"scheme": tok.Scheme, "keys": []any{}})
}

func TestXAuthClient(t *testing.T) {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	newNode := func() (*xauthNode, *httptest.Server) {
		node := &xauthNode{t: t, pub: priv.PubKey().SerializeCompressed(), seen: map[[32]byte]bool{}}
		srv := httptest.NewServer(node)
		t.Cleanup(srv.Close)
		return node, srv
	}
	ctx := context.Background()
	for _, scheme := range []string{XAuthBSM, XAuthBRC77} {
		t.Run(scheme, func(t *testing.T) {
			node, srv := newNode()
			c, err := NewXAuth(srv.URL, priv, scheme)
			if err != nil {
				t.Fatal(err)
			}
			// Identical calls in a burst: each gets its own timestamp, so none is a replay.
			for i := 0; i < 20; i++ {
				var out struct {
					Scheme string `json:"scheme"`
				}
				if err := c.Do(ctx, http.MethodGet, "/v1/keys?limit=5&after=k%201", nil, &out); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if out.Scheme != scheme {
					t.Fatalf("node saw scheme %q", out.Scheme)
				}
			}
			// A body is bound by its hash.
			if _, err := c.Sign(ctx, "k1", make([]byte, 32), "m/0/7", ""); err != nil {
				t.Fatalf("sign: %v", err)
			}
			// DELETE and PUT are refused before anything is sent.
			before := node.hits
			if err := c.RevokeAccessKey(ctx, "ak_1"); !errors.Is(err, ErrXAuthMethod) {
				t.Fatalf("DELETE: %v", err)
			}
			if err := c.Do(ctx, http.MethodPut, "/v1/x", map[string]int{"a": 1}, nil); !errors.Is(err, ErrXAuthMethod) {
				t.Fatalf("PUT: %v", err)
			}
			if node.hits != before {
				t.Fatal("a DELETE or PUT reached the node")
			}
		})
	}
	// Two nodes that share one replay memory (as a cluster does): a client and its
	// WithBaseURL copy share their timestamps, so identical calls never collide.
	shared := &xauthNode{t: t, pub: priv.PubKey().SerializeCompressed(), seen: map[[32]byte]bool{}}
	srvA, srvB := httptest.NewServer(shared), httptest.NewServer(shared)
	t.Cleanup(srvA.Close)
	t.Cleanup(srvB.Close)
	ca, _ := NewXAuth(srvA.URL, priv, XAuthBSM)
	cb, err := ca.WithBaseURL(srvB.URL)
	if err != nil || cb.BaseURL() != srvB.URL {
		t.Fatalf("WithBaseURL: %v", err)
	}
	for i := 0; i < 10; i++ {
		if _, err := ca.ListKeys(ctx); err != nil {
			t.Fatalf("node A call %d: %v", i, err)
		}
		if _, err := cb.ListKeys(ctx); err != nil {
			t.Fatalf("node B call %d: %v", i, err)
		}
	}
	_, srv := newNode()
	// A token for another key is refused by the node (the client does not hide errors).
	other, _ := btcec.NewPrivateKey()
	c, _ := NewXAuth(srv.URL, other, XAuthBSM)
	if _, err := c.ListKeys(ctx); CodeOf(err) != "auth.token_invalid" {
		t.Fatalf("other key: %v", err)
	}

	for name, f := range map[string]func() error{
		"nil key":     func() error { _, err := NewXAuth(srv.URL, nil, XAuthBSM); return err },
		"bad scheme":  func() error { _, err := NewXAuth(srv.URL, priv, "ecdsa"); return err },
		"empty":       func() error { _, err := NewXAuth(srv.URL, priv, ""); return err },
		"bad base":    func() error { _, err := NewXAuth("ftp://x", priv, XAuthBRC77); return err },
		"query in it": func() error { _, err := NewXAuth("http://x/?q=1", priv, XAuthBRC77); return err },
	} {
		if f() == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestXAuthStamperIsStrictlyIncreasing(t *testing.T) {
	var s xauthStamper
	now := time.Date(2026, 1, 2, 3, 4, 5, 123_456_789, time.UTC)
	prev := time.Time{}
	for i := 0; i < 1000; i++ {
		// The clock stands still, then steps back: stamps still increase by a millisecond.
		n := now
		if i > 500 {
			n = now.Add(-time.Second)
		}
		got := s.next(n)
		if !got.After(prev) || got.Nanosecond()%int(time.Millisecond) != 0 {
			t.Fatalf("stamp %d: %v after %v", i, got, prev)
		}
		prev = got
	}
	if want := now.Truncate(time.Millisecond).Add(999 * time.Millisecond); !prev.Equal(want) {
		t.Fatalf("last stamp %v, want %v", prev, want)
	}
	if got := s.next(now.Add(time.Hour)); !got.Equal(now.Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("stamp after the clock moved on: %v", got)
	}
}

func ExampleNewXAuth() {
	key, _ := btcec.NewPrivateKey()
	c, err := NewXAuth("http://127.0.0.1:7701", key, XAuthBRC77)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.BaseURL(), len(hex.EncodeToString(key.PubKey().SerializeCompressed())))
	// Output: http://127.0.0.1:7701 66
}
