package protocol

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/bnb-chain/tss-lib/v2/crypto"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	ecdsaresharing "github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsaresharing "github.com/bnb-chain/tss-lib/v2/eddsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/decred/dcrd/dcrec/edwards/v2"
)

// ErrWrongPublicKey: a resharing produced (or a member reported) a public key
// other than the one being reshared. A share with it is never returned.
var ErrWrongPublicKey = errors.New("protocol: resharing yields another public key")

// ReshareSpec describes one resharing of a key, as agreed through raft. Every
// node of both committees runs Engine.Reshare with the same spec.
type ReshareSpec struct {
	// Curve is CurveSecp256k1 or CurveEd25519.
	Curve string
	// PublicKey is the key's public key as Share.PublicKey returns it (33
	// bytes compressed for secp256k1, 32 bytes RFC 8032 for Ed25519), taken
	// from the replicated state, never from a peer. Every old-committee
	// party must report exactly this key, and the new shares must yield it.
	PublicKey []byte
	// OldCommittee are the holders of the current shares that take part (at
	// least OldThreshold of them, all holding a share of generation
	// OldGeneration); OldThreshold is the key's current threshold k.
	OldCommittee  []string
	OldThreshold  int
	OldGeneration uint32
	// NewCommittee are the nodes that will hold the new shares, any NewThreshold
	// of which can sign; NewGeneration must be above OldGeneration (the node's
	// state gives every attempt a new one, so that a failed attempt's shares
	// never share party keys with a later one). The two committees may overlap
	// or be equal (a refresh).
	NewCommittee  []string
	NewThreshold  int
	NewGeneration uint32
}

// Reshare moves a key from its old committee (threshold OldThreshold, party
// keys of OldGeneration) to a new committee (threshold NewThreshold, party
// keys of NewGeneration), keeping its public key. With equal committees and
// thresholds it is a refresh: the same nodes get fresh, independent shares
// (and new Paillier keys) of the same key.
//
// old is this node's current share if it is in spec.OldCommittee, and must
// be nil otherwise; it is never modified (tss-lib zeroes the old secret in
// place: it only ever sees a deep copy). pre are fresh ECDSA pre-parameters
// if this node is in spec.NewCommittee and the curve is secp256k1 (required
// then, nil otherwise); as for Keygen a set is never used twice — Reshare
// refuses a set that already started a keygen or a resharing, also a failed
// one.
//
// It returns this node's new share (of generation spec.NewGeneration) if it
// is in the new committee, and nil, nil for a member of the old committee
// only once its part succeeded (every new party acknowledged). A node in
// both committees runs two tss-lib parties in the one ceremony, under its
// old and its new party key (PartyKeyAt).
//
// The new share is returned only after it passed its checks: its public key
// is spec.PublicKey (otherwise a CeremonyError wrapping ErrWrongPublicKey),
// its party keys are the new committee's, and its own public share matches
// its secret. An old-committee member that reports another public key is
// blamed (CeremonyError wrapping ErrInvalidMessage).
//
// What the caller (the node) must do around it: run it with a session id
// from ReshareSessionID agreed through raft; store the new share under the
// key together with its generation only once every new member reported
// success (until then keep the old share: a failed resharing leaves the old
// shares valid, and the new shares of a failed attempt must be discarded);
// then record the new committee, threshold and generation in the replicated
// state, sign with the new shares only (shares of different generations
// never combine), and delete the old shares.
func (e *Engine) Reshare(ctx context.Context, sid SessionID, spec ReshareSpec, old *Share, pre *PreParams) (*Share, error) {
	c, inOld, inNew, err := e.newReshareCeremony(sid, spec)
	if err != nil {
		return nil, err
	}
	if err := checkOldShare(c, spec, old, inOld); err != nil {
		return nil, err
	}
	switch spec.Curve {
	case CurveSecp256k1:
		if !inNew {
			if pre != nil {
				return nil, invalidArg("pre-parameters given, but this node is not in the new committee")
			}
			return e.reshareECDSA(ctx, c, spec, old, nil, inOld, inNew)
		}
		if pre == nil {
			return nil, invalidArg("a new secp256k1 committee member needs pre-parameters")
		}
		if err := checkPreParams(&pre.p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		// From here on the set's Paillier key may reach the other parties.
		if !pre.used.CompareAndSwap(false, true) {
			return nil, invalidArg("these pre-parameters already started a keygen or a resharing; every one needs a fresh set")
		}
		preCopy := clonePreParams(pre.p)
		return e.reshareECDSA(ctx, c, spec, old, &preCopy, inOld, inNew)
	default: // CurveEd25519 (newReshareCeremony refused the others)
		if pre != nil {
			return nil, invalidArg("ed25519 resharing takes no pre-parameters")
		}
		return e.reshareEdDSA(ctx, c, spec, old, inOld, inNew)
	}
}

// newReshareCeremony checks spec and builds the ceremony of both committees.
func (e *Engine) newReshareCeremony(sid SessionID, spec ReshareSpec) (c *ceremony, inOld, inNew bool, err error) {
	var pspec *protoSpec
	switch spec.Curve {
	case CurveSecp256k1:
		if len(spec.PublicKey) != 33 {
			return nil, false, false, invalidArg("secp256k1 public key must be 33 bytes compressed, got %d", len(spec.PublicKey))
		}
		if _, err := btcec.ParsePubKey(spec.PublicKey); err != nil {
			return nil, false, false, invalidArg("public key: %v", err)
		}
		pspec = ecdsaReshareSpec()
	case CurveEd25519:
		if len(spec.PublicKey) != 32 {
			return nil, false, false, invalidArg("ed25519 public key must be 32 bytes, got %d", len(spec.PublicKey))
		}
		if _, err := edwards.ParsePubKey(spec.PublicKey); err != nil {
			return nil, false, false, invalidArg("public key: %v", err)
		}
		pspec = eddsaReshareSpec()
	default:
		return nil, false, false, invalidArg("unknown curve %q", spec.Curve)
	}
	oldC, err := checkCommittee("old committee", spec.OldCommittee)
	if err != nil {
		return nil, false, false, err
	}
	newC, err := checkCommittee("new committee", spec.NewCommittee)
	if err != nil {
		return nil, false, false, err
	}
	if spec.OldThreshold < 2 || spec.OldThreshold > len(oldC) {
		return nil, false, false, invalidArg("old threshold %d for an old committee of %d (want 2..%d)", spec.OldThreshold, len(oldC), len(oldC))
	}
	if err := checkThreshold(spec.NewThreshold, len(newC)); err != nil {
		return nil, false, false, err
	}
	if spec.NewGeneration <= spec.OldGeneration {
		return nil, false, false, invalidArg("new generation %d must be above old generation %d", spec.NewGeneration, spec.OldGeneration)
	}
	members := append(slices.Clone(oldC), newC...)
	slices.Sort(members)
	members = slices.Compact(members)
	if len(members) > MaxCommittee {
		return nil, false, false, invalidArg("%d nodes in the two committees (max %d)", len(members), MaxCommittee)
	}
	c = e.ceremonyBase(sid, members, pspec)
	c.reshare = true
	if c.oldPids, c.oldSorted, err = c.addParties(oldC, RoleOld, spec.OldGeneration); err != nil {
		return nil, false, false, err
	}
	if c.newPids, c.newSorted, err = c.addParties(newC, RoleNew, spec.NewGeneration); err != nil {
		return nil, false, false, err
	}
	inOld, inNew = c.oldPids[c.self] != nil, c.newPids[c.self] != nil
	if !inOld && !inNew {
		return nil, false, false, invalidArg("this node (%q) is in neither committee", c.self)
	}
	return c, inOld, inNew, nil
}

// checkOldShare checks this node's old share against spec (before tss-lib
// sees it: BuildLocalSaveDataSubset and PrepareForSigning panic on a party
// the share does not know — tss-lib #226).
func checkOldShare(c *ceremony, spec ReshareSpec, old *Share, inOld bool) error {
	if !inOld {
		if old != nil {
			return invalidArg("an old share given, but this node is not in the old committee")
		}
		return nil
	}
	if old == nil {
		return invalidArg("this node is in the old committee but no old share was given")
	}
	if old.curve != spec.Curve {
		return invalidArg("the old share is a %s share, the resharing is of a %s key", old.curve, spec.Curve)
	}
	if old.gen != spec.OldGeneration {
		return invalidArg("the old share is of generation %d, the resharing is from generation %d", old.gen, spec.OldGeneration)
	}
	if !bytes.Equal(old.pub, spec.PublicKey) {
		return invalidArg("the old share is of another key than the one being reshared")
	}
	var shareID *big.Int
	var ks []*big.Int
	switch spec.Curve {
	case CurveSecp256k1:
		if err := checkECDSASave(old.ecdsa); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		shareID, ks = old.ecdsa.ShareID, old.ecdsa.Ks
	default:
		if err := checkEdDSASave(old.eddsa); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		shareID, ks = old.eddsa.ShareID, old.eddsa.Ks
	}
	if shareID.Cmp(PartyKeyAt(c.self, spec.OldGeneration)) != 0 {
		return invalidArg("the old share does not belong to this node (at generation %d)", spec.OldGeneration)
	}
	idx := keyIndex(ks)
	for id, pid := range c.oldPids {
		if _, ok := idx[hex.EncodeToString(pid.Key)]; !ok {
			return invalidArg("old committee member %q holds no share of this key at generation %d", id, spec.OldGeneration)
		}
	}
	return nil
}

func (e *Engine) reshareECDSA(ctx context.Context, c *ceremony, spec ReshareSpec, old *Share, pre *ecdsakeygen.LocalPreParams, inOld, inNew bool) (*Share, error) {
	var ownNTilde *big.Int
	if pre != nil {
		ownNTilde = pre.NTildei
	}
	c.check = ecdsaReshareChecks(spec.PublicKey, spec.NewThreshold-1, ownNTilde)
	params := func(self *tss.PartyID) *tss.ReSharingParameters {
		return tss.NewReSharingParameters(tss.S256(), tss.NewPeerContext(c.oldSorted), tss.NewPeerContext(c.newSorted), self,
			len(c.oldSorted), spec.OldThreshold-1, len(c.newSorted), spec.NewThreshold-1)
	}
	type save = *ecdsakeygen.LocalPartySaveData
	var makers []partyMaker[save]
	if inOld {
		key := cloneECDSASave(old.ecdsa) // tss-lib zeroes the old secret in place
		p := params(c.oldPids[c.self])
		makers = append(makers, partyMaker[save]{role: RoleOld, make: func(out chan<- tss.Message, end chan<- save) tss.Party {
			return ecdsaresharing.NewLocalParty(p, key, out, end)
		}})
	}
	if inNew {
		key := ecdsakeygen.NewLocalPartySaveData(len(c.newSorted))
		key.LocalPreParams = *pre
		p := params(c.newPids[c.self])
		makers = append(makers, partyMaker[save]{role: RoleNew, make: func(out chan<- tss.Message, end chan<- save) tss.Party {
			return ecdsaresharing.NewLocalParty(p, key, out, end)
		}})
	}
	res, err := runCeremonyParties(ctx, c, makers...)
	if err != nil {
		return nil, err
	}
	if !inNew {
		return nil, nil
	}
	s := res[len(res)-1]
	if s == nil {
		return nil, &CeremonyError{Err: errIncompleteSave}
	}
	return acceptNewShare(c, spec, tss.S256(), s.ShareID, s.Xi, s.Ks, s.BigXj, func() (*Share, error) { return newECDSAShareAt(s, spec.NewGeneration) })
}

func (e *Engine) reshareEdDSA(ctx context.Context, c *ceremony, spec ReshareSpec, old *Share, inOld, inNew bool) (*Share, error) {
	c.check = eddsaReshareChecks(spec.PublicKey, spec.NewThreshold-1)
	params := func(self *tss.PartyID) *tss.ReSharingParameters {
		return tss.NewReSharingParameters(tss.Edwards(), tss.NewPeerContext(c.oldSorted), tss.NewPeerContext(c.newSorted), self,
			len(c.oldSorted), spec.OldThreshold-1, len(c.newSorted), spec.NewThreshold-1)
	}
	type save = *eddsakeygen.LocalPartySaveData
	var makers []partyMaker[save]
	if inOld {
		key := cloneEdDSASave(old.eddsa) // tss-lib zeroes the old secret in place
		p := params(c.oldPids[c.self])
		makers = append(makers, partyMaker[save]{role: RoleOld, make: func(out chan<- tss.Message, end chan<- save) tss.Party {
			return eddsaresharing.NewLocalParty(p, key, out, end)
		}})
	}
	if inNew {
		key := eddsakeygen.NewLocalPartySaveData(len(c.newSorted))
		p := params(c.newPids[c.self])
		makers = append(makers, partyMaker[save]{role: RoleNew, make: func(out chan<- tss.Message, end chan<- save) tss.Party {
			return eddsaresharing.NewLocalParty(p, key, out, end)
		}})
	}
	res, err := runCeremonyParties(ctx, c, makers...)
	if err != nil {
		return nil, err
	}
	if !inNew {
		return nil, nil
	}
	s := res[len(res)-1]
	if s == nil {
		return nil, &CeremonyError{Err: errIncompleteSave}
	}
	return acceptNewShare(c, spec, tss.Edwards(), s.ShareID, s.Xi, s.Ks, s.BigXj, func() (*Share, error) { return newEdDSAShareAt(s, spec.NewGeneration) })
}

// acceptNewShare checks a new party's resharing result before it becomes a Share: its
// party key is this node's at the new generation and its committee keys the new
// committee's, the share builds (build: the curve's structural checks), it yields the
// key being reshared, and its own public share matches its secret.
func acceptNewShare(c *ceremony, spec ReshareSpec, curve interface {
	Params() *elliptic.CurveParams
	ScalarBaseMult(k []byte) (x, y *big.Int)
}, shareID, xi *big.Int, ks []*big.Int, bigXj []*crypto.ECPoint, build func() (*Share, error)) (*Share, error) {
	if shareID == nil || shareID.Cmp(PartyKeyAt(c.self, spec.NewGeneration)) != 0 || !sameKeys(ks, c.newSorted.Keys()) {
		return nil, &CeremonyError{Err: errIncompleteSave}
	}
	share, err := build()
	if err != nil {
		return nil, &CeremonyError{Err: fmt.Errorf("%w: %w", errIncompleteSave, err)}
	}
	if !bytes.Equal(share.pub, spec.PublicKey) {
		return nil, &CeremonyError{Err: ErrWrongPublicKey}
	}
	if !ownPublicShareOK(curve, xi, shareID, ks, bigXj) {
		return nil, &CeremonyError{Err: fmt.Errorf("%w: own public share does not match the secret share", errIncompleteSave)}
	}
	return share, nil
}

// sameKeys reports whether a and b hold the same party keys in the same order.
func sameKeys(a, b []*big.Int) bool {
	return slices.EqualFunc(a, b, func(x, y *big.Int) bool { return x != nil && y != nil && x.Cmp(y) == 0 })
}

// ownPublicShareOK reports whether xi·G is the public share recorded for
// shareID.
func ownPublicShareOK(curve interface {
	Params() *elliptic.CurveParams
	ScalarBaseMult(k []byte) (x, y *big.Int)
}, xi, shareID *big.Int, ks []*big.Int, bigXj []*crypto.ECPoint) bool {
	for i, k := range ks {
		if k.Cmp(shareID) != 0 {
			continue
		}
		x, y := curve.ScalarBaseMult(new(big.Int).Mod(xi, curve.Params().N).Bytes())
		return bigXj[i] != nil && bigXj[i].X().Cmp(x) == 0 && bigXj[i].Y().Cmp(y) == 0
	}
	return false
}

// reshareSessionTag domain-separates the spec encoding bound into a
// resharing session id.
const reshareSessionTag = "custos/protocol/reshare-spec/v1"

// ReshareSessionID is the session id of one resharing attempt: NewSessionID
// over kind KindReshareECDSA or KindReshareEdDSA (by spec.Curve), keyID,
// requestID, both committees together as the committee, nonce (fresh from
// the raft leader, never reused), and as payload an unambiguous encoding of
// the whole spec (curve, public key, both thresholds and generations, and
// each committee sorted), so that nodes that disagree on any of it never
// join the same session.
func ReshareSessionID(keyID, requestID string, spec ReshareSpec, nonce [32]byte) SessionID {
	kind := KindReshareEdDSA
	if spec.Curve == CurveSecp256k1 {
		kind = KindReshareECDSA
	}
	var b []byte
	putBytes := func(x []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(x)))
		b = append(b, x...)
	}
	putList := func(ids []string) {
		s := slices.Clone(ids)
		slices.Sort(s)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		for _, id := range s {
			putBytes([]byte(id))
		}
	}
	putBytes([]byte(reshareSessionTag))
	putBytes([]byte(spec.Curve))
	putBytes(spec.PublicKey)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(spec.OldThreshold)))
	b = binary.BigEndian.AppendUint32(b, spec.OldGeneration)
	putList(spec.OldCommittee)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(spec.NewThreshold)))
	b = binary.BigEndian.AppendUint32(b, spec.NewGeneration)
	putList(spec.NewCommittee)
	committee := append(slices.Clone(spec.OldCommittee), spec.NewCommittee...)
	slices.Sort(committee)
	committee = slices.Compact(committee)
	return NewSessionID(SessionParams{Kind: kind, KeyID: keyID, RequestID: requestID, Payload: b, Committee: committee, Nonce: nonce})
}
