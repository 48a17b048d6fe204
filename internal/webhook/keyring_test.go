package webhook

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func testKeyring(t *testing.T) *Keyring {
	t.Helper()
	k, err := NewKeyring(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewKeyringKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewKeyring(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte key was accepted", n)
		}
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

func TestKeyring(t *testing.T) {
	k := testKeyring(t)
	secret, err := NewSecret(rand.Reader)
	if err != nil || len(secret) != SecretSize {
		t.Fatalf("NewSecret: %x, %v", secret, err)
	}
	ct, err := k.Seal("wh_a", secret, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != 12+len(secret)+16 || bytes.Contains(ct, secret) {
		t.Fatalf("sealed secret looks wrong: %d bytes", len(ct))
	}
	ct2, _ := k.Seal("wh_a", secret, rand.Reader)
	if bytes.Equal(ct[:12], ct2[:12]) {
		t.Fatal("the nonce repeats")
	}
	other, _ := NewKeyring(bytes.Repeat([]byte{8}, KeySize))
	flipped := bytes.Clone(ct)
	flipped[len(flipped)-1] ^= 1

	for _, tc := range []struct {
		name string
		k    *Keyring
		id   string
		ct   []byte
		ok   bool
	}{
		{"round trip", k, "wh_a", ct, true},
		{"moved to another webhook", k, "wh_b", ct, false},
		{"id prefix", k, "wh_", ct, false},
		{"another key", other, "wh_a", ct, false},
		{"tampered", k, "wh_a", flipped, false},
		{"short", k, "wh_a", ct[:20], false},
		{"empty", k, "wh_a", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.k.Open(tc.id, tc.ct)
			if tc.ok != (err == nil) {
				t.Fatalf("Open: %v", err)
			}
			if tc.ok && !bytes.Equal(got, secret) {
				t.Fatal("Open returned another secret")
			}
		})
	}
	if _, err := k.Seal("wh_a", secret, failReader{}); err == nil {
		t.Fatal("Seal without randomness succeeded")
	}
	if _, err := NewSecret(failReader{}); err == nil {
		t.Fatal("NewSecret without randomness succeeded")
	}
}

func TestFormatSecret(t *testing.T) {
	s := FormatSecret([]byte{0xfb, 0xff, 0x01})
	if s != "whsec_+/8B" {
		t.Fatalf("FormatSecret = %q", s)
	}
	b, err := ParseSecret(s)
	if err != nil || !bytes.Equal(b, []byte{0xfb, 0xff, 0x01}) {
		t.Fatalf("ParseSecret = %x, %v", b, err)
	}
	for _, bad := range []string{"", "whsec_", "+/8B", "whsec_!!", "WHSEC_+/8B"} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
		}
	}
}
