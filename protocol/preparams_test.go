package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPreParamsRoundTrip(t *testing.T) {
	for i := 0; i < 3; i++ {
		legacy := fixtureBytes(t, i) // the legacy form: json.Marshal of LocalPreParams
		pre, err := ParsePreParams(legacy)
		if err != nil {
			t.Fatalf("fixture %d: %v", i, err)
		}
		b, err := pre.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, append([]byte(preParamsMagic), 1)) {
			t.Fatalf("encoding starts %q", b[:len(preParamsMagic)+1])
		}
		again, err := ParsePreParams(b)
		if err != nil {
			t.Fatalf("versioned form: %v", err)
		}
		b2, _ := again.MarshalBinary()
		if !bytes.Equal(b, b2) {
			t.Fatal("encoding not stable across a round trip")
		}
		// Bytes exactly as the node stored a generated set before versioned pre-parameters (json.Marshal).
		today, err := json.Marshal(&pre.p)
		if err != nil {
			t.Fatal(err)
		}
		fromToday, err := ParsePreParams(today)
		if err != nil {
			t.Fatalf("json.Marshal form: %v", err)
		}
		if b3, _ := fromToday.MarshalBinary(); !bytes.Equal(b, b3) {
			t.Fatal("legacy and versioned forms decode differently")
		}
		if !bytes.Equal(b[len(preParamsMagic)+1:], today) {
			t.Fatal("the versioned form does not carry the legacy JSON")
		}
		if n := longestDigitRun(b); n > maxDigits/2 {
			t.Fatalf("a %d-digit number, too close to the cap of %d", n, maxDigits)
		}
	}
}

// Every fixture the dev cluster and tests may load passes ParsePreParams
// (NewPool refuses a pool whose fixtures do not).
func TestAllFixturesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "test", "fixtures", "preparams", "preparams-*.json"))
	if err != nil || len(files) < 6 {
		t.Fatalf("fixtures: %v, %d files", err, len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePreParams(b); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}
}

func TestParsePreParamsRefuses(t *testing.T) {
	pre := loadPreParams(t, 0)
	good, err := pre.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mutated := func(f func(p *PreParams)) []byte {
		c := pre.clone()
		f(c)
		b, err := json.Marshal(&c.p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withVersion := func(v byte) []byte {
		b := bytes.Clone(good)
		b[len(preParamsMagic)] = v
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, ErrInvalidPreParams},
		{"garbage", []byte("garbage"), ErrInvalidPreParams},
		{"version 2", withVersion(2), ErrUnsupportedVersion},
		{"version 0", withVersion(0), ErrUnsupportedVersion},
		{"magic only", []byte(preParamsMagic), ErrInvalidPreParams},
		{"header only", good[:len(preParamsMagic)+1], ErrInvalidPreParams},
		{"truncated", good[:len(good)/2], ErrInvalidPreParams},
		{"trailing data", append(bytes.Clone(good), '1'), ErrInvalidPreParams},
		{"empty object", []byte("{}"), ErrInvalidPreParams},
		{"unknown field", []byte(`{"Extra":1}`), ErrInvalidPreParams},
		{"missing P (ValidateWithProof)", mutated(func(p *PreParams) { p.p.P = nil }), ErrInvalidPreParams},
		{"missing Paillier N", mutated(func(p *PreParams) { p.p.PaillierSK.N = nil }), ErrInvalidPreParams},
		{"small NTilde", mutated(func(p *PreParams) { p.p.NTildei = big.NewInt(35) }), ErrInvalidPreParams},
		{"oversize", append([]byte("{"), bytes.Repeat([]byte(" "), maxEncodedSize)...), ErrInvalidPreParams},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePreParams(tc.b)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidPreParams) || got != nil {
				t.Fatalf("got %v; want an error wrapping %v", err, tc.want)
			}
		})
	}
	// Every truncation is refused, never a panic.
	for _, b := range [][]byte{good, fixtureBytes(t, 0)} {
		for n := 0; n < len(b); n += 7 {
			if _, err := ParsePreParams(b[:n]); !errors.Is(err, ErrInvalidPreParams) {
				t.Fatalf("cut at %d of %d: got %v", n, len(b), err)
			}
		}
	}
}

func TestPreParamsAreNeverPrinted(t *testing.T) {
	pre := loadPreParams(t, 0)
	secret := pre.p.PaillierSK.P.String()[:40]
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "pre", pre)
	outs := []string{logged.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
		outs = append(outs, fmt.Sprintf(verb, pre))
	}
	for _, out := range outs {
		if strings.Contains(out, secret) {
			t.Fatalf("pre-parameters printed: %s", out)
		}
	}
}

// Real generation takes seconds to minutes; here only that it honours ctx.
func TestGeneratePreParamsHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	pre, err := GeneratePreParams(ctx)
	if err == nil || pre != nil {
		t.Fatalf("got a set in %v with a 50ms deadline", time.Since(start))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("returned %v after its deadline", took)
	}
}

// FuzzParsePreParams: outside bytes never panic the parser and every failure
// wraps ErrInvalidPreParams.
func FuzzParsePreParams(f *testing.F) {
	pre := loadPreParams(f, 0)
	b, err := pre.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(fixtureBytes(f, 1))
	f.Add([]byte(`{"PaillierSK":{"N":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePreParams(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidPreParams) {
				t.Fatalf("error %v does not wrap ErrInvalidPreParams", err)
			}
			return
		}
		if _, err := p.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	})
}
