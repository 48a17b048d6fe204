package protocol

import (
	"bytes"
	"crypto/elliptic"
	"errors"
	"fmt"
	"math/big"

	"github.com/bnb-chain/tss-lib/v2/crypto/dlnproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/facproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/modproof"
	"github.com/bnb-chain/tss-lib/v2/crypto/mta"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	ecdsaresharing "github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsaresharing "github.com/bnb-chain/tss-lib/v2/eddsa/resharing"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"google.golang.org/protobuf/proto"
)

// This file holds the checks custos performs on incoming tss-lib messages
// before handing them to tss-lib. They exist because tss-lib v2.0.2
//   - runs parts of its verification in goroutines it spawns itself, where a
//     panic on crafted input (a short VSS commitment, a non-invertible
//     ciphertext, a negative length prefix in a DLN proof) would kill the whole
//     process instead of failing the ceremony: every accessor tss-lib calls in
//     such a goroutine is exercised here first, under recover;
//   - lacks three checks that landed on its master branch after the release:
//     #291 (the VSS commitment must have exactly t+1 points), #323 (the
//     modproof's w must be coprime to N) and #289 (range proofs must not be
//     degenerate: ciphertexts and responses in the right groups);
//   - bounds few exponents, so a peer could make a verifier raise numbers to
//     multi-megabit powers: every exponent-like field is bounded by what an
//     honest prover can produce.

// checkFunc validates one parsed message from a committee member. lookup
// returns an already accepted message of the given type from the given member
// (or nil). wait=true means the check needs a message that has not arrived
// yet; the engine holds the message and retries later.
type checkFunc func(from string, msg tss.ParsedMessage, lookup func(from, typ string) tss.ParsedMessage) (wait bool, err error)

var errCheck = errors.New("message check failed")

func checkFail(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCheck, fmt.Sprintf(format, args...))
}

func typeName(m proto.Message) string { return string(proto.MessageName(m)) }

// inUnitGroup reports whether 0 < x < bound and gcd(x, n) = 1.
func inUnitGroup(x, bound, n *big.Int) bool {
	if x == nil || x.Sign() <= 0 || x.Cmp(bound) >= 0 {
		return false
	}
	return new(big.Int).GCD(nil, nil, x, n).Cmp(big.NewInt(1)) == 0
}

func below(x, bound *big.Int) bool { return x != nil && x.Sign() >= 0 && x.Cmp(bound) < 0 }

func maxBits(x *big.Int, bits int) bool { return x != nil && x.Sign() >= 0 && x.BitLen() <= bits }

// checkDecommitment checks a commitment opening carrying flattened curve
// points: one random element then exactly 2*points coordinates (#291), every
// pair a canonical point on the curve.
func checkDecommitment(d []*big.Int, points int, curve elliptic.Curve) error {
	if len(d) != 1+2*points {
		return checkFail("decommitment has %d elements, want %d (%d points)", len(d), 1+2*points, points)
	}
	p := curve.Params().P
	for i := 1; i < len(d); i += 2 {
		if !below(d[i], p) || !below(d[i+1], p) || !curve.IsOnCurve(d[i], d[i+1]) {
			return checkFail("decommitted point %d is not on the curve", i/2)
		}
	}
	return nil
}

const (
	paillierBits = 2048
	qBits        = 256
)

// ----- ECDSA keygen

func ecdsaKeygenChecks(t int, ownNTilde *big.Int) checkFunc {
	curve := tss.S256()
	q := curve.Params().N
	r1Type := typeName(&ecdsakeygen.KGRound1Message{})
	// exponents of the factorisation proof: bounded by q^3 * N0 * NCap (times small slack)
	facBits := 3*qBits + paillierBits + ownNTilde.BitLen() + 4
	return func(from string, msg tss.ParsedMessage, lookup func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *ecdsakeygen.KGRound1Message:
			if err := checkPaillierSetup(c.UnmarshalPaillierPK().N, c.UnmarshalNTilde(), c.UnmarshalH1(), c.UnmarshalH2(), c.UnmarshalDLNProof1, c.UnmarshalDLNProof2); err != nil {
				return false, err
			}
		case *ecdsakeygen.KGRound2Message1:
			if !below(c.UnmarshalShare(), q) {
				return false, checkFail("share out of range")
			}
			pf, err := c.UnmarshalFacProof()
			if err != nil {
				return false, checkFail("factorisation proof: %v", err)
			}
			if err := checkFacProof(pf, ownNTilde, facBits); err != nil {
				return false, err
			}
		case *ecdsakeygen.KGRound2Message2:
			if err := checkDecommitment(c.UnmarshalDeCommitment(), t+1, curve); err != nil {
				return false, err
			}
			pf, err := c.UnmarshalModProof()
			if err != nil {
				return false, checkFail("mod proof: %v", err)
			}
			r1 := lookup(from, r1Type)
			if r1 == nil {
				return true, nil // needs the sender's Paillier modulus from round 1
			}
			N := r1.Content().(*ecdsakeygen.KGRound1Message).UnmarshalPaillierPK().N
			if err := checkModProof(pf, N); err != nil {
				return false, err
			}
		case *ecdsakeygen.KGRound3Message:
			for _, x := range c.UnmarshalProofInts() {
				if !maxBits(x, paillierBits) {
					return false, checkFail("Paillier proof element out of range")
				}
			}
		}
		return false, nil
	}
}

// checkPaillierSetup checks a party's Paillier modulus, NTilde, h1, h2 and
// the DLN proofs over them (keygen round 1, resharing round 2).
func checkPaillierSetup(N, NT, h1, h2 *big.Int, proofs ...func() (*dlnproof.Proof, error)) error {
	if N.BitLen() != paillierBits || NT.BitLen() != paillierBits {
		return checkFail("Paillier modulus or NTilde is not %d bits", paillierBits)
	}
	if !inUnitGroup(h1, NT, NT) || !inUnitGroup(h2, NT, NT) || h1.Cmp(h2) == 0 || h1.Cmp(big.NewInt(1)) == 0 || h2.Cmp(big.NewInt(1)) == 0 {
		return checkFail("degenerate h1/h2")
	}
	for _, get := range proofs {
		p, err := get()
		if err != nil {
			return checkFail("DLN proof: %v", err)
		}
		for i := range p.Alpha {
			if !below(p.Alpha[i], NT) || !below(p.T[i], NT) {
				return checkFail("DLN proof element out of range")
			}
		}
	}
	return nil
}

func checkFacProof(pf *facproof.ProofFac, nCap *big.Int, bits int) error {
	for _, x := range []*big.Int{pf.P, pf.Q, pf.A, pf.B, pf.T} {
		if !below(x, nCap) {
			return checkFail("factorisation proof commitment out of range")
		}
	}
	for _, x := range []*big.Int{pf.Sigma, pf.Z1, pf.Z2, pf.W1, pf.W2, pf.V} {
		if !maxBits(x, bits) {
			return checkFail("factorisation proof response too large")
		}
	}
	return nil
}

// checkModProof is tss-lib #323 (gcd(w, N) = 1) plus range checks.
func checkModProof(pf *modproof.ProofMod, N *big.Int) error {
	if !pf.ValidateBasic() {
		return checkFail("mod proof incomplete")
	}
	if !inUnitGroup(pf.W, N, N) {
		return checkFail("mod proof w is not a unit modulo N")
	}
	for i := range pf.X {
		if !below(pf.X[i], N) || !below(pf.Z[i], N) {
			return checkFail("mod proof element out of range")
		}
	}
	return nil
}

// ----- ECDSA signing

// ecdsaSignChecks: paillierN maps each signer to its Paillier modulus; ownN and
// ownNTilde are this node's.
func ecdsaSignChecks(paillierN map[string]*big.Int, ownN, ownNTilde *big.Int) checkFunc {
	curve := tss.S256()
	q := curve.Params().N
	q3 := new(big.Int).Exp(q, big.NewInt(3), nil)
	q7 := new(big.Int).Exp(q, big.NewInt(7), nil)
	// s2/t2 responses are below 2*q^3*NTilde for an honest prover
	respBits := 3*qBits + ownNTilde.BitLen() + 2
	ownN2 := new(big.Int).Mul(ownN, ownN)
	return func(from string, msg tss.ParsedMessage, _ func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *ecdsasigning.SignRound1Message1:
			Nj := paillierN[from]
			Nj2 := new(big.Int).Mul(Nj, Nj)
			if !inUnitGroup(c.UnmarshalC(), Nj2, Nj) {
				return false, checkFail("MtA ciphertext is not a unit modulo N^2")
			}
			pf, err := c.UnmarshalRangeProofAlice()
			if err != nil {
				return false, checkFail("range proof: %v", err)
			}
			if err := checkRangeProofAlice(pf, Nj, Nj2, ownNTilde, q, q3, respBits); err != nil {
				return false, err
			}
		case *ecdsasigning.SignRound2Message:
			c1, c2 := new(big.Int).SetBytes(c.GetC1()), new(big.Int).SetBytes(c.GetC2())
			if !inUnitGroup(c1, ownN2, ownN) || !inUnitGroup(c2, ownN2, ownN) {
				return false, checkFail("MtA response ciphertext is not a unit modulo N^2")
			}
			pb, err := c.UnmarshalProofBob()
			if err != nil {
				return false, checkFail("Bob proof: %v", err)
			}
			pwc, err := c.UnmarshalProofBobWC(curve)
			if err != nil {
				return false, checkFail("Bob proof (with check): %v", err)
			}
			for _, p := range []*mta.ProofBob{pb, pwc.ProofBob} {
				if err := checkProofBob(p, ownN, ownN2, ownNTilde, q, q3, q7, respBits); err != nil {
					return false, err
				}
			}
		}
		return false, nil
	}
}

// checkRangeProofAlice is the degeneracy part of tss-lib #289 for Alice's
// range proof, plus exponent bounds.
func checkRangeProofAlice(pf *mta.RangeProofAlice, N, N2, NTilde, q, q3 *big.Int, respBits int) error {
	if !pf.ValidateBasic() {
		return checkFail("range proof incomplete")
	}
	switch {
	case !inUnitGroup(pf.Z, NTilde, NTilde), !inUnitGroup(pf.W, NTilde, NTilde):
		return checkFail("range proof commitment is not a unit modulo NTilde")
	case !inUnitGroup(pf.U, N2, N):
		return checkFail("range proof commitment is not a unit modulo N^2")
	case !inUnitGroup(pf.S, N, N):
		return checkFail("range proof response s is not a unit modulo N")
	case pf.S1.Cmp(q) < 0 || pf.S1.Cmp(q3) > 0:
		return checkFail("range proof response s1 out of range")
	case !maxBits(pf.S2, respBits):
		return checkFail("range proof response s2 too large")
	}
	return nil
}

func checkProofBob(pf *mta.ProofBob, N, N2, NTilde, q, q3, q7 *big.Int, respBits int) error {
	if !pf.ValidateBasic() {
		return checkFail("Bob proof incomplete")
	}
	for _, x := range []*big.Int{pf.Z, pf.ZPrm, pf.T, pf.W} {
		if !inUnitGroup(x, NTilde, NTilde) {
			return checkFail("Bob proof commitment is not a unit modulo NTilde")
		}
	}
	switch {
	case !inUnitGroup(pf.V, N2, N):
		return checkFail("Bob proof commitment is not a unit modulo N^2")
	case !inUnitGroup(pf.S, N, N):
		return checkFail("Bob proof response s is not a unit modulo N")
	case pf.S1.Cmp(q) < 0 || pf.S1.Cmp(q3) > 0, pf.T1.Cmp(q) < 0 || pf.T1.Cmp(q7) > 0:
		return checkFail("Bob proof response out of range")
	case !maxBits(pf.S2, respBits), !maxBits(pf.T2, respBits):
		return checkFail("Bob proof response too large")
	}
	return nil
}

// ----- EdDSA

func eddsaKeygenChecks(t int) checkFunc {
	curve := tss.Edwards()
	q := curve.Params().N
	return func(_ string, msg tss.ParsedMessage, _ func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *eddsakeygen.KGRound2Message1:
			if !below(c.UnmarshalShare(), q) {
				return false, checkFail("share out of range")
			}
		case *eddsakeygen.KGRound2Message2:
			if err := checkDecommitment(c.UnmarshalDeCommitment(), t+1, curve); err != nil {
				return false, err
			}
			if _, err := c.UnmarshalZKProof(curve); err != nil {
				return false, checkFail("Schnorr proof: %v", err)
			}
		}
		return false, nil
	}
}

func eddsaSignChecks() checkFunc {
	curve := tss.Edwards()
	return func(_ string, msg tss.ParsedMessage, _ func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *eddsasigning.SignRound2Message:
			if err := checkDecommitment(c.UnmarshalDeCommitment(), 1, curve); err != nil {
				return false, err
			}
			if _, err := c.UnmarshalZKProof(curve); err != nil {
				return false, checkFail("Schnorr proof: %v", err)
			}
		case *eddsasigning.SignRound3Message:
			if !maxBits(c.UnmarshalS(), 256) {
				return false, checkFail("signature share out of range")
			}
		}
		return false, nil
	}
}

// ----- resharing

// checkReportedKey is the check tss-lib v2.0.2 means to make and does not
// (its round 1 compares the public key of the first old party's message
// with itself, once per old party): every old party must report exactly
// the public key being reshared (from the replicated state, never from a
// peer), encoded as Share.PublicKey encodes it.
func checkReportedKey(curve elliptic.Curve, xb, yb, want []byte, encode func(x, y *big.Int) []byte) error {
	x, y := new(big.Int).SetBytes(xb), new(big.Int).SetBytes(yb)
	p := curve.Params().P
	if !below(x, p) || !below(y, p) || !curve.IsOnCurve(x, y) {
		return checkFail("the reported public key is not a point on the curve")
	}
	if !bytes.Equal(encode(x, y), want) {
		return fmt.Errorf("%w: %w: reports another public key than the one being reshared", errCheck, ErrWrongPublicKey)
	}
	return nil
}

// hashCommitmentBytes is the size of tss-lib's hash commitments (SHA-512/256).
const hashCommitmentBytes = 32

// ecdsaReshareChecks: expectedPub is the key being reshared, newT the new
// committee's tss-lib threshold (k-1), ownNTilde this node's NTilde when it
// is in the new committee (nil otherwise).
func ecdsaReshareChecks(expectedPub []byte, newT int, ownNTilde *big.Int) checkFunc {
	curve := tss.S256()
	q := curve.Params().N
	facBits := 0
	if ownNTilde != nil {
		facBits = 3*qBits + paillierBits + ownNTilde.BitLen() + 4
	}
	return func(_ string, msg tss.ParsedMessage, _ func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *ecdsaresharing.DGRound1Message:
			if err := checkReportedKey(curve, c.GetEcdsaPubX(), c.GetEcdsaPubY(), expectedPub, compressSecp); err != nil {
				return false, err
			}
			if len(c.GetVCommitment()) > hashCommitmentBytes || len(c.GetSsid()) > hashCommitmentBytes {
				return false, checkFail("commitment or ssid too long")
			}
		case *ecdsaresharing.DGRound2Message1:
			N := c.UnmarshalPaillierPK().N
			if err := checkPaillierSetup(N, c.UnmarshalNTilde(), c.UnmarshalH1(), c.UnmarshalH2(), c.UnmarshalDLNProof1, c.UnmarshalDLNProof2); err != nil {
				return false, err
			}
			pf, err := c.UnmarshalModProof()
			if err != nil {
				return false, checkFail("mod proof: %v", err)
			}
			if err := checkModProof(pf, N); err != nil {
				return false, err
			}
		case *ecdsaresharing.DGRound3Message1:
			if !below(new(big.Int).SetBytes(c.GetShare()), q) {
				return false, checkFail("share out of range")
			}
		case *ecdsaresharing.DGRound3Message2:
			if err := checkDecommitment(c.UnmarshalVDeCommitment(), newT+1, curve); err != nil {
				return false, err
			}
		case *ecdsaresharing.DGRound4Message1:
			if ownNTilde == nil {
				return false, checkFail("factorisation proof sent to a node outside the new committee")
			}
			pf, err := c.UnmarshalFacProof()
			if err != nil {
				return false, checkFail("factorisation proof: %v", err)
			}
			if err := checkFacProof(pf, ownNTilde, facBits); err != nil {
				return false, err
			}
		}
		return false, nil
	}
}

// eddsaReshareChecks: expectedPub is the key being reshared, newT the new
// committee's tss-lib threshold (k-1).
func eddsaReshareChecks(expectedPub []byte, newT int) checkFunc {
	curve := tss.Edwards()
	q := curve.Params().N
	return func(_ string, msg tss.ParsedMessage, _ func(from, typ string) tss.ParsedMessage) (bool, error) {
		switch c := msg.Content().(type) {
		case *eddsaresharing.DGRound1Message:
			if err := checkReportedKey(curve, c.GetEddsaPubX(), c.GetEddsaPubY(), expectedPub, encodeEdwards); err != nil {
				return false, err
			}
			if len(c.GetVCommitment()) > hashCommitmentBytes {
				return false, checkFail("commitment too long")
			}
		case *eddsaresharing.DGRound3Message1:
			if !below(new(big.Int).SetBytes(c.GetShare()), q) {
				return false, checkFail("share out of range")
			}
		case *eddsaresharing.DGRound3Message2:
			if err := checkDecommitment(c.UnmarshalVDeCommitment(), newT+1, curve); err != nil {
				return false, err
			}
		}
		return false, nil
	}
}
