package btcnode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// wallet is a fresh key of the test with its P2WPKH script.
type wallet struct {
	key      *btcec.PrivateKey
	pkScript []byte
}

func newWallet(t *testing.T, n *Node) wallet {
	t.Helper()
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), n.Params)
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	return wallet{key: key, pkScript: s}
}

// p2pkhScript is the script of a P2PKH address of a fresh key.
func p2pkhScript(t *testing.T, n *Node) []byte {
	t.Helper()
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), n.Params)
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// spend signs (BIP 143, locally) a transaction spending utxos of w to one output of
// value sum-fee paying to.
func (w wallet) spend(t *testing.T, utxos []Utxo, to []byte, fee int64) *wire.MsgTx {
	t.Helper()
	tx := wire.NewMsgTx(2)
	fetcher := txscript.NewMultiPrevOutFetcher(nil)
	var sum int64
	for _, u := range utxos {
		tx.AddTxIn(wire.NewTxIn(&u.OutPoint, nil, nil))
		fetcher.AddPrevOut(u.OutPoint, wire.NewTxOut(u.Value, u.PkScript))
		sum += u.Value
	}
	tx.AddTxOut(wire.NewTxOut(sum-fee, to))
	sigHashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, u := range utxos {
		wit, err := txscript.WitnessSignature(tx, sigHashes, i, u.Value, u.PkScript, txscript.SigHashAll, w.key, true)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[i].Witness = wit
	}
	// Checked locally too, so that a refusal by btcd is not the first sign of a bad signature.
	for i, u := range utxos {
		vm, err := txscript.NewEngine(u.PkScript, tx, i, txscript.StandardVerifyFlags, nil, sigHashes, u.Value, fetcher)
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Execute(); err != nil {
			t.Fatalf("input %d: %v", i, err)
		}
	}
	return tx
}

func checkUtxo(t *testing.T, u Utxo, pkScript []byte, sats int64) {
	t.Helper()
	if u.Tx == nil || u.Tx.TxHash() != u.OutPoint.Hash {
		t.Fatalf("Utxo.Tx is not the funding transaction %s", u.OutPoint.Hash)
	}
	out := u.Tx.TxOut[u.OutPoint.Index]
	if out.Value != sats || u.Value != sats || string(out.PkScript) != string(pkScript) || string(u.PkScript) != string(pkScript) {
		t.Fatalf("funded output %+v (Utxo value %d), want %d sats to %x", out, u.Value, sats, pkScript)
	}
}

func TestFundAndSpend(t *testing.T) {
	t.Parallel()
	n := Start(t)
	w := newWallet(t, n)

	u1 := n.Fund(t, w.pkScript, 100_000)
	u2 := n.Fund(t, w.pkScript, 250_000)
	checkUtxo(t, u1, w.pkScript, 100_000)
	checkUtxo(t, u2, w.pkScript, 250_000)
	for _, u := range []Utxo{u1, u2} {
		_, conf, err := n.RawTx(t, u.OutPoint.Hash.String())
		if err != nil || conf < 1 {
			t.Fatalf("funding tx %s: %d confirmations, %v", u.OutPoint.Hash, conf, err)
		}
	}

	to := p2pkhScript(t, n)
	tx := w.spend(t, []Utxo{u1, u2}, to, 1_000)
	txid, err := n.SendRaw(t, tx)
	if err != nil {
		t.Fatalf("SendRaw: %v", err)
	}
	if *txid != tx.TxHash() {
		t.Fatalf("btcd's txid %s, want %s", txid, tx.TxHash())
	}
	got, conf, err := n.RawTx(t, txid.String())
	if err != nil || conf != 0 {
		t.Fatalf("in the mempool: %d confirmations, %v", conf, err)
	}
	if got.WitnessHash() != tx.WitnessHash() {
		t.Fatalf("btcd returned another transaction: %s", got.WitnessHash())
	}
	if hs := n.Generate(t, 1); len(hs) != 1 {
		t.Fatalf("Generate(1) returned %d hashes", len(hs))
	}
	got, conf, err = n.RawTx(t, txid.String())
	if err != nil {
		t.Fatal(err)
	}
	if conf < 1 {
		t.Fatalf("%s: %d confirmations after a block", txid, conf)
	}
	if got.TxOut[0].Value != 349_000 || string(got.TxOut[0].PkScript) != string(to) {
		t.Fatalf("confirmed output %+v", got.TxOut[0])
	}
}

func TestDoubleSpendRefused(t *testing.T) {
	t.Parallel()
	n := Start(t)
	w := newWallet(t, n)
	u := n.Fund(t, w.pkScript, 500_000)

	first := w.spend(t, []Utxo{u}, p2pkhScript(t, n), 1_000)
	if _, err := n.SendRaw(t, first); err != nil {
		t.Fatalf("first spend: %v", err)
	}

	// A conflicting spend while the first is in the mempool.
	second := w.spend(t, []Utxo{u}, p2pkhScript(t, n), 2_000)
	_, err := n.SendRaw(t, second)
	var rpcErr *RPCError
	if !errors.As(err, &rpcErr) {
		t.Fatalf("conflicting spend in the mempool: %v, want btcd's refusal", err)
	}
	t.Logf("mempool conflict: %v", err)
	if !strings.Contains(rpcErr.Message, "already spent") {
		t.Fatalf("conflicting spend: btcd said %q, want \"already spent\"", rpcErr.Message)
	}

	// And once the first is confirmed.
	n.Generate(t, 1)
	if _, conf, err := n.RawTx(t, first.TxHash().String()); err != nil || conf < 1 {
		t.Fatalf("first spend: %d confirmations, %v", conf, err)
	}
	third := w.spend(t, []Utxo{u}, p2pkhScript(t, n), 3_000)
	_, err = n.SendRaw(t, third)
	if !errors.As(err, &rpcErr) {
		t.Fatalf("spend of a confirmed-spent output: %v, want btcd's refusal", err)
	}
	t.Logf("spent in the chain: %v", err)
	if !strings.Contains(rpcErr.Message, "orphan transaction") {
		t.Fatalf("spend of a confirmed-spent output: btcd said %q", rpcErr.Message)
	}
	if _, _, err := n.RawTx(t, third.TxHash().String()); err == nil {
		t.Fatalf("the refused transaction is known to btcd")
	}
}

// TestFundMany: Fund keeps working past the first mature coinbases (it spends its change,
// mines when it runs out) and covers amounts beyond one coinbase with several inputs.
func TestFundMany(t *testing.T) {
	t.Parallel()
	n := Start(t)
	w := newWallet(t, n)
	began := time.Now()
	const small = 30
	for i := range small {
		sats := int64(10_000 + i)
		checkUtxo(t, n.Fund(t, w.pkScript, sats), w.pkScript, sats)
	}
	t.Logf("%d Fund calls in %v", small, time.Since(began).Round(time.Millisecond))
	big := int64(175 * btcutil.SatoshiPerBitcoin) // 3.5 coinbases
	u := n.Fund(t, w.pkScript, big)
	checkUtxo(t, u, w.pkScript, big)
	if len(u.Tx.TxIn) < 3 {
		t.Fatalf("%d inputs for %d sats", len(u.Tx.TxIn), big)
	}
	// More than every mature coinbase of Start (those of heights 1 to 200): Fund mines.
	h0 := n.Height(t)
	huge := int64(12_000 * btcutil.SatoshiPerBitcoin)
	checkUtxo(t, n.Fund(t, w.pkScript, huge), w.pkScript, huge)
	checkUtxo(t, n.Fund(t, w.pkScript, 777), w.pkScript, 777)
	t.Logf("%d inputs for the first big Fund; %d blocks mined for the huge one and after; %v in all",
		len(u.Tx.TxIn), n.Height(t)-h0, time.Since(began).Round(time.Millisecond))
}

func TestBinary(t *testing.T) {
	own := os.Getenv("CUSTOS_BTCD")
	t.Setenv("CUSTOS_BTCD", filepath.Join(t.TempDir(), "nope"))
	if _, err := Binary(); err == nil {
		t.Fatal("Binary accepted a missing $CUSTOS_BTCD")
	}
	if own != "" {
		return // the run names its own btcd; .tools/bin may hold none
	}
	t.Setenv("CUSTOS_BTCD", "")
	p, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p, filepath.Join(".tools", "bin", "btcd")) {
		t.Fatalf("Binary() = %s", p)
	}
}
