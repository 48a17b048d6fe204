//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestAccessKeys walks issue 3's access-key and user-lifecycle promises on one 3-process
// cluster: ownership, escalation, effective permissions, scoping, revocation seen at once
// on another node, one live key per public key, expiry, replay across nodes, disabled
// grantors, revoke-tokens, X-Auth-Token (bsm, brc77, DELETE, replay), each key's own
// log, the CLI, and `custos audit verify` over everything that happened.
func TestAccessKeys(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	alice := c.newUser(ctx, "alice")
	bob := c.newUser(ctx, "bob")
	ka1 := alice.edKey(ctx, t, 0, "a1")
	ka2 := alice.edKey(ctx, t, 1, "a2")
	kb := bob.edKey(ctx, t, 2, "b")
	ra1 := alice.signReq(ctx, t, 0, ka1.KeyID, "one")
	ra2 := alice.signReq(ctx, t, 1, ka2.KeyID, "two")
	keysRS := []string{client.PermKeysRead, client.PermKeysSign}

	t.Run("ownership", func(t *testing.T) {
		for i := range 3 {
			_, err := bob.Clients[i].GetKey(ctx, ka1.KeyID)
			wantErr(t, "bob reads alice's key", err, 404, "key.not_found")
		}
		_, err := bob.Clients[1].Sign(ctx, ka1.KeyID, []byte("steal"), "", "")
		wantErr(t, "bob signs with alice's key", err, 404, "key.not_found")
		_, err = bob.Clients[2].GetRequest(ctx, ra1)
		if s, _ := apiErr(err); s != 404 {
			t.Fatalf("bob reads alice's request: %v", err)
		}
		ks, err := bob.Clients[0].ListKeys(ctx)
		wantOK(t, "bob lists", err)
		if len(ks) != 1 || ks[0].KeyID != kb.KeyID {
			t.Fatalf("bob's list: %+v", ks)
		}
		_, pub := newEdPair(t)
		_, err = bob.Clients[0].CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: pub,
			Permissions: []string{client.PermKeysRead}, KeyIDs: []string{ka1.KeyID}})
		wantErr(t, "bob grants access to alice's key", err, 404, "key.not_found")
		// Bob's access key sees bob's keys only.
		bak := c.grantEd25519(ctx, t, bob, keysRS, nil, time.Time{})
		_, err = bak.clients[1].GetKey(ctx, ka1.KeyID)
		wantErr(t, "bob's access key reads alice's key", err, 404, "key.not_found")
		_, err = bak.clients[2].Sign(ctx, ka1.KeyID, []byte("steal"), "", "")
		wantErr(t, "bob's access key signs with alice's key", err, 404, "key.not_found")
		// Alice cannot see, use or revoke bob's access key.
		_, err = alice.Clients[0].AccessKeyLog(ctx, bak.ID)
		if s, _ := apiErr(err); s != 404 {
			t.Fatalf("alice reads bob's access-key log: %v", err)
		}
		if s, _ := apiErr(alice.Clients[1].RevokeAccessKey(ctx, bak.ID)); s != 404 {
			t.Fatal("alice revoked bob's access key")
		}
		aks, err := alice.Clients[2].ListAccessKeys(ctx)
		wantOK(t, "alice lists access keys", err)
		for _, k := range aks {
			if k.ID == bak.ID {
				t.Fatal("alice's list shows bob's access key")
			}
		}
		_, err = bak.clients[0].ListKeys(ctx)
		wantOK(t, "bob's access key still works", err)
	})

	t.Run("escalation", func(t *testing.T) {
		carol := c.newUser(ctx, "carol", client.PermKeysRead, client.PermAccessManage)
		for _, perms := range [][]string{{client.PermKeysSign}, {client.PermKeysRead, client.PermKeysCreate}, {client.PermAccessManage}, {client.PermKeysRead, client.PermAccessManage}} {
			_, pub := newEdPair(t)
			_, err := carol.Clients[1].CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: pub, Permissions: perms})
			wantErr(t, "carol grants "+strings.Join(perms, ","), err, 403, "perm.denied")
		}
		_, pub := newEdPair(t)
		_, err := alice.Clients[2].CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: pub,
			Permissions: []string{client.PermKeysRead, client.PermAccessManage}})
		wantErr(t, "alice grants access:manage", err, 403, "perm.denied")
		c.grantEd25519(ctx, t, carol, []string{client.PermKeysRead}, nil, time.Time{})
	})

	t.Run("effective permissions follow the grantor", func(t *testing.T) {
		dan := c.newUser(ctx, "dan")
		kd := dan.edKey(ctx, t, 0, "d")
		ak := c.grantEd25519(ctx, t, dan, keysRS, nil, time.Time{})
		_, err := ak.clients[1].Sign(ctx, kd.KeyID, []byte("before"), "", "")
		wantOK(t, "access key signs", err)
		wantOK(t, "drop dan's keys:sign", c.Admin().SetPermissions(ctx, dan.ID, []string{client.PermKeysRead, client.PermAccessManage}))
		_, err = ak.clients[2].Sign(ctx, kd.KeyID, []byte("after"), "", "")
		wantErr(t, "access key signs after the grantor lost keys:sign", err, 403, "perm.denied")
		_, err = ak.clients[0].GetKey(ctx, kd.KeyID)
		wantOK(t, "access key still reads", err)
		wantOK(t, "restore", c.Admin().SetPermissions(ctx, dan.ID, []string{client.PermKeysRead, client.PermKeysSign, client.PermAccessManage}))
		_, err = ak.clients[1].Sign(ctx, kd.KeyID, []byte("restored"), "", "")
		wantOK(t, "access key signs again", err)
	})

	t.Run("scoping", func(t *testing.T) {
		ak := c.grantEd25519(ctx, t, alice, keysRS, []string{ka1.KeyID}, time.Time{})
		if !slices.Equal(ak.KeyIDs, []string{ka1.KeyID}) {
			t.Fatalf("key_ids %v", ak.KeyIDs)
		}
		for i := range 3 {
			_, err := ak.clients[i].GetKey(ctx, ka1.KeyID)
			wantOK(t, "scoped key reads its key", err)
			_, err = ak.clients[i].GetKey(ctx, ka2.KeyID)
			wantErr(t, "scoped key reads another key of the grantor", err, 404, "key.not_found")
		}
		_, err := ak.clients[0].Sign(ctx, ka2.KeyID, []byte("x"), "", "")
		wantErr(t, "scoped key signs with another key", err, 404, "key.not_found")
		own, err := ak.clients[1].Sign(ctx, ka1.KeyID, []byte("x"), "", "")
		wantOK(t, "scoped key signs with its key", err)
		ks, err := ak.clients[2].ListKeys(ctx)
		wantOK(t, "scoped list", err)
		if len(ks) != 1 || ks[0].KeyID != ka1.KeyID {
			t.Fatalf("scoped list shows %+v, want only %s", ks, ka1.KeyID)
		}
		_, err = ak.clients[0].GetRequest(ctx, own.RequestID)
		wantOK(t, "scoped key reads the request it made", err)
		// Its grantor's own requests are not its own (API.md: "access key (their own)").
		_, err = ak.clients[0].GetRequest(ctx, ra1)
		wantErr(t, "scoped key reads its grantor's request on its key", err, 404, "request.not_found")
		_, err = ak.clients[0].GetRequest(ctx, ra2)
		if s, _ := apiErr(err); s != 404 {
			t.Fatalf("scoped key reads a request of another key: %v", err)
		}
		// An unscoped key sees both.
		all := c.grantEd25519(ctx, t, alice, []string{client.PermKeysRead}, nil, time.Time{})
		ks, err = all.clients[1].ListKeys(ctx)
		wantOK(t, "unscoped list", err)
		if len(ks) != 2 {
			t.Fatalf("unscoped list: %d keys", len(ks))
		}
	})

	t.Run("revocation is seen at once on another node", func(t *testing.T) {
		ak := c.grantEd25519(ctx, t, alice, keysRS, nil, time.Time{})
		_, err := ak.clients[2].ListKeys(ctx)
		wantOK(t, "use via node3", err)
		wantOK(t, "revoke via node1", alice.Clients[0].RevokeAccessKey(ctx, ak.ID))
		_, err = ak.clients[2].ListKeys(ctx)
		wantErr(t, "use via node3 right after", err, 401, "auth.key_revoked")
		_, err = ak.clients[1].Sign(ctx, ka1.KeyID, []byte("late"), "", "")
		wantErr(t, "sign via node2", err, 401, "auth.key_revoked")
		ks, err := alice.Clients[1].ListAccessKeys(ctx)
		wantOK(t, "list", err)
		i := slices.IndexFunc(ks, func(k client.AccessKey) bool { return k.ID == ak.ID })
		if i < 0 || ks[i].RevokedAt.IsZero() {
			t.Fatalf("revoked key in the list: %+v", ks)
		}
	})

	t.Run("one live access key per public key", func(t *testing.T) {
		ak := c.grantEd25519(ctx, t, alice, []string{client.PermKeysRead}, nil, time.Time{})
		pub := ak.PublicKey
		grant := client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: pub, Permissions: []string{client.PermKeysRead}}
		_, err := alice.Clients[1].CreateAccessKey(ctx, grant)
		wantErr(t, "second grant to one public key", err, 409, "request.conflict")
		_, err = bob.Clients[2].CreateAccessKey(ctx, grant)
		wantErr(t, "another user's grant to that public key", err, 409, "request.conflict")
		wantOK(t, "revoke", alice.Clients[0].RevokeAccessKey(ctx, ak.ID))
		again, err := alice.Clients[1].CreateAccessKey(ctx, grant)
		wantOK(t, "grant after revocation", err)
		if again.ID == ak.ID {
			t.Fatal("a new grant reused the revoked id")
		}
		// A signature under an id that was never granted.
		priv, _ := newEdPair(t)
		stranger := c.accessKeyClients(t, "ak_"+strings.Repeat("0", 32), priv)
		_, err = stranger[0].ListKeys(ctx)
		wantErr(t, "unknown access key", err, 401, "auth.token_invalid")
		// A known id signed by another key.
		forged := c.accessKeyClients(t, again.ID, priv)
		_, err = forged[1].ListKeys(ctx)
		wantErr(t, "access key id with another key's signature", err, 401, "auth.signature_invalid")
	})

	t.Run("expiry", func(t *testing.T) {
		exp := time.Now().Add(3 * time.Second)
		ak := c.grantEd25519(ctx, t, alice, []string{client.PermKeysRead}, nil, exp)
		if !ak.ExpiresAt.Equal(exp.UTC()) && ak.ExpiresAt.Sub(exp).Abs() > time.Second {
			t.Fatalf("expires_at %v, granted %v", ak.ExpiresAt, exp)
		}
		_, err := ak.clients[0].ListKeys(ctx)
		wantOK(t, "before expiry", err)
		time.Sleep(time.Until(exp) + 300*time.Millisecond)
		for i := range 3 {
			_, err = ak.clients[i].ListKeys(ctx)
			wantErr(t, "after expiry", err, 401, "auth.key_revoked")
		}
		_, pub := newEdPair(t)
		_, err = alice.Clients[0].CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: pub,
			Permissions: []string{client.PermKeysRead}, ExpiresAt: time.Now().Add(-time.Minute)})
		wantErr(t, "grant that expired already", err, 400, "request.malformed")
	})

	t.Run("replay on another node", func(t *testing.T) {
		ak := c.grantEd25519(ctx, t, alice, []string{client.PermKeysRead}, nil, time.Time{})
		req := signed(t, rawReq{"GET", c.API(0) + "/v1/keys", nil}, "", ak.ID, ak.priv, time.Now())
		if status, code := send(t, req); status != 200 {
			t.Fatalf("first use: %d %s", status, code)
		}
		for _, node := range []int{1, 2, 0} {
			if status, code := send(t, resend(t, req, c.API(node), nil)); status != 401 || code != "auth.nonce_reused" {
				t.Fatalf("replay on node %d: %d %q", node+1, status, code)
			}
		}
		// A request with a body, replayed elsewhere.
		body := []byte(`{"message":"` + hex.EncodeToString([]byte("once")) + `"}`)
		sak := c.grantEd25519(ctx, t, alice, keysRS, nil, time.Time{})
		req = signed(t, rawReq{"POST", c.API(1) + "/v1/keys/" + ka1.KeyID + "/sign", body}, "", sak.ID, sak.priv, time.Now())
		if status, code := send(t, req); status != 200 {
			t.Fatalf("signed request: %d %s", status, code)
		}
		if status, code := send(t, resend(t, req, c.API(2), body)); status != 401 || code != "auth.nonce_reused" {
			t.Fatalf("replayed sign on node 3: %d %q", status, code)
		}
	})

	t.Run("disabled grantor", func(t *testing.T) {
		erin := c.newUser(ctx, "erin")
		ke := erin.edKey(ctx, t, 1, "e")
		ak := c.grantEd25519(ctx, t, erin, keysRS, nil, time.Time{})
		wantOK(t, "disable", c.Admin().DisableUser(ctx, erin.ID))
		for i := range 3 {
			_, err := erin.Clients[i].ListKeys(ctx)
			wantErr(t, "disabled user", err, 401, "auth.user_disabled")
			_, err = ak.clients[i].GetKey(ctx, ke.KeyID)
			wantErr(t, "access key of a disabled user", err, 401, "auth.user_disabled")
		}
		wantOK(t, "enable", c.Admin().EnableUser(ctx, erin.ID))
		_, err := erin.Clients[2].ListKeys(ctx)
		wantOK(t, "re-enabled user", err)
		_, err = ak.clients[0].Sign(ctx, ke.KeyID, []byte("back"), "", "")
		wantOK(t, "access key of a re-enabled user", err)
	})

	t.Run("revoke tokens", func(t *testing.T) {
		fay := c.newUser(ctx, "fay")
		_, err := fay.Clients[0].ListKeys(ctx)
		wantOK(t, "old token before", err)
		// Token iat is in whole seconds: let the second of the old token's iat pass.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)))
		wantOK(t, "revoke-tokens", c.Admin().RevokeTokens(ctx, fay.ID))
		for i := range 3 {
			_, err = fay.Clients[i].ListKeys(ctx)
			wantErr(t, "old token after revoke-tokens", err, 401, "auth.token_invalid")
		}
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)))
		tok, err := c.Admin().GenUserToken(fay.ID, hex.EncodeToString(fay.Key.Public().(ed25519.PublicKey)), time.Hour)
		wantOK(t, "new token", err)
		c.reissue(fay, tok)
		for i := range 3 {
			_, err = fay.Clients[i].ListKeys(ctx)
			wantOK(t, "new token after revoke-tokens", err)
		}
	})

	t.Run("x-auth-token", func(t *testing.T) {
		key, err := btcec.NewPrivateKey()
		wantOK(t, "secp256k1 key", err)
		pubHex := hex.EncodeToString(key.PubKey().SerializeCompressed())
		ak, err := alice.Clients[1].CreateAccessKey(ctx, client.AccessKeyGrant{Label: "droplit", Scheme: client.SchemeSecp256k1,
			PublicKey: pubHex, Permissions: keysRS})
		wantOK(t, "grant a secp256k1 key", err)
		if ak.Scheme != client.SchemeSecp256k1 || ak.PublicKey != pubHex {
			t.Fatalf("granted %+v", ak)
		}
		for _, scheme := range []string{client.XAuthBSM, client.XAuthBRC77} {
			cls := c.xauthClients(t, key, scheme)
			for i := range 3 {
				ks, err := cls[i].ListKeys(ctx)
				if err != nil || len(ks) != 2 {
					t.Fatalf("%s list via node %d: %v (%d keys)", scheme, i+1, err, len(ks))
				}
				r, err := cls[i].Sign(ctx, ka1.KeyID, []byte(scheme+" signs "+strconv.Itoa(i)), "", "")
				if err != nil || r.Status != client.StatusSigned {
					t.Fatalf("%s sign via node %d: %v %+v", scheme, i+1, err, r)
				}
			}
			// A query is part of the signed path.
			var page json.RawMessage
			wantOK(t, scheme+" list with a query", cls[0].Do(ctx, http.MethodGet, "/v1/keys?limit=1", nil, &page))
		}
		// Refused on DELETE: the token does not sign the method.
		for _, mint := range []func(*btcec.PrivateKey, string, []byte, time.Time) (string, error){auth.SignXAuthTokenBSM, auth.SignXAuthTokenBRC77} {
			req := xauthRequest(t, "DELETE", c.API(0)+"/v1/access-keys/"+ak.ID, nil, mint, key, time.Now())
			if status, code := send(t, req); status != 401 {
				t.Fatalf("X-Auth-Token on DELETE: %d %q", status, code)
			}
		}
		ks, err := alice.Clients[0].ListAccessKeys(ctx)
		wantOK(t, "list", err)
		if i := slices.IndexFunc(ks, func(k client.AccessKey) bool { return k.ID == ak.ID }); i < 0 || !ks[i].RevokedAt.IsZero() {
			t.Fatal("the secp256k1 access key was revoked by an X-Auth DELETE")
		}
		// A replayed token, on the same node and another.
		req := xauthRequest(t, "GET", c.API(2)+"/v1/keys", nil, auth.SignXAuthTokenBRC77, key, time.Now())
		if status, code := send(t, req); status != 200 {
			t.Fatalf("first use: %d %q", status, code)
		}
		for _, node := range []int{2, 0} {
			if status, code := send(t, resend(t, req, c.API(node), nil)); status != 401 || code != "auth.nonce_reused" {
				t.Fatalf("replayed X-Auth-Token on node %d: %d %q", node+1, status, code)
			}
		}
		// The path in the token must be the request's.
		req = xauthRequest(t, "GET", c.API(1)+"/v1/keys/"+ka1.KeyID, nil, auth.SignXAuthTokenBSM, key, time.Now())
		other := resend(t, req, c.API(1), nil)
		other.URL.Path = "/v1/keys/" + ka2.KeyID
		if status, code := send(t, other); status != 401 {
			t.Fatalf("token for another path: %d %q", status, code)
		}
		// Mixed with a bearer token: exactly one kind of credential.
		req = xauthRequest(t, "GET", c.API(0)+"/v1/keys", nil, auth.SignXAuthTokenBSM, key, time.Now())
		req.Header.Set("Authorization", "Bearer "+alice.Token)
		if status, code := send(t, req); status != 401 || code != "auth.missing" {
			t.Fatalf("X-Auth-Token with a bearer token: %d %q", status, code)
		}
		// A key that was never granted.
		stranger, _ := btcec.NewPrivateKey()
		if _, err := c.xauthClients(t, stranger, client.XAuthBSM)[1].ListKeys(ctx); err == nil {
			t.Fatal("an ungranted secp256k1 key was accepted")
		} else {
			wantErr(t, "ungranted secp256k1 key", err, 401, "auth.token_invalid")
		}
		// Its log shows the uses: 2 schemes × 3 nodes × (list + sign) + 2 queries + 1.
		log, err := alice.Clients[2].AccessKeyLog(ctx, ak.ID)
		wantOK(t, "log", err)
		allowed := 0
		for _, e := range log {
			if e.Outcome == "allowed" {
				allowed++
			}
		}
		if allowed < 15 {
			t.Fatalf("log of the secp256k1 key has %d allowed uses, want at least 15: %+v", allowed, log)
		}
	})

	t.Run("access key log", func(t *testing.T) {
		ak := c.grantEd25519(ctx, t, alice, []string{client.PermKeysRead}, nil, time.Time{})
		start := time.Now().Add(-2 * time.Second)
		_, err := ak.clients[0].ListKeys(ctx)
		wantOK(t, "list", err)
		_, err = ak.clients[1].GetKey(ctx, ka1.KeyID)
		wantOK(t, "get", err)
		_, err = ak.clients[2].Sign(ctx, ka1.KeyID, []byte("no"), "", "")
		wantErr(t, "sign without keys:sign", err, 403, "perm.denied")
		_, err = ak.clients[0].GetKey(ctx, "key_doesnotexist")
		wantErr(t, "get unknown", err, 404, "key.not_found")
		log, err := alice.Clients[1].AccessKeyLog(ctx, ak.ID)
		wantOK(t, "read the log", err)
		want := []struct{ outcome, code string }{{"allowed", ""}, {"allowed", ""}, {"refused", "perm.denied"}, {"refused", "key.not_found"}}
		if len(log) != len(want) {
			t.Fatalf("log has %d entries, want %d: %+v", len(log), len(want), log)
		}
		routes := map[string]bool{}
		for i, e := range log {
			if e.Outcome != want[i].outcome || e.Code != want[i].code || e.Route == "" || e.Time.Before(start) || e.Time.After(time.Now().Add(2*time.Second)) {
				t.Fatalf("log entry %d: %+v, want %+v", i, e, want[i])
			}
			if i > 0 && e.Time.Before(log[i-1].Time) {
				t.Fatalf("log not in time order: %+v", log)
			}
			routes[e.Route] = true
		}
		if len(routes) < 3 {
			t.Fatalf("log does not tell list, get and sign apart: %+v", log)
		}
		_, err = bob.Clients[0].AccessKeyLog(ctx, ak.ID)
		if s, _ := apiErr(err); s != 404 {
			t.Fatalf("bob reads alice's key's log: %v", err)
		}
		_, err = ak.clients[0].AccessKeyLog(ctx, ak.ID)
		wantErr(t, "the access key reads its own log", err, 403, "perm.denied")
	})

	t.Run("cli", func(t *testing.T) {
		dir := t.TempDir()
		idFile := filepath.Join(dir, "alice.key")
		wantOK(t, "write identity", os.WriteFile(idFile, []byte(hex.EncodeToString(alice.Key.Seed())+"\n"), 0o600))
		env := []string{"CUSTOS_TOKEN=" + alice.Token, "CUSTOS_IDENTITY=" + idFile}
		_, pub := newEdPair(t)
		out, err := custosCLI(t, env, "access-keys", "grant", "--scheme", "ed25519", "--public-key", pub, "--permissions", "keys:read,keys:sign",
			"--key-ids", ka2.KeyID, "--expires", "24h", "--label", "cli bot", "--url", c.API(1))
		wantOK(t, "cli grant", err)
		var k client.AccessKey
		if err := json.Unmarshal([]byte(out), &k); err != nil || !strings.HasPrefix(k.ID, "ak_") || k.Label != "cli bot" ||
			!slices.Equal(k.KeyIDs, []string{ka2.KeyID}) || k.ExpiresAt.Before(time.Now().Add(23*time.Hour)) {
			t.Fatalf("cli grant printed %q (%v)", out, err)
		}
		out, err = custosCLI(t, env, "access-keys", "list", "--url", c.API(2))
		wantOK(t, "cli list", err)
		if !strings.Contains(out, k.ID) {
			t.Fatalf("cli list lacks %s: %s", k.ID, out)
		}
		out, err = custosCLI(t, env, "access-keys", "log", k.ID, "--url", c.API(0))
		wantOK(t, "cli log", err)
		if strings.TrimSpace(out) != "[]" {
			t.Fatalf("log of an unused key: %s", out)
		}
		_, err = custosCLI(t, env, "access-keys", "revoke", k.ID, "--url", c.API(0))
		wantOK(t, "cli revoke", err)
		if _, err := custosCLI(t, env, "access-keys", "grant", "--scheme", "ed25519", "--public-key", pub, "--permissions", "access:manage", "--url", c.API(0)); err == nil ||
			!strings.Contains(err.Error(), "perm.denied") {
			t.Fatalf("cli grant of access:manage: %v", err)
		}
	})

	t.Run("audit verify", func(t *testing.T) {
		for _, node := range []int{0, 2} {
			out, err := custosCLI(t, nil, "audit", "verify", "--url", c.API(node), "--admin-key-file", filepath.Join(c.Dir(), "admin.key"))
			wantOK(t, "custos audit verify", err)
			var rep struct {
				Verified bool   `json:"verified"`
				Entries  uint64 `json:"entries_checked"`
				HeadSeq  uint64 `json:"head_seq"`
				HeadHash string `json:"head_hash"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Verified || rep.Entries < 100 || rep.HeadSeq != rep.Entries || len(rep.HeadHash) != 64 {
				t.Fatalf("audit verify via node %d printed %q", node+1, out)
			}
			t.Logf("node %d: %d audit entries verified, head %s", node+1, rep.Entries, rep.HeadHash)
		}
		// Strings that canonical JSON must escape (or must not), in the log through a
		// refused request's object, then verified again.
		odd := c.API(0) + "/v1/keys/" + "k%0A%22%5C%E2%80%A8%01%7F%C3%A9%FF"
		req := signed(t, rawReq{"GET", odd, nil}, alice.Token, auth.UserKeyID(alice.ID), alice.Key, time.Now())
		status, code := send(t, req)
		t.Logf("odd key id answered %d %s", status, code)
		es, err := c.Admin().Audit(ctx, 0, 1000)
		wantOK(t, "read the audit log", err)
		found := false
		for _, e := range es {
			if strings.HasPrefix(e.Object, "k\n") || strings.HasPrefix(e.Object, "k\"") || strings.HasPrefix(e.Object, "k\u0001") || strings.Contains(e.Object, "\u2028") {
				t.Logf("audit entry %d holds the odd key id as %q", e.Seq, e.Object)
				found = true
			}
		}
		if !found {
			t.Log("the odd key id did not reach the audit log")
		}
		// The other two nodes confirm the verified node's head (each read of the log is
		// itself audited, so the head moves on meanwhile: they are asked for that entry).
		out, err := custosCLI(t, nil, "audit", "verify", "--url", c.API(1), "--admin-key-file", filepath.Join(c.Dir(), "admin.key"),
			"--confirm-with", c.API(0), "--confirm-with", c.API(2))
		if err != nil {
			t.Fatalf("audit verify after odd strings: %v\n%s", err, out)
		}
		var rep struct {
			Verified      bool `json:"verified"`
			Quorum        int  `json:"quorum"`
			Confirmations []struct {
				Status string `json:"status"`
			} `json:"confirmations"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Verified || rep.Quorum != 3 || len(rep.Confirmations) != 2 ||
			rep.Confirmations[0].Status != "agrees" || rep.Confirmations[1].Status != "agrees" {
			t.Fatalf("audit verify confirmed by the other nodes printed %q", out)
		}
	})

	// The operator archives a range of the audit (export, prune) and the chain stays
	// verifiable, on every node, from the archive; retention is set once for the cluster.
	t.Run("audit archive and retention", func(t *testing.T) {
		keyFile := filepath.Join(c.Dir(), "admin.key")
		archive := filepath.Join(t.TempDir(), "audit-1.jsonl")
		out, err := custosCLI(t, nil, "audit", "export", "--before", "40", "--out", archive, "--url", c.API(0), "--admin-key-file", keyFile)
		wantOK(t, "custos audit export", err)
		var exp struct {
			Entries  uint64 `json:"entries"`
			LastSeq  uint64 `json:"last_seq"`
			HeadHash string `json:"head_hash"`
		}
		if err := json.Unmarshal([]byte(out), &exp); err != nil || exp.Entries != 39 || exp.LastSeq != 39 {
			t.Fatalf("export printed %q", out)
		}
		out, err = custosCLI(t, nil, "audit", "prune", "--archive", archive, "--url", c.API(1), "--admin-key-file", keyFile)
		wantOK(t, "custos audit prune", err)
		for node := 0; node < 3; node++ {
			out, err = custosCLI(t, nil, "audit", "verify", "--archive", archive, "--url", c.API(node), "--admin-key-file", keyFile)
			wantOK(t, fmt.Sprintf("custos audit verify --archive via node %d", node+1), err)
			var rep struct {
				Verified  bool   `json:"verified"`
				PrunedSeq uint64 `json:"pruned_seq"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Verified || rep.PrunedSeq != 39 {
				t.Fatalf("verify via node %d printed %q", node+1, out)
			}
			es, err := c.Admin().Audit(ctx, 0, 1)
			wantOK(t, "read the pruned log", err)
			if len(es) != 1 || es[0].Seq != 40 || es[0].PrevHash != exp.HeadHash {
				t.Fatalf("the pruned log starts with %+v", es)
			}
		}
		out, err = custosCLI(t, nil, "admin", "retention", "--finished-requests", "48h", "--url", c.API(2), "--admin-key-file", keyFile)
		wantOK(t, "custos admin retention --finished-requests 48h", err)
		out, err = custosCLI(t, nil, "admin", "retention", "--url", c.API(0), "--admin-key-file", keyFile)
		wantOK(t, "custos admin retention", err)
		var ret admin.Retention
		if err := json.Unmarshal([]byte(out), &ret); err != nil || ret.FinishedRequestsS != 48*3600 || ret.SessionNoncesS != 96*3600 {
			t.Fatalf("retention printed %q", out)
		}
		if _, err := custosCLI(t, nil, "admin", "retention", "--finished-requests", "1m", "--url", c.API(0), "--admin-key-file", keyFile); err == nil || !strings.Contains(err.Error(), "request.malformed") {
			t.Fatalf("a retention of a minute: %v", err)
		}
	})
}
