package ceremony

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/internal/state"
)

func TestSigVerifier(t *testing.T) {
	var v SignatureVerifier
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte{0, 1, 2}
	good := ed25519.Sign(priv, msg)
	if err := v.VerifySignature(state.CurveEd25519, pub, nil, nil, msg, &state.Signature{Sig: good}); err != nil {
		t.Fatal(err)
	}
	if err := v.VerifySignature(state.CurveEd25519, pub, nil, nil, []byte{1, 2}, &state.Signature{Sig: good}); err == nil {
		t.Fatal("ed25519 signature over another message accepted")
	}

	sk, _ := btcec.NewPrivateKey()
	digest := sha256.Sum256([]byte("x"))
	compact := btcecdsa.SignCompact(sk, digest[:], true)
	sig := &state.Signature{R: compact[1:33], S: compact[33:], RecoveryID: int(compact[0] - 31)}
	var r, s btcec.ModNScalar
	r.SetByteSlice(sig.R)
	s.SetByteSlice(sig.S)
	sig.DER = btcecdsa.NewSignature(&r, &s).Serialize()
	pk := sk.PubKey().SerializeCompressed()
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], sig); err != nil {
		t.Fatal(err)
	}
	bad := *sig
	bad.RecoveryID ^= 1
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &bad); err == nil {
		t.Fatal("wrong recovery id accepted")
	}
	high := *sig
	var n btcec.ModNScalar
	n.NegateVal(&s)
	hs := n.Bytes()
	high.S = hs[:]
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &high); err == nil {
		t.Fatal("high-S signature accepted")
	}
	der := *sig
	der.DER = append([]byte{}, sig.DER...)
	der.DER[len(der.DER)-1] ^= 1
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &der); err == nil {
		t.Fatal("DER not matching r and s accepted")
	}
}
