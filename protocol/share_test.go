package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/paillier"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
)

// legacyBytes encodes a share exactly as the node stored it before versioned shares:
// json.Marshal of the curve's tss-lib LocalPartySaveData.
func legacyBytes(t testing.TB, s *Share) []byte {
	t.Helper()
	var b []byte
	var err error
	if s.curve == CurveSecp256k1 {
		b, err = json.Marshal(s.ecdsa)
	} else {
		b, err = json.Marshal(s.eddsa)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// legacyRoundTrip decodes s from its legacy storage form and checks that
// nothing was lost.
func legacyRoundTrip(t testing.TB, s *Share) *Share {
	t.Helper()
	got, err := ParseShare(s.curve, legacyBytes(t, s))
	if err != nil {
		t.Fatalf("legacy %s share: %v", s.curve, err)
	}
	if !bytes.Equal(mustMarshal(t, got), mustMarshal(t, s)) || !bytes.Equal(got.PublicKey(), s.PublicKey()) {
		t.Fatalf("legacy %s share decodes to another share", s.curve)
	}
	return got
}

// longestDigitRun is the longest run of decimal digits in b (see maxDigits).
func longestDigitRun(b []byte) int {
	longest, run := 0, 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}

func mustMarshal(t testing.TB, s *Share) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syntheticShare builds a structurally valid share of a 3-party key without
// running a ceremony (it cannot sign: its values are unrelated), for the
// parser's tests and fuzz seeds.
func syntheticShare(t testing.TB, curve string) *Share {
	t.Helper()
	ids := []string{"node-a", "node-b", "node-c"}
	var s *Share
	var err error
	switch curve {
	case CurveEd25519:
		ec := tss.Edwards()
		save := eddsakeygen.NewLocalPartySaveData(len(ids))
		for i, id := range ids {
			save.Ks[i] = PartyKey(id)
			save.BigXj[i] = crypto.ScalarBaseMult(ec, big.NewInt(int64(100+i)))
		}
		save.Xi, save.ShareID = big.NewInt(123456789), PartyKey(ids[0])
		save.EDDSAPub = crypto.ScalarBaseMult(ec, big.NewInt(42))
		s, err = newEdDSAShare(&save)
	case CurveSecp256k1:
		ec := tss.S256()
		save := ecdsakeygen.NewLocalPartySaveData(len(ids))
		for i, id := range ids {
			pre := loadPreParams(t, i).p
			if i == 0 {
				save.LocalPreParams = pre
			}
			save.Ks[i] = PartyKey(id)
			save.NTildej[i], save.H1j[i], save.H2j[i] = pre.NTildei, pre.H1i, pre.H2i
			save.PaillierPKs[i] = &paillier.PublicKey{N: pre.PaillierSK.N}
			save.BigXj[i] = crypto.ScalarBaseMult(ec, big.NewInt(int64(100+i)))
		}
		save.Xi, save.ShareID = big.NewInt(123456789), PartyKey(ids[0])
		save.ECDSAPub = crypto.ScalarBaseMult(ec, big.NewInt(42))
		s, err = newECDSAShare(&save)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestShareRoundTrip(t *testing.T) {
	ed := func(t *testing.T) map[string]*Share {
		_, es := newCluster(t, trio...)
		return eddsaKeygen(t, es, trio, 2)
	}
	secp := func(t *testing.T) map[string]*Share { return sharedECDSAKey(t).shares }
	for _, tc := range []struct {
		curve, other string
		pubLen       int
		keygen       func(t *testing.T) map[string]*Share
	}{
		{CurveSecp256k1, CurveEd25519, 33, secp},
		{CurveEd25519, CurveSecp256k1, 32, ed},
	} {
		t.Run(tc.curve, func(t *testing.T) {
			for id, s := range tc.keygen(t) {
				b := mustMarshal(t, s)
				header := append([]byte(shareMagic), 1, byte(len(tc.curve)))
				header = append(header, tc.curve...)
				if !bytes.HasPrefix(b, header) {
					t.Fatalf("%s: encoding starts %q, want %q", id, b[:len(header)], header)
				}
				got, err := ParseShare(tc.curve, b)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				if got.Curve() != tc.curve || len(got.PublicKey()) != tc.pubLen || !bytes.Equal(got.PublicKey(), s.PublicKey()) {
					t.Fatalf("%s: decoded %v, want %v", id, got, s)
				}
				if !bytes.Equal(mustMarshal(t, got), b) {
					t.Fatalf("%s: encoding is not stable across a round trip", id)
				}
				// The versioned form wraps exactly the legacy JSON.
				if !bytes.Equal(b[len(header):], legacyBytes(t, s)) {
					t.Fatalf("%s: the versioned form does not carry the legacy JSON", id)
				}
				legacyRoundTrip(t, s)
				if n := longestDigitRun(b); n > maxDigits/2 {
					t.Fatalf("%s: a real share holds a %d-digit number, too close to the cap of %d", id, n, maxDigits)
				}
				// Neither form passes for the other curve.
				for name, enc := range map[string][]byte{"versioned": b, "legacy": legacyBytes(t, s)} {
					if _, err := ParseShare(tc.other, enc); !errors.Is(err, ErrInvalidShare) {
						t.Fatalf("%s: %s %s share parsed as %s: %v", id, name, tc.curve, tc.other, err)
					}
				}
			}
		})
	}
}

func TestParseShareRefuses(t *testing.T) {
	for _, curve := range []string{CurveSecp256k1, CurveEd25519} {
		s := syntheticShare(t, curve)
		good := mustMarshal(t, s)
		legacy := legacyBytes(t, s)
		header := len(shareMagic) + 2 + len(curve)
		withVersion := func(v byte) []byte {
			b := bytes.Clone(good)
			b[len(shareMagic)] = v
			return b
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(legacy, &obj); err != nil {
			t.Fatal(err)
		}
		reencode := func(mutate func(map[string]json.RawMessage)) []byte {
			m := map[string]json.RawMessage{}
			for k, v := range obj {
				m[k] = v
			}
			mutate(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		tests := []struct {
			name string
			b    []byte
			want error
		}{
			{"nil", nil, ErrInvalidShare},
			{"empty", []byte{}, ErrInvalidShare},
			{"version 0", withVersion(0), ErrUnsupportedVersion},
			{"version 2 without its generation", withVersion(2), ErrInvalidShare},
			{"version 3", withVersion(3), ErrUnsupportedVersion},
			{"version 255", withVersion(255), ErrUnsupportedVersion},
			{"magic only", []byte(shareMagic), ErrInvalidShare},
			{"magic and version", good[:len(shareMagic)+1], ErrInvalidShare},
			{"header cut in the curve", good[:header-1], ErrInvalidShare},
			{"header only", good[:header], ErrInvalidShare},
			{"truncated JSON", good[:len(good)-1], ErrInvalidShare},
			{"trailing data", append(bytes.Clone(good), `{}`...), ErrInvalidShare},
			{"legacy with trailing data", append(bytes.Clone(legacy), " x"...), ErrInvalidShare},
			{"legacy with an unknown field", reencode(func(m map[string]json.RawMessage) { m["Extra"] = json.RawMessage("1") }), ErrInvalidShare},
			{"legacy without the secret", reencode(func(m map[string]json.RawMessage) { delete(m, "Xi") }), ErrInvalidShare},
			{"legacy with a party less", reencode(func(m map[string]json.RawMessage) { m["Ks"] = json.RawMessage("[1]") }), ErrInvalidShare},
			{"legacy with duplicate party keys", reencode(func(m map[string]json.RawMessage) { m["Ks"] = json.RawMessage("[1,1,2]") }), ErrInvalidShare},
			{"legacy with a point off the curve", reencode(func(m map[string]json.RawMessage) {
				m["BigXj"] = json.RawMessage(`[{"Curve":"` + curve + `","Coords":[1,1]},{"Curve":"` + curve + `","Coords":[1,1]},{"Curve":"` + curve + `","Coords":[1,1]}]`)
			}), ErrInvalidShare},
			{"empty object", []byte("{}"), ErrInvalidShare},
			{"JSON null", []byte("null"), ErrInvalidShare},
			{"JSON array", []byte("[]"), ErrInvalidShare},
			{"garbage", []byte("\x00\x01\x02 not a share"), ErrInvalidShare},
			{"oversize", append([]byte("{"), bytes.Repeat([]byte(" "), maxEncodedSize)...), ErrInvalidShare},
			{"number too long", reencode(func(m map[string]json.RawMessage) { m["Xi"] = bytes.Repeat([]byte("7"), maxDigits+1) }), ErrInvalidShare},
		}
		for _, tc := range tests {
			t.Run(curve+"/"+tc.name, func(t *testing.T) {
				got, err := ParseShare(curve, tc.b)
				if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidShare) || got != nil {
					t.Fatalf("got %v, %v; want an error wrapping %v", got, err, tc.want)
				}
				if errors.Is(err, ErrUnsupportedVersion) && !strings.Contains(err.Error(), "newer custos") {
					t.Fatalf("unknown version without advice: %v", err)
				}
			})
		}
	}
	t.Run("unknown curve", func(t *testing.T) {
		if _, err := ParseShare("p256", mustMarshal(t, syntheticShare(t, CurveEd25519))); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("got %v, want ErrInvalidArgument", err)
		}
	})
}

// Every truncation of a share is refused, never a panic.
func TestParseShareTruncated(t *testing.T) {
	for _, tc := range []struct {
		curve  string
		stride int
	}{{CurveEd25519, 1}, {CurveSecp256k1, 11}} {
		s := syntheticShare(t, tc.curve)
		for name, b := range map[string][]byte{"versioned": mustMarshal(t, s), "legacy": legacyBytes(t, s)} {
			for n := 0; n < len(b); n += tc.stride {
				if _, err := ParseShare(tc.curve, b[:n]); !errors.Is(err, ErrInvalidShare) {
					t.Fatalf("%s %s share cut at %d of %d: got %v", tc.curve, name, n, len(b), err)
				}
			}
		}
	}
}

// A parse error never quotes the bytes (they are secret).
func TestParseShareErrorsDoNotQuoteInput(t *testing.T) {
	secret := "98765432109876543210"
	for _, tc := range []struct{ name, json string }{
		{"big.Int that is not an integer", `{"Xi":` + secret + `.5}`},
		{"wrong type", `{"Xi":"` + secret + `"}`},
		{"syntax", `{"Xi":` + secret + `x}`},
		{"unknown field", `{"` + secret + `":1}`},
	} {
		_, err := ParseShare(CurveEd25519, []byte(tc.json))
		if !errors.Is(err, ErrInvalidShare) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// Neither fmt nor slog ever prints a share's secret.
func TestShareIsNeverPrinted(t *testing.T) {
	s := syntheticShare(t, CurveSecp256k1)
	secrets := []string{s.ecdsa.Xi.String(), s.ecdsa.PaillierSK.P.String()[:40]}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "share", s, "value", *s)
	outs := []string{logged.String(), s.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, *s))
	}
	for _, out := range outs {
		for _, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Fatalf("share printed with its secret: %s", out)
			}
		}
	}
	if !strings.Contains(s.String(), "secp256k1") {
		t.Fatalf("String() = %q", s.String())
	}
}

// FuzzParseShare: outside bytes never panic the parser, every failure wraps
// ErrInvalidShare, and whatever parses re-encodes to a share that parses to
// the same encoding.
func FuzzParseShare(f *testing.F) {
	for _, curve := range []string{CurveSecp256k1, CurveEd25519} {
		s := syntheticShare(f, curve)
		b := mustMarshal(f, s)
		f.Add(curve == CurveEd25519, b)
		f.Add(curve == CurveEd25519, legacyBytes(f, s))
		f.Add(curve == CurveEd25519, b[:len(shareMagic)+3])
	}
	f.Add(true, []byte(`{"Xi":1,"ShareID":2,"Ks":[1,2],"BigXj":[{"Coords":[1,2]},null]}`))
	f.Add(false, []byte(shareMagic+"\x02"))
	f.Fuzz(func(t *testing.T, ed bool, b []byte) {
		curve := CurveSecp256k1
		if ed {
			curve = CurveEd25519
		}
		s, err := ParseShare(curve, b)
		if err != nil {
			if !errors.Is(err, ErrInvalidShare) {
				t.Fatalf("error %v does not wrap ErrInvalidShare", err)
			}
			return
		}
		if s.Curve() != curve {
			t.Fatalf("parsed a %s share as %s", s.Curve(), curve)
		}
		if n := len(s.PublicKey()); (ed && n != 32) || (!ed && n != 33) {
			t.Fatalf("public key of %d bytes", n)
		}
		enc, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseShare(curve, enc)
		if err != nil {
			t.Fatalf("re-encoded share does not parse: %v", err)
		}
		if enc2, _ := again.MarshalBinary(); !bytes.Equal(enc, enc2) {
			t.Fatal("encoding not stable")
		}
	})
}
