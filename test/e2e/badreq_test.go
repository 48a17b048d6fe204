//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

type rawReq struct {
	method, url string
	body        []byte
}

// signed builds a request signed by priv with the given token, as the SDK would.
func signed(t *testing.T, r rawReq, token string, keyID string, priv ed25519.PrivateKey, now time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(r.method, r.url, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if err := (auth.Signer{KeyID: keyID, Key: priv}).Sign(req, r.body, now); err != nil {
		t.Fatal(err)
	}
	return req
}

func send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &p)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("error answer with Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("answer without X-Request-Id")
	}
	return resp.StatusCode, p.Code
}

func badRequests(t *testing.T, c *cluster, alice *user, ecKey, edKey string) {
	ctx := context.Background()
	bob := c.newUser(ctx, "bob")
	kid := "user:" + strconv.FormatUint(alice.ID, 10)
	now := time.Now()
	iss, _ := auth.NewHS256Issuer(c.adminKey())
	pubHex := hex.EncodeToString(alice.Key.Public().(ed25519.PublicKey))
	expired, _ := iss.UserToken(alice.ID, pubHex, time.Hour, "", now.Add(-2*time.Hour))
	otherKey := make([]byte, 32)
	_, _ = rand.Read(otherKey)
	foreignIss, _ := auth.NewHS256Issuer(otherKey)
	foreign, _ := foreignIss.UserToken(alice.ID, pubHex, time.Hour, "", now)
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	pl := base64.RawURLEncoding.EncodeToString([]byte(`{"user_id":` + strconv.FormatUint(alice.ID, 10) + `,"iat":` + strconv.FormatInt(now.Unix(), 10) + `,"exp":` + strconv.FormatInt(now.Unix()+3600, 10) + `,"public_key":"` + pubHex + `"}`))
	algNone := hdr + "." + pl + "."
	adminTok, _ := iss.AdminToken(now)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)

	keys := rawReq{"GET", c.API(0) + "/v1/keys", nil}
	sign := func(key string, body string) rawReq {
		return rawReq{"POST", c.API(0) + "/v1/keys/" + key + "/sign", []byte(body)}
	}
	digest := hex.EncodeToString(sha("x"))
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"missing auth", func() *http.Request { r, _ := http.NewRequest("GET", keys.url, nil); return r }, 401, "auth.missing"},
		{"token without signature", func() *http.Request {
			r, _ := http.NewRequest("GET", keys.url, nil)
			r.Header.Set("Authorization", "Bearer "+alice.Token)
			return r
		}, 401, "auth.missing"},
		{"malformed JSON", func() *http.Request { return signed(t, sign(ecKey, `{"message":`), alice.Token, kid, alice.Key, now) }, 400, "request.malformed"},
		{"unknown field", func() *http.Request {
			return signed(t, sign(ecKey, `{"message":"`+digest+`","derivaton_path":"m/1"}`), alice.Token, kid, alice.Key, now)
		}, 400, "request.malformed"},
		{"oversized body", func() *http.Request {
			return signed(t, sign(ecKey, `{"message":"`+string(bytes.Repeat([]byte("a"), 1<<20))+`"}`), alice.Token, kid, alice.Key, now)
		}, 413, "request.too_large"},
		{"garbage token", func() *http.Request { return signed(t, keys, "not.a.jwt", kid, alice.Key, now) }, 401, "auth.token_invalid"},
		{"expired token", func() *http.Request { return signed(t, keys, expired, kid, alice.Key, now) }, 401, "auth.token_expired"},
		{"token from another admin key", func() *http.Request { return signed(t, keys, foreign, kid, alice.Key, now) }, 401, "auth.token_invalid"},
		{"alg none", func() *http.Request { return signed(t, keys, algNone, kid, alice.Key, now) }, 401, "auth.token_invalid"},
		{"wrong signing key", func() *http.Request { return signed(t, keys, alice.Token, kid, stranger, now) }, 401, "auth.signature_invalid"},
		{"keyid of another user", func() *http.Request {
			return signed(t, keys, alice.Token, "user:"+strconv.FormatUint(bob.ID, 10), alice.Key, now)
		}, 401, "auth.signature_invalid"},
		{"tampered body", func() *http.Request {
			r := signed(t, sign(ecKey, `{"message":"`+digest+`"}`), alice.Token, kid, alice.Key, now)
			other := []byte(`{"message":"` + hex.EncodeToString(sha("y")) + `"}`)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(other)), int64(len(other))
			return r
		}, 401, "auth.signature_invalid"},
		{"stale created", func() *http.Request { return signed(t, keys, alice.Token, kid, alice.Key, now.Add(-10*time.Minute)) }, 401, "auth.signature_expired"},
		{"admin token as a user", func() *http.Request { return signed(t, keys, adminTok, kid, alice.Key, now) }, 401, "auth.token_invalid"},
		{"user on an admin route", func() *http.Request {
			return signed(t, rawReq{"GET", c.API(0) + "/v1/admin/users", nil}, alice.Token, kid, alice.Key, now)
		}, 403, "perm.denied"},
		{"unknown key", func() *http.Request {
			return signed(t, sign("key_doesnotexist", `{"message":"`+digest+`"}`), alice.Token, kid, alice.Key, now)
		}, 404, "key.not_found"},
		{"another user's key", func() *http.Request {
			return signed(t, rawReq{"GET", c.API(0) + "/v1/keys/" + ecKey, nil}, bob.Token, "user:"+strconv.FormatUint(bob.ID, 10), bob.Key, now)
		}, 404, "key.not_found"},
		{"digest of the wrong length", func() *http.Request {
			return signed(t, sign(ecKey, `{"message":"`+digest[:62]+`"}`), alice.Token, kid, alice.Key, now)
		}, 400, "request.malformed"},
		{"derivation path on ed25519", func() *http.Request {
			return signed(t, sign(edKey, `{"message":"00","derivation_path":"m/1"}`), alice.Token, kid, alice.Key, now)
		}, 400, "request.malformed"},
		{"hardened derivation step", func() *http.Request {
			return signed(t, sign(ecKey, `{"message":"`+digest+`","derivation_path":"m/1'"}`), alice.Token, kid, alice.Key, now)
		}, 400, "request.malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := send(t, tt.req())
			if status != tt.status || code != tt.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}

	t.Run("replayed nonce, same node and another node", func(t *testing.T) {
		req := signed(t, keys, alice.Token, kid, alice.Key, time.Now())
		clone := func(to string) *http.Request {
			r, _ := http.NewRequest("GET", to+"/v1/keys", nil)
			r.Header = req.Header.Clone()
			return r
		}
		if status, code := send(t, clone(c.API(0))); status != 200 {
			t.Fatalf("first use: %d %s", status, code)
		}
		for _, node := range []int{0, 1, 2} {
			if status, code := send(t, clone(c.API(node))); status != 401 || code != "auth.nonce_reused" {
				t.Fatalf("replay on node %d: %d %q", node+1, status, code)
			}
		}
	})
}
