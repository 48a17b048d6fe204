package btc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Signature is an ECDSA signature (r, s), 32 big-endian bytes each. Finalize accepts a
// high S and uses its low-S twin, which is equally valid and the only one nodes relay.
type Signature struct {
	R []byte `json:"r"`
	S []byte `json:"s"`
}

// Finalize attaches one signature per planned input (in the order of plan.Inputs) to
// the PSBT raw that PlanPSBT made plan from, after verifying each against its sighash and
// public key; then it finalizes every input (BIP 174: final scriptSig and witness, the
// partial data dropped), extracts the transaction and runs every input's script through
// txscript. It returns the finalized PSBT, the signed transaction in hex and its txid.
// Signing, finalizing, extracting and encoding are btcd's psbt package's.
//
// Finalize re-derives each input's script and sighash from raw and the plan's public
// keys and kinds, so a plan that does not belong to raw is an error, not a bad
// transaction.
func Finalize(raw []byte, plan *Plan, sigs []Signature) (psbtOut []byte, txHex string, txid string, err error) {
	if plan == nil {
		return nil, "", "", errors.New("btc: nil plan")
	}
	p, err := parsePacket(raw)
	if err != nil {
		return nil, "", "", refuse(CodeInvalid, "%v", err)
	}
	tx := p.UnsignedTx
	if got := tx.TxHash().String(); got != plan.Txid {
		return nil, "", "", fmt.Errorf("btc: psbt's transaction is %s, the plan's is %s", got, plan.Txid)
	}
	if len(plan.Inputs) != len(tx.TxIn) {
		return nil, "", "", fmt.Errorf("btc: plan has %d inputs, the transaction %d", len(plan.Inputs), len(tx.TxIn))
	}
	if len(sigs) != len(plan.Inputs) {
		return nil, "", "", fmt.Errorf("btc: %d signatures for %d inputs", len(sigs), len(plan.Inputs))
	}

	prevOuts := make(map[wire.OutPoint]*wire.TxOut, len(tx.TxIn))
	for i := range tx.TxIn {
		in := plan.Inputs[i]
		if in.Index != i {
			return nil, "", "", fmt.Errorf("btc: plan's input %d has index %d", i, in.Index)
		}
		spent, err := spentOutput(p, i)
		if err != nil {
			return nil, "", "", err
		}
		if len(in.PubKey) != 33 {
			return nil, "", "", fmt.Errorf("btc: plan's input %d: public key is not 33 bytes", i)
		}
		if scriptsFor(in.PubKey).kindOf(spent.PkScript) != in.Kind {
			return nil, "", "", fmt.Errorf("btc: input %d does not spend the plan's %s script", i, in.Kind)
		}
		prevOuts[tx.TxIn[i].PreviousOutPoint] = spent
	}
	fetcher := txscript.NewMultiPrevOutFetcher(prevOuts)
	hashes := txscript.NewTxSigHashes(tx, fetcher)

	// Every signature verified, low S, in the form a script carries it.
	scriptSigs := make([][]byte, len(tx.TxIn))
	for i := range tx.TxIn {
		in := plan.Inputs[i]
		spent := prevOuts[tx.TxIn[i].PreviousOutPoint]
		h, err := sighash(tx, hashes, i, in.Kind, in.PubKey, spent)
		if err != nil {
			return nil, "", "", fmt.Errorf("btc: input %d: sighash: %v", i, err)
		}
		if !bytes.Equal(h, in.Sighash) {
			return nil, "", "", fmt.Errorf("btc: input %d: the plan's sighash is not the transaction's", i)
		}
		pub, err := btcec.ParsePubKey(in.PubKey)
		if err != nil {
			return nil, "", "", fmt.Errorf("btc: input %d: public key: %v", i, err)
		}
		der, err := verifySig(sigs[i], h, pub)
		if err != nil {
			return nil, "", "", fmt.Errorf("btc: input %d: %v", i, err)
		}
		scriptSigs[i] = append(der, byte(txscript.SigHashAll))
	}

	if err := signAndFinalize(p, plan, scriptSigs); err != nil {
		return nil, "", "", fmt.Errorf("btc: %v", err)
	}
	signed, err := psbt.Extract(p)
	if err != nil {
		return nil, "", "", fmt.Errorf("btc: extract transaction: %v", err)
	}

	// Belt and braces: the transaction must pass script verification as a node runs it.
	signedHashes := txscript.NewTxSigHashes(signed, fetcher)
	for i := range signed.TxIn {
		spent := prevOuts[signed.TxIn[i].PreviousOutPoint]
		vm, err := txscript.NewEngine(spent.PkScript, signed, i, txscript.StandardVerifyFlags, nil, signedHashes, spent.Value, fetcher)
		if err == nil {
			err = vm.Execute()
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("btc: input %d does not verify: %v", i, err)
		}
	}

	var txBuf, psbtBuf bytes.Buffer
	if err := signed.Serialize(&txBuf); err != nil {
		return nil, "", "", fmt.Errorf("btc: serialize transaction: %v", err)
	}
	if err := p.Serialize(&psbtBuf); err != nil {
		return nil, "", "", fmt.Errorf("btc: serialize psbt: %v", err)
	}
	return psbtBuf.Bytes(), hex.EncodeToString(txBuf.Bytes()), signed.TxHash().String(), nil
}

// signAndFinalize is BIP 174's signer and finalizer, with btcd's psbt: it attaches
// input i's signature sigs[i] (DER and sighash byte) as the partial signature of the
// plan's key and finalizes the input. Every input has passed spentOutput and matches the
// plan. A panic in the library becomes an error, for the reason decodePSBT recovers.
func signAndFinalize(p *psbt.Packet, plan *Plan, sigs [][]byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("finalize: %v", r)
		}
	}()
	u, err := psbt.NewUpdater(p)
	if err != nil {
		return err
	}
	for i := range p.Inputs {
		in := &p.Inputs[i]
		pub := plan.Inputs[i].PubKey
		nonWitnessUTXO, unknowns := in.NonWitnessUtxo, in.Unknowns
		// custos signs every input alone with one key: other parties' partial
		// signatures and scripts that are not the plan's would make btcd's finalizer
		// build another kind of script. The finalizer drops them all the same.
		in.PartialSigs = nil
		in.WitnessScript = nil
		in.RedeemScript = nil
		var redeem []byte
		switch plan.Inputs[i].Kind {
		case KindP2SHP2WPKH:
			redeem = scriptsFor(pub).redeem
		case KindP2PKH:
			// btcd finalizes an input with a witness_utxo as a segwit input; a legacy
			// input is finalized from its non_witness_utxo alone.
			in.WitnessUtxo = nil
		}
		// For the segwit kinds Sign adds the witness_utxo (from non_witness_utxo)
		// when the PSBT lacks it.
		outcome, err := u.Sign(i, sigs[i], pub, redeem, nil)
		if err != nil {
			return fmt.Errorf("input %d: attach signature: %v", i, err)
		}
		if outcome != psbt.SignSuccesful {
			return fmt.Errorf("input %d: signature not attached (outcome %d)", i, outcome)
		}
		if err := psbt.Finalize(p, i); err != nil {
			return fmt.Errorf("input %d: finalize: %v", i, err)
		}
		// BIP 174's finalizer keeps the UTXO and unknown fields; btcd's keeps only the
		// UTXO field it finalized from and drops the unknown (e.g. proprietary) pairs.
		p.Inputs[i].NonWitnessUtxo = nonWitnessUTXO
		p.Inputs[i].Unknowns = unknowns
	}
	return nil
}

// verifySig checks sig against hash and pub and returns its DER encoding with a low S.
func verifySig(sig Signature, hash []byte, pub *btcec.PublicKey) ([]byte, error) {
	if len(sig.R) != 32 || len(sig.S) != 32 {
		return nil, fmt.Errorf("signature r and s must be 32 bytes each, got %d and %d", len(sig.R), len(sig.S))
	}
	var r, s btcec.ModNScalar
	if overflow := r.SetByteSlice(sig.R); overflow || r.IsZero() {
		return nil, errors.New("signature r is out of range")
	}
	if overflow := s.SetByteSlice(sig.S); overflow || s.IsZero() {
		return nil, errors.New("signature s is out of range")
	}
	if s.IsOverHalfOrder() {
		s.Negate()
	}
	es := ecdsa.NewSignature(&r, &s)
	if !es.Verify(hash, pub) {
		return nil, errors.New("signature does not verify against the sighash and public key")
	}
	return es.Serialize(), nil
}
