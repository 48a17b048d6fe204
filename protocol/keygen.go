package protocol

import (
	"context"
	"errors"

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

// KeygenECDSA runs GG18 secp256k1 key generation with the given committee
// (node ids, self included) so that any threshold of them can sign. pre are
// this node's Paillier/NTilde pre-parameters; they must be fresh (never used
// for another key) and are validated with ValidateWithProof; they are never
// generated here. The result is this node's share.
func (e *Engine) KeygenECDSA(ctx context.Context, sid SessionID, committee []string, threshold int, pre *ecdsakeygen.LocalPreParams) (*ecdsakeygen.LocalPartySaveData, error) {
	if pre == nil || !pre.ValidateWithProof() {
		return nil, invalidArg("missing or incomplete ECDSA pre-parameters")
	}
	if pre.PaillierSK.N.BitLen() != paillierBits || pre.NTildei.BitLen() != paillierBits {
		return nil, invalidArg("pre-parameters must have %d-bit moduli", paillierBits)
	}
	if err := checkThreshold(threshold, len(committee)); err != nil {
		return nil, err
	}
	c, err := e.newCeremony(sid, committee, ecdsaKeygenSpec())
	if err != nil {
		return nil, err
	}
	preCopy := clonePreParams(*pre)
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
	return save, nil
}

// KeygenEdDSA runs Ed25519 key generation with the given committee (node ids,
// self included) so that any threshold of them can sign. The result is this
// node's share.
func (e *Engine) KeygenEdDSA(ctx context.Context, sid SessionID, committee []string, threshold int) (*eddsakeygen.LocalPartySaveData, error) {
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
	return save, nil
}
