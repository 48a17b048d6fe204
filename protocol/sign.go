package protocol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v2/common"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
)

// MaxEdDSAMessageSize caps the raw message of an Ed25519 signing.
const MaxEdDSAMessageSize = 1 << 20

// Signature is a signature produced by a ceremony, verified against the
// (derived) public key before it is returned. Which fields are set depends on
// Curve.
type Signature struct {
	// Curve is CurveSecp256k1 or CurveEd25519.
	Curve string

	// secp256k1 (nil or zero for Ed25519):
	// R and S are 32 bytes each, big-endian, zero-padded; S is in the lower
	// half of the order.
	R, S []byte
	// RecoveryID (0..3) recovers the public key from (R, S) and the digest.
	RecoveryID byte
	// DER is the strict DER encoding of (R, S).
	DER []byte

	// Ed25519 (nil for secp256k1):
	// Sig is the 64-byte RFC 8032 signature.
	Sig []byte
}

// Sign signs msg with share together with signers (node ids, self included,
// at least threshold of them) and returns the verified signature.
//
// For a secp256k1 share msg is the 32-byte digest. With a non-empty path the
// signature is made with the non-hardened BIP32 child of the key under
// chainCode (32 bytes), through tss-lib's key-derivation delta; chainCode is
// not used otherwise. The signature is normalised to low S, its recovery id
// computed, and it is verified with btcec against the (derived) public key.
//
// For an Ed25519 share msg is the raw message (up to MaxEdDSAMessageSize
// bytes, possibly empty or starting with zero bytes); there is no
// derivation, so path must be empty. The signature is verified with
// crypto/ed25519.
//
// The signers' party keys are those of the share's generation
// (Share.Generation, PartyKeyAt): every signer must hold a share of that
// generation. A signer holding a share of another generation (say, one not
// yet replaced after a resharing) makes the ceremony fail with a
// CeremonyError; it never produces a signature.
//
// share is not modified.
func (e *Engine) Sign(ctx context.Context, sid SessionID, signers []string, threshold int, share *Share, msg, chainCode []byte, path []uint32) (*Signature, error) {
	if share == nil {
		return nil, invalidArg("no key share")
	}
	switch share.curve {
	case CurveSecp256k1:
		return e.signECDSA(ctx, sid, signers, threshold, share, msg, chainCode, path)
	case CurveEd25519:
		if len(path) > 0 {
			return nil, invalidArg("ed25519 keys have no derivation; the path must be empty")
		}
		return e.signEdDSA(ctx, sid, signers, threshold, share, msg)
	default:
		return nil, invalidArg("key share of unknown curve %q", share.curve)
	}
}

// keyIndex maps each party key of a share's party list to its position.
func keyIndex(ks []*big.Int) map[string]int {
	idx := make(map[string]int, len(ks))
	for i, k := range ks {
		idx[hex.EncodeToString(k.Bytes())] = i
	}
	return idx
}

// checkSigners verifies that this node's share belongs to it and that every
// signer holds a share of the key, all at the share's generation gen.
func checkSigners(c *ceremony, shareID *big.Int, ks []*big.Int, threshold int, gen uint32) (map[string]int, error) {
	if len(c.members) < threshold {
		return nil, invalidArg("%d signers for a threshold of %d", len(c.members), threshold)
	}
	if len(c.members) > len(ks) {
		return nil, invalidArg("%d signers for a key of %d parties", len(c.members), len(ks))
	}
	if shareID.Cmp(PartyKeyAt(c.self, gen)) != 0 {
		return nil, invalidArg("the key share does not belong to this node (or not at generation %d)", gen)
	}
	idx := keyIndex(ks)
	pos := make(map[string]int, len(c.members))
	for _, id := range c.members {
		i, ok := idx[hex.EncodeToString(PartyKeyAt(id, gen).Bytes())]
		if !ok {
			return nil, invalidArg("signer %q holds no share of this key at generation %d", id, gen)
		}
		pos[id] = i
	}
	return pos, nil
}

// signECDSA signs a 32-byte digest with a secp256k1 key share (see Sign).
func (e *Engine) signECDSA(ctx context.Context, sid SessionID, signers []string, threshold int, share *Share, digest []byte, chainCode []byte, path []uint32) (*Signature, error) {
	curve := tss.S256()
	if len(digest) != 32 {
		return nil, invalidArg("digest must be 32 bytes, got %d", len(digest))
	}
	m := new(big.Int).SetBytes(digest)
	if m.Cmp(curve.Params().N) >= 0 {
		return nil, invalidArg("digest is not below the curve order")
	}
	if share == nil || share.ecdsa == nil {
		return nil, invalidArg("no secp256k1 key share")
	}
	if err := checkECDSASave(share.ecdsa); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if threshold < 2 {
		return nil, invalidArg("threshold %d (want at least 2)", threshold)
	}
	c, err := e.newCeremonyAt(sid, signers, ecdsaSignSpec(), share.gen)
	if err != nil {
		return nil, err
	}
	keyCopy := cloneECDSASave(share.ecdsa)
	pos, err := checkSigners(c, keyCopy.ShareID, keyCopy.Ks, threshold, share.gen)
	if err != nil {
		return nil, err
	}
	pub := compressSecp(keyCopy.ECDSAPub.X(), keyCopy.ECDSAPub.Y())
	var delta *big.Int
	if len(path) > 0 {
		childPub, _, d, err := DeriveECDSA(pub, chainCode, path)
		if err != nil {
			return nil, err
		}
		child, err := btcec.ParsePubKey(childPub)
		if err != nil {
			return nil, fmt.Errorf("derived key: %w", err)
		}
		keys := []ecdsakeygen.LocalPartySaveData{keyCopy}
		var uerr error
		if perr := safeCall(c.log, func() {
			uerr = ecdsasigning.UpdatePublicKeyAndAdjustBigXj(d, keys, child.ToECDSA(), curve)
		}); perr != nil {
			return nil, perr
		}
		if uerr != nil {
			return nil, fmt.Errorf("apply key derivation: %w", uerr)
		}
		keyCopy = keys[0]
		pub, delta = childPub, d
	}
	paillierN := make(map[string]*big.Int, len(c.members))
	for id, i := range pos {
		paillierN[id] = keyCopy.PaillierPKs[i].N
	}
	c.check = ecdsaSignChecks(paillierN, keyCopy.PaillierSK.N, keyCopy.NTildej[pos[c.self]])
	params := tss.NewParameters(curve, tss.NewPeerContext(c.sorted), c.pids[c.self], len(c.members), threshold-1)
	data, err := runCeremony(ctx, c, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		if delta != nil {
			return ecdsasigning.NewLocalPartyWithKDD(m, params, keyCopy, delta, out, end, len(digest))
		}
		return ecdsasigning.NewLocalParty(m, params, keyCopy, out, end, len(digest))
	})
	if err != nil {
		return nil, err
	}
	sig, err := finishECDSA(data, digest, pub)
	if err != nil {
		return nil, &CeremonyError{Err: err}
	}
	return sig, nil
}

// finishECDSA normalises, encodes and verifies a tss-lib ECDSA signature.
func finishECDSA(data *common.SignatureData, digest, pubCompressed []byte) (*Signature, error) {
	if data == nil || len(data.R) == 0 || len(data.R) > 32 || len(data.S) == 0 || len(data.S) > 32 {
		return nil, fmt.Errorf("%w: malformed signature data", ErrBadSignature)
	}
	pub, err := btcec.ParsePubKey(pubCompressed)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	var r, s btcec.ModNScalar
	if overflow := r.SetByteSlice(data.R); overflow || r.IsZero() {
		return nil, fmt.Errorf("%w: r out of range", ErrBadSignature)
	}
	if overflow := s.SetByteSlice(data.S); overflow || s.IsZero() {
		return nil, fmt.Errorf("%w: s out of range", ErrBadSignature)
	}
	if s.IsOverHalfOrder() {
		s.Negate()
	}
	sig := btcecdsa.NewSignature(&r, &s)
	if !sig.Verify(digest, pub) {
		return nil, ErrBadSignature
	}
	var rb, sb [32]byte
	r.PutBytes(&rb)
	s.PutBytes(&sb)
	out := &Signature{Curve: CurveSecp256k1, R: rb[:], S: sb[:], DER: sig.Serialize()}
	// Recovery id: the one under which (R, S) recovers this public key.
	compact := make([]byte, 65)
	copy(compact[1:33], rb[:])
	copy(compact[33:], sb[:])
	for id := byte(0); id < 4; id++ {
		compact[0] = 27 + 4 + id // compressed key
		rec, _, err := btcecdsa.RecoverCompact(compact, digest)
		if err == nil && bytes.Equal(rec.SerializeCompressed(), pubCompressed) {
			out.RecoveryID = id
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: no recovery id recovers the public key", ErrBadSignature)
}

// signEdDSA signs a raw message with an Ed25519 key share (see Sign).
func (e *Engine) signEdDSA(ctx context.Context, sid SessionID, signers []string, threshold int, share *Share, msg []byte) (*Signature, error) {
	if len(msg) > MaxEdDSAMessageSize {
		return nil, invalidArg("message of %d bytes exceeds %d", len(msg), MaxEdDSAMessageSize)
	}
	if share == nil || share.eddsa == nil {
		return nil, invalidArg("no Ed25519 key share")
	}
	if err := checkEdDSASave(share.eddsa); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if threshold < 2 {
		return nil, invalidArg("threshold %d (want at least 2)", threshold)
	}
	c, err := e.newCeremonyAt(sid, signers, eddsaSignSpec(), share.gen)
	if err != nil {
		return nil, err
	}
	keyCopy := cloneEdDSASave(share.eddsa)
	if _, err := checkSigners(c, keyCopy.ShareID, keyCopy.Ks, threshold, share.gen); err != nil {
		return nil, err
	}
	pub := eddsaPublicKey(&keyCopy)
	c.check = eddsaSignChecks()
	params := tss.NewParameters(tss.Edwards(), tss.NewPeerContext(c.sorted), c.pids[c.self], len(c.members), threshold-1)
	// tss-lib takes the message as an integer; fullBytesLen restores leading
	// zero bytes (and 0 keeps the empty message empty).
	m := new(big.Int).SetBytes(msg)
	data, err := runCeremony(ctx, c, func(out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		return eddsasigning.NewLocalParty(m, params, keyCopy, out, end, len(msg))
	})
	if err != nil {
		return nil, err
	}
	if data == nil || len(data.Signature) != ed25519.SignatureSize {
		return nil, &CeremonyError{Err: fmt.Errorf("%w: malformed signature data", ErrBadSignature)}
	}
	sig := append([]byte(nil), data.Signature...)
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return nil, &CeremonyError{Err: ErrBadSignature}
	}
	return &Signature{Curve: CurveEd25519, Sig: sig}, nil
}
