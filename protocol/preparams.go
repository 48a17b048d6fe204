package protocol

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
)

// preParamsMagic starts every versioned pre-parameter encoding.
const preParamsMagic = "custos/preparams\x00"

// PreParams is one set of a node's ECDSA keygen pre-parameters: a Paillier
// key pair and the safe primes behind its NTilde, h1, h2 (tss-lib's
// LocalPreParams). It is opaque and secret: printing or logging it shows
// nothing of it. A set serves one keygen or one resharing membership only —
// Keygen and Reshare refuse a set that already started either, so a Paillier
// key is never shared by two keys (or two generations of one). Do not
// copy a PreParams value (go vet's copylocks check catches copies).
type PreParams struct {
	p    ecdsakeygen.LocalPreParams
	used atomic.Bool // set once a keygen or a resharing started with it
}

// GeneratePreParams generates a fresh set with tss-lib's
// GeneratePreParamsWithContext at its lowest concurrency (the argument 1,
// as custos has always called it: tss-lib then runs three prime searches at
// once, the Paillier key's two and NTilde's one). It takes seconds to minutes
// (about 12–30 s on 2 cores) and returns an error when ctx ends first. The
// engine never calls it; the Pool does.
func GeneratePreParams(ctx context.Context) (*PreParams, error) {
	p, err := ecdsakeygen.GeneratePreParamsWithContext(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("generate pre-parameters: %w", err)
	}
	if err := checkPreParams(p); err != nil {
		return nil, fmt.Errorf("generate pre-parameters: %w", err)
	}
	return &PreParams{p: *p}, nil
}

// checkPreParams is what a set must pass to be used: tss-lib's
// ValidateWithProof (every field keygen and its proofs use is there), a
// complete Paillier key, and 2048-bit moduli. Errors wrap ErrInvalidPreParams.
func checkPreParams(p *ecdsakeygen.LocalPreParams) error {
	switch {
	case p == nil || !p.ValidateWithProof():
		return fmt.Errorf("%w: incomplete (fails ValidateWithProof)", ErrInvalidPreParams)
	case p.PaillierSK.N == nil || p.PaillierSK.LambdaN == nil || p.PaillierSK.PhiN == nil:
		return fmt.Errorf("%w: incomplete Paillier key", ErrInvalidPreParams)
	case p.PaillierSK.N.BitLen() != paillierBits || p.NTildei.BitLen() != paillierBits:
		return fmt.Errorf("%w: moduli must be %d bits", ErrInvalidPreParams, paillierBits)
	}
	return nil
}

// MarshalBinary encodes the set in the current (version 1) form:
//
//	"custos/preparams\x00"   17 bytes, magic
//	version                  1 byte, 1
//	pre-parameters           the encoding/json form of tss-lib v2.0.2's
//	                         ecdsa/keygen.LocalPreParams — the same JSON the
//	                         legacy form (and the preparams-*.json fixtures)
//	                         is made of
//
// The bytes are secret: store them encrypted, never log them.
func (p *PreParams) MarshalBinary() ([]byte, error) {
	js, err := json.Marshal(&p.p)
	if err != nil {
		return nil, fmt.Errorf("encode pre-parameters: %w", err)
	}
	out := make([]byte, 0, len(preParamsMagic)+1+len(js))
	out = append(out, preParamsMagic...)
	out = append(out, encodingVersion)
	out = append(out, js...)
	clear(js)
	return out, nil
}

// ParsePreParams decodes a set in the versioned form MarshalBinary writes or
// in the legacy form (the bare encoding/json form of tss-lib's
// LocalPreParams, which earlier nodes stored and the fixtures hold), and
// checks it as Keygen will (ValidateWithProof, a complete Paillier key,
// 2048-bit moduli). Errors wrap ErrInvalidPreParams (and
// ErrUnsupportedVersion for a version this build does not know); they never
// quote b.
func ParsePreParams(b []byte) (*PreParams, error) {
	if len(b) > maxEncodedSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidPreParams, len(b), maxEncodedSize)
	}
	js, _, versioned, err := splitVersioned(b, preParamsMagic, ErrInvalidPreParams, encodingVersion)
	switch {
	case err != nil:
		return nil, err
	case versioned:
	case isJSONObject(b):
		js = b // legacy: bare JSON
	default:
		return nil, fmt.Errorf("%w: neither versioned pre-parameters nor legacy JSON", ErrInvalidPreParams)
	}
	pre := new(PreParams)
	if err := decodeStrict(js, &pre.p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPreParams, err)
	}
	if err := checkPreParams(&pre.p); err != nil {
		return nil, err
	}
	return pre, nil
}

// clone returns an unused deep copy (fixture sets are handed out as copies).
func (p *PreParams) clone() *PreParams { return &PreParams{p: clonePreParams(p.p)} }

// String shows nothing of the set.
func (p *PreParams) String() string { return "protocol.PreParams(redacted)" }

// Format prints String for every verb, so that no formatting of a
// PreParams ever reaches its fields.
func (p *PreParams) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(p.String())) }

// LogValue logs the set as "redacted".
func (p *PreParams) LogValue() slog.Value { return slog.StringValue("redacted") }
