package ceremony

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

// SignatureVerifier checks threshold signatures for the FSM. It is a pure function of
// its arguments, as Apply requires.
type SignatureVerifier struct{}

// VerifySignature implements state.Verifier.
func (SignatureVerifier) VerifySignature(curve string, pub, chainCode []byte, path []uint32, msg []byte, sig *state.Signature) error {
	switch curve {
	case state.CurveEd25519:
		if len(pub) != ed25519.PublicKeySize || len(sig.Sig) != ed25519.SignatureSize {
			return errors.New("malformed ed25519 key or signature")
		}
		if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig.Sig) {
			return errors.New("ed25519 signature does not verify")
		}
		return nil
	case state.CurveSecp256k1:
		if len(path) > 0 {
			child, _, _, err := protocol.DeriveECDSA(pub, chainCode, path)
			if err != nil {
				return fmt.Errorf("derive: %w", err)
			}
			pub = child
		}
		pk, es, err := parseECDSA(pub, msg, sig)
		if err != nil {
			return err
		}
		// The recovery id must recover the same key. A key recovered from (r, s, id)
		// is the one solution of the verification equation for that R, so a signature
		// that recovers pk verifies under pk: the common case costs one recovery, not a
		// verification and a recovery (every result's signature on a node's apply
		// path). Any other signature is verified too, so that each is refused for the
		// same reason, checked in the same order, as when both ran always.
		recovered := sig.RecoveryID >= 0 && sig.RecoveryID <= 1 && recovers(sig, msg, pk)
		if !recovered && !es.Verify(msg, pk) {
			return errors.New("ecdsa signature does not verify")
		}
		if string(es.Serialize()) != string(sig.DER) {
			return errors.New("DER encoding does not match r and s")
		}
		if sig.RecoveryID < 0 || sig.RecoveryID > 1 {
			return errors.New("recovery id must be 0 or 1")
		}
		if !recovered {
			return errors.New("recovery id does not recover the key")
		}
		return nil
	}
	return fmt.Errorf("unknown curve %q", curve)
}

// parseECDSA parses a secp256k1 public key and a signature of the digest msg, refusing
// malformed fields, r or s out of [1, N), and a high S.
func parseECDSA(pub, msg []byte, sig *state.Signature) (*btcec.PublicKey, *btcecdsa.Signature, error) {
	pk, err := btcec.ParsePubKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("public key: %w", err)
	}
	if len(sig.R) != 32 || len(sig.S) != 32 || len(msg) != 32 {
		return nil, nil, errors.New("malformed ecdsa signature")
	}
	var r, s btcec.ModNScalar
	if r.SetByteSlice(sig.R) || s.SetByteSlice(sig.S) || r.IsZero() || s.IsZero() {
		return nil, nil, errors.New("ecdsa signature out of range")
	}
	if s.IsOverHalfOrder() {
		return nil, nil, errors.New("ecdsa signature is not low-S")
	}
	return pk, btcecdsa.NewSignature(&r, &s), nil
}

// recovers reports whether sig's r, s and recovery id (0 or 1: R's x is r, never r+N)
// recover pk from the digest msg.
func recovers(sig *state.Signature, msg []byte, pk *btcec.PublicKey) bool {
	var compact [65]byte
	compact[0] = byte(27 + 4 + sig.RecoveryID) // 4: the key is compressed
	copy(compact[1:33], sig.R)
	copy(compact[33:], sig.S)
	rec, _, err := btcecdsa.RecoverCompact(compact[:], msg)
	return err == nil && rec.IsEqual(pk)
}
