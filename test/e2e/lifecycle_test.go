//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	becdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/cockroachdb/pebble/v2"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestKeyLifecycleDeriveDeleteRestoreErase: a secp256k1 key's xpub (derive "m") gives, by
// btcutil's hdkeychain, the same child as the cluster's derive and as its signing with a
// derivation path (tss-lib's ckd); an Ed25519 key is deleted (re-authenticated DELETE),
// refuses to sign, is restored and signs, is deleted again with one node down, and is
// erased: every node's keystore loses the key's data key and share — the node that was
// down too, once it is back — while the other key's stay.
func TestKeyLifecycleDeriveDeleteRestoreErase(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	cl := alice.Clients[0]

	// Derive: the xpub against an independent BIP32 implementation, and signing.
	secp, _, err := cl.CreateKey(ctx, client.CurveSecp256k1, 2, "btc", "")
	if err != nil {
		t.Fatal(err)
	}
	root, err := cl.Derive(ctx, secp.KeyID, "m", "mainnet")
	if err != nil {
		t.Fatal(err)
	}
	if root.PublicKey != secp.PublicKey || root.ChainCode != secp.ChainCode || !strings.HasPrefix(root.XPub, "xpub") {
		t.Fatalf("root: %+v vs key %+v", root, secp)
	}
	child, err := alice.Clients[1].Derive(ctx, secp.KeyID, "m/0/7", "testnet")
	if err != nil {
		t.Fatal(err)
	}
	xk, err := hdkeychain.NewKeyFromString(root.XPub)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint32{0, 7} {
		if xk, err = xk.Derive(i); err != nil {
			t.Fatal(err)
		}
	}
	xpub, _ := xk.ECPubKey()
	if hex.EncodeToString(xpub.SerializeCompressed()) != child.PublicKey || hex.EncodeToString(xk.ChainCode()) != child.ChainCode {
		t.Fatalf("hdkeychain's m/0/7 %x differs from the cluster's %s", xpub.SerializeCompressed(), child.PublicKey)
	}
	ck, err := hdkeychain.NewKeyFromString(child.XPub)
	if err != nil || !strings.HasPrefix(child.XPub, "tpub") || ck.Depth() != 2 || ck.ChildIndex() != 7 {
		t.Fatalf("child xpub %q: %v", child.XPub, err)
	}
	if g, _ := ck.Derive(3); g != nil {
		if a, _ := xk.Derive(3); a != nil {
			ga, _ := g.ECPubKey()
			aa, _ := a.ECPubKey()
			if !ga.IsEqual(aa) {
				t.Fatal("the child xpub derives other grandchildren than the root xpub")
			}
		}
	}
	digest := sha256.Sum256([]byte("derived"))
	r, err := cl.Sign(ctx, secp.KeyID, digest[:], "m/0/7", "")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := hex.DecodeString(r.Signature.DER)
	sig, err := becdsa.ParseDERSignature(der)
	if err != nil || !sig.Verify(digest[:], xpub) {
		t.Fatalf("the signature at m/0/7 does not verify under the derived key: %v", err)
	}
	if _, err := cl.Derive(ctx, secp.KeyID, "m/0'/1", ""); client.CodeOf(err) != api.CodeRequestMalformed {
		t.Fatalf("hardened derive: %v", err)
	}

	// Delete → refused signing → restore → signs.
	ed, _, err := cl.CreateKey(ctx, client.CurveEd25519, 2, "doomed", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Derive(ctx, ed.KeyID, "m", ""); client.CodeOf(err) != api.CodeRequestMalformed {
		t.Fatalf("derive on ed25519: %v", err)
	}
	if _, err := c.Admin().SetRetention(ctx, admin.Retention{KeyDeletionDelayS: 8}); err != nil {
		t.Fatal(err)
	}
	dr, err := cl.DeleteKey(ctx, ed.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if dr.Kind != api.KindDelete || dr.Status != client.StatusScheduled || dr.Key == nil || dr.Key.Status != client.KeyDeletionScheduled || dr.Key.DeleteAt == nil {
		t.Fatalf("deletion request: %+v", dr)
	}
	if _, err := alice.Clients[2].Sign(ctx, ed.KeyID, []byte("no"), "", ""); client.CodeOf(err) != api.CodeKeyNotActive {
		t.Fatalf("sign during the delay: %v", err)
	}
	if k, err := alice.Clients[1].RestoreKey(ctx, ed.KeyID); err != nil || k.Status != client.KeyActive || k.DeleteAt != nil {
		t.Fatalf("restore: %+v %v", k, err)
	}
	if got, err := cl.GetRequest(ctx, dr.RequestID); err != nil || got.Status != client.StatusDenied || got.Error.Code != api.CodeRequestCancelled {
		t.Fatalf("cancelled deletion: %+v %v", got, err)
	}
	if r, err := cl.Sign(ctx, ed.KeyID, []byte("yes"), "", ""); err != nil {
		t.Fatal(err)
	} else if sb, _ := hex.DecodeString(r.Signature.Signature); !ed25519.Verify(mustHex(t, ed.PublicKey), []byte("yes"), sb) {
		t.Fatal("signature after restore does not verify")
	}

	// Deleted with node 3 down: nodes 1 and 2 erase at delete_at, node 3 when it is back.
	c.stop(2)
	dr, err = cl.DeleteKey(ctx, ed.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		k, err := cl.GetKey(ctx, ed.KeyID)
		if err != nil {
			t.Fatal(err)
		}
		if k.Status == client.KeyDeleted {
			if k.DeletedAt == nil || k.DeletedAt.Before(*dr.Key.DeleteAt) {
				t.Fatalf("deleted key: %+v (delete_at %v)", k, dr.Key.DeleteAt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key not deleted by %v: %+v", dr.Key.DeleteAt, k)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got, err := cl.GetRequest(ctx, dr.RequestID); err != nil || got.Status != client.StatusActive {
		t.Fatalf("completed deletion: %+v %v", got, err)
	}
	if _, err := cl.RestoreKey(ctx, ed.KeyID); client.CodeOf(err) != api.CodeKeyNotActive {
		t.Fatalf("restore after deletion: %v", err)
	}
	c.start(2)
	c.waitReady(2)
	for i := range 3 {
		waitLog(t, c, i, 30*time.Second, `"msg":"erased the share of a deleted key (crypto-erase)"`, `"key":"`+ed.KeyID+`"`)
	}
	// The events and the audit say what happened.
	page, err := c.Admin().EventPage(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range page.Events {
		if e.Data.KeyID == ed.KeyID && strings.HasPrefix(e.Type, "key.") {
			types = append(types, e.Type)
		}
	}
	want := []string{api.EventKeyCreated, api.EventKeyDeletionScheduled, api.EventKeyDeletionCancelled, api.EventKeyDeletionScheduled, api.EventKeyDeleted}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("key events %v, want %v", types, want)
	}

	// Every node's keystore: the deleted key's data key and share are gone, the other
	// key's are there.
	for i := range 3 {
		c.stop(i)
	}
	for i := range 3 {
		dir := filepath.Join(c.Dir(), c.NodeID(i), "keystore")
		db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("node %d keystore: %v", i+1, err)
		}
		has := func(k string) bool {
			_, closer, err := db.Get([]byte(k))
			if errors.Is(err, pebble.ErrNotFound) {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			closer.Close()
			return true
		}
		if has("dk/"+ed.KeyID) || has("s/"+ed.KeyID) {
			t.Errorf("node %d still holds the deleted key's data key or share", i+1)
		}
		if !has("dk/"+secp.KeyID) || !has("s/"+secp.KeyID) {
			t.Errorf("node %d lost the other key", i+1)
		}
		db.Close()
	}
}

// waitLog waits until a line of node i's log holds every one of parts.
func waitLog(t *testing.T, c *cluster, i int, d time.Duration, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(c.LogPath(i))
		for _, line := range bytes.Split(b, []byte("\n")) {
			all := true
			for _, p := range parts {
				all = all && bytes.Contains(line, []byte(p))
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d never logged a line with %q", i+1, parts)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
