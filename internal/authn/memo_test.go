package authn

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The memo answers as crypto/ed25519.Verify does for every triple, in every order: a
// triple that verified is a hit, anything else — another key, message or signature, a
// signature that failed before — is verified afresh and fails.
func TestMemoAnswersAsVerify(t *testing.T) {
	pub, sk, _ := ed25519.GenerateKey(rand.Reader)
	pub2, sk2, _ := ed25519.GenerateKey(rand.Reader)
	msg, msg2 := []byte("entry one"), []byte("entry two")
	sig, sig2 := ed25519.Sign(sk, msg), ed25519.Sign(sk2, msg)
	bad := append([]byte(nil), sig...)
	bad[5] ^= 1
	cases := []struct {
		name     string
		pub      ed25519.PublicKey
		msg, sig []byte
		want     bool
	}{
		{"the signature", pub, msg, sig, true},
		{"again (a hit)", pub, msg, sig, true},
		{"another message", pub, msg2, sig, false},
		{"another key's signature of the message", pub, msg, sig2, false},
		{"the other key, its own signature", pub2, msg, sig2, true},
		{"a signature claimed by another key", pub2, msg, sig, false},
		{"a flipped bit", pub, msg, bad, false},
		{"the flipped bit again (failures are not remembered as successes)", pub, msg, bad, false},
		{"a short signature", pub, msg, sig[:63], false},
		// Length prefixes keep key/message boundaries apart.
		{"key and message run together differently", pub[:31], append(pub[31:], msg...), sig, false},
	}
	for _, m := range []*Memo{nil, NewMemo(nil), NewMemo(NewKeyCache())} {
		for _, tc := range cases {
			if got := m.Verify(tc.pub, tc.msg, tc.sig); got != tc.want {
				t.Errorf("memo %v: %s: got %v, want %v", m != nil, tc.name, got, tc.want)
			}
		}
	}
}

// VerifyNode through a memo refuses what VerifyNode refuses.
func TestMemoVerifyNode(t *testing.T) {
	sk, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	other, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	pid, _ := peer.IDFromPrivateKey(sk)
	body := []byte(`{"request_id":"req_1"}`)
	sig, err := SignNode(sk, DomainReport, body)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := SignNode(other, DomainReport, body)
	m := NewMemo(NewKeyCache())
	for i := 0; i < 2; i++ {
		if err := m.VerifyNode(pid.String(), DomainReport, body, sig); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := m.VerifyNode(pid.String(), DomainRequest, body, sig); err == nil {
			t.Fatal("a report's signature verified as a request's")
		}
		if err := m.VerifyNode(pid.String(), DomainReport, body, forged); err == nil {
			t.Fatal("another node's signature verified")
		}
		if err := m.VerifyNode(pid.String(), DomainReport, body, nil); err == nil {
			t.Fatal("no signature verified")
		}
		if err := m.VerifyNode("not-a-peer-id", DomainReport, body, sig); err == nil {
			t.Fatal("a bad peer id verified")
		}
	}
}
