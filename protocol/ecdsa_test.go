package protocol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/mta"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestECDSAKeygenAndSign(t *testing.T) {
	k := sharedECDSAKey(t)
	t.Logf("ECDSA 2-of-3 keygen took %v", k.took)
	for _, id := range k.ids {
		if got := k.shares[id].PublicKey(); !bytes.Equal(got, k.pub) {
			t.Fatalf("%s computed public key %x, %s computed %x", id, got, k.ids[0], k.pub)
		}
		if c := k.shares[id].Curve(); c != CurveSecp256k1 {
			t.Fatalf("%s: share of curve %q", id, c)
		}
	}
	if _, err := btcec.ParsePubKey(k.pub); err != nil {
		t.Fatalf("keygen public key does not parse: %v", err)
	}

	tests := []struct {
		name    string
		signers []string
		path    []uint32
		// legacy: sign with shares decoded from today's storage form (bare
		// json.Marshal of the save data, as the node wrote shares before versioned shares).
		legacy bool
	}{
		{"no derivation", []string{"node-a", "node-b"}, nil, false},
		{"derived m/0/7", []string{"node-c", "node-b"}, []uint32{0, 7}, false},
		{"legacy stored shares", []string{"node-a", "node-c"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			shares := k.shares
			if tc.legacy {
				shares = map[string]*Share{}
				for _, id := range tc.signers {
					shares[id] = legacyRoundTrip(t, k.shares[id])
				}
			}
			_, es := newCluster(t, tc.signers...)
			digest := sha256.Sum256([]byte("custos test " + tc.name))
			sid := NewSessionID(SessionParams{Kind: KindSignECDSA, KeyID: "k1", RequestID: tc.name, Payload: digest[:], Path: path, Committee: tc.signers})
			before := map[string][]byte{}
			for _, id := range tc.signers {
				before[id] = mustMarshal(t, shares[id])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			sigs, errs := runParties(tc.signers, func(id string) (*Signature, error) {
				return es[id].Sign(ctx, sid, tc.signers, 2, shares[id], digest[:], k.chainCode, path)
			})
			t.Logf("ECDSA 2-party signing (%s) took %v", tc.name, time.Since(start))
			if len(errs) > 0 {
				t.Fatalf("signing failed: %v", errs)
			}
			wantPub, _, _, err := DeriveECDSA(k.pub, k.chainCode, path)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := btcec.ParsePubKey(wantPub)
			if err != nil {
				t.Fatal(err)
			}
			for id, s := range sigs {
				if s.Curve != CurveSecp256k1 || len(s.R) != 32 || len(s.S) != 32 || s.Sig != nil {
					t.Fatalf("%s: malformed signature %+v", id, s)
				}
				parsed, err := btcecdsa.ParseDERSignature(s.DER)
				if err != nil {
					t.Fatalf("%s: DER does not parse: %v", id, err)
				}
				if !parsed.Verify(digest[:], pub) {
					t.Fatalf("%s: signature does not verify against the derived key", id)
				}
				var sc btcec.ModNScalar
				sc.SetByteSlice(s.S)
				if sc.IsOverHalfOrder() {
					t.Fatalf("%s: S is not low", id)
				}
				compact := append([]byte{27 + 4 + s.RecoveryID}, s.R...)
				compact = append(compact, s.S...)
				rec, _, err := btcecdsa.RecoverCompact(compact, digest[:])
				if err != nil || !bytes.Equal(rec.SerializeCompressed(), wantPub) {
					t.Fatalf("%s: recovery id %d does not recover the key", id, s.RecoveryID)
				}
				if !bytes.Equal(sigs[tc.signers[0]].DER, s.DER) {
					t.Fatalf("signers disagree on the signature")
				}
			}
			for _, id := range tc.signers {
				if !bytes.Equal(before[id], mustMarshal(t, shares[id])) {
					t.Fatalf("%s: Sign modified the caller's share", id)
				}
			}
			// The session id is spent.
			_, err = es[tc.signers[0]].Sign(ctx, sid, tc.signers, 2, shares[tc.signers[0]], digest[:], k.chainCode, path)
			if !errors.Is(err, ErrSessionReused) {
				t.Fatalf("reusing a session id: got %v, want ErrSessionReused", err)
			}
		})
	}
}

// A signer that sends a degenerate MtA ciphertext (c = N, not a unit modulo
// N^2) would make tss-lib v2.0.2 panic inside a goroutine it spawns (crashing
// the node); custos's own range-proof checks blame it instead.
func TestECDSASignDegenerateCiphertext(t *testing.T) {
	k := sharedECDSAKey(t)
	signers := []string{"node-a", "node-b"}
	n, es := newCluster(t, signers...)
	typ := typeName(&ecdsasigning.SignRound1Message1{})
	n.setHook(func(from, to string, m *Message) []*Message {
		if from != "node-b" || m.Kind != MsgTSS || m.Broadcast {
			return []*Message{m}
		}
		var a anypb.Any
		if err := proto.Unmarshal(m.Payload, &a); err != nil || string(a.MessageName()) != typ {
			return []*Message{m}
		}
		var content ecdsasigning.SignRound1Message1
		if err := a.UnmarshalTo(&content); err != nil {
			t.Errorf("decode own message: %v", err)
			return []*Message{m}
		}
		// node-b's own Paillier modulus: a multiple of N is never a unit mod N^2.
		content.C = paillierNOf(k, "node-b").Bytes()
		b := mustMarshalAny(t, &content)
		mm := *m
		mm.Payload = b
		return []*Message{&mm}
	})
	digest := sha256.Sum256([]byte("degenerate"))
	sid := randomSID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, errs := runWithBad(ctx, []string{"node-a"}, []string{"node-b"}, func(ctx context.Context, id string) (*Signature, error) {
		return es[id].Sign(ctx, sid, signers, 2, k.shares[id], digest[:], nil, nil)
	})
	requireCeremonyError(t, "node-a", errs["node-a"], ErrInvalidMessage, "node-b")
}

func paillierNOf(k *ecdsaKey, id string) *big.Int {
	return new(big.Int).Set(k.shares[id].ecdsa.PaillierSK.N)
}

func mustMarshalAny(t *testing.T, m proto.Message) []byte {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignECDSARejectsBadArguments(t *testing.T) {
	k := sharedECDSAKey(t)
	_, es := newCluster(t, "node-a")
	e := es["node-a"]
	ctx := context.Background()
	digest := make([]byte, 32)
	digest[31] = 1
	tests := []struct {
		name    string
		signers []string
		digest  []byte
		key     *Share
		path    []uint32
		cc      []byte
	}{
		{"no share", []string{"node-a", "node-b"}, digest, &Share{}, nil, nil},
		{"digest not below the order", []string{"node-a", "node-b"}, bytes.Repeat([]byte{0xff}, 32), nil, nil, nil},
		{"short digest", []string{"node-a", "node-b"}, digest[:31], nil, nil, nil},
		{"self not a signer", []string{"node-b", "node-c"}, digest, nil, nil, nil},
		{"too few signers", []string{"node-a"}, digest, nil, nil, nil},
		{"unknown signer", []string{"node-a", "node-x"}, digest, nil, nil, nil},
		{"share of another node", []string{"node-a", "node-b"}, digest, k.shares["node-b"], nil, nil},
		{"hardened path", []string{"node-a", "node-b"}, digest, nil, []uint32{1 << 31}, k.chainCode},
		{"missing chain code", []string{"node-a", "node-b"}, digest, nil, []uint32{1}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := k.shares["node-a"]
			if tc.key != nil {
				key = tc.key
			}
			_, err := e.Sign(ctx, randomSID(t), tc.signers, 2, key, tc.digest, tc.cc, tc.path)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestECDSAValidationChecks(t *testing.T) {
	pre := &loadPreParams(t, 0).p
	N := pre.PaillierSK.N
	// #323: a modproof whose w shares a factor with N.
	if err := checkModProof(fakeModProof(pre.PaillierSK.P, N), N); err == nil {
		t.Fatal("modproof with gcd(w, N) != 1 accepted")
	}
	if err := checkModProof(fakeModProof(big.NewInt(7), N), N); err != nil {
		t.Fatalf("well-formed modproof refused: %v", err)
	}
	// #289: degenerate range-proof responses.
	q := btcec.S256().N
	q3 := new(big.Int).Exp(q, big.NewInt(3), nil)
	N2 := new(big.Int).Mul(N, N)
	nt := pre.NTildei
	ok := func() *mta.RangeProofAlice {
		return &mta.RangeProofAlice{Z: big.NewInt(3), U: big.NewInt(5), W: big.NewInt(7), S: big.NewInt(11), S1: new(big.Int).Add(q, big.NewInt(1)), S2: big.NewInt(13)}
	}
	if err := checkRangeProofAlice(ok(), N, N2, nt, q, q3, 3*256+nt.BitLen()+2); err != nil {
		t.Fatalf("well-formed range proof refused: %v", err)
	}
	for name, mutate := range map[string]func(p *mta.RangeProofAlice){
		"s zero":          func(p *mta.RangeProofAlice) { p.S = big.NewInt(0) },
		"s not a unit":    func(p *mta.RangeProofAlice) { p.S = new(big.Int).Set(pre.PaillierSK.P) },
		"u not a unit":    func(p *mta.RangeProofAlice) { p.U = new(big.Int).Set(N) },
		"z zero":          func(p *mta.RangeProofAlice) { p.Z = big.NewInt(0) },
		"s1 below q":      func(p *mta.RangeProofAlice) { p.S1 = big.NewInt(1) },
		"s2 huge":         func(p *mta.RangeProofAlice) { p.S2 = new(big.Int).Lsh(big.NewInt(1), 100000) },
		"s1 above q cube": func(p *mta.RangeProofAlice) { p.S1 = new(big.Int).Add(q3, big.NewInt(1)) },
	} {
		p := ok()
		mutate(p)
		if err := checkRangeProofAlice(p, N, N2, nt, q, q3, 3*256+nt.BitLen()+2); err == nil {
			t.Errorf("%s: degenerate range proof accepted", name)
		}
	}
}

func fakeModProof(w, N *big.Int) *modproof.ProofMod {
	pf := &modproof.ProofMod{W: w, A: new(big.Int).Lsh(big.NewInt(1), modproof.Iterations), B: new(big.Int).Lsh(big.NewInt(1), modproof.Iterations)}
	for i := range pf.X {
		pf.X[i], pf.Z[i] = big.NewInt(2), big.NewInt(3)
	}
	return pf
}
