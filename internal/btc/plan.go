package btc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Refusal codes of *Error.
const (
	CodeInvalid        = "psbt.invalid"
	CodeInputNotOurs   = "psbt.input_not_ours"
	CodeChangeMismatch = "psbt.change_mismatch"
)

// Error is a refusal of a PSBT, with a stable code (CodeInvalid, CodeInputNotOurs or
// CodeChangeMismatch) and a detail in words.
type Error struct {
	Code   string
	Detail string
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

func refuse(code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// InputSpec names the derivation path of the key that spends one input.
type InputSpec struct {
	Index          int    `json:"index"`
	DerivationPath string `json:"derivation_path"`
}

// ChangeSpec claims one output as change, paid to the key at a derivation path.
type ChangeSpec struct {
	Output         int    `json:"output"`
	DerivationPath string `json:"derivation_path"`
}

// Script kinds custos signs.
const (
	KindP2WPKH     = "p2wpkh"
	KindP2SHP2WPKH = "p2sh-p2wpkh"
	KindP2PKH      = "p2pkh"
)

// Plan is what signing a PSBT means: the sighashes to sign and what the transaction pays.
// PlanPSBT makes it (Go does not allow a function and a type both named Plan).
type Plan struct {
	Inputs   []PlannedInput `json:"inputs"`    // in the order of the PSBT's inputs
	Outputs  []Output       `json:"outputs"`   // every output, in order
	FeeSats  int64          `json:"fee_sats"`  // inputs - outputs
	SentSats int64          `json:"sent_sats"` // sum of the outputs that are not change
	Txid     string         `json:"txid"`      // of the unsigned transaction
}

// PlannedInput is one input to sign.
type PlannedInput struct {
	Index     int    `json:"index"`
	Path      string `json:"path"`
	PubKey    []byte `json:"pubkey"`  // 33-byte compressed key of the child at Path
	Kind      string `json:"kind"`    // KindP2WPKH, KindP2SHP2WPKH or KindP2PKH
	Sighash   []byte `json:"sighash"` // 32 bytes, SIGHASH_ALL
	ValueSats int64  `json:"value_sats"`
}

// Output is one output of the transaction.
type Output struct {
	Index      int    `json:"index"`
	Address    string `json:"address"` // "" when the script has no standard address
	AmountSats int64  `json:"amount_sats"`
	Change     bool   `json:"change"`
	Script     []byte `json:"script"`
}

// scripts of a key, one per kind.
type keyScripts struct {
	pub                 []byte
	p2wpkh, p2sh, p2pkh []byte
	redeem              []byte // the P2SH-P2WPKH redeem script (= p2wpkh)
}

func scriptsFor(pub []byte) *keyScripts {
	h := btcutil.Hash160(pub)
	p2wpkh := append([]byte{txscript.OP_0, txscript.OP_DATA_20}, h...)
	p2sh := append([]byte{txscript.OP_HASH160, txscript.OP_DATA_20}, btcutil.Hash160(p2wpkh)...)
	p2sh = append(p2sh, txscript.OP_EQUAL)
	p2pkh := append([]byte{txscript.OP_DUP, txscript.OP_HASH160, txscript.OP_DATA_20}, h...)
	p2pkh = append(p2pkh, txscript.OP_EQUALVERIFY, txscript.OP_CHECKSIG)
	return &keyScripts{pub: pub, p2wpkh: p2wpkh, p2sh: p2sh, p2pkh: p2pkh, redeem: p2wpkh}
}

// kindOf says which of the key's scripts script is, or "".
func (k *keyScripts) kindOf(script []byte) string {
	switch {
	case bytes.Equal(script, k.p2wpkh):
		return KindP2WPKH
	case bytes.Equal(script, k.p2sh):
		return KindP2SHP2WPKH
	case bytes.Equal(script, k.p2pkh):
		return KindP2PKH
	}
	return ""
}

// supportedShape reports whether script has the shape of one of the three kinds
// (whatever key or script it pays).
func supportedShape(script []byte) bool {
	switch txscript.GetScriptClass(script) {
	case txscript.WitnessV0PubKeyHashTy, txscript.ScriptHashTy, txscript.PubKeyHashTy:
		return true
	}
	return false
}

// deriver derives children of one key, once per path.
type deriver struct {
	pub, chainCode []byte
	cache          map[string]*keyScripts
}

func (d *deriver) scripts(path string) (*keyScripts, error) {
	if k, ok := d.cache[path]; ok {
		return k, nil
	}
	steps, err := ParsePath(path)
	if err != nil {
		return nil, err
	}
	child, err := DeriveChild(d.pub, d.chainCode, steps)
	if err != nil {
		return nil, err
	}
	k := scriptsFor(child)
	d.cache[path] = k
	return k, nil
}

// spentOutput checks input i's non_witness_utxo (and witness_utxo and sighash type)
// and returns the output it spends. An input that does not prove what it spends (no
// non_witness_utxo, one that is not the outpoint's transaction, a witness_utxo that is
// not that output) is psbt.input_not_ours, as API.md says. Kind checks that need the key come later;
// witness_utxo is checked against the spent output whatever the kind.
func spentOutput(p *psbt.Packet, i int) (*wire.TxOut, error) {
	in := &p.Inputs[i]
	if isFinalized(in) {
		return nil, refuse(CodeInvalid, "input %d is already finalized", i)
	}
	if in.NonWitnessUtxo == nil {
		return nil, refuse(CodeInputNotOurs, "input %d has no non_witness_utxo (required for every input)", i)
	}
	// CVE-2020-14199: the amount a segwit input spends is only trustworthy when the
	// whole previous transaction, hashing to the outpoint's txid, vouches for it.
	op := p.UnsignedTx.TxIn[i].PreviousOutPoint
	if h := in.NonWitnessUtxo.TxHash(); h != op.Hash {
		return nil, refuse(CodeInputNotOurs, "input %d: non_witness_utxo is transaction %s, not %s which the input spends", i, h, op.Hash)
	}
	if int64(op.Index) >= int64(len(in.NonWitnessUtxo.TxOut)) {
		return nil, refuse(CodeInputNotOurs, "input %d: non_witness_utxo has no output %d", i, op.Index)
	}
	spent := in.NonWitnessUtxo.TxOut[op.Index]
	if spent.Value < 0 || spent.Value > btcutil.MaxSatoshi {
		return nil, refuse(CodeInvalid, "input %d: spent output's amount %d is out of range", i, spent.Value)
	}
	if in.WitnessUtxo != nil && (in.WitnessUtxo.Value != spent.Value || !bytes.Equal(in.WitnessUtxo.PkScript, spent.PkScript)) {
		return nil, refuse(CodeInputNotOurs, "input %d: witness_utxo does not match the output non_witness_utxo says it spends", i)
	}
	// btcd's parser reads an absent sighash type as 0; parsePacket refuses an explicit 0.
	if in.SighashType != 0 && in.SighashType != txscript.SigHashAll {
		return nil, refuse(CodeInvalid, "input %d: sighash type %#x is not SIGHASH_ALL", i, uint32(in.SighashType))
	}
	return spent, nil
}

// PlanPSBT parses a PSBT (raw bytes, not base64) and checks it against a secp256k1 key: a
// 33-byte compressed public key and its 32-byte BIP 32 chain code. Every input must be
// listed exactly once in inputs, must carry its full previous transaction
// (non_witness_utxo) and must spend a P2WPKH, P2SH-P2WPKH or P2PKH output of the child
// key at its derivation path. Outputs named in change must pay a child key at theirs.
// Refusals of the PSBT are *Error; a malformed key or nil params is a plain error.
func PlanPSBT(raw []byte, params *chaincfg.Params, pub, chainCode []byte, inputs []InputSpec, change []ChangeSpec) (*Plan, error) {
	if params == nil {
		return nil, errors.New("btc: nil chain params")
	}
	if err := checkKey(pub, chainCode); err != nil {
		return nil, err
	}
	p, err := parsePacket(raw)
	if err != nil {
		return nil, refuse(CodeInvalid, "%v", err)
	}
	tx := p.UnsignedTx
	n := len(tx.TxIn)

	// Every input listed exactly once.
	paths := make([]*string, n)
	for _, s := range inputs {
		if s.Index < 0 || s.Index >= n {
			return nil, refuse(CodeInvalid, "input %d is out of range (the transaction has %d inputs)", s.Index, n)
		}
		if paths[s.Index] != nil {
			return nil, refuse(CodeInvalid, "input %d is listed more than once", s.Index)
		}
		path := s.DerivationPath
		paths[s.Index] = &path
	}
	for i, path := range paths {
		if path == nil {
			return nil, refuse(CodeInvalid, "input %d is not listed (custos signs every input)", i)
		}
	}

	d := &deriver{pub: pub, chainCode: chainCode, cache: map[string]*keyScripts{}}
	plan := &Plan{Inputs: make([]PlannedInput, n), Outputs: make([]Output, len(tx.TxOut)), Txid: tx.TxHash().String()}
	prevOuts := make(map[wire.OutPoint]*wire.TxOut, n)
	var inSum int64
	for i := range tx.TxIn {
		spent, err := spentOutput(p, i)
		if err != nil {
			return nil, err
		}
		keys, err := d.scripts(*paths[i])
		if err != nil {
			return nil, refuse(CodeInvalid, "input %d: %v", i, err)
		}
		kind := keys.kindOf(spent.PkScript)
		if kind == "" {
			if supportedShape(spent.PkScript) {
				return nil, refuse(CodeInputNotOurs, "input %d spends a script that does not pay the key at %q", i, *paths[i])
			}
			return nil, refuse(CodeInputNotOurs, "input %d: script type not supported", i)
		}
		if kind == KindP2SHP2WPKH && p.Inputs[i].RedeemScript != nil && !bytes.Equal(p.Inputs[i].RedeemScript, keys.redeem) {
			return nil, refuse(CodeInvalid, "input %d: redeem_script is not the key's P2WPKH script", i)
		}
		if inSum += spent.Value; inSum > btcutil.MaxSatoshi {
			return nil, refuse(CodeInvalid, "inputs add up to more than 21 million bitcoin")
		}
		prevOuts[tx.TxIn[i].PreviousOutPoint] = spent
		plan.Inputs[i] = PlannedInput{Index: i, Path: *paths[i], PubKey: keys.pub, Kind: kind, ValueSats: spent.Value}
	}

	hashes := txscript.NewTxSigHashes(tx, txscript.NewMultiPrevOutFetcher(prevOuts))
	for i := range plan.Inputs {
		in := &plan.Inputs[i]
		h, err := sighash(tx, hashes, i, in.Kind, in.PubKey, prevOuts[tx.TxIn[i].PreviousOutPoint])
		if err != nil {
			return nil, refuse(CodeInvalid, "input %d: sighash: %v", i, err)
		}
		in.Sighash = h
	}

	var outSum int64
	for i, out := range tx.TxOut {
		if out.Value < 0 || out.Value > btcutil.MaxSatoshi {
			return nil, refuse(CodeInvalid, "output %d: amount %d is out of range", i, out.Value)
		}
		if outSum += out.Value; outSum > btcutil.MaxSatoshi {
			return nil, refuse(CodeInvalid, "outputs add up to more than 21 million bitcoin")
		}
		plan.Outputs[i] = Output{Index: i, Address: address(out.PkScript, params), AmountSats: out.Value, Script: append([]byte(nil), out.PkScript...)}
	}
	if inSum < outSum {
		return nil, refuse(CodeInvalid, "outputs (%d sats) exceed inputs (%d sats)", outSum, inSum)
	}
	plan.FeeSats = inSum - outSum

	for _, c := range change {
		if c.Output < 0 || c.Output >= len(tx.TxOut) {
			return nil, refuse(CodeChangeMismatch, "change output %d is out of range (the transaction has %d outputs)", c.Output, len(tx.TxOut))
		}
		if plan.Outputs[c.Output].Change {
			return nil, refuse(CodeChangeMismatch, "change output %d is listed more than once", c.Output)
		}
		keys, err := d.scripts(c.DerivationPath)
		if err != nil {
			return nil, refuse(CodeChangeMismatch, "change output %d: %v", c.Output, err)
		}
		if keys.kindOf(tx.TxOut[c.Output].PkScript) == "" {
			return nil, refuse(CodeChangeMismatch, "change output %d does not pay the key at %q", c.Output, c.DerivationPath)
		}
		plan.Outputs[c.Output].Change = true
	}
	for _, o := range plan.Outputs {
		if !o.Change {
			plan.SentSats += o.AmountSats
		}
	}
	return plan, nil
}

// sighash is the SIGHASH_ALL digest input i signs: BIP 143 for the segwit kinds, the
// legacy algorithm for P2PKH.
func sighash(tx *wire.MsgTx, hashes *txscript.TxSigHashes, i int, kind string, pub []byte, spent *wire.TxOut) ([]byte, error) {
	switch kind {
	case KindP2WPKH, KindP2SHP2WPKH:
		// For a P2WPKH program btcd builds the BIP 143 scriptCode itself.
		return txscript.CalcWitnessSigHash(scriptsFor(pub).p2wpkh, hashes, txscript.SigHashAll, tx, i, spent.Value)
	case KindP2PKH:
		return txscript.CalcSignatureHash(spent.PkScript, txscript.SigHashAll, tx, i)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

func address(script []byte, params *chaincfg.Params) string {
	class, addrs, _, err := txscript.ExtractPkScriptAddrs(script, params)
	if err != nil || len(addrs) != 1 {
		return ""
	}
	switch class {
	case txscript.PubKeyHashTy, txscript.ScriptHashTy, txscript.WitnessV0PubKeyHashTy,
		txscript.WitnessV0ScriptHashTy, txscript.WitnessV1TaprootTy:
		return addrs[0].EncodeAddress()
	}
	return ""
}
