package protocol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/big"

	"github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/crypto/ckd"
	"github.com/bnb-chain/tss-lib/v2/crypto/paillier"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/btcsuite/btcd/btcec/v2"
)

// MaxPathDepth is the deepest derivation path accepted.
const MaxPathDepth = 16

// ChainCodeSize is the size of a BIP32 chain code.
const ChainCodeSize = 32

// partyKeyTag domain-separates party keys.
const partyKeyTag = "custos/protocol/party-key/v1\x00"

// PartyKey maps a node id to its tss-lib party key, which is also its Shamir
// x-coordinate. It is SHA-512(tag || id) reduced into [1, n_ed25519-1]: stable
// across runs, never zero, and below both curve orders (n_ed25519 <
// n_secp256k1), so it is non-zero modulo each. Distinctness within a committee
// is checked when a ceremony starts.
func PartyKey(nodeID string) *big.Int {
	h := sha512.Sum512([]byte(partyKeyTag + nodeID))
	return reducePartyKey(h[:])
}

// partyKeyGenTag domain-separates the party keys of generations after 0.
const partyKeyGenTag = "custos/protocol/party-key/gen/v1\x00"

// PartyKeyAt is the party key (Shamir x-coordinate) of nodeID for the shares
// of one generation of a key. Keygen makes generation 0, and every resharing
// of generation g makes a later one (see Engine.Reshare); a share records
// its generation (Share.Generation), and Sign maps its committee to party
// keys of that generation.
//
// Generation 0 is PartyKey(nodeID), so the shares keygen has always made
// are generation 0 as they are. Generation g > 0 is
// SHA-512(tag || len(id) as one byte || id || g as 4 bytes big-endian),
// reduced like PartyKey; so a node's key changes with every generation, and
// a node in both committees of a resharing runs its old and its new party
// under different keys (tss-lib #128: one party id in both committees breaks
// resharing).
func PartyKeyAt(nodeID string, generation uint32) *big.Int {
	if generation == 0 {
		return PartyKey(nodeID)
	}
	b := make([]byte, 0, len(partyKeyGenTag)+1+len(nodeID)+4)
	b = append(b, partyKeyGenTag...)
	b = append(b, byte(len(nodeID)))
	b = append(b, nodeID...)
	b = binary.BigEndian.AppendUint32(b, generation)
	h := sha512.Sum512(b)
	return reducePartyKey(h[:])
}

// reducePartyKey maps a hash into [1, n_ed25519-1].
func reducePartyKey(h []byte) *big.Int {
	k := new(big.Int).SetBytes(h)
	m := new(big.Int).Sub(tss.Edwards().Params().N, big.NewInt(1))
	k.Mod(k, m)
	return k.Add(k, big.NewInt(1))
}

// ecdsaPublicKey returns the 33-byte compressed secp256k1 public key of a
// keygen result, or nil if save carries none.
func ecdsaPublicKey(save *ecdsakeygen.LocalPartySaveData) []byte {
	if save == nil || save.ECDSAPub == nil || !save.ECDSAPub.ValidateBasic() {
		return nil
	}
	return compressSecp(save.ECDSAPub.X(), save.ECDSAPub.Y())
}

// eddsaPublicKey returns the 32-byte RFC 8032 encoding of an Ed25519 keygen
// result (little-endian y with the sign of x in the top bit), or nil if save
// carries none.
func eddsaPublicKey(save *eddsakeygen.LocalPartySaveData) []byte {
	if save == nil || save.EDDSAPub == nil || !save.EDDSAPub.ValidateBasic() {
		return nil
	}
	return encodeEdwards(save.EDDSAPub.X(), save.EDDSAPub.Y())
}

func compressSecp(x, y *big.Int) []byte {
	out := make([]byte, 33)
	out[0] = 0x02 | byte(y.Bit(0))
	x.FillBytes(out[1:])
	return out
}

func encodeEdwards(x, y *big.Int) []byte {
	out := make([]byte, 32)
	y.FillBytes(out)
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if x.Bit(0) == 1 {
		out[31] |= 0x80
	}
	return out
}

// DeriveECDSA derives the non-hardened BIP32 child of a secp256k1 public key
// along path with tss-lib's crypto/ckd. It returns the child's compressed
// public key, its chain code, and delta, the sum of the tweaks, which is what
// the signers add to their shares. An empty path returns the parent and a zero
// delta.
func DeriveECDSA(pubCompressed []byte, chainCode []byte, path []uint32) (childPubCompressed []byte, childChainCode []byte, delta *big.Int, err error) {
	if len(pubCompressed) != 33 {
		return nil, nil, nil, invalidArg("public key must be 33 bytes compressed, got %d", len(pubCompressed))
	}
	if len(chainCode) != ChainCodeSize {
		return nil, nil, nil, invalidArg("chain code must be %d bytes, got %d", ChainCodeSize, len(chainCode))
	}
	if err := checkPath(path); err != nil {
		return nil, nil, nil, err
	}
	pub, err := btcec.ParsePubKey(pubCompressed)
	if err != nil {
		return nil, nil, nil, invalidArg("public key: %v", err)
	}
	if len(path) == 0 {
		return append([]byte(nil), pubCompressed...), append([]byte(nil), chainCode...), new(big.Int), nil
	}
	curve := tss.S256()
	parent := &ckd.ExtendedKey{
		PublicKey:  ecdsa.PublicKey{Curve: curve, X: pub.X(), Y: pub.Y()},
		Depth:      0,
		ChildIndex: 0,
		ChainCode:  append([]byte(nil), chainCode...),
		ParentFP:   []byte{0, 0, 0, 0},
		Version:    []byte{0x04, 0x88, 0xb2, 0x1e}, // xpub; not used by derivation
	}
	var child *ckd.ExtendedKey
	if perr := safeCall(slog.Default(), func() {
		delta, child, err = ckd.DeriveChildKeyFromHierarchy(path, parent, curve.Params().N, curve)
	}); perr != nil {
		return nil, nil, nil, perr
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("derive child key: %w", err)
	}
	return compressSecp(child.X, child.Y), append([]byte(nil), child.ChainCode...), delta, nil
}

func checkPath(path []uint32) error {
	if len(path) > MaxPathDepth {
		return invalidArg("derivation path depth %d exceeds %d", len(path), MaxPathDepth)
	}
	for i, step := range path {
		if step >= ckd.HardenedKeyStart {
			return invalidArg("derivation step %d (%d) is hardened; only non-hardened derivation is possible", i, step)
		}
	}
	return nil
}

// ----- deep copies: tss-lib mutates save data in place (derivation rewrites
// public data; BuildLocalSaveDataSubset shares pointers), so nothing the
// caller passed is ever handed to tss-lib directly.

func cloneInt(x *big.Int) *big.Int {
	if x == nil {
		return nil
	}
	return new(big.Int).Set(x)
}

func cloneInts(xs []*big.Int) []*big.Int {
	if xs == nil {
		return nil
	}
	out := make([]*big.Int, len(xs))
	for i, x := range xs {
		out[i] = cloneInt(x)
	}
	return out
}

func clonePoint(p *crypto.ECPoint) *crypto.ECPoint {
	if p == nil {
		return nil
	}
	return crypto.NewECPointNoCurveCheck(p.Curve(), p.X(), p.Y())
}

func clonePoints(ps []*crypto.ECPoint) []*crypto.ECPoint {
	if ps == nil {
		return nil
	}
	out := make([]*crypto.ECPoint, len(ps))
	for i, p := range ps {
		out[i] = clonePoint(p)
	}
	return out
}

func clonePaillierSK(sk *paillier.PrivateKey) *paillier.PrivateKey {
	if sk == nil {
		return nil
	}
	return &paillier.PrivateKey{
		PublicKey: paillier.PublicKey{N: cloneInt(sk.N)},
		LambdaN:   cloneInt(sk.LambdaN),
		PhiN:      cloneInt(sk.PhiN),
		P:         cloneInt(sk.P),
		Q:         cloneInt(sk.Q),
	}
}

func clonePreParams(p ecdsakeygen.LocalPreParams) ecdsakeygen.LocalPreParams {
	return ecdsakeygen.LocalPreParams{
		PaillierSK: clonePaillierSK(p.PaillierSK),
		NTildei:    cloneInt(p.NTildei),
		H1i:        cloneInt(p.H1i),
		H2i:        cloneInt(p.H2i),
		Alpha:      cloneInt(p.Alpha),
		Beta:       cloneInt(p.Beta),
		P:          cloneInt(p.P),
		Q:          cloneInt(p.Q),
	}
}

func cloneECDSASave(s *ecdsakeygen.LocalPartySaveData) ecdsakeygen.LocalPartySaveData {
	out := ecdsakeygen.LocalPartySaveData{
		LocalPreParams: clonePreParams(s.LocalPreParams),
		LocalSecrets:   ecdsakeygen.LocalSecrets{Xi: cloneInt(s.Xi), ShareID: cloneInt(s.ShareID)},
		Ks:             cloneInts(s.Ks),
		NTildej:        cloneInts(s.NTildej),
		H1j:            cloneInts(s.H1j),
		H2j:            cloneInts(s.H2j),
		BigXj:          clonePoints(s.BigXj),
		ECDSAPub:       clonePoint(s.ECDSAPub),
	}
	if s.PaillierPKs != nil {
		out.PaillierPKs = make([]*paillier.PublicKey, len(s.PaillierPKs))
		for i, pk := range s.PaillierPKs {
			if pk != nil {
				out.PaillierPKs[i] = &paillier.PublicKey{N: cloneInt(pk.N)}
			}
		}
	}
	return out
}

func cloneEdDSASave(s *eddsakeygen.LocalPartySaveData) eddsakeygen.LocalPartySaveData {
	return eddsakeygen.LocalPartySaveData{
		LocalSecrets: eddsakeygen.LocalSecrets{Xi: cloneInt(s.Xi), ShareID: cloneInt(s.ShareID)},
		Ks:           cloneInts(s.Ks),
		BigXj:        clonePoints(s.BigXj),
		EDDSAPub:     clonePoint(s.EDDSAPub),
	}
}

// ----- structural checks of save data, so that tss-lib never dereferences nil

func allInts(xs []*big.Int, n int) bool {
	if len(xs) != n {
		return false
	}
	for _, x := range xs {
		if x == nil {
			return false
		}
	}
	return true
}

func allPoints(ps []*crypto.ECPoint, n int) bool {
	if len(ps) != n {
		return false
	}
	for _, p := range ps {
		if !p.ValidateBasic() {
			return false
		}
	}
	return true
}

// badShare describes a failed structural check; it wraps ErrInvalidShare and
// never quotes a value of the share.
func badShare(what string) error { return fmt.Errorf("%w: %s", ErrInvalidShare, what) }

// partyKeysOK reports whether the party keys are distinct and in [1, order):
// tss-lib divides by their differences (Lagrange coefficients), so a
// duplicate would make it divide by zero.
func partyKeysOK(ks []*big.Int, order *big.Int) bool {
	seen := make(map[string]bool, len(ks))
	for _, k := range ks {
		if k.Sign() <= 0 || k.Cmp(order) >= 0 || seen[k.String()] {
			return false
		}
		seen[k.String()] = true
	}
	return true
}

// onCurve reports whether every point is on curve (the JSON form names each
// point's curve, and an unnamed one defaults to secp256k1).
func onCurve(ps []*crypto.ECPoint, curve elliptic.Curve) bool {
	for _, p := range ps {
		if !tss.SameCurve(p.Curve(), curve) {
			return false
		}
	}
	return true
}

// checkECDSASave is the structural check of secp256k1 save data, so that
// tss-lib never dereferences nil or mixes curves. Its errors wrap
// ErrInvalidShare.
func checkECDSASave(s *ecdsakeygen.LocalPartySaveData) error {
	if s == nil {
		return badShare("nil")
	}
	n := len(s.Ks)
	sk := s.PaillierSK
	switch {
	case n < 2:
		return badShare(fmt.Sprintf("%d parties", n))
	case s.Xi == nil || s.ShareID == nil:
		return badShare("missing secret share")
	case sk == nil || sk.N == nil || sk.LambdaN == nil || sk.PhiN == nil:
		return badShare("missing Paillier key")
	case !allInts(s.Ks, n) || !allInts(s.NTildej, n) || !allInts(s.H1j, n) || !allInts(s.H2j, n):
		return badShare("inconsistent party data")
	case !allPoints(s.BigXj, n) || len(s.PaillierPKs) != n:
		return badShare("inconsistent public shares")
	case !s.ECDSAPub.ValidateBasic():
		return badShare("missing public key")
	}
	for _, pk := range s.PaillierPKs {
		if pk == nil || pk.N == nil || pk.N.Sign() <= 0 {
			return badShare("missing Paillier public key")
		}
	}
	curve := tss.S256()
	switch {
	case !tss.SameCurve(s.ECDSAPub.Curve(), curve):
		return badShare("not a secp256k1 key")
	case !onCurve(s.BigXj, curve):
		return badShare("public shares on another curve")
	case !partyKeysOK(s.Ks, curve.Params().N):
		return badShare("party keys not distinct or out of range")
	}
	return nil
}

// checkEdDSASave is the structural check of Ed25519 save data. Its errors
// wrap ErrInvalidShare.
func checkEdDSASave(s *eddsakeygen.LocalPartySaveData) error {
	if s == nil {
		return badShare("nil")
	}
	n := len(s.Ks)
	curve := tss.Edwards()
	switch {
	case n < 2:
		return badShare(fmt.Sprintf("%d parties", n))
	case s.Xi == nil || s.ShareID == nil:
		return badShare("missing secret share")
	case !allInts(s.Ks, n) || !allPoints(s.BigXj, n):
		return badShare("inconsistent party data")
	case !s.EDDSAPub.ValidateBasic():
		return badShare("missing public key")
	case !tss.SameCurve(s.EDDSAPub.Curve(), curve):
		return badShare("not an Ed25519 key")
	case !onCurve(s.BigXj, curve):
		return badShare("public shares on another curve")
	case !partyKeysOK(s.Ks, curve.Params().N):
		return badShare("party keys not distinct or out of range")
	}
	return nil
}
