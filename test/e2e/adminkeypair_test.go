//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/auth"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestAdminKeyPair runs a cluster configured with an Ed25519 admin public key (made by
// `custos admin keygen`) instead of the shared ADMIN_KEY: the key-pair admin SDK and CLI
// work, the shared key is refused, an admin token's jti is accepted once, user tokens are
// EdDSA, and `custos audit verify` passes.
func TestAdminKeyPair(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "admin.ed25519")
	out, err := custosCLI(t, nil, "admin", "keygen", "--out", keyFile)
	wantOK(t, "custos admin keygen", err)
	var kg struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal([]byte(out), &kg); err != nil || len(kg.PublicKey) != 64 {
		t.Fatalf("keygen printed %q", out)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin key file: %v %v", st, err)
	}
	seed, err := os.ReadFile(keyFile)
	wantOK(t, "read key", err)
	priv, err := hex.DecodeString(strings.TrimSpace(string(seed)))
	if err != nil || len(priv) != 32 {
		t.Fatalf("key file holds %q", seed)
	}
	adminPriv := ed25519.NewKeyFromSeed(priv)

	c := startCluster(t, testcluster.Options{AdminKeyPair: adminPriv, Extra: map[string]any{
		"rate":  noRateLimit(),
		"admin": map[string]any{"key_file": "", "public_key": kg.PublicKey},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shared, err := admin.New(c.adminKey(), c.API(0)) // HS256 with the dev cluster's ADMIN_KEY, which these nodes do not use
	wantOK(t, "shared-key admin client", err)
	admins := c.keyPairAdmins(t, adminPriv)

	for i, a := range admins {
		id, err := a.CreateUser(ctx, "kp-user-"+jsonNum(uint64(i)))
		wantOK(t, "key-pair admin creates a user", err)
		u, err := a.GetUser(ctx, id)
		wantOK(t, "key-pair admin reads it", err)
		if u.UserID != id {
			t.Fatalf("user %+v", u)
		}
	}
	_, err = shared.ListUsers(ctx)
	if s, _ := apiErr(err); s != 401 {
		t.Fatalf("shared-key admin on a key-pair cluster: %v", err)
	}
	_, err = shared.CreateUser(ctx, "intruder")
	if s, _ := apiErr(err); s != 401 {
		t.Fatalf("shared-key admin creates a user: %v", err)
	}
	// A key-pair token signed by another key.
	other, _ := newEdPair(t)
	impostor, _ := admin.NewKeyPair(other, c.API(1))
	_, err = impostor.ListUsers(ctx)
	if s, _ := apiErr(err); s != 401 {
		t.Fatalf("admin token from another key pair: %v", err)
	}

	t.Run("jti is accepted once", func(t *testing.T) {
		iss, err := auth.NewEdDSAIssuer(adminPriv)
		wantOK(t, "issuer", err)
		tok, err := iss.AdminToken(time.Now())
		wantOK(t, "token", err)
		send1 := func(node int) (int, string) {
			req := signed(t, rawReq{"GET", c.API(node) + "/v1/admin/users", nil}, tok, "admin", adminPriv, time.Now())
			return send(t, req)
		}
		if status, code := send1(0); status != 200 {
			t.Fatalf("first use: %d %s", status, code)
		}
		for _, node := range []int{1, 2, 0} {
			if status, code := send1(node); status != 401 || code != "auth.nonce_reused" {
				t.Fatalf("jti replay (fresh signature) on node %d: %d %q", node+1, status, code)
			}
		}
		// The token alone, without the admin's request signature.
		tok2, _ := iss.AdminToken(time.Now())
		req := rawRequest(t, "GET", c.API(1)+"/v1/admin/users", nil)
		req.Header.Set("Authorization", "Bearer "+tok2)
		if status, _ := send(t, req); status != 401 {
			t.Fatalf("unsigned key-pair admin request: %d", status)
		}
	})

	t.Run("users", func(t *testing.T) {
		u := c.newUser(ctx, "kp-alice")
		k := u.edKey(ctx, t, 1, "kp")
		u.signReq(ctx, t, 2, k.KeyID, "key-pair cluster")
		// An HS256 user token is not accepted where the nodes hold only a public key.
		tok, _ := c.hsIssuer().UserToken(u.ID, hex.EncodeToString(u.Key.Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
		req := signed(t, rawReq{"GET", c.API(0) + "/v1/keys", nil}, tok, auth.UserKeyID(u.ID), u.Key, time.Now())
		if status, code := send(t, req); status != 401 || code != "auth.token_invalid" {
			t.Fatalf("HS256 user token: %d %q", status, code)
		}
	})

	t.Run("cli", func(t *testing.T) {
		out, err := custosCLI(t, nil, "admin", "users", "--admin-private-key-file", keyFile, "--url", c.API(2))
		wantOK(t, "custos admin users (key pair)", err)
		if !strings.Contains(out, "kp-alice") {
			t.Fatalf("users: %s", out)
		}
		_, err = custosCLI(t, nil, "admin", "users", "--admin-key-file", filepath.Join(c.Dir(), "admin.key"), "--url", c.API(2))
		if err == nil {
			t.Fatal("the CLI with the shared key was accepted by a key-pair cluster")
		}
		out, err = custosCLI(t, nil, "audit", "verify", "--admin-private-key-file", keyFile, "--url", c.API(1))
		wantOK(t, "custos audit verify (key pair)", err)
		if !strings.Contains(out, `"verified": true`) {
			t.Fatalf("audit verify: %s", out)
		}
	})
}
