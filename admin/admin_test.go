package admin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/node/nodetest"
)

// wantAPIError checks that err is the node's problem answer with code, with the status
// and title internal/api's table gives the code.
func wantAPIError(t *testing.T, err error, code string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want %s, got %v", code, err)
	}
	if ae.Code != code || ae.Status != api.StatusOf(code) || ae.Title != api.Title(code) || ae.RequestID == "" {
		t.Fatalf("want %s (HTTP %d), got %#v", code, api.StatusOf(code), ae)
	}
}

// exercise runs the admin routes against a real cluster: users, their permissions and
// tokens, the cluster and the audit log. Every call carries its own token (a jti is
// accepted once), so a passing run also shows that.
func exercise(t *testing.T, a *Admin, cl *nodetest.Cluster) {
	t.Helper()
	ctx := context.Background()
	started := time.Now()
	alice, err := a.CreateUser(ctx, "alice", api.PermKeysRead, api.PermKeysSign)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	bob, err := a.CreateUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if bob <= alice {
		t.Fatalf("user ids must increase: alice %d, bob %d", alice, bob)
	}
	u, err := a.GetUser(ctx, alice)
	if err != nil || u.UserID != alice || u.Name != "alice" || u.Status != api.UserActive ||
		!slices.Equal(u.Permissions, []string{api.PermKeysRead, api.PermKeysSign}) || u.CreatedAt.Before(started.Add(-2*time.Second)) {
		t.Fatalf("GetUser: %+v %v", u, err)
	}
	u, err = a.GetUser(ctx, bob)
	if err != nil || !slices.Equal(u.Permissions, []string{api.PermKeysCreate, api.PermKeysRead, api.PermKeysSign, api.PermKeysDelete, api.PermAccessManage}) {
		t.Fatalf("default permissions: %+v %v", u, err)
	}
	users, err := a.ListUsers(ctx)
	if err != nil || !slices.ContainsFunc(users, func(u User) bool { return u.UserID == alice }) || !slices.ContainsFunc(users, func(u User) bool { return u.UserID == bob }) ||
		!slices.IsSortedFunc(users, func(x, y User) int { return int(x.UserID) - int(y.UserID) }) {
		t.Fatalf("ListUsers: %+v %v", users, err)
	}
	// Pages of one, through the "next" cursor.
	pages := 0
	err = a.c.ListAll(ctx, "/v1/admin/users", 1, func(data json.RawMessage) (json.RawMessage, error) {
		var page api.UserList
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, err
		}
		pages += len(page.Users)
		if page.Next == "" {
			return nil, nil
		}
		return json.Marshal(page.Next)
	})
	if err != nil || pages != len(users) {
		t.Fatalf("%d users in pages of one (%v), %d in one page", pages, err, len(users))
	}
	_, err = a.GetUser(ctx, bob+1_000_000)
	wantAPIError(t, err, api.CodeUserNotFound)

	// The token GenUserToken issues works on every node; disabling refuses it at once.
	uc, _ := userClient(t, a, cl.URL(cl.N()-1), alice)
	if _, err := uc.ListKeys(ctx); err != nil {
		t.Fatalf("the user's first call: %v", err)
	}
	if err := a.DisableUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if u, err := a.GetUser(ctx, alice); err != nil || u.Status != api.UserDisabled {
		t.Fatalf("disabled: %+v %v", u, err)
	}
	_, err = uc.ListKeys(ctx)
	wantAPIError(t, err, api.CodeAuthUserDisabled)
	if err := a.EnableUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := uc.ListKeys(ctx); err != nil {
		t.Fatalf("enabled again: %v", err)
	}

	// Revoking tokens refuses those issued before; a new one works.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	oldTok, err := a.iss.UserToken(alice, hex.EncodeToString(pub), time.Hour, a.audience, time.Now().Add(-10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := client.New(cl.URL(0), oldTok, priv)
	if _, err := old.ListKeys(ctx); err != nil {
		t.Fatalf("a token issued 10 s ago: %v", err)
	}
	if err := a.RevokeTokens(ctx, alice); err != nil {
		t.Fatal(err)
	}
	_, err = old.ListKeys(ctx)
	wantAPIError(t, err, api.CodeAuthTokenInvalid)
	fresh, _ := userClient(t, a, cl.URL(0), alice)
	if _, err := fresh.ListKeys(ctx); err != nil {
		t.Fatalf("a token issued after the revocation: %v", err)
	}

	// Permissions: removed, the user may not even read its keys.
	if err := a.SetPermissions(ctx, alice, nil); err != nil {
		t.Fatal(err)
	}
	if u, err := a.GetUser(ctx, alice); err != nil || len(u.Permissions) != 0 {
		t.Fatalf("no permissions: %+v %v", u, err)
	}
	_, err = fresh.ListKeys(ctx)
	wantAPIError(t, err, api.CodePermDenied)
	if err := a.SetPermissions(ctx, alice, []string{api.PermKeysRead}); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.ListKeys(ctx); err != nil {
		t.Fatalf("keys:read again: %v", err)
	}
	wantAPIError(t, a.SetPermissions(ctx, alice, []string{"keys:everything"}), api.CodeRequestMalformed)

	ret, err := a.Retention(ctx)
	if err != nil || ret.FinishedRequestsS != 86400 || ret.NoncesS != 900 || ret.SessionNoncesS != 2*86400 {
		t.Fatalf("Retention: %+v %v", ret, err)
	}
	ret, err = a.SetRetention(ctx, Retention{FinishedRequestsS: 2 * 86400})
	if err != nil || ret.FinishedRequestsS != 2*86400 || ret.DeadAccessKeysS != 30*86400 || ret.SessionNoncesS != 4*86400 {
		t.Fatalf("SetRetention: %+v %v", ret, err)
	}
	_, err = a.SetRetention(ctx, Retention{FinishedRequestsS: 60})
	wantAPIError(t, err, api.CodeRequestMalformed)
	// Every writable setting reaches the cluster (events and the key deletion delay were
	// once dropped by this method).
	ret, err = a.SetRetention(ctx, Retention{EventsS: 2 * 3600, KeyDeletionDelayS: 3 * 86400})
	if err != nil || ret.EventsS != 2*3600 || ret.KeyDeletionDelayS != 3*86400 || ret.FinishedRequestsS != 2*86400 {
		t.Fatalf("SetRetention events and deletion delay: %+v %v", ret, err)
	}

	c, err := a.Cluster(ctx)
	if err != nil || c.Name != cl.Name() || c.Parties != cl.N() || len(c.Members) != cl.N() || c.Leader == "" {
		t.Fatalf("Cluster: %+v %v", c, err)
	}

	es, err := a.Audit(ctx, 0, 50)
	if err != nil || len(es) < 10 || es[0].Seq != 1 || es[0].Action != "cluster.init" || es[0].PrevHash != AuditGenesisHash {
		t.Fatalf("Audit: %+v %v", es, err)
	}
	created := false
	for i, e := range es {
		if e.Seq != uint64(i+1) || (i > 0 && e.PrevHash != es[i-1].Hash) {
			t.Fatalf("entry %d: %+v", i, e)
		}
		created = created || (e.Action == "users.create" && e.Actor == "admin" && e.Outcome == api.OutcomeAllowed)
	}
	if !created {
		t.Fatalf("no users.create by the admin in %+v", es)
	}
	es, err = a.Audit(ctx, 3, 2)
	if err != nil || len(es) != 2 || es[0].Seq != 4 || es[1].Seq != 5 {
		t.Fatalf("Audit after 3, limit 2: %+v %v", es, err)
	}
}

func TestHS256Mode(t *testing.T) {
	a, cl := hmacAdmin(t, 1, WithAudience(nodetest.DefaultName))
	exercise(t, a, cl)
}

func TestKeyPairMode(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{KeyPair: true, Nodes: 2})
	ctx := context.Background()
	a, err := NewKeyPair(cl.AdminPrivateKey(), cl.URL(0), WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, a, cl)

	// Another admin key pair, or the shared-key mode, is refused.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := NewKeyPair(otherPriv, cl.URL(1))
	_, err = other.Cluster(ctx)
	wantAPIError(t, err, api.CodeAuthTokenInvalid)
	hs, _ := New(bytes.Repeat([]byte{3}, 32), cl.URL(1))
	if _, err := hs.Cluster(ctx); client.CodeOf(err) == "" || api.StatusOf(client.CodeOf(err)) != http.StatusUnauthorized {
		t.Fatalf("an HS256 admin on a key-pair cluster: %v", err)
	}

	// Rotation: from its entry on only the new key works. (On the node that committed
	// it: another node refuses the new key early until it has applied the entry too.)
	newPub, newPriv, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.RotateAdminKey(ctx, hex.EncodeToString(newPub)); err != nil {
		t.Fatal(err)
	}
	_, err = a.Cluster(ctx)
	wantAPIError(t, err, api.CodeAuthTokenInvalid)
	rotated, _ := NewKeyPair(newPriv, cl.URL(0))
	if _, err := rotated.CreateUser(ctx, "after rotation"); err != nil {
		t.Fatalf("the new admin key: %v", err)
	}
}

func TestWrongAudience(t *testing.T) {
	a, _ := hmacAdmin(t, 0, WithAudience("prod"))
	_, err := a.Cluster(context.Background())
	wantAPIError(t, err, api.CodeAuthWrongAudience)
	// Without aud the token is for any cluster that does not require it.
	b, _ := hmacAdmin(t, 2)
	if _, err := b.Cluster(context.Background()); err != nil {
		t.Fatalf("an admin token without aud: %v", err)
	}
}

func TestGenUserToken(t *testing.T) {
	hsKey := bytes.Repeat([]byte{3}, 32)
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

func edKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

func TestConstructors(t *testing.T) {
	hsKey := bytes.Repeat([]byte{3}, 32)
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
