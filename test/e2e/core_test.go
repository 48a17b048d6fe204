//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

func apiCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// verifyECDSA checks a signature with btcec alone: r, s (low-S), DER and recovery id.
func verifyECDSA(t *testing.T, pubHex string, digest []byte, sig *client.Signature) {
	t.Helper()
	pub, err := hex.DecodeString(pubHex)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := btcec.ParsePubKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := hex.DecodeString(sig.DER)
	parsed, err := btcecdsa.ParseDERSignature(der)
	if err != nil {
		t.Fatalf("DER: %v", err)
	}
	if !parsed.Verify(digest, pk) {
		t.Fatal("ECDSA signature does not verify under the key")
	}
	r, _ := hex.DecodeString(sig.R)
	s, _ := hex.DecodeString(sig.S)
	var sc btcec.ModNScalar
	sc.SetByteSlice(s)
	if len(r) != 32 || len(s) != 32 || sc.IsOverHalfOrder() {
		t.Fatalf("r/s malformed or high-S: r=%d s=%d", len(r), len(s))
	}
	if sig.RecoveryID == nil {
		t.Fatal("no recovery id")
	}
	compact := append([]byte{byte(27 + 4 + *sig.RecoveryID)}, append(r, s...)...)
	rec, _, err := btcecdsa.RecoverCompact(compact, digest)
	if err != nil || !rec.IsEqual(pk) {
		t.Fatal("recovery id does not recover the key")
	}
}

// childKey derives a non-hardened BIP32 child with btcutil's hdkeychain, an implementation
// independent of the one custos uses.
func childKey(t *testing.T, pubHex, chainCodeHex string, path ...uint32) string {
	t.Helper()
	pub, _ := hex.DecodeString(pubHex)
	cc, _ := hex.DecodeString(chainCodeHex)
	k := hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPublicKeyID[:], pub, cc, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, i := range path {
		var err error
		if k, err = k.Derive(i); err != nil {
			t.Fatal(err)
		}
	}
	pk, err := k.ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(pk.SerializeCompressed())
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestThresholdCluster walks issue 2's flows 1–5 on three real custosd processes.
func TestThresholdCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// 1. The admin creates users (our route and Sigpair's).
	alice := c.newUser(ctx, "alice")
	sigpairID := sigpairCreateUser(t, c, "bob")
	if sigpairID <= alice.ID {
		t.Fatalf("user ids not increasing: %d then %d", alice.ID, sigpairID)
	}

	// 3. Keys created through different nodes.
	ecKey, req, err := alice.Clients[1].CreateKey(ctx, "secp256k1", 2, "treasury", "")
	if err != nil || ecKey == nil {
		t.Fatalf("secp256k1 keygen: %v (request %+v)", err, req)
	}
	edKey, req, err := alice.Clients[2].CreateKey(ctx, "ed25519", 2, "agent", "")
	if err != nil || edKey == nil {
		t.Fatalf("ed25519 keygen: %v (request %+v)", err, req)
	}
	if ecKey.Status != "active" || len(ecKey.PublicKey) != 66 || edKey.Status != "active" || len(edKey.PublicKey) != 64 {
		t.Fatalf("keys: %+v %+v", ecKey, edKey)
	}

	// 4. Signatures through any node, verified by independent verifiers.
	digest := sha("pay 1 BTC to bob")
	for i := 0; i < 3; i++ {
		start := time.Now()
		r, err := alice.Clients[i].Sign(ctx, ecKey.KeyID, digest, "", "")
		if err != nil {
			t.Fatalf("ECDSA sign via node %d: %v", i+1, err)
		}
		if r.Status != "signed" || r.Signature == nil {
			t.Fatalf("ECDSA sign via node %d: %+v", i+1, r)
		}
		verifyECDSA(t, ecKey.PublicKey, digest, r.Signature)
		t.Logf("ECDSA sign via node%d: %v", i+1, time.Since(start))
	}
	// Two signings of the same digest run under different, fresh sessions.
	r1, err1 := alice.Clients[0].Sign(ctx, ecKey.KeyID, digest, "", "")
	r2, err2 := alice.Clients[0].Sign(ctx, ecKey.KeyID, digest, "", "")
	if err1 != nil || err2 != nil || r1.SessionID == "" || r1.SessionID == r2.SessionID {
		t.Fatalf("session ids of two signings of one digest: %q %q (%v %v)", r1.SessionID, r2.SessionID, err1, err2)
	}
	// An idempotency key returns the first request; with another body it conflicts.
	i1, err1 := alice.Clients[0].Sign(ctx, ecKey.KeyID, digest, "", "pay-42")
	i2, err2 := alice.Clients[1].Sign(ctx, ecKey.KeyID, digest, "", "pay-42")
	if err1 != nil || err2 != nil || i1.RequestID != i2.RequestID || i2.Signature == nil || i1.Signature.DER != i2.Signature.DER {
		t.Fatalf("idempotent sign: %+v %+v (%v %v)", i1, i2, err1, err2)
	}
	if _, err := alice.Clients[2].Sign(ctx, ecKey.KeyID, sha("other"), "", "pay-42"); apiCode(err) != "request.idempotency_conflict" {
		t.Fatalf("idempotency key with another body: %v", err)
	}
	r, err := alice.Clients[0].Sign(ctx, ecKey.KeyID, digest, "m/0/7", "")
	if err != nil || r.Status != "signed" {
		t.Fatalf("derived sign: %v %+v", err, r)
	}
	got, err := alice.Clients[0].GetKey(ctx, ecKey.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	verifyECDSA(t, childKey(t, ecKey.PublicKey, got.ChainCode, 0, 7), digest, r.Signature)

	edPub, _ := hex.DecodeString(edKey.PublicKey)
	big := bytes.Repeat([]byte{0xab}, 64<<10)
	for name, msg := range map[string][]byte{"empty": {}, "64KiB": big, "leading zero": {0x00, 0x00, 0x01, 0x02}} {
		start := time.Now()
		r, err := alice.Clients[2].Sign(ctx, edKey.KeyID, msg, "", "")
		if err != nil || r.Status != "signed" {
			t.Fatalf("Ed25519 sign %s: %v %+v", name, err, r)
		}
		sig, _ := hex.DecodeString(r.Signature.Signature)
		if !ed25519.Verify(ed25519.PublicKey(edPub), msg, sig) {
			t.Fatalf("Ed25519 signature over %s message does not verify", name)
		}
		t.Logf("Ed25519 sign %s: %v", name, time.Since(start))
	}

	// Errors of API.md's list that apply here.
	t.Run("bad requests", func(t *testing.T) { badRequests(t, c, alice, ecKey.KeyID, edKey.KeyID) })
	t.Run("cli", func(t *testing.T) { cliFlow(t, c) })

	// 5. Restart the whole cluster: the same keys still sign.
	for i := range c.N() {
		c.stop(i)
	}
	for i := range c.N() {
		c.start(i)
	}
	c.waitReady(0, 1, 2)
	r, err = alice.Clients[1].Sign(ctx, ecKey.KeyID, digest, "", "")
	if err != nil || r.Status != "signed" {
		t.Fatalf("sign after restart: %v %+v", err, r)
	}
	verifyECDSA(t, ecKey.PublicKey, digest, r.Signature)

	// One node down: 2 of 3 still sign.
	c.kill(2)
	for _, key := range []string{ecKey.KeyID, edKey.KeyID} {
		msg := digest
		r, err = alice.Clients[0].Sign(ctx, key, msg, "", "")
		if err != nil || r.Status != "signed" {
			t.Fatalf("sign with one node down: %v %+v", err, r)
		}
	}
	// Two down: a clear error, not a hang.
	c.kill(1)
	start := time.Now()
	_, err = alice.Clients[0].Sign(ctx, ecKey.KeyID, digest, "", "")
	if code := apiCode(err); code != "cluster.no_quorum" && code != "cluster.unavailable" {
		t.Fatalf("sign with two nodes down: %v (code %q)", err, code)
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Fatalf("refusal took %v", d)
	}
}

// sigpairCreateUser calls POST /v1/create-user with a Sigpair admin-SDK style token.
func sigpairCreateUser(t *testing.T, c *cluster, name string) uint64 {
	t.Helper()
	iss, err := auth.NewHS256Issuer(c.adminKey())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.SigpairAdminToken(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", c.API(1)+"/v1/create-user", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		UserID uint64 `json:"user_id"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || out.UserID == 0 {
		t.Fatalf("create-user: HTTP %d", resp.StatusCode)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Fatal("no X-Request-Id")
	}
	return out.UserID
}

func cliFlow(t *testing.T, c *cluster) {
	dir := t.TempDir()
	idFile := filepath.Join(dir, "alice.key")
	conn := []string{"--admin-key-file", filepath.Join(c.Dir(), "admin.key"), "--url", c.API(0)}
	out, err := custosCLI(t, nil, "keys", "new-identity", "--out", idFile)
	if err != nil {
		t.Fatal(err)
	}
	var ident struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal([]byte(out), &ident); err != nil || len(ident.PublicKey) != 64 {
		t.Fatalf("new-identity: %q", out)
	}
	out, err = custosCLI(t, nil, append([]string{"admin", "create-user", "--name", "cli-user"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	var u struct {
		UserID uint64 `json:"user_id"`
	}
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.UserID == 0 {
		t.Fatalf("create-user: %q", out)
	}
	tok, err := custosCLI(t, nil, append([]string{"admin", "token", "--user-id", jsonNum(u.UserID), "--public-key", ident.PublicKey, "--ttl", "1h"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"CUSTOS_TOKEN=" + strings.TrimSpace(tok), "CUSTOS_IDENTITY=" + idFile}
	out, err = custosCLI(t, env, "keys", "create", "--curve", "ed25519", "--label", "cli", "--url", c.API(1))
	if err != nil {
		t.Fatal(err)
	}
	var k client.Key
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Status != "active" {
		t.Fatalf("keys create: %q", out)
	}
	out, err = custosCLI(t, env, "sign", "--key", k.KeyID, "--text", "hello from the CLI", "--url", c.API(2))
	if err != nil {
		t.Fatal(err)
	}
	var r client.Request
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Status != "signed" {
		t.Fatalf("sign: %q", out)
	}
	pub, _ := hex.DecodeString(k.PublicKey)
	sig, _ := hex.DecodeString(r.Signature.Signature)
	if !ed25519.Verify(pub, []byte("hello from the CLI"), sig) {
		t.Fatal("CLI signature does not verify")
	}
	if _, err := custosCLI(t, env, "keys", "list", "--url", c.API(0)); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(idFile)
}

func jsonNum(v uint64) string { b, _ := json.Marshal(v); return string(b) }
