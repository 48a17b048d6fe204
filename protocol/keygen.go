package protocol

import (
	"context"
	"errors"
	"fmt"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
)

var errIncompleteSave = errors.New("protocol: keygen returned incomplete save data")

func checkThreshold(threshold, n int) error {
	if threshold < 2 || threshold > n {
		return invalidArg("threshold %d for %d parties (want 2..%d)", threshold, n, n)
	}
	return nil
}

// Keygen runs key generation on curve (CurveSecp256k1: GG18 ECDSA;
// CurveEd25519: EdDSA) with the given committee (node ids, self included) so
// that any threshold of them can sign, and returns this node's share.
//
// For secp256k1, pre are this node's pre-parameters: required, fresh (a set
// is never used for two keys: Keygen refuses one that already started a
// keygen, also a failed one — take a new set for every attempt), and checked
// again here; they are never generated here. For ed25519 pre must be nil.
func (e *Engine) Keygen(ctx context.Context, sid SessionID, curve string, committee []string, threshold int, pre *PreParams) (*Share, error) {
	switch curve {
	case CurveSecp256k1:
		return e.keygenECDSA(ctx, sid, committee, threshold, pre)
	case CurveEd25519:
		if pre != nil {
			return nil, invalidArg("ed25519 keygen takes no pre-parameters")
		}
		return e.keygenEdDSA(ctx, sid, committee, threshold)
	default:
		return nil, invalidArg("unknown curve %q", curve)
	}
}

// keygenECDSA runs GG18 secp256k1 key generation.
func (e *Engine) keygenECDSA(ctx context.Context, sid SessionID, committee []string, threshold int, pre *PreParams) (*Share, error) {
	if pre == nil {
		return nil, invalidArg("secp256k1 keygen needs pre-parameters")
	}
	if err := checkPreParams(&pre.p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if pre.used.Load() {
		return nil, invalidArg("these pre-parameters already started a keygen; every keygen needs a fresh set")
	}
	if err := checkThreshold(threshold, len(committee)); err != nil {
		return nil, err
	}
	c, err := e.newCeremony(sid, committee, ecdsaKeygenSpec())
	if err != nil {
		return nil, err
	}
	// From here on the set's Paillier key may reach the other parties.
	if !pre.used.CompareAndSwap(false, true) {
		return nil, invalidArg("these pre-parameters already started a keygen; every keygen needs a fresh set")
	}
	preCopy := clonePreParams(pre.p)
	c.check = ecdsaKeygenChecks(threshold-1, preCopy.NTildei)
	params := tss.NewParameters(tss.S256(), tss.NewPeerContext(c.sorted), c.pids[c.self], len(c.members), threshold-1)
	save, err := runCeremony(ctx, c, func(out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
		return ecdsakeygen.NewLocalParty(params, out, end, preCopy)
	})
	if err != nil {
		return nil, err
	}
	if save == nil || !save.ECDSAPub.ValidateBasic() || save.ShareID == nil || save.ShareID.Cmp(PartyKey(c.self)) != 0 {
		return nil, &CeremonyError{Err: errIncompleteSave}
	}
	share, err := newECDSAShare(save)
	if err != nil {
		return nil, &CeremonyError{Err: fmt.Errorf("%w: %w", errIncompleteSave, err)}
	}
	return share, nil
}

// keygenEdDSA runs Ed25519 key generation.
func (e *Engine) keygenEdDSA(ctx context.Context, sid SessionID, committee []string, threshold int) (*Share, error) {
	if err := checkThreshold(threshold, len(committee)); err != nil {
		return nil, err
	}
	c, err := e.newCeremony(sid, committee, eddsaKeygenSpec())
	if err != nil {
		return nil, err
	}
	c.check = eddsaKeygenChecks(threshold - 1)
	params := tss.NewParameters(tss.Edwards(), tss.NewPeerContext(c.sorted), c.pids[c.self], len(c.members), threshold-1)
	save, err := runCeremony(ctx, c, func(out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
		return eddsakeygen.NewLocalParty(params, out, end)
	})
	if err != nil {
		return nil, err
	}
	if save == nil || !save.EDDSAPub.ValidateBasic() || save.ShareID == nil || save.ShareID.Cmp(PartyKey(c.self)) != 0 {
		return nil, &CeremonyError{Err: errIncompleteSave}
	}
	share, err := newEdDSAShare(save)
	if err != nil {
		return nil, &CeremonyError{Err: fmt.Errorf("%w: %w", errIncompleteSave, err)}
	}
	return share, nil
}
