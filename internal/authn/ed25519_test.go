package authn

import (
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// ed25519Case is one (public key, message, signature) triple of the edge-case vectors.
type ed25519Case struct {
	name          string
	pub, msg, sig []byte
}

// loadVectors reads testdata/name (gzipped JSON, from curve25519-voi's test data; see
// testdata/README) into v.
func loadVectors(t *testing.T, name string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if err := json.NewDecoder(zr).Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edgeCases are the signatures Ed25519 implementations disagree on: the twelve of
// "Taming the many EdDSAs" (small-order and mixed-order A and R, cofactored-only
// signatures, S over L, non-canonical encodings), ZIP-215's vectors (accepted by the
// cofactored equation only), and C2SP's ed25519vectors (every combination of low-order
// components, non-canonical encodings and reduced scalars).
func edgeCases(t *testing.T) []ed25519Case {
	var out []ed25519Case
	var spec []map[string]string
	loadVectors(t, "speccheck_cases.json.gz", &spec)
	for i, c := range spec {
		out = append(out, ed25519Case{name: "speccheck " + strconv.Itoa(i), pub: unhex(t, c["pub_key"]), msg: unhex(t, c["message"]), sig: unhex(t, c["signature"])})
	}
	var zip [][2]string
	loadVectors(t, "zip215.json.gz", &zip)
	for i, c := range zip {
		out = append(out, ed25519Case{name: "zip215 " + strconv.Itoa(i), pub: unhex(t, c[0]), msg: []byte("Zcash"), sig: unhex(t, c[1])})
	}
	var cctv []struct{ A, R, S, M string }
	loadVectors(t, "ed25519vectors.json.gz", &cctv)
	for i, c := range cctv {
		out = append(out, ed25519Case{name: "ed25519vectors " + strconv.Itoa(i), pub: unhex(t, c.A), msg: []byte(c.M), sig: append(unhex(t, c.R), unhex(t, c.S)...)})
	}
	if len(out) < 12+20+500 {
		t.Fatalf("only %d edge cases loaded", len(out))
	}
	return out
}

// KeyCache.Verify reaches crypto/ed25519.Verify's verdict on every signature that
// implementations disagree on, with and without a cache, and with the key expanded
// before (a second verification by the same key): nodes of this version and of
// earlier ones, and the HTTP layer and the FSM, agree.
func TestEd25519MatchesStdlib(t *testing.T) {
	cases := edgeCases(t)
	accepted := 0
	for _, kc := range []*KeyCache{nil, NewKeyCache()} {
		for round := range 2 {
			for _, c := range cases {
				want := ed25519.Verify(c.pub, c.msg, c.sig)
				if got := kc.Verify(c.pub, c.msg, c.sig); got != want {
					t.Errorf("cache %v round %d %s: got %v, crypto/ed25519 says %v", kc != nil, round, c.name, got, want)
				}
				if want {
					accepted++
				}
			}
		}
	}
	// The vectors hold both verdicts: a verifier that refused (or accepted) everything
	// would not pass.
	if accepted == 0 || accepted == 4*len(cases) {
		t.Fatalf("crypto/ed25519 accepted %d of %d: the vectors did not load as meant", accepted, 4*len(cases))
	}
}

// Ordinary signatures and their corruptions: every bit of R, S and A flipped in turn,
// S + L (the malleated form RFC 8032 refuses), wrong lengths.
func TestEd25519MutationsMatchStdlib(t *testing.T) {
	pub, sk, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("POST /v1/keys/key_1/sign")
	sig := ed25519.Sign(sk, msg)
	kc := NewKeyCache()
	check := func(name string, p, m, s []byte) {
		t.Helper()
		want := len(p) == ed25519.PublicKeySize && ed25519.Verify(p, m, s)
		if got := kc.Verify(p, m, s); got != want {
			t.Errorf("%s: got %v, crypto/ed25519 says %v", name, got, want)
		}
		if got := (*KeyCache)(nil).Verify(p, m, s); got != want {
			t.Errorf("%s (no cache): got %v, crypto/ed25519 says %v", name, got, want)
		}
	}
	check("valid", pub, msg, sig)
	for bit := range 64 * 8 {
		s := append([]byte(nil), sig...)
		s[bit/8] ^= 1 << (bit % 8)
		check("signature bit "+strconv.Itoa(bit), pub, msg, s)
	}
	for bit := range 32 * 8 {
		p := append([]byte(nil), pub...)
		p[bit/8] ^= 1 << (bit % 8)
		check("key bit "+strconv.Itoa(bit), p, msg, sig)
	}
	// S + L: the group order L, little-endian.
	l := unhex(t, "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	s := append([]byte(nil), sig...)
	var carry uint16
	for i := range 32 {
		v := uint16(s[32+i]) + uint16(l[i]) + carry
		s[32+i], carry = byte(v), v>>8
	}
	check("S + L", pub, msg, s)
	check("short signature", pub, msg, sig[:63])
	check("long signature", pub, msg, append(append([]byte(nil), sig...), 0))
	check("short key", pub[:31], msg, sig)
	check("empty", nil, nil, nil)
}

// FuzzEd25519MatchesStdlib: on any input KeyCache.Verify answers as crypto/ed25519.Verify
// (and never panics). Seeds are a valid signature and edge cases of the vectors.
func FuzzEd25519MatchesStdlib(f *testing.F) {
	pub, sk, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("custos/node/1\x00report\x00{}")
	f.Add([]byte(pub), msg, ed25519.Sign(sk, msg))
	f.Add(unhexF("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"), unhexF("8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6"),
		unhexF("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000"))
	f.Add(make([]byte, 32), []byte("use ristretto255"), make([]byte, 64))
	kc := NewKeyCache()
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		want := len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
		if got := kc.Verify(pub, msg, sig); got != want {
			t.Fatalf("got %v, crypto/ed25519 says %v", got, want)
		}
		if got := (*KeyCache)(nil).Verify(pub, msg, sig); got != want {
			t.Fatalf("no cache: got %v, crypto/ed25519 says %v", got, want)
		}
	})
}

func unhexF(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// The cache stays within maxCachedKeys and keeps verifying right after evicting.
func TestKeyCacheBounded(t *testing.T) {
	kc := NewKeyCache()
	msg := []byte("m")
	for i := range maxCachedKeys + 50 {
		pub, sk, _ := ed25519.GenerateKey(rand.Reader)
		if !kc.Verify(pub, msg, ed25519.Sign(sk, msg)) {
			t.Fatalf("key %d: a valid signature failed", i)
		}
		if i%2 == 0 && kc.Verify(pub, []byte("other"), ed25519.Sign(sk, msg)) {
			t.Fatalf("key %d: a signature of another message verified", i)
		}
	}
	kc.mu.Lock()
	n := len(kc.keys)
	kc.mu.Unlock()
	if n > maxCachedKeys {
		t.Fatalf("cache holds %d keys, bound %d", n, maxCachedKeys)
	}
}

// Two encodings of one point are two keys: crypto/ed25519 hashes A's bytes as given, so
// a signature can verify under one encoding and not the other. The cache is keyed by
// those bytes and hashes the bytes it was filled from: whichever encoding it expanded
// first, the other gets crypto/ed25519's own verdict. Pairs: the order-4 point with y = 0
// written as y = 0 and as y = p (non-canonical), and the order-2 point (x = 0) without
// and with the sign bit set (non-canonical). R is the identity and S = 0, so the
// signature verifies exactly when [k]A is the identity, k = H(R, A, M) mod L.
func TestKeyCacheEncodingsOfOnePoint(t *testing.T) {
	pairs := [][2]string{
		{"0000000000000000000000000000000000000000000000000000000000000000", "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"},
		{"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"},
	}
	sig := make([]byte, 64)
	sig[0] = 1 // R = identity, S = 0
	for _, p := range pairs {
		a, b := unhex(t, p[0]), unhex(t, p[1])
		// A message whose signature crypto/ed25519 accepts under a and refuses under b.
		var msg []byte
		for i := 0; ; i++ {
			if i == 1000 {
				t.Fatalf("%x / %x: no message tells the encodings apart", a, b)
			}
			msg = []byte("m" + strconv.Itoa(i))
			if ed25519.Verify(a, msg, sig) && !ed25519.Verify(b, msg, sig) {
				break
			}
		}
		for _, order := range [][2][]byte{{a, b}, {b, a}} {
			kc := NewKeyCache()
			for round := range 2 {
				for _, pub := range order {
					want := ed25519.Verify(pub, msg, sig)
					if got := kc.Verify(pub, msg, sig); got != want {
						t.Errorf("round %d, %x after %x: got %v, crypto/ed25519 says %v", round, pub, order[0], got, want)
					}
				}
			}
		}
	}
}

// One KeyCache shared by goroutines that verify with the same keys and evict each
// other's (run under -race): every verdict is crypto/ed25519's.
func TestKeyCacheConcurrent(t *testing.T) {
	kc := NewKeyCache()
	type triple struct{ pub, msg, sig []byte }
	var ts []triple
	for i := range 8 {
		pub, sk, _ := ed25519.GenerateKey(rand.Reader)
		msg := []byte("m" + strconv.Itoa(i))
		sig := ed25519.Sign(sk, msg)
		bad := append([]byte(nil), sig...)
		bad[40] ^= 1
		ts = append(ts, triple{pub, msg, sig}, triple{pub, msg, bad})
	}
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 200 {
				tr := ts[(i+g)%len(ts)]
				want := ed25519.Verify(tr.pub, tr.msg, tr.sig)
				if got := kc.Verify(tr.pub, tr.msg, tr.sig); got != want {
					done <- fmt.Errorf("goroutine %d, step %d: got %v, crypto/ed25519 says %v", g, i, got, want)
					return
				}
				if g == 0 && i%4 == 0 { // churn: fresh keys evict the shared ones
					for range maxCachedKeys / 32 {
						pub, _, _ := ed25519.GenerateKey(rand.Reader)
						kc.Verify(pub, tr.msg, tr.sig)
					}
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// The zero KeyCache is an empty cache, and the options are voi's StdLib preset's.
func TestKeyCacheZeroValueAndOptions(t *testing.T) {
	var kc KeyCache
	pub, sk, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("zero")
	for range 2 {
		if !kc.Verify(pub, msg, ed25519.Sign(sk, msg)) {
			t.Fatal("the zero KeyCache refused a valid signature")
		}
	}
	if *stdlibOptions.Verify != *voi.VerifyOptionsStdLib {
		t.Fatalf("options %+v differ from voi's VerifyOptionsStdLib %+v", *stdlibOptions.Verify, *voi.VerifyOptionsStdLib)
	}
}
