package protocol

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
)

// Curves, named as the replicated state names them.
const (
	// CurveSecp256k1: ECDSA (GG18) over secp256k1.
	CurveSecp256k1 = "secp256k1"
	// CurveEd25519: EdDSA over Ed25519.
	CurveEd25519 = "ed25519"
)

// shareMagic starts every versioned share encoding.
const shareMagic = "custos/share\x00"

// Share is one node's share of one threshold key, as keygen or a resharing
// made it. It is opaque: nothing outside this package sees tss-lib's save
// data. A Share is immutable (the engine deep-copies it before every
// ceremony), so one value may be used by concurrent signings and a
// resharing. Printing or logging it (fmt, slog) shows its curve, generation
// and public key, never its secret.
type Share struct {
	curve string
	gen   uint32                          // party-key generation (PartyKeyAt)
	ecdsa *ecdsakeygen.LocalPartySaveData // when curve is CurveSecp256k1
	eddsa *eddsakeygen.LocalPartySaveData // when curve is CurveEd25519
	pub   []byte
}

// newECDSAShare wraps checked secp256k1 save data of generation 0 (kept, not copied).
func newECDSAShare(save *ecdsakeygen.LocalPartySaveData) (*Share, error) {
	return newECDSAShareAt(save, 0)
}

func newECDSAShareAt(save *ecdsakeygen.LocalPartySaveData, gen uint32) (*Share, error) {
	if err := checkECDSASave(save); err != nil {
		return nil, err
	}
	return &Share{curve: CurveSecp256k1, gen: gen, ecdsa: save, pub: ecdsaPublicKey(save)}, nil
}

// newEdDSAShare wraps checked Ed25519 save data of generation 0 (kept, not copied).
func newEdDSAShare(save *eddsakeygen.LocalPartySaveData) (*Share, error) {
	return newEdDSAShareAt(save, 0)
}

func newEdDSAShareAt(save *eddsakeygen.LocalPartySaveData, gen uint32) (*Share, error) {
	if err := checkEdDSASave(save); err != nil {
		return nil, err
	}
	return &Share{curve: CurveEd25519, gen: gen, eddsa: save, pub: eddsaPublicKey(save)}, nil
}

// Generation returns the share's party-key generation: 0 for a share made by
// keygen (and every share stored before resharing existed), and for a share
// made by resharing, the spec's NewGeneration. Shares of one key combine
// only within one generation; the node records it with the key's committee.
func (s *Share) Generation() uint32 { return s.gen }

// Curve returns CurveSecp256k1 or CurveEd25519.
func (s *Share) Curve() string { return s.curve }

// PublicKey returns the key's public key: 33 bytes compressed for
// secp256k1, the 32-byte RFC 8032 encoding for Ed25519. It is the key's
// root public key (no derivation). The slice is the caller's.
func (s *Share) PublicKey() []byte { return append([]byte(nil), s.pub...) }

// MarshalBinary encodes the share. A generation-0 share is written in
// version 1, byte for byte what builds before resharing wrote (so they still
// read it):
//
//	"custos/share\x00"    13 bytes, magic
//	version               1 byte, 1
//	curve length          1 byte
//	curve                 "secp256k1" or "ed25519", ASCII
//	save data             the encoding/json form of tss-lib v2.0.2's
//	                      ecdsa/keygen.LocalPartySaveData (secp256k1) or
//	                      eddsa/keygen.LocalPartySaveData (ed25519) — the
//	                      same JSON the legacy form is made of
//
// A share of a later generation (made by resharing) is written in version
// 2, which is version 1 with the generation (4 bytes, big-endian) between
// the curve and the save data.
//
// The bytes hold the secret share: store them encrypted, never log them.
func (s *Share) MarshalBinary() ([]byte, error) {
	var save any
	switch s.curve {
	case CurveSecp256k1:
		save = s.ecdsa
	case CurveEd25519:
		save = s.eddsa
	default:
		return nil, fmt.Errorf("%w: encode share: empty or unknown curve %q", ErrInvalidArgument, s.curve)
	}
	js, err := json.Marshal(save)
	if err != nil {
		return nil, fmt.Errorf("encode %s share: %w", s.curve, err)
	}
	out := make([]byte, 0, len(shareMagic)+2+len(s.curve)+4+len(js))
	out = append(out, shareMagic...)
	if s.gen == 0 {
		out = append(out, encodingVersion, byte(len(s.curve)))
		out = append(out, s.curve...)
	} else {
		out = append(out, shareVersionGen, byte(len(s.curve)))
		out = append(out, s.curve...)
		out = binary.BigEndian.AppendUint32(out, s.gen)
	}
	out = append(out, js...)
	clear(js)
	return out, nil
}

// ParseShare decodes a share of a key on curve (CurveSecp256k1 or
// CurveEd25519, from the key's metadata). It reads the versioned forms
// MarshalBinary writes (version 1: generation 0; version 2: with its
// generation), and the legacy form earlier custos nodes stored (generation 0):
// the bare encoding/json form of the curve's tss-lib LocalPartySaveData,
// which does not name its curve (hence the argument). A versioned share of
// another curve is refused. The share is checked structurally as the engine
// checks it before a ceremony. Errors wrap ErrInvalidShare (and
// ErrUnsupportedVersion for a version this build does not know), or
// ErrInvalidArgument for an unknown curve; they never quote b.
func ParseShare(curve string, b []byte) (*Share, error) {
	if curve != CurveSecp256k1 && curve != CurveEd25519 {
		return nil, invalidArg("unknown curve %q", curve)
	}
	if len(b) > maxEncodedSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidShare, len(b), maxEncodedSize)
	}
	js, version, versioned, err := splitVersioned(b, shareMagic, ErrInvalidShare, shareVersionGen)
	var gen uint32
	switch {
	case err != nil:
		return nil, err
	case versioned:
		if len(js) == 0 || len(js) < 1+int(js[0]) {
			return nil, fmt.Errorf("%w: truncated in its header", ErrInvalidShare)
		}
		if got := string(js[1 : 1+int(js[0])]); got != curve {
			return nil, fmt.Errorf("%w: the share is for another curve than %s", ErrInvalidShare, curve)
		}
		js = js[1+int(js[0]):]
		if version == shareVersionGen {
			if len(js) < 4 {
				return nil, fmt.Errorf("%w: truncated in its header", ErrInvalidShare)
			}
			gen, js = binary.BigEndian.Uint32(js[:4]), js[4:]
			if gen == 0 {
				return nil, fmt.Errorf("%w: a version-2 share of generation 0", ErrInvalidShare)
			}
		}
	case isJSONObject(b):
		js = b // legacy: bare JSON of the save data
	default:
		return nil, fmt.Errorf("%w: neither a versioned share nor legacy JSON save data", ErrInvalidShare)
	}
	if curve == CurveSecp256k1 {
		var save ecdsakeygen.LocalPartySaveData
		if err := decodeStrict(js, &save); err != nil {
			return nil, fmt.Errorf("%w: secp256k1 save data: %w", ErrInvalidShare, err)
		}
		return newECDSAShareAt(&save, gen)
	}
	var save eddsakeygen.LocalPartySaveData
	if err := decodeStrict(js, &save); err != nil {
		return nil, fmt.Errorf("%w: ed25519 save data: %w", ErrInvalidShare, err)
	}
	return newEdDSAShareAt(&save, gen)
}

// String describes the share by its curve, public key and (when not 0)
// generation, never its secret.
func (s Share) String() string {
	if s.gen != 0 {
		return fmt.Sprintf("protocol.Share(%s %s gen %d)", s.curve, hex.EncodeToString(s.pub), s.gen)
	}
	return fmt.Sprintf("protocol.Share(%s %s)", s.curve, hex.EncodeToString(s.pub))
}

// Format prints String for every verb (%v, %+v, %#v, %x...), so that no
// formatting of a Share ever reaches its fields.
func (s Share) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// LogValue logs the share as its curve and public key.
func (s Share) LogValue() slog.Value {
	return slog.GroupValue(slog.String("curve", s.curve), slog.String("public_key", hex.EncodeToString(s.pub)), slog.Uint64("generation", uint64(s.gen)))
}
