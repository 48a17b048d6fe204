//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/node/client"
)

// TestPSBTBuild checks, offline, that the PSBTs the PSBT cell sends are what the nodes
// accept (internal/btc's PlanPSBT, which every node runs) and that check accepts them
// once signed (here with the private children of a local key and btc.Finalize), and
// that two builds never share a transaction.
func TestPSBTBuild(t *testing.T) {
	seed := sha256.Sum256([]byte("bench psbt key"))
	priv, _ := btcec.PrivKeyFromBytes(seed[:])
	cc := sha256.Sum256([]byte("bench psbt chain code"))
	pub := priv.PubKey().SerializeCompressed()
	cs := &clusterSide{ecKey: &client.Key{KeyID: "k", PublicKey: hex.EncodeToString(pub), ChainCode: hex.EncodeToString(cc[:])}}
	ps, err := newPSBTSide(t.Context(), cs)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ps.build()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(u.b64)
	if err != nil {
		t.Fatal(err)
	}
	ins := make([]btc.InputSpec, psbtInputs)
	for i := range ins {
		ins[i] = btc.InputSpec{Index: i, DerivationPath: ps.paths[i]}
	}
	plan, err := btc.PlanPSBT(raw, &chaincfg.RegressionNetParams, pub, cc[:], ins, nil)
	if err != nil {
		t.Fatalf("the nodes would refuse the PSBT: %v", err)
	}
	if plan.FeeSats != psbtFeeSats || len(plan.Inputs) != psbtInputs {
		t.Fatalf("plan: fee %d, %d inputs", plan.FeeSats, len(plan.Inputs))
	}
	xpriv := hdkeychain.NewExtendedKey(chaincfg.RegressionNetParams.HDPrivateKeyID[:], priv.Serialize(), cc[:], []byte{0, 0, 0, 0}, 0, 0, true)
	sigs := make([]btc.Signature, psbtInputs)
	for i, in := range plan.Inputs {
		k, err := xpriv.Derive(0)
		if err == nil {
			k, err = k.Derive(uint32(i))
		}
		if err != nil {
			t.Fatal(err)
		}
		cp, err := k.ECPrivKey()
		if err != nil {
			t.Fatal(err)
		}
		sig := ecdsa.Sign(cp, in.Sighash)
		r, s := sig.R(), sig.S()
		rb, sb := r.Bytes(), s.Bytes()
		sigs[i] = btc.Signature{R: rb[:], S: sb[:]}
	}
	out, _, _, err := btc.Finalize(raw, plan, sigs)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.check(base64.StdEncoding.EncodeToString(out)); err != nil {
		t.Fatalf("check refuses a signed PSBT: %v", err)
	}
	if err := u.check(u.b64); err == nil {
		t.Fatal("check accepts the unsigned PSBT")
	}
	u2, err := ps.build()
	if err != nil {
		t.Fatal(err)
	}
	if u2.txid == u.txid {
		t.Fatal("two builds made the same transaction")
	}
}
