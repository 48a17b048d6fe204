package btc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
)

// MaxPathDepth is the deepest derivation path accepted (as internal/state.MaxPathDepth).
const MaxPathDepth = 16

// ParsePath parses a non-hardened BIP 32 path such as "m/0/7". "m" and "" are the empty
// path (the key itself). Only canonical paths pass: decimal steps below 2^31 without
// sign, leading zero or hardened marker, at most 16 of them. It is custos's one path
// parser: internal/state.ParsePath (a request's derivation_path) is this one, so its
// verdicts and messages are part of the FSM's (replicated and hashed).
func ParsePath(s string) ([]uint32, error) {
	if s == "m" || s == "" {
		return []uint32{}, nil
	}
	if !strings.HasPrefix(s, "m/") {
		return nil, errors.New(`derivation path must start with "m/"`)
	}
	parts := strings.Split(s[2:], "/")
	if len(parts) > MaxPathDepth {
		return nil, errors.New("derivation path deeper than 16")
	}
	out := make([]uint32, len(parts))
	for i, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') || strings.ContainsAny(p, "+-'hH") {
			return nil, errors.New("derivation path steps must be plain decimal numbers (no hardened steps)")
		}
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil || v >= 1<<31 {
			return nil, errors.New("derivation path step must be below 2^31")
		}
		out[i] = uint32(v)
	}
	return out, nil
}

// checkKey validates the parent key material.
func checkKey(pub, chainCode []byte) error {
	if len(pub) != 33 || (pub[0] != 0x02 && pub[0] != 0x03) {
		return fmt.Errorf("btc: public key must be 33 bytes compressed, got %d bytes", len(pub))
	}
	if _, err := btcec.ParsePubKey(pub); err != nil {
		return fmt.Errorf("btc: public key: %v", err)
	}
	if len(chainCode) != 32 {
		return fmt.Errorf("btc: chain code must be 32 bytes, got %d", len(chainCode))
	}
	return nil
}

// DeriveChild returns the compressed public key of the non-hardened BIP 32 child of
// (pub, chainCode) at path. It computes what protocol.DeriveECDSA computes (tss-lib's
// ckd), with btcutil's hdkeychain, so that this package does not link tss-lib.
func DeriveChild(pub, chainCode []byte, path []uint32) ([]byte, error) {
	if err := checkKey(pub, chainCode); err != nil {
		return nil, err
	}
	if len(path) > MaxPathDepth {
		return nil, fmt.Errorf("btc: derivation path depth %d exceeds %d", len(path), MaxPathDepth)
	}
	if len(path) == 0 {
		return append([]byte(nil), pub...), nil
	}
	// The version bytes do not enter derivation.
	k := hdkeychain.NewExtendedKey([]byte{0x04, 0x88, 0xb2, 0x1e}, pub, chainCode, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, step := range path {
		if step >= hdkeychain.HardenedKeyStart {
			return nil, fmt.Errorf("btc: derivation step %d is hardened", step)
		}
		var err error
		if k, err = k.Derive(step); err != nil {
			return nil, fmt.Errorf("btc: derive child %d: %v", step, err)
		}
	}
	child, err := k.ECPubKey()
	if err != nil {
		return nil, fmt.Errorf("btc: derived key: %v", err)
	}
	return child.SerializeCompressed(), nil
}

// Extended is a derived BIP 32 public node: its compressed public key, chain code and
// serialised extended public key (xpub/tpub).
type Extended struct {
	PublicKey []byte
	ChainCode []byte
	XPub      string
}

// Derive returns the non-hardened BIP 32 child of (pub, chainCode) at path with its
// extended public key for network (Params' names; its HD public key version): depth,
// parent fingerprint and child number are those of the child, so that any BIP 32
// implementation derives the same grandchildren from XPub. The key itself (depth 0) has
// fingerprint and child number 0.
func Derive(pub, chainCode []byte, path []uint32, network string) (*Extended, error) {
	if err := checkKey(pub, chainCode); err != nil {
		return nil, err
	}
	if len(path) > MaxPathDepth {
		return nil, fmt.Errorf("btc: derivation path depth %d exceeds %d", len(path), MaxPathDepth)
	}
	params, err := Params(network)
	if err != nil {
		return nil, err
	}
	k := hdkeychain.NewExtendedKey(params.HDPublicKeyID[:], pub, chainCode, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, step := range path {
		if step >= hdkeychain.HardenedKeyStart {
			return nil, fmt.Errorf("btc: derivation step %d is hardened", step)
		}
		if k, err = k.Derive(step); err != nil {
			return nil, fmt.Errorf("btc: derive child %d: %v", step, err)
		}
	}
	child, err := k.ECPubKey()
	if err != nil {
		return nil, fmt.Errorf("btc: derived key: %v", err)
	}
	return &Extended{PublicKey: child.SerializeCompressed(), ChainCode: append([]byte(nil), k.ChainCode()...), XPub: k.String()}, nil
}
