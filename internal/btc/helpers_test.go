package btc

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

var testParams = &chaincfg.RegressionNetParams

// wallet is a test key: the private side custos never has, and its chain code.
type wallet struct {
	priv *btcec.PrivateKey
	pub  []byte
	cc   []byte
}

// newWallet makes a deterministic key from seed (tests must be reproducible).
func newWallet(seed string) *wallet {
	h := sha256.Sum256([]byte("key " + seed))
	priv, _ := btcec.PrivKeyFromBytes(h[:])
	cc := sha256.Sum256([]byte("chain code " + seed))
	return &wallet{priv: priv, pub: priv.PubKey().SerializeCompressed(), cc: cc[:]}
}

// childPriv derives the private child at path with hdkeychain's private derivation, an
// independent route from the public derivation PlanPSBT uses.
func (w *wallet) childPriv(t testing.TB, path string) *btcec.PrivateKey {
	t.Helper()
	steps, err := ParsePath(path)
	if err != nil {
		t.Fatalf("path %q: %v", path, err)
	}
	k := hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPrivateKeyID[:], w.priv.Serialize(), w.cc, []byte{0, 0, 0, 0}, 0, 0, true)
	for _, s := range steps {
		if k, err = k.Derive(s); err != nil {
			t.Fatalf("derive: %v", err)
		}
	}
	priv, err := k.ECPrivKey()
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// script is the output script of kind for the child at path.
func (w *wallet) script(t testing.TB, path, kind string) []byte {
	t.Helper()
	pub := w.childPriv(t, path).PubKey().SerializeCompressed()
	s := scriptsFor(pub)
	switch kind {
	case KindP2WPKH:
		return s.p2wpkh
	case KindP2SHP2WPKH:
		return s.p2sh
	case KindP2PKH:
		return s.p2pkh
	}
	t.Fatalf("unknown kind %q", kind)
	return nil
}

// testInput is one input of a test PSBT.
type testInput struct {
	path   string
	kind   string // a Kind*, or "script" to spend script as is
	script []byte
	value  int64
}

// built is a test PSBT and what the test knows about it.
type built struct {
	pkt      *psbt.Packet
	specs    []InputSpec
	prevOuts map[wire.OutPoint]*wire.TxOut
	prevTxs  []*wire.MsgTx
}

// raw is the PSBT as btcd's psbt package encodes it.
func (b *built) raw() []byte { return encode(b.pkt) }

func encode(p *psbt.Packet) []byte {
	var buf bytes.Buffer
	if err := p.Serialize(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// build makes a PSBT spending ins (each from its own previous transaction, at output 1)
// and paying outs, with every field a careful creator sets: non_witness_utxo, and for
// segwit inputs witness_utxo, plus SIGHASH_ALL and the redeem script where they apply.
func build(t testing.TB, w *wallet, ins []testInput, outs []*wire.TxOut) *built {
	t.Helper()
	tx := wire.NewMsgTx(2)
	b := &built{prevOuts: map[wire.OutPoint]*wire.TxOut{}}
	for i, in := range ins {
		script := in.script
		if in.kind != "script" {
			script = w.script(t, in.path, in.kind)
		}
		prev := wire.NewMsgTx(1)
		seed := sha256.Sum256([]byte{byte(i), byte(i >> 8), 0x42})
		prev.AddTxIn(wire.NewTxIn(wire.NewOutPoint((*chainhash.Hash)(&seed), 3), nil, nil))
		prev.AddTxOut(wire.NewTxOut(1234, []byte{txscript.OP_TRUE}))
		prev.AddTxOut(wire.NewTxOut(in.value, script))
		op := wire.OutPoint{Hash: prev.TxHash(), Index: 1}
		tx.AddTxIn(wire.NewTxIn(&op, nil, nil))
		b.prevOuts[op] = prev.TxOut[1]
		b.prevTxs = append(b.prevTxs, prev)
		b.specs = append(b.specs, InputSpec{Index: i, DerivationPath: in.path})
	}
	for _, o := range outs {
		tx.AddTxOut(o)
	}
	pkt, err := psbt.NewFromUnsignedTx(tx)
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range ins {
		pi := &pkt.Inputs[i]
		pi.NonWitnessUtxo = b.prevTxs[i]
		if in.kind == KindP2WPKH || in.kind == KindP2SHP2WPKH {
			spent := b.prevTxs[i].TxOut[1]
			pi.WitnessUtxo = wire.NewTxOut(spent.Value, append([]byte(nil), spent.PkScript...))
		}
		pi.SighashType = txscript.SigHashAll
		if in.kind == KindP2SHP2WPKH {
			pi.RedeemScript = scriptsFor(w.childPriv(t, in.path).PubKey().SerializeCompressed()).redeem
		}
	}
	b.pkt = pkt
	return b
}

// txBytes is tx's serialization.
func txBytes(tx *wire.MsgTx) []byte {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// addUnknown adds a raw key-value pair to a map: btcd's encoder writes the pairs it did
// not interpret as they are, which lets a test write pairs its typed fields cannot.
func addUnknown(us *[]*psbt.Unknown, key, value []byte) {
	*us = append(*us, &psbt.Unknown{Key: key, Value: value})
}

// sign signs every planned input with the wallet's private child keys.
func sign(t testing.TB, w *wallet, plan *Plan) []Signature {
	t.Helper()
	sigs := make([]Signature, len(plan.Inputs))
	for i, in := range plan.Inputs {
		priv := w.childPriv(t, in.Path)
		if !bytes.Equal(priv.PubKey().SerializeCompressed(), in.PubKey) {
			t.Fatalf("input %d: plan's public key is not the wallet's child at %q", i, in.Path)
		}
		sigs[i] = sigOf(ecdsa.Sign(priv, in.Sighash))
	}
	return sigs
}

func sigOf(s *ecdsa.Signature) Signature {
	r, sv := s.R(), s.S()
	rb, sb := r.Bytes(), sv.Bytes()
	return Signature{R: rb[:], S: sb[:]}
}

// verifyTx executes every input's script of the signed transaction txHex the way a node
// does, with the previous outputs the test built.
func verifyTx(t testing.TB, txHex string, prevOuts map[wire.OutPoint]*wire.TxOut) *wire.MsgTx {
	t.Helper()
	raw, err := hex.DecodeString(txHex)
	if err != nil {
		t.Fatal(err)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	fetcher := txscript.NewMultiPrevOutFetcher(prevOuts)
	hashes := txscript.NewTxSigHashes(&tx, fetcher)
	for i, in := range tx.TxIn {
		prev := prevOuts[in.PreviousOutPoint]
		vm, err := txscript.NewEngine(prev.PkScript, &tx, i, txscript.StandardVerifyFlags, nil, hashes, prev.Value, fetcher)
		if err != nil {
			t.Fatalf("input %d: engine: %v", i, err)
		}
		if err := vm.Execute(); err != nil {
			t.Fatalf("input %d: script does not verify: %v", i, err)
		}
	}
	return &tx
}

// taprootScript is a P2TR output script for key.
func taprootScript(key *btcec.PublicKey) []byte {
	out := []byte{txscript.OP_1, txscript.OP_DATA_32}
	return append(out, schnorr.SerializePubKey(txscript.ComputeTaprootKeyNoScript(key))...)
}

func le32(v uint32) []byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return b[:]
}

func privKey(b []byte) *btcec.PrivateKey {
	k, _ := btcec.PrivKeyFromBytes(b)
	return k
}
