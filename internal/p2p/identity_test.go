package p2p

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func TestIdentityRoundTrip(t *testing.T) {
	sk, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b, err := MarshalIdentity(sk)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalIdentity(b)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equals(sk) {
		t.Fatal("identity changed through marshalling")
	}
	id1, err := PeerIDOfKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := PeerIDOfKey(back)
	if id1 != id2 {
		t.Fatal("peer id changed through marshalling")
	}
}

func TestIdentityRefusals(t *testing.T) {
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpBytes, err := crypto.MarshalPrivateKey(secp)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a key")},
		{"too long", bytes.Repeat([]byte{8}, maxIdentitySize+1)},
		{"secp256k1", secpBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := UnmarshalIdentity(tt.in); !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("err = %v, want ErrBadIdentity", err)
			}
		})
	}
	if _, err := MarshalIdentity(secp); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("MarshalIdentity(secp256k1) err = %v", err)
	}
	if _, err := New(Config{Identity: secp, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("New with secp256k1 key: err = %v", err)
	}
}

func FuzzUnmarshalIdentity(f *testing.F) {
	sk, _ := GenerateIdentity()
	b, _ := MarshalIdentity(sk)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{8, 1, 18, 64})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := UnmarshalIdentity(data)
		if err != nil {
			return
		}
		if _, err := PeerIDOfKey(k); err != nil {
			t.Fatalf("accepted key without a peer id: %v", err)
		}
	})
}
