package state

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/btc"
)

// PSBT signing (API.md "Bitcoin"): every node parses the PSBT itself, here, inside Apply
// (internal/btc, over btcd's psbt and txscript): which inputs spend the key or its
// children, their sighashes, which outputs are change, the amount and the fee. The policy
// reads that same parse; the committee signs exactly those sighashes, one ceremony per
// input; the result is verified signature by signature and the transaction finalized
// here too. Nothing of it comes from a proposer.

// MaxPSBTInputs bounds the inputs of one PSBT signing: each is a ceremony run
// concurrently on every committee member.
const MaxPSBTInputs = 32

// OpKeyPSBT is POST /v1/keys/{key_id}/psbt.
const OpKeyPSBT = "keys.psbt"

// TypeBroadcast is the leader's report of a signed transaction's broadcast.
const TypeBroadcast = "psbt.broadcast"

// PSBTSign is a PSBT signing's transaction: as the caller sent it, what every node read of
// it, and once signed, the finalized PSBT and transaction and the broadcast's outcome.
type PSBTSign struct {
	Raw       []byte    `json:"raw"`
	Network   string    `json:"network"`
	Plan      *btc.Plan `json:"plan"`
	Broadcast bool      `json:"broadcast,omitempty"`

	Final []byte `json:"final,omitempty"`
	TxHex string `json:"tx_hex,omitempty"`
	TxID  string `json:"txid,omitempty"`

	// Broadcasted is set once the leader reported the broadcast: BroadcastTxID, or
	// BroadcastError (broadcast.failed, with the Bitcoin node's message).
	Broadcasted    bool       `json:"broadcasted,omitempty"`
	BroadcastTxID  string     `json:"broadcast_txid,omitempty"`
	BroadcastError *ErrorInfo `json:"broadcast_error,omitempty"`
}

// BroadcastResult is the leader's report of a broadcast (TypeBroadcast).
type BroadcastResult struct {
	RequestID string `json:"request_id"`
	TxID      string `json:"txid,omitempty"`
	Detail    string `json:"detail,omitempty"` // the node's refusal, when it refused
}

// Outputs is what the policy read of the transaction's outputs.
func (p *PSBTSign) Outputs() []api.Output {
	out := []api.Output{}
	for _, o := range p.Plan.Outputs {
		out = append(out, api.Output{Address: o.Address, AmountSats: o.AmountSats, Change: o.Change})
	}
	return out
}

// Message is the i-th input's sighash with its derivation path: what its ceremony signs.
func (p *PSBTSign) Message(i int) (msg []byte, path []uint32, err error) {
	in := p.Plan.Inputs[i]
	if in.Path != "" {
		if path, err = ParsePath(in.Path); err != nil {
			return nil, nil, err
		}
	}
	return in.Sighash, path, nil
}

// keyPSBT applies a PSBT signing: the key (a secp256k1 key the caller may use), the
// PSBT parsed and checked against it, then policy and scheduling as any signature.
func (a *applier) keyPSBT(c *Call, p principal) Result {
	k := a.key(c.KeyID)
	if !p.sees(k) {
		return refuse(api.CodeKeyNotFound, "no such key")
	}
	if k.Status != KeyActive {
		return refuse(api.CodeKeyNotActive, "key is "+k.Status)
	}
	ps, res := planPSBT(c.PSBT, k)
	if !res.OK() {
		return res
	}
	plan := ps.Plan
	amount := plan.SentSats + plan.FeeSats
	return a.admitSign(c, p, k, &Request{Amount: &amount, PSBT: ps})
}

// planPSBT parses and checks a PSBT signing's body against the key: what every node
// reads of the transaction.
func planPSBT(b *api.PSBTBody, k *Key) (*PSBTSign, Result) {
	if b == nil {
		return nil, refuse(api.CodeRequestMalformed, "no PSBT in the request")
	}
	if k.Curve != CurveSecp256k1 {
		return nil, refuse(api.CodeRequestMalformed, "PSBT signing needs a secp256k1 key")
	}
	params, err := btc.Params(b.Network)
	if err != nil {
		return nil, refuse(api.CodeRequestMalformed, `network must be "mainnet", "testnet", "signet", "regtest" or "simnet"`)
	}
	if len(b.Inputs) == 0 || len(b.Inputs) > MaxPSBTInputs {
		return nil, refuse(api.CodeRequestMalformed, fmt.Sprintf("inputs must list 1–%d inputs to sign", MaxPSBTInputs))
	}
	raw, err := base64.StdEncoding.DecodeString(b.PSBT)
	if err != nil {
		return nil, refuse(api.CodePSBTInvalid, "psbt must be base64 (standard alphabet, padded): "+err.Error())
	}
	ins := make([]btc.InputSpec, len(b.Inputs))
	for i, in := range b.Inputs {
		ins[i] = btc.InputSpec{Index: in.Index, DerivationPath: in.DerivationPath}
	}
	chg := make([]btc.ChangeSpec, len(b.Change))
	for i, ch := range b.Change {
		chg[i] = btc.ChangeSpec{Output: ch.Output, DerivationPath: ch.DerivationPath}
	}
	plan, err := btc.PlanPSBT(raw, params, k.PublicKey, k.ChainCode, ins, chg)
	if err != nil {
		var be *btc.Error
		if errors.As(err, &be) {
			return nil, refuse(be.Code, be.Detail)
		}
		return nil, refuse(api.CodePSBTInvalid, err.Error())
	}
	return &PSBTSign{Raw: raw, Network: b.Network, Plan: plan, Broadcast: b.Broadcast}, Result{}
}

// psbtResult verifies a committee member's signatures of every input and finalizes the
// transaction; the request is signed only if all of that holds.
func (a *applier) psbtResult(r *Request, k *Key, c *CeremonyResult) error {
	ps := r.PSBT
	if len(c.Signatures) != len(ps.Plan.Inputs) {
		return fmt.Errorf("%d signatures for %d inputs", len(c.Signatures), len(ps.Plan.Inputs))
	}
	sigs := make([]btc.Signature, len(c.Signatures))
	for i := range c.Signatures {
		msg, path, err := ps.Message(i)
		if err != nil {
			return err
		}
		if err := a.verifier.VerifySignature(k.Curve, k.PublicKey, k.ChainCode, path, msg, &c.Signatures[i]); err != nil {
			return fmt.Errorf("input %d: %w", ps.Plan.Inputs[i].Index, err)
		}
		sigs[i] = btc.Signature{R: c.Signatures[i].R, S: c.Signatures[i].S}
	}
	final, txHex, txid, err := btc.Finalize(ps.Raw, ps.Plan, sigs)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	ps.Final, ps.TxHex, ps.TxID = final, txHex, txid
	if ps.Broadcast {
		a.t.setRaw(keyStr(tBroadcastDue, r.ID), nil)
	}
	return nil
}

// tBroadcastDue indexes the signed transactions whose broadcast the leader owes.
const tBroadcastDue = "psbt.broadcast" // request id → ""

// broadcast records the leader's broadcast of a signed transaction. The leader reports
// only what the Bitcoin node said; the transaction itself is the one the FSM finalized.
func (a *applier) broadcast(c *BroadcastResult, actor string) Result {
	r := a.request(c.RequestID)
	if r == nil || r.PSBT == nil || !r.PSBT.Broadcast || r.Status != StatusSigned {
		return refuse(api.CodeRequestConflict, "no signed transaction waits for a broadcast")
	}
	ps := r.PSBT
	if ps.Broadcasted {
		return Result{RequestID: r.ID, Existing: true}
	}
	if c.TxID != "" && c.TxID != ps.TxID {
		return refuse(api.CodeRequestConflict, "the broadcast names another txid than the signed transaction's")
	}
	ps.Broadcasted = true
	if c.TxID != "" {
		ps.BroadcastTxID = c.TxID
		a.audit(actor, "psbt.broadcast", r.ID, "allowed", "")
	} else {
		ps.BroadcastError = &ErrorInfo{Code: api.CodeBroadcastFailed, Detail: truncate(c.Detail, 512)}
		a.audit(actor, "psbt.broadcast", r.ID, "refused", api.CodeBroadcastFailed)
	}
	a.t.delRaw(keyStr(tBroadcastDue, r.ID))
	a.emit(EventBroadcast, r.ID, r.KeyID)
	return Result{RequestID: r.ID}
}
