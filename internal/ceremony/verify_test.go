package ceremony

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
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

// verifyBothECDSA is the secp256k1 check as it was before VerifySignature skipped the
// verification of a signature that recovers the key: after parsing, verification, DER,
// recovery id, in that order. TestRecoveryShortcutEquivalent holds the two to the same
// verdicts.
func verifyBothECDSA(pub []byte, msg []byte, sig *state.Signature) error {
	pk, es, err := parseECDSA(pub, msg, sig)
	if err != nil {
		return err
	}
	if !es.Verify(msg, pk) {
		return errors.New("ecdsa signature does not verify")
	}
	if string(es.Serialize()) != string(sig.DER) {
		return errors.New("DER encoding does not match r and s")
	}
	if sig.RecoveryID < 0 || sig.RecoveryID > 1 {
		return errors.New("recovery id must be 0 or 1")
	}
	if !recovers(sig, msg, pk) {
		return errors.New("recovery id does not recover the key")
	}
	return nil
}

// A secp256k1 signature is refused, or accepted, exactly as when every signature was
// both verified and recovered: valid signatures and every way a forger or a broken
// member could bend one (each field, the message, the key, the recovery id past its
// range, R's x past N, S high, DER apart from r and s), and random ones.
func TestRecoveryShortcutEquivalent(t *testing.T) {
	var v SignatureVerifier
	var n btcec.ModNScalar
	nBytes := btcec.S256().N.FillBytes(make([]byte, 32))
	mk := func(sk *btcec.PrivateKey, digest []byte) *state.Signature {
		c := btcecdsa.SignCompact(sk, digest, true)
		var r, s btcec.ModNScalar
		r.SetByteSlice(c[1:33])
		s.SetByteSlice(c[33:])
		return &state.Signature{R: c[1:33], S: c[33:], RecoveryID: int(c[0] - 31), DER: btcecdsa.NewSignature(&r, &s).Serialize()}
	}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i%len(b)] ^= 1 << (i % 8); return b }
	other, _ := btcec.NewPrivateKey()
	verdicts := map[string]int{}
	for i := range 300 {
		sk, _ := btcec.NewPrivateKey()
		pub := sk.PubKey().SerializeCompressed()
		digest := make([]byte, 32)
		rand.Read(digest)
		good := mk(sk, digest)
		cases := map[string]func() ([]byte, []byte, *state.Signature){
			"valid":           func() ([]byte, []byte, *state.Signature) { return pub, digest, good },
			"other message":   func() ([]byte, []byte, *state.Signature) { return pub, flip(digest, i), good },
			"other key":       func() ([]byte, []byte, *state.Signature) { return other.PubKey().SerializeCompressed(), digest, good },
			"r bent":          func() ([]byte, []byte, *state.Signature) { s := *good; s.R = flip(s.R, i); return pub, digest, &s },
			"s bent":          func() ([]byte, []byte, *state.Signature) { s := *good; s.S = flip(s.S, i+7); return pub, digest, &s },
			"r and s swapped": func() ([]byte, []byte, *state.Signature) { s := *good; s.R, s.S = s.S, s.R; return pub, digest, &s },
			"id flipped":      func() ([]byte, []byte, *state.Signature) { s := *good; s.RecoveryID ^= 1; return pub, digest, &s },
			"id 2":            func() ([]byte, []byte, *state.Signature) { s := *good; s.RecoveryID += 2; return pub, digest, &s },
			"id -1":           func() ([]byte, []byte, *state.Signature) { s := *good; s.RecoveryID = -1; return pub, digest, &s },
			"r is N":          func() ([]byte, []byte, *state.Signature) { s := *good; s.R = nBytes; return pub, digest, &s },
			"s zero":          func() ([]byte, []byte, *state.Signature) { s := *good; s.S = make([]byte, 32); return pub, digest, &s },
			"DER bent":        func() ([]byte, []byte, *state.Signature) { s := *good; s.DER = flip(s.DER, i); return pub, digest, &s },
			"high S": func() ([]byte, []byte, *state.Signature) {
				s := *good
				var sv btcec.ModNScalar
				sv.SetByteSlice(good.S)
				n.NegateVal(&sv)
				hs := n.Bytes()
				s.S, s.RecoveryID = hs[:], s.RecoveryID^1
				return pub, digest, &s
			},
			"random": func() ([]byte, []byte, *state.Signature) {
				s := &state.Signature{R: make([]byte, 32), S: make([]byte, 32), RecoveryID: i % 2}
				rand.Read(s.R)
				rand.Read(s.S)
				s.S[0] &= 0x7f
				var r, sv btcec.ModNScalar
				r.SetByteSlice(s.R)
				sv.SetByteSlice(s.S)
				s.DER = btcecdsa.NewSignature(&r, &sv).Serialize()
				return pub, digest, s
			},
		}
		for name, c := range cases {
			pub, msg, sig := c()
			want := verifyBothECDSA(pub, msg, sig)
			got := v.VerifySignature(state.CurveSecp256k1, pub, nil, nil, msg, sig)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s (round %d): %v, before the shortcut %v", name, i, got, want)
			}
			verdicts[fmt.Sprint(want)]++
		}
	}
	// Every verdict was reached, so each path of both was compared.
	for _, w := range []string{"<nil>", "ecdsa signature does not verify", "DER encoding does not match r and s",
		"recovery id must be 0 or 1", "recovery id does not recover the key", "ecdsa signature out of range", "ecdsa signature is not low-S"} {
		if verdicts[w] == 0 {
			t.Errorf("no case reached %q: %v", w, verdicts)
		}
	}
}

// BenchmarkVerifySignature is what Apply spends on each ceremony.result's threshold
// signature, in order (go test -bench VerifySignature ./internal/ceremony): secp256k1
// with and without a derivation path, and Ed25519.
func BenchmarkVerifySignature(b *testing.B) {
	var v SignatureVerifier
	sk, _ := btcec.NewPrivateKey()
	pub := sk.PubKey().SerializeCompressed()
	chainCode := make([]byte, 32)
	rand.Read(chainCode)
	digest := sha256.Sum256([]byte("bench"))
	ecdsaSig := func(sk *btcec.PrivateKey) *state.Signature {
		c := btcecdsa.SignCompact(sk, digest[:], true)
		var r, s btcec.ModNScalar
		r.SetByteSlice(c[1:33])
		s.SetByteSlice(c[33:])
		return &state.Signature{R: c[1:33], S: c[33:], RecoveryID: int(c[0] - 31), DER: btcecdsa.NewSignature(&r, &s).Serialize()}
	}
	path := []uint32{0, 7}
	_, _, delta, err := protocol.DeriveECDSA(pub, chainCode, path)
	if err != nil {
		b.Fatal(err)
	}
	var d btcec.ModNScalar
	d.SetByteSlice(delta.Bytes())
	d.Add(&sk.Key)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		name, curve    string
		pub, chainCode []byte
		path           []uint32
		sig            *state.Signature
	}{
		{"secp256k1 m/0/7", state.CurveSecp256k1, pub, chainCode, path, ecdsaSig(btcec.PrivKeyFromScalar(&d))},
		{"secp256k1", state.CurveSecp256k1, pub, nil, nil, ecdsaSig(sk)},
		{"ed25519", state.CurveEd25519, edPub, nil, nil, &state.Signature{Sig: ed25519.Sign(edPriv, digest[:])}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := v.VerifySignature(c.curve, c.pub, c.chainCode, c.path, digest[:], c.sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
