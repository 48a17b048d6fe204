package protocol

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
)

func TestNewSessionID(t *testing.T) {
	base := SessionParams{
		Kind: KindSignECDSA, KeyID: "key-1", RequestID: "req-1", Payload: []byte{1, 2, 3},
		Path: []uint32{0, 7}, Committee: []string{"node-b", "node-a"}, Nonce: [32]byte{1},
	}
	id := NewSessionID(base)
	if NewSessionID(base) != id {
		t.Fatal("not deterministic")
	}
	if len(id.String()) != 64 {
		t.Fatalf("String() = %q", id.String())
	}
	perm := base
	perm.Committee = []string{"node-a", "node-b"}
	if NewSessionID(perm) != id {
		t.Fatal("committee order matters")
	}
	if base.Committee[0] != "node-b" {
		t.Fatal("NewSessionID sorted the caller's committee in place")
	}
	variants := map[string]func(p *SessionParams){
		"kind":              func(p *SessionParams) { p.Kind = KindSignEdDSA },
		"key":               func(p *SessionParams) { p.KeyID = "key-2" },
		"request":           func(p *SessionParams) { p.RequestID = "req-2" },
		"payload":           func(p *SessionParams) { p.Payload = []byte{1, 2, 4} },
		"empty payload":     func(p *SessionParams) { p.Payload = nil },
		"path":              func(p *SessionParams) { p.Path = []uint32{0, 8} },
		"shorter path":      func(p *SessionParams) { p.Path = []uint32{0} },
		"committee":         func(p *SessionParams) { p.Committee = []string{"node-a", "node-c"} },
		"larger committee":  func(p *SessionParams) { p.Committee = []string{"node-a", "node-b", "node-c"} },
		"nonce":             func(p *SessionParams) { p.Nonce[31] = 1 },
		"key/request split": func(p *SessionParams) { p.KeyID, p.RequestID = "key-1r", "eq-1" },
		"committee split":   func(p *SessionParams) { p.Committee = []string{"node-anode-b"} },
		"payload into path": func(p *SessionParams) { p.Payload = []byte{1, 2, 3, 0, 0, 0, 2}; p.Path = nil },
	}
	seen := map[SessionID]string{id: "base"}
	for name, mutate := range variants {
		p := base
		p.Committee = slices.Clone(base.Committee)
		mutate(&p)
		got := NewSessionID(p)
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same session id as %s", name, prev)
		}
		seen[got] = name
	}
}

func TestPartyKey(t *testing.T) {
	nEd, nSecp := tss.Edwards().Params().N, tss.S256().Params().N
	seen := map[string]string{}
	for i := 0; i < 500; i++ {
		id := fmt.Sprintf("node-%d", i)
		k := PartyKey(id)
		if k.Sign() <= 0 || k.Cmp(nEd) >= 0 || k.Cmp(nSecp) >= 0 {
			t.Fatalf("%s: key out of range", id)
		}
		if PartyKey(id).Cmp(k) != 0 {
			t.Fatalf("%s: not deterministic", id)
		}
		if prev, dup := seen[k.String()]; dup {
			t.Fatalf("%s and %s share a party key", prev, id)
		}
		seen[k.String()] = id
	}
}

// DeriveECDSA must agree with btcutil's BIP32 implementation.
func TestDeriveECDSAMatchesBIP32(t *testing.T) {
	priv, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	chainCode := make([]byte, 32)
	if _, err := rand.Read(chainCode); err != nil {
		t.Fatal(err)
	}
	pub := priv.PubKey().SerializeCompressed()
	xpub := hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPublicKeyID[:], pub, chainCode, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, path := range [][]uint32{{}, {0}, {0, 7}, {1<<31 - 1, 3, 5, 9}} {
		child, cc, delta, err := DeriveECDSA(pub, chainCode, path)
		if err != nil {
			t.Fatal(err)
		}
		want := xpub
		for _, step := range path {
			if want, err = want.Derive(step); err != nil {
				t.Fatal(err)
			}
		}
		wantPub, err := want.ECPubKey()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(child, wantPub.SerializeCompressed()) || !bytes.Equal(cc, want.ChainCode()) {
			t.Fatalf("%v: derivation differs from BIP32", path)
		}
		// delta is the private tweak: priv + delta is the child's private key.
		sum := new(big.Int).Add(new(big.Int).SetBytes(priv.Serialize()), delta)
		sum.Mod(sum, btcec.S256().N)
		_, childPub := btcec.PrivKeyFromBytes(sum.FillBytes(make([]byte, 32)))
		if !bytes.Equal(childPub.SerializeCompressed(), child) {
			t.Fatalf("%v: delta does not tweak the private key to the child", path)
		}
	}
	for name, args := range map[string]struct {
		pub, cc []byte
		path    []uint32
	}{
		"short key":        {pub[:32], chainCode, nil},
		"short chain code": {pub, chainCode[:31], nil},
		"hardened":         {pub, chainCode, []uint32{1 << 31}},
		"too deep":         {pub, chainCode, make([]uint32, MaxPathDepth+1)},
		"not a point":      {append([]byte{2}, bytes.Repeat([]byte{0xff}, 32)...), chainCode, nil},
	} {
		if _, _, _, err := DeriveECDSA(args.pub, args.cc, args.path); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
}
