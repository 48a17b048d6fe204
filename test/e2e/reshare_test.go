//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	becdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// signVerify signs through node i (the entry node is in the committee the leader picks)
// and verifies the signature under the key's public key.
func signVerify(ctx context.Context, t *testing.T, u *user, i int, k *client.Key, msg string) {
	t.Helper()
	switch k.Curve {
	case client.CurveSecp256k1:
		d := sha256.Sum256([]byte(msg))
		r, err := u.Clients[i].Sign(ctx, k.KeyID, d[:], "", "")
		if err != nil {
			t.Fatalf("sign %s through node %d: %v", k.KeyID, i+1, err)
		}
		pub, err := btcec.ParsePubKey(mustHex(t, k.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := becdsa.ParseDERSignature(mustHex(t, r.Signature.DER))
		if err != nil || !sig.Verify(d[:], pub) {
			t.Fatalf("signature through node %d does not verify under the key: %v", i+1, err)
		}
	default:
		r, err := u.Clients[i].Sign(ctx, k.KeyID, []byte(msg), "", "")
		if err != nil {
			t.Fatalf("sign %s through node %d: %v", k.KeyID, i+1, err)
		}
		if !ed25519.Verify(mustHex(t, k.PublicKey), []byte(msg), mustHex(t, r.Signature.Signature)) {
			t.Fatalf("signature through node %d does not verify under the key", i+1)
		}
	}
}

// TestReshareAndRefreshKeepTheKey: a secp256k1 key goes 2-of-3 → 3-of-3 → 2-of-2 (node 3
// left out: it erases its share) → 2-of-3 again (node 3 gets a fresh share), and an
// Ed25519 key is refreshed; after each step the key is the same, signs through the nodes
// of its committee, and the nodes left out hold no share. A reshare interrupted by kill -9
// of a node in both committees ends with the key signing under one committee.
func TestReshareAndRefreshKeepTheKey(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"rate":     noRateLimit(),
		"ceremony": map[string]any{"sign_timeout": "15s", "keygen_timeout": "25s"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	adm := c.Admin()
	ids := []string{c.NodeID(0), c.NodeID(1), c.NodeID(2)}

	secp, _, err := alice.Clients[0].CreateKey(ctx, client.CurveSecp256k1, 2, "moving", "")
	if err != nil {
		t.Fatal(err)
	}
	ed, _, err := alice.Clients[0].CreateKey(ctx, client.CurveEd25519, 2, "refreshed", "")
	if err != nil {
		t.Fatal(err)
	}
	step := func(members []string, threshold int, wantGen uint32) {
		t.Helper()
		start := time.Now()
		r, err := adm.ReshareKey(ctx, secp.KeyID, members, threshold)
		if err != nil {
			t.Fatalf("reshare to %d of %v: %v", threshold, members, err)
		}
		if r.Status != client.StatusActive {
			if r, err = adm.WaitRequest(ctx, r.RequestID, 300*time.Millisecond, nil); err != nil || r.Status != client.StatusActive {
				t.Fatalf("reshare to %d of %v: %+v %v", threshold, members, r, err)
			}
		}
		k, err := alice.Clients[0].GetKey(ctx, secp.KeyID)
		if err != nil {
			t.Fatal(err)
		}
		if k.PublicKey != secp.PublicKey || k.Threshold != threshold || !slices.Equal(k.Members, members) || k.Generation != wantGen || k.Resharing != "" {
			t.Fatalf("key after the reshare: %+v", k)
		}
		t.Logf("reshared to %d of %v in %s", threshold, members, time.Since(start).Round(time.Millisecond))
	}

	step(ids, 3, 1)
	signVerify(ctx, t, alice, 0, secp, "3 of 3")

	step(ids[:2], 2, 2)
	waitLog(t, c, 2, 30*time.Second, `"msg":"erased the share of a key reshared away from this node"`, `"key":"`+secp.KeyID+`"`)
	signVerify(ctx, t, alice, 0, secp, "2 of 2 through node 1")
	signVerify(ctx, t, alice, 1, secp, "2 of 2 through node 2")

	step(ids, 2, 3)
	for i := range 3 {
		signVerify(ctx, t, alice, i, secp, fmt.Sprintf("2 of 3 again through node %d", i+1))
	}

	// A refresh of the Ed25519 key: same members, threshold and key, new shares.
	r, err := adm.RefreshKey(ctx, ed.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != client.StatusActive || r.Key == nil || r.Key.Generation != 1 || r.Key.PublicKey != ed.PublicKey {
		t.Fatalf("refresh: %+v", r)
	}
	for i := range 3 {
		signVerify(ctx, t, alice, i, ed, fmt.Sprintf("refreshed through node %d", i+1))
	}

	// Refused: an unknown member (404), a threshold above the members (400), a user.
	if _, err := adm.ReshareKey(ctx, secp.KeyID, []string{ids[0], "node9"}, 2); client.CodeOf(err) != api.CodeMemberNotFound {
		t.Fatalf("unknown member: %v", err)
	}
	if _, err := adm.ReshareKey(ctx, secp.KeyID, ids[:2], 3); client.CodeOf(err) != api.CodeRequestMalformed {
		t.Fatalf("threshold above members: %v", err)
	}
	if err := alice.Clients[0].Do(ctx, "POST", "/v1/admin/keys/"+secp.KeyID+"/refresh", nil, nil); client.CodeOf(err) != api.CodePermDenied {
		t.Fatalf("a user's refresh: %v", err)
	}

	// Interrupted: node 2 (in both committees) is killed while the reshare runs.
	done := make(chan *client.Request, 1)
	go func() {
		r, err := adm.ReshareKey(ctx, secp.KeyID, nil, 3)
		if err != nil {
			t.Logf("interrupted reshare answered: %v", err)
			done <- nil
			return
		}
		done <- r
	}()
	time.Sleep(700 * time.Millisecond)
	c.kill(1)
	r = <-done
	var k *client.Key
	deadline := time.Now().Add(90 * time.Second)
	for {
		if k, err = alice.Clients[0].GetKey(ctx, secp.KeyID); err != nil {
			t.Fatal(err)
		}
		if k.Resharing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted reshare never ended: %+v", k)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("interrupted reshare: request %+v; key at generation %d, %d of %v", r, k.Generation, k.Threshold, k.Members)
	c.start(1)
	c.waitReady(1)
	secp = k
	if k.Threshold == 3 {
		signVerify(ctx, t, alice, 0, secp, "after the interruption (new committee)")
	} else {
		for i := range 3 {
			signVerify(ctx, t, alice, i, secp, fmt.Sprintf("after the interruption (old committee) through node %d", i+1))
		}
	}
	// And the key can be reshared again afterwards.
	step(ids, 2, k.Generation+2)
	for i := range 3 {
		signVerify(ctx, t, alice, i, secp, fmt.Sprintf("final through node %d", i+1))
	}
}

// TestReshareAgainstALyingMember: a compromised member (test build) reports its new share
// of a reshare with another public key. The reshare fails and names it; the key keeps its
// public key, committee and generation, the honest nodes keep their shares and sign; then
// the key is reshared away from the liar (it is an old party only: its report is not
// needed), and its share is erased.
func TestReshareAgainstALyingMember(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{Binary: bins.CustosdHooks, NodeEnv: map[int][]string{2: {"CUSTOS_TEST_MISBEHAVE=reshare-wrong-key"}},
		Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	adm := c.Admin()
	ed, _, err := alice.Clients[0].CreateKey(ctx, client.CurveEd25519, 2, "target", "")
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.DebugState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = adm.RefreshKey(ctx, ed.KeyID)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != api.CodeCeremonyFailed || !strings.Contains(ae.Detail, c.NodeID(2)) {
		t.Fatalf("refresh with a lying member: %v", err)
	}
	k, err := alice.Clients[0].GetKey(ctx, ed.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicKey != ed.PublicKey || k.Generation != 0 || len(k.Members) != 3 || k.Resharing != "" {
		t.Fatalf("key after the refused reshare: %+v", k)
	}
	for _, i := range []int{0, 1} {
		// The failed reshare's new share, kept aside, is dropped by each runner once its
		// FSM applied the failure, which the answer above may precede by a moment.
		deadline := time.Now().Add(15 * time.Second)
		for {
			ds, err := c.DebugState(ctx, i)
			if err == nil && ds.Shares == before.Shares && ds.SharesHash == before.SharesHash {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d's shares changed: %+v %v", i+1, ds, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		signVerify(ctx, t, alice, i, ed, fmt.Sprintf("after the lie, through node %d", i+1))
	}
	// Away from the liar: 2 of nodes 1 and 2.
	r, err := adm.ReshareKey(ctx, ed.KeyID, []string{c.NodeID(0), c.NodeID(1)}, 2)
	if err != nil || r.Status != client.StatusActive || r.Key.Generation == 0 {
		t.Fatalf("reshare away from the liar: %+v %v", r, err)
	}
	waitLog(t, c, 2, 30*time.Second, `"msg":"erased the share of a key reshared away from this node"`, `"key":"`+ed.KeyID+`"`)
	signVerify(ctx, t, alice, 0, ed, "without the liar")
}
