package protocol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"runtime"
	"testing"
	"time"

	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
)

// eddsaKeygen runs a threshold-of-len(ids) Ed25519 keygen on es.
func eddsaKeygen(t *testing.T, es map[string]*Engine, ids []string, threshold int) map[string]*eddsakeygen.LocalPartySaveData {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	saves, errs := runParties(ids, func(id string) (*eddsakeygen.LocalPartySaveData, error) {
		return es[id].KeygenEdDSA(ctx, sid, ids, threshold)
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
	pub := EdDSAPublicKey(saves["node-a"])
	if len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public key of %d bytes", len(pub))
	}
	for _, id := range ids {
		if !bytes.Equal(EdDSAPublicKey(saves[id]), pub) {
			t.Fatalf("%s computed a different public key", id)
		}
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
	}{
		{"empty message", []string{"node-a", "node-b"}, []byte{}},
		{"64 KiB message", []string{"node-b", "node-c"}, big},
		{"leading zero bytes", []string{"node-a", "node-c"}, []byte{0x00, 0x00, 0x01, 0x02}},
		{"only zero bytes", []string{"node-a", "node-b"}, []byte{0x00, 0x00, 0x00}},
		{"all three signers", ids, []byte("hello custos")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := json.Marshal(saves[tc.signers[0]])
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sid := NewSessionID(SessionParams{Kind: KindSignEdDSA, KeyID: "k", RequestID: tc.name, Payload: tc.msg, Committee: tc.signers})
			start := time.Now()
			sigs, errs := runParties(tc.signers, func(id string) ([]byte, error) {
				return es[id].SignEdDSA(ctx, sid, tc.signers, 2, saves[id], tc.msg)
			})
			t.Logf("EdDSA %d-party signing of %d bytes took %v", len(tc.signers), len(tc.msg), time.Since(start))
			if len(errs) > 0 {
				t.Fatalf("signing failed: %v", errs)
			}
			for id, sig := range sigs {
				if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, tc.msg, sig) {
					t.Fatalf("%s: signature does not verify with crypto/ed25519", id)
				}
			}
			after, _ := json.Marshal(saves[tc.signers[0]])
			if !bytes.Equal(before, after) {
				t.Fatal("SignEdDSA modified the caller's save data")
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
		key     *eddsakeygen.LocalPartySaveData
		msg     []byte
		want    error
	}{
		{"message too large", []string{"node-a", "node-b"}, saves["node-a"], tooBig, ErrInvalidArgument},
		{"nil key", []string{"node-a", "node-b"}, nil, nil, ErrInvalidArgument},
		{"another node's share", []string{"node-a", "node-b"}, saves["node-c"], nil, ErrInvalidArgument},
		{"duplicate signer", []string{"node-a", "node-a"}, saves["node-a"], nil, ErrInvalidArgument},
		{"stranger", []string{"node-a", "node-z"}, saves["node-a"], nil, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.SignEdDSA(context.Background(), randomSID(t), tc.signers, 2, tc.key, tc.msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
