package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/api"
)

func TestAccessKeyRoutes(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	ctx := context.Background()
	k1 := createKey(t, u.c, CurveEd25519, "k1")
	k2 := createKey(t, u.c, CurveEd25519, "k2")

	agentPub, agentPriv, _ := ed25519.GenerateKey(rand.Reader)
	exp := time.Now().Add(24 * time.Hour).Truncate(time.Millisecond).In(time.FixedZone("x", 3600))
	ak, err := u.c.CreateAccessKey(ctx, AccessKeyGrant{Label: "agent", Scheme: SchemeEd25519, PublicKey: hex.EncodeToString(agentPub),
		Permissions: []string{PermKeysRead, PermKeysSign}, KeyIDs: []string{k1.KeyID}, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ak.ID, "ak_") || ak.Label != "agent" || ak.Scheme != SchemeEd25519 || ak.PublicKey != hex.EncodeToString(agentPub) ||
		!slices.Equal(ak.Permissions, []string{PermKeysRead, PermKeysSign}) || !slices.Equal(ak.KeyIDs, []string{k1.KeyID}) ||
		!ak.ExpiresAt.Equal(exp) || !ak.RevokedAt.IsZero() || time.Since(ak.CreatedAt).Abs() > time.Minute {
		t.Fatalf("created %+v", ak)
	}
	// A grant without the optional fields: no label, no key limit, no expiry.
	botKey, _ := btcec.NewPrivateKey()
	bot, err := u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeSecp256k1, PublicKey: hex.EncodeToString(botKey.PubKey().SerializeCompressed()), Permissions: []string{PermKeysRead}})
	if err != nil {
		t.Fatal(err)
	}
	if bot.Label != "" || !slices.Equal(bot.Permissions, []string{PermKeysRead}) || bot.KeyIDs == nil || len(bot.KeyIDs) != 0 || !bot.ExpiresAt.IsZero() || bot.Expired(time.Now().Add(1000*time.Hour)) {
		t.Fatalf("minimal grant %+v", bot)
	}
	// Field errors and conflicts.
	_, err = u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeEd25519, PublicKey: hex.EncodeToString(agentPub), Permissions: []string{PermKeysRead}})
	wantAPIError(t, err, api.CodeRequestConflict)
	_, err = u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeSecp256k1, PublicKey: hex.EncodeToString(agentPub)})
	wantAPIError(t, err, api.CodeRequestMalformed) // no permissions
	_, err = u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeEd25519, PublicKey: "02ab"})
	wantAPIError(t, err, api.CodeRequestMalformed)
	_, err = u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeSecp256k1, PublicKey: hex.EncodeToString(agentPub), Permissions: []string{PermAccessManage}})
	wantAPIError(t, err, api.CodePermDenied)

	ks, err := u.c.ListAccessKeys(ctx)
	if err != nil || len(ks) != 2 || ks[0].ID == ks[1].ID || !slices.ContainsFunc(ks, func(k AccessKey) bool { return k.ID == ak.ID && k.ExpiresAt.Equal(exp) }) {
		t.Fatalf("list %+v %v", ks, err)
	}

	// The holder signs with the access key alone, within its grant.
	agent, err := NewAccessKey(cl.URL(1), ak.ID, agentPriv)
	if err != nil {
		t.Fatal(err)
	}
	r, err := agent.Sign(ctx, k1.KeyID, []byte("by the agent"), "", "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	if r = settle(t, agent, r); r.Status != StatusSigned || r.IdempotencyKey != "agent-1" {
		t.Fatalf("sign by the access key: %+v", r)
	}
	keys, err := agent.ListKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].KeyID != k1.KeyID {
		t.Fatalf("the access key's keys: %+v %v", keys, err)
	}
	_, err = agent.GetKey(ctx, k2.KeyID)
	wantAPIError(t, err, api.CodeKeyNotFound)
	_, _, err = agent.CreateKey(ctx, CurveEd25519, 2, "", "")
	wantAPIError(t, err, api.CodePermDenied)
	// Another key under that id does not verify.
	_, impostorKey, _ := ed25519.GenerateKey(rand.Reader)
	impostor, _ := NewAccessKey(cl.URL(0), ak.ID, impostorKey)
	_, err = impostor.GetKey(ctx, k1.KeyID)
	wantAPIError(t, err, api.CodeAuthSignatureInvalid)

	log, err := u.c.AccessKeyLog(ctx, ak.ID)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for i, e := range log {
		if e.Seq == 0 || (i > 0 && e.Seq <= log[i-1].Seq) || time.Since(e.Time).Abs() > time.Minute ||
			(e.Outcome == api.OutcomeAllowed) != (e.Code == "") {
			t.Fatalf("log entry %d: %+v", i, e)
		}
		routes = append(routes, e.Route+" "+e.Outcome+" "+e.Code)
	}
	for _, want := range []string{
		"POST /v1/keys/{key_id}/sign allowed ",
		"GET /v1/keys allowed ",
		"POST /v1/keys refused perm.denied",
	} {
		if !slices.Contains(routes, want) {
			t.Errorf("the access key's log lacks %q: %q", want, routes)
		}
	}

	if err := u.c.RevokeAccessKey(ctx, ak.ID); err != nil {
		t.Fatal(err)
	}
	_, err = agent.GetKey(ctx, k1.KeyID)
	wantAPIError(t, err, api.CodeAuthKeyRevoked)
	ks, err = u.c.ListAccessKeys(ctx)
	if i := slices.IndexFunc(ks, func(k AccessKey) bool { return k.ID == ak.ID }); err != nil || i < 0 || ks[i].RevokedAt.IsZero() || !ks[i].Revoked(time.Now().Add(time.Second)) {
		t.Fatalf("revoked key in the list: %+v %v", ks, err)
	}
	unknown := "ak_" + strings.Repeat("0", 32)
	wantAPIError(t, u.c.RevokeAccessKey(ctx, unknown), api.CodeAccessKeyNotFound)
	_, err = newUser(t).c.AccessKeyLog(ctx, bot.ID)
	wantAPIError(t, err, api.CodeAccessKeyNotFound) // the grantor's only
	// Ids are path-escaped, never spliced raw into the path.
	_, err = u.c.AccessKeyLog(ctx, ak.ID+"/../../admin")
	wantAPIError(t, err, api.CodeAccessKeyNotFound)
	for name, err := range map[string]error{
		"revoke": u.c.RevokeAccessKey(ctx, ""),
		"log":    func() error { _, err := u.c.AccessKeyLog(ctx, ""); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "empty access key id") {
			t.Errorf("%s with empty id: %v", name, err)
		}
	}
}

// TestAccessKeyPages follows GET /v1/access-keys a page at a time.
func TestAccessKeyPages(t *testing.T) {
	u := newUser(t)
	ctx := context.Background()
	var made []string
	for range 3 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		ak, err := u.c.CreateAccessKey(ctx, AccessKeyGrant{Scheme: SchemeEd25519, PublicKey: hex.EncodeToString(pub), Permissions: []string{PermKeysRead}})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, ak.ID)
	}
	var paged []string
	pages := 0
	err := u.c.ListAll(ctx, "/v1/access-keys", 2, func(data json.RawMessage) (json.RawMessage, error) {
		var page api.AccessKeyList
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, err
		}
		pages++
		for _, k := range page.AccessKeys {
			paged = append(paged, k.ID)
		}
		if page.Next == "" {
			return nil, nil
		}
		return json.Marshal(page.Next)
	})
	slices.Sort(made)
	if err != nil || pages != 2 || !slices.Equal(paged, made) {
		t.Fatalf("%d pages %v %v, made %v", pages, paged, err, made)
	}
}

func TestXAuthClient(t *testing.T) {
	cl := testCluster(t)
	f := ecdsaKey(t)
	ctx := context.Background()
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.owner.c.CreateAccessKey(ctx, AccessKeyGrant{Label: "btc agent", Scheme: SchemeSecp256k1,
		PublicKey: hex.EncodeToString(priv.PubKey().SerializeCompressed()), Permissions: []string{PermKeysRead, PermKeysSign}}); err != nil {
		t.Fatal(err)
	}
	for i, scheme := range []string{XAuthBSM, XAuthBRC77} {
		t.Run(scheme, func(t *testing.T) {
			c, err := NewXAuth(cl.URL(i%cl.N()), priv, scheme)
			if err != nil {
				t.Fatal(err)
			}
			// Identical calls in a burst: each gets its own timestamp, so none is a replay.
			for i := 0; i < 10; i++ {
				var page api.KeyList
				if err := c.Do(ctx, http.MethodGet, "/v1/keys?limit=5&after=k%201", nil, &page); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			// A body is bound by its hash.
			digest := make([]byte, 32)
			digest[0] = byte(i + 1)
			r, err := c.Sign(ctx, f.key.KeyID, digest, "m/1", "")
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			if r = settle(t, c, r); r.Status != StatusSigned || r.DerivationPath != "m/1" {
				t.Fatalf("sign: %+v", r)
			}
			verifyECDSA(t, childKey(t, f.key.PublicKey, f.key.ChainCode, 1), digest, r.Signature)
			// DELETE and PUT are refused before anything is sent.
			if err := c.RevokeAccessKey(ctx, "ak_1"); !errors.Is(err, ErrXAuthMethod) {
				t.Fatalf("DELETE: %v", err)
			}
			if err := c.Do(ctx, http.MethodPut, "/v1/x", map[string]int{"a": 1}, nil); !errors.Is(err, ErrXAuthMethod) {
				t.Fatalf("PUT: %v", err)
			}
		})
	}
	// The nodes share one replay memory: a client and its WithBaseURL copy share their
	// timestamps, so identical calls to two nodes never collide.
	ca, _ := NewXAuth(cl.URL(0), priv, XAuthBSM)
	cb, err := ca.WithBaseURL(cl.URL(1))
	if err != nil || cb.BaseURL() != cl.URL(1) {
		t.Fatalf("WithBaseURL: %v", err)
	}
	for i := 0; i < 5; i++ {
		if _, err := ca.ListKeys(ctx); err != nil {
			t.Fatalf("node A call %d: %v", i, err)
		}
		if _, err := cb.ListKeys(ctx); err != nil {
			t.Fatalf("node B call %d: %v", i, err)
		}
	}
	// A token by a key that backs no access key is refused (the client hides nothing).
	other, _ := btcec.NewPrivateKey()
	c, _ := NewXAuth(cl.URL(2), other, XAuthBSM)
	_, err = c.ListKeys(ctx)
	wantAPIError(t, err, api.CodeAuthTokenInvalid)

	for name, f := range map[string]func() error{
		"nil key":     func() error { _, err := NewXAuth(cl.URL(0), nil, XAuthBSM); return err },
		"bad scheme":  func() error { _, err := NewXAuth(cl.URL(0), priv, "ecdsa"); return err },
		"empty":       func() error { _, err := NewXAuth(cl.URL(0), priv, ""); return err },
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
