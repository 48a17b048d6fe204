package protocol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"runtime"
	"testing"
	"time"
)

// eddsaKeygen runs a threshold-of-len(ids) Ed25519 keygen on es.
func eddsaKeygen(t *testing.T, es map[string]*Engine, ids []string, threshold int) map[string]*Share {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	saves, errs := runParties(ids, func(id string) (*Share, error) {
		return es[id].Keygen(ctx, sid, CurveEd25519, ids, threshold, nil)
	})
	t.Logf("EdDSA %d-of-%d keygen took %v", threshold, len(ids), time.Since(start))
	if len(errs) > 0 {
		t.Fatalf("EdDSA keygen failed: %v", errs)
	}
	return saves
}

func TestEdDSAKeygenAndSign(t *testing.T) {
	baseline := runtime.NumGoroutine()
	ids := []string{"node-a", "node-b", "node-c"}
	_, es := newCluster(t, ids...)
	saves := eddsaKeygen(t, es, ids, 2)
	pub := saves["node-a"].PublicKey()
	if len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public key of %d bytes", len(pub))
	}
	for _, id := range ids {
		if !bytes.Equal(saves[id].PublicKey(), pub) || saves[id].Curve() != CurveEd25519 {
			t.Fatalf("%s computed a different public key", id)
		}
	}
	// Shares as today's nodes stored them (bare json.Marshal of the save
	// data) sign as well.
	legacy := map[string]*Share{}
	for _, id := range ids {
		legacy[id] = legacyRoundTrip(t, saves[id])
	}

	big := make([]byte, 64<<10)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	big[0] = 0x00
	tests := []struct {
		name    string
		signers []string
		msg     []byte
		shares  map[string]*Share
	}{
		{"empty message", []string{"node-a", "node-b"}, []byte{}, saves},
		{"64 KiB message", []string{"node-b", "node-c"}, big, saves},
		{"leading zero bytes", []string{"node-a", "node-c"}, []byte{0x00, 0x00, 0x01, 0x02}, saves},
		{"only zero bytes", []string{"node-a", "node-b"}, []byte{0x00, 0x00, 0x00}, saves},
		{"all three signers", ids, []byte("hello custos"), saves},
		{"legacy stored shares", []string{"node-b", "node-c"}, []byte("legacy"), legacy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			saves := tc.shares
			before := mustMarshal(t, saves[tc.signers[0]])
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sid := NewSessionID(SessionParams{Kind: KindSignEdDSA, KeyID: "k", RequestID: tc.name, Payload: tc.msg, Committee: tc.signers})
			start := time.Now()
			sigs, errs := runParties(tc.signers, func(id string) (*Signature, error) {
				return es[id].Sign(ctx, sid, tc.signers, 2, saves[id], tc.msg, nil, nil)
			})
			t.Logf("EdDSA %d-party signing of %d bytes took %v", len(tc.signers), len(tc.msg), time.Since(start))
			if len(errs) > 0 {
				t.Fatalf("signing failed: %v", errs)
			}
			for id, sig := range sigs {
				if sig.Curve != CurveEd25519 || sig.R != nil || sig.S != nil || sig.DER != nil {
					t.Fatalf("%s: malformed signature %+v", id, sig)
				}
				if len(sig.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, tc.msg, sig.Sig) {
					t.Fatalf("%s: signature does not verify with crypto/ed25519", id)
				}
			}
			if !bytes.Equal(before, mustMarshal(t, saves[tc.signers[0]])) {
				t.Fatal("Sign modified the caller's share")
			}
		})
	}
	for _, e := range es {
		e.Close()
	}
	settleGoroutines(t, baseline)
}

func TestSignEdDSARejectsBadArguments(t *testing.T) {
	ids := []string{"node-a", "node-b", "node-c"}
	_, es := newCluster(t, ids...)
	saves := eddsaKeygen(t, es, ids, 2)
	e := es["node-a"]
	tooBig := make([]byte, MaxEdDSAMessageSize+1)
	tests := []struct {
		name    string
		signers []string
		key     *Share
		msg     []byte
		path    []uint32
		want    error
	}{
		{"message too large", []string{"node-a", "node-b"}, saves["node-a"], tooBig, nil, ErrInvalidArgument},
		{"nil key", []string{"node-a", "node-b"}, nil, nil, nil, ErrInvalidArgument},
		{"zero share", []string{"node-a", "node-b"}, &Share{}, nil, nil, ErrInvalidArgument},
		{"derivation path", []string{"node-a", "node-b"}, saves["node-a"], []byte("x"), []uint32{0}, ErrInvalidArgument},
		{"another node's share", []string{"node-a", "node-b"}, saves["node-c"], nil, nil, ErrInvalidArgument},
		{"duplicate signer", []string{"node-a", "node-a"}, saves["node-a"], nil, nil, ErrInvalidArgument},
		{"stranger", []string{"node-a", "node-z"}, saves["node-a"], nil, nil, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Sign(context.Background(), randomSID(t), tc.signers, 2, tc.key, tc.msg, nil, tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
