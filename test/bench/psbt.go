//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/custos/custos/node/client"
	"github.com/custos/custos/protocol/baseline"
)

// The PSBT cell (issue: "a 10-input PSBT signed in ≤ 1.2× the time of 10 concurrent
// in-process tss-lib signings measured in the same run"):
//
//   - cluster: POST /v1/keys/{key_id}/psbt (SDK SignPSBT) of a PSBT with psbtInputs
//     P2WPKH inputs, input i spending an output that pays the bench's secp256k1 key's
//     non-hardened child m/0/i; the cluster runs one threshold-ECDSA ceremony per input,
//     concurrently. Each sample builds a fresh PSBT offline (synthetic previous
//     transactions that spend random outpoints, so every sample has other txids and
//     sighashes: no idempotency or session reuse is possible); the time is the call until
//     the request is signed (a 202 is polled with WaitRequest). The finalized PSBT is
//     checked (every input's witness run through btcd's script engine) after the clock
//     stops.
//   - baseline: psbtInputs in-process tss-lib ECDSA signings (protocol/baseline's
//     SignECDSA, the engine of the other ECDSA cells) of different random digests,
//     started at once; the time is the wall time until the last one is done.
const (
	psbtInputs     = 10
	psbtNetwork    = "regtest"
	psbtInputSats  = 100_000 // each previous output
	psbtFeeSats    = 5_000   // the transaction's fee
	targetPSBTSign = 1.2
)

var psbtCellName = fmt.Sprintf("psbt_sign_%d_inputs", psbtInputs)

// psbtSide builds and signs PSBTs spending the children m/0/0 … m/0/(psbtInputs-1) of
// one cluster key.
type psbtSide struct {
	cs      *clusterSide
	key     *client.Key
	params  *chaincfg.Params
	paths   []string
	scripts [][]byte // P2WPKH script of each path's child
}

// newPSBTSide reuses the bench's secp256k1 key (cs.ecKey) and derives its children with
// hdkeychain's public derivation from its public key and chain code.
func newPSBTSide(ctx context.Context, cs *clusterSide) (*psbtSide, error) {
	key := cs.ecKey
	if key.ChainCode == "" { // not in the keygen's answer: read the key
		k, err := cs.u.Clients[0].GetKey(ctx, key.KeyID)
		if err != nil {
			return nil, err
		}
		if key = k; key.ChainCode == "" {
			return nil, fmt.Errorf("key %s has no chain code", key.KeyID)
		}
	}
	pub, err := hex.DecodeString(key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	cc, err := hex.DecodeString(key.ChainCode)
	if err != nil || len(cc) != 32 {
		return nil, fmt.Errorf("chain code %q", key.ChainCode)
	}
	s := &psbtSide{cs: cs, key: key, params: &chaincfg.RegressionNetParams}
	root := hdkeychain.NewExtendedKey(s.params.HDPublicKeyID[:], pub, cc, []byte{0, 0, 0, 0}, 0, 0, false)
	branch, err := root.Derive(0)
	if err != nil {
		return nil, fmt.Errorf("derive m/0: %w", err)
	}
	for i := range uint32(psbtInputs) {
		child, err := branch.Derive(i)
		if err != nil {
			return nil, fmt.Errorf("derive m/0/%d: %w", i, err)
		}
		cpub, err := child.ECPubKey()
		if err != nil {
			return nil, err
		}
		script, err := p2wpkhScript(btcutil.Hash160(cpub.SerializeCompressed()), s.params)
		if err != nil {
			return nil, err
		}
		s.paths = append(s.paths, fmt.Sprintf("m/0/%d", i))
		s.scripts = append(s.scripts, script)
	}
	return s, nil
}

func p2wpkhScript(hash160 []byte, params *chaincfg.Params) ([]byte, error) {
	addr, err := btcutil.NewAddressWitnessPubKeyHash(hash160, params)
	if err != nil {
		return nil, err
	}
	return txscript.PayToAddrScript(addr)
}

// unsignedPSBT is one sample's PSBT and what checking its signed form needs.
type unsignedPSBT struct {
	b64      string
	txid     chainhash.Hash
	prevOuts *txscript.MultiPrevOutFetcher
}

// build makes a fresh PSBT: psbtInputs inputs, input i spending output 0 of a synthetic
// previous transaction (one input from a random outpoint, one output of psbtInputSats
// paying the child m/0/i), and one output paying a random P2WPKH address the inputs
// minus psbtFeeSats.
func (s *psbtSide) build() (*unsignedPSBT, error) {
	ops := make([]*wire.OutPoint, psbtInputs)
	prevs := make([]*wire.MsgTx, psbtInputs)
	fetch := txscript.NewMultiPrevOutFetcher(nil)
	for i := range prevs {
		var h chainhash.Hash
		if _, err := rand.Read(h[:]); err != nil {
			return nil, err
		}
		prev := wire.NewMsgTx(2)
		prev.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&h, 0), nil, nil))
		prev.AddTxOut(wire.NewTxOut(psbtInputSats, s.scripts[i]))
		prevs[i] = prev
		ph := prev.TxHash()
		ops[i] = wire.NewOutPoint(&ph, 0)
		fetch.AddPrevOut(*ops[i], prev.TxOut[0])
	}
	dest := make([]byte, 20)
	if _, err := rand.Read(dest); err != nil {
		return nil, err
	}
	destScript, err := p2wpkhScript(dest, s.params)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint32, psbtInputs)
	for i := range seqs {
		seqs[i] = wire.MaxTxInSequenceNum - 2 // final, RBF signalled; any will do
	}
	out := wire.NewTxOut(psbtInputs*psbtInputSats-psbtFeeSats, destScript)
	pkt, err := psbt.New(ops, []*wire.TxOut{out}, 2, 0, seqs)
	if err != nil {
		return nil, err
	}
	for i, prev := range prevs {
		in := &pkt.Inputs[i]
		in.NonWitnessUtxo = prev
		in.WitnessUtxo = wire.NewTxOut(prev.TxOut[0].Value, append([]byte(nil), prev.TxOut[0].PkScript...))
		in.SighashType = txscript.SigHashAll
	}
	var buf bytes.Buffer
	if err := pkt.Serialize(&buf); err != nil {
		return nil, err
	}
	return &unsignedPSBT{b64: base64.StdEncoding.EncodeToString(buf.Bytes()), txid: pkt.UnsignedTx.TxHash(), prevOuts: fetch}, nil
}

// sign builds a fresh PSBT (not timed), asks node entry to sign every input and waits
// until the request is signed; the signed PSBT is checked after the clock stops.
func (s *psbtSide) sign(ctx context.Context, entry int) (time.Duration, error) {
	u, err := s.build()
	if err != nil {
		return 0, fmt.Errorf("build PSBT: %w", err)
	}
	body := client.PSBTBody{PSBT: u.b64, Network: psbtNetwork, Inputs: make([]client.PSBTInput, psbtInputs)}
	for i := range body.Inputs {
		body.Inputs[i] = client.PSBTInput{Index: i, DerivationPath: s.paths[i]}
	}
	cl := s.cs.u.Clients[entry]
	start := time.Now()
	r, err := cl.SignPSBT(ctx, s.key.KeyID, body)
	if err != nil {
		return 0, err
	}
	if r.Status != client.StatusSigned {
		if r, err = cl.WaitRequest(ctx, r.RequestID, pollInterval); err != nil {
			return 0, err
		}
	}
	took := time.Since(start)
	if r.Status != client.StatusSigned {
		return 0, requestFailure(r)
	}
	if err := u.check(r.PSBT); err != nil {
		return 0, fmt.Errorf("request %s: %w", r.RequestID, err)
	}
	return took, nil
}

// check verifies a signed PSBT: complete, the transaction it was built as, and every
// input's witness valid under btcd's script engine.
func (u *unsignedPSBT) check(b64 string) error {
	if b64 == "" {
		return errors.New("signed request carries no PSBT")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("signed PSBT: %w", err)
	}
	pkt, err := psbt.NewFromRawBytes(bytes.NewReader(raw), false)
	if err != nil {
		return fmt.Errorf("signed PSBT: %w", err)
	}
	if !pkt.IsComplete() {
		return errors.New("signed PSBT is not finalized")
	}
	tx, err := psbt.Extract(pkt)
	if err != nil {
		return fmt.Errorf("signed PSBT: %w", err)
	}
	if tx.TxHash() != u.txid {
		return fmt.Errorf("signed transaction is %s, not %s", tx.TxHash(), u.txid)
	}
	hashes := txscript.NewTxSigHashes(tx, u.prevOuts)
	for i, in := range tx.TxIn {
		prev := u.prevOuts.FetchPrevOutput(in.PreviousOutPoint)
		e, err := txscript.NewEngine(prev.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, prev.Value, u.prevOuts)
		if err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
		if err := e.Execute(); err != nil {
			return fmt.Errorf("input %d does not verify: %w", i, err)
		}
	}
	return nil
}

// concurrentSignsECDSA starts n in-process ECDSA signings of different random digests at
// once and returns the wall time until the last is done (each verifies its signature as
// it ends, a fraction of a millisecond).
func concurrentSignsECDSA(ctx context.Context, base *baseline.Baseline, n int) (time.Duration, error) {
	digests := make([][]byte, n)
	for i := range digests {
		digests[i] = randomDigest()
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = base.SignECDSA(ctx, digests[i])
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return took, nil
}

// psbtCell is the PSBT row: the cluster's psbtInputs-input PSBT signing against
// psbtInputs concurrent in-process signings.
func psbtCell(o *options, base *baseline.Baseline, ps *psbtSide) cellDef {
	return cellDef{
		name: psbtCellName, title: fmt.Sprintf("PSBT %d inputs vs %d conc. signs", psbtInputs, psbtInputs),
		kind: kindLatency, conc: psbtInputs, samples: o.psbtSamples,
		base:   func(ctx context.Context) (time.Duration, error) { return concurrentSignsECDSA(ctx, base, psbtInputs) },
		clu:    func(ctx context.Context) (time.Duration, error) { return ps.sign(ctx, ps.cs.randomEntry()) },
		baseOp: fmt.Sprintf("%d concurrent in-process ECDSA signs (protocol/baseline SignECDSA, different random digests, root key), wall time until all are done", psbtInputs),
		cluOp: fmt.Sprintf("psbt %d inputs: SignPSBT of a fresh %s PSBT, %d P2WPKH inputs paying children m/0/0..m/0/%d (one ceremony per input), until signed",
			psbtInputs, psbtNetwork, psbtInputs, psbtInputs-1),
		target: &target{Metric: "ratio_p50", Op: "<=", Value: targetPSBTSign},
	}
}
