package btc

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/custos/custos/protocol"
)

func TestParams(t *testing.T) {
	for _, n := range []string{"mainnet", "testnet", "signet", "regtest", "simnet"} {
		if p, err := Params(n); err != nil || p == nil {
			t.Errorf("Params(%q) = %v, %v", n, p, err)
		}
	}
	for _, n := range []string{"", "main", "testnet4", "Mainnet"} {
		if _, err := Params(n); err == nil {
			t.Errorf("Params(%q) accepted", n)
		}
	}
}

// TestDeriveChildMatchesProtocol: the public derivation here, protocol.DeriveECDSA
// (tss-lib's ckd, which the signers use for their share tweaks) and hdkeychain's private
// derivation all agree.
func TestDeriveChildMatchesProtocol(t *testing.T) {
	paths := []string{"m", "m/0", "m/0/7", "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", "m/2147483647", "m/44/0/0/1/5"}
	for k := 0; k < 8; k++ {
		w := newWallet(fmt.Sprint("derive", k))
		for _, path := range paths {
			steps, err := ParsePath(path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DeriveChild(w.pub, w.cc, steps)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			want, _, _, err := protocol.DeriveECDSA(w.pub, w.cc, steps)
			if err != nil {
				t.Fatalf("%s: protocol: %v", path, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("key %d %s: DeriveChild %x, protocol.DeriveECDSA %x", k, path, got, want)
			}
			if priv := w.childPriv(t, path); !bytes.Equal(priv.PubKey().SerializeCompressed(), got) {
				t.Fatalf("key %d %s: hdkeychain private child disagrees", k, path)
			}
		}
	}
}

func TestParsePath(t *testing.T) {
	for _, ok := range []string{"", "m", "m/0", "m/0/7", "m/2147483647"} {
		if _, err := ParsePath(ok); err != nil {
			t.Errorf("ParsePath(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"0/1", "m/", "m//1", "m/01", "m/1'", "m/1h", "m/2147483648", "m/-1", "m/+1", "M/1", "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("ParsePath(%q) accepted", bad)
		}
	}
}

func payTo(t testing.TB, w *wallet, path, kind string, v int64) *wire.TxOut {
	return wire.NewTxOut(v, w.script(t, path, kind))
}

// TestSignRoundTrip plans, signs with the private children, finalizes and runs every
// input's script, for each script kind alone and mixed, at the root and derived paths.
func TestSignRoundTrip(t *testing.T) {
	w := newWallet("round trip")
	other := newWallet("someone else")
	cases := []struct {
		name   string
		ins    []testInput
		change []int // indexes into outs paid to w at "m/1/0"
	}{
		{name: "p2wpkh root", ins: []testInput{{path: "", kind: KindP2WPKH, value: 100_000}}},
		{name: "p2wpkh derived", ins: []testInput{{path: "m/0/7", kind: KindP2WPKH, value: 100_000}}},
		{name: "p2sh-p2wpkh root", ins: []testInput{{path: "m", kind: KindP2SHP2WPKH, value: 100_000}}},
		{name: "p2sh-p2wpkh derived", ins: []testInput{{path: "m/3", kind: KindP2SHP2WPKH, value: 100_000}}},
		{name: "p2pkh root", ins: []testInput{{path: "", kind: KindP2PKH, value: 100_000}}},
		{name: "p2pkh derived", ins: []testInput{{path: "m/0/1/2", kind: KindP2PKH, value: 100_000}}},
		{name: "mix", change: []int{1}, ins: []testInput{
			{path: "m/0/1", kind: KindP2PKH, value: 50_000},
			{path: "", kind: KindP2WPKH, value: 60_000},
			{path: "m/0/2", kind: KindP2SHP2WPKH, value: 70_000},
			{path: "m/0/1", kind: KindP2WPKH, value: 80_000},
			{path: "m/5", kind: KindP2SHP2WPKH, value: 90_000},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var in int64
			for _, i := range c.ins {
				in += i.value
			}
			outs := []*wire.TxOut{
				payTo(t, other, "", KindP2WPKH, in/2),
				payTo(t, w, "m/1/0", KindP2SHP2WPKH, in/4),
				wire.NewTxOut(0, []byte{txscript.OP_RETURN, 0x01, 0x2a}),
			}
			b := build(t, w, c.ins, outs)
			var change []ChangeSpec
			for _, o := range c.change {
				change = append(change, ChangeSpec{Output: o, DerivationPath: "m/1/0"})
			}
			raw := b.raw()
			plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, b.specs, change)
			if err != nil {
				t.Fatalf("PlanPSBT: %v", err)
			}
			// The plan describes the transaction.
			if want := b.pkt.UnsignedTx.TxHash().String(); plan.Txid != want {
				t.Errorf("Txid %s, want %s", plan.Txid, want)
			}
			var out int64
			for _, o := range outs {
				out += o.Value
			}
			if plan.FeeSats != in-out {
				t.Errorf("FeeSats %d, want %d", plan.FeeSats, in-out)
			}
			wantSent := out
			for _, o := range c.change {
				wantSent -= outs[o].Value
			}
			if plan.SentSats != wantSent {
				t.Errorf("SentSats %d, want %d", plan.SentSats, wantSent)
			}
			if len(plan.Outputs) != 3 || plan.Outputs[1].Change != (len(c.change) > 0) || plan.Outputs[0].Change || plan.Outputs[2].Change {
				t.Errorf("outputs' change flags wrong: %+v", plan.Outputs)
			}
			addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(other.pub), testParams)
			if plan.Outputs[0].Address != addr.EncodeAddress() || plan.Outputs[2].Address != "" {
				t.Errorf("addresses %q %q", plan.Outputs[0].Address, plan.Outputs[2].Address)
			}
			for i, pi := range plan.Inputs {
				if pi.Index != i || pi.Kind != c.ins[i].kind || pi.Path != c.ins[i].path || pi.ValueSats != c.ins[i].value || len(pi.Sighash) != 32 {
					t.Errorf("input %d planned as %+v", i, pi)
				}
			}
			// Planning is deterministic.
			again, err := PlanPSBT(raw, testParams, w.pub, w.cc, b.specs, change)
			if err != nil || fmt.Sprint(again) != fmt.Sprint(plan) {
				t.Fatalf("second plan differs: %v", err)
			}

			sigs := sign(t, w, plan)
			psbtOut, txHex, txid, err := Finalize(raw, plan, sigs)
			if err != nil {
				t.Fatalf("Finalize: %v", err)
			}
			tx := verifyTx(t, txHex, b.prevOuts)
			if tx.TxHash().String() != txid {
				t.Errorf("txid %s, transaction's %s", txid, tx.TxHash())
			}
			// The finalized PSBT parses, carries final fields only, and is stable.
			fp, err := parsePacket(psbtOut)
			if err != nil {
				t.Fatalf("finalized psbt: %v", err)
			}
			for i := range fp.Inputs {
				f := &fp.Inputs[i]
				if !isFinalized(f) || f.NonWitnessUtxo == nil || f.SighashType != 0 || f.RedeemScript != nil || len(f.PartialSigs) != 0 {
					t.Errorf("finalized input %d: %+v", i, f)
				}
				if segwit := c.ins[i].kind != KindP2PKH; segwit != (f.WitnessUtxo != nil && f.FinalScriptWitness != nil) {
					t.Errorf("finalized input %d (%s): witness_utxo %v, final witness %x", i, c.ins[i].kind, f.WitnessUtxo, f.FinalScriptWitness)
				}
			}
			if _, err := PlanPSBT(psbtOut, testParams, w.pub, w.cc, b.specs, change); err == nil {
				t.Error("a finalized psbt was planned again")
			}
			out2, txHex2, _, err := Finalize(raw, plan, sigs)
			if err != nil || !bytes.Equal(out2, psbtOut) || txHex2 != txHex {
				t.Error("Finalize is not deterministic")
			}
		})
	}
}

// TestFinalizeHighS: a signature with a high S is replaced by its low-S twin.
func TestFinalizeHighS(t *testing.T) {
	w := newWallet("high s")
	b := build(t, w, []testInput{{path: "m/9", kind: KindP2WPKH, value: 10_000}}, []*wire.TxOut{payTo(t, w, "m/8", KindP2PKH, 9_000)})
	plan, err := PlanPSBT(b.raw(), testParams, w.pub, w.cc, b.specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := ecdsa.Sign(w.childPriv(t, "m/9"), plan.Inputs[0].Sighash)
	r, s := sig.R(), sig.S()
	s.Negate()
	rb, sb := r.Bytes(), s.Bytes()
	_, txHex, _, err := Finalize(b.raw(), plan, []Signature{{R: rb[:], S: sb[:]}})
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	verifyTx(t, txHex, b.prevOuts)
}

func TestFinalizeRefusals(t *testing.T) {
	w := newWallet("finalize refusals")
	ins := []testInput{{path: "m/1", kind: KindP2WPKH, value: 10_000}, {path: "m/2", kind: KindP2PKH, value: 10_000}}
	b := build(t, w, ins, []*wire.TxOut{payTo(t, w, "m/8", KindP2PKH, 19_000)})
	raw := b.raw()
	plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, b.specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, w, plan)
	other := b.build2(t, w)

	wrongKey := append([]Signature(nil), good...)
	wrongKey[1] = sigOf(ecdsa.Sign(w.priv, plan.Inputs[1].Sighash))
	wrongHash := append([]Signature(nil), good...)
	h := sha256.Sum256([]byte("not the sighash"))
	wrongHash[0] = sigOf(ecdsa.Sign(w.childPriv(t, "m/1"), h[:]))
	short := append([]Signature(nil), good...)
	short[0].R = short[0].R[1:]
	zero := append([]Signature(nil), good...)
	zero[0].S = make([]byte, 32)
	tamperedPlan := *plan
	tamperedPlan.Inputs = append([]PlannedInput(nil), plan.Inputs...)
	tamperedPlan.Inputs[0].Sighash = h[:]
	swappedKind := *plan
	swappedKind.Inputs = append([]PlannedInput(nil), plan.Inputs...)
	swappedKind.Inputs[0].Kind = KindP2SHP2WPKH

	cases := []struct {
		name string
		raw  []byte
		plan *Plan
		sigs []Signature
		want string
	}{
		{"signature by another key", raw, plan, wrongKey, "input 1: signature does not verify"},
		{"signature of another hash", raw, plan, wrongHash, "input 0: signature does not verify"},
		{"short r", raw, plan, short, "32 bytes"},
		{"zero s", raw, plan, zero, "out of range"},
		{"too few signatures", raw, plan, good[:1], "1 signatures for 2 inputs"},
		{"nil plan", raw, nil, good, "nil plan"},
		{"plan of another psbt", other, plan, good, "the plan's is"},
		{"tampered sighash", raw, &tamperedPlan, good, "plan's sighash"},
		{"tampered kind", raw, &swappedKind, good, "does not spend the plan's"},
		{"garbage", []byte("garbage"), plan, good, "psbt.invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, txHex, txid, err := Finalize(c.raw, c.plan, c.sigs)
			if err == nil || out != nil || txHex != "" || txid != "" {
				t.Fatalf("Finalize accepted (err %v)", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// build2 is another PSBT from the same wallet (a different transaction).
func (b *built) build2(t *testing.T, w *wallet) []byte {
	nb := build(t, w, []testInput{{path: "m/1", kind: KindP2WPKH, value: 10_000}, {path: "m/2", kind: KindP2PKH, value: 10_000}}, []*wire.TxOut{payTo(t, w, "m/8", KindP2PKH, 18_000)})
	return nb.raw()
}

func TestPlanRefusals(t *testing.T) {
	w := newWallet("refusals")
	other := newWallet("foreign")
	std := []testInput{
		{path: "m/0/1", kind: KindP2WPKH, value: 40_000},
		{path: "m/0/2", kind: KindP2SHP2WPKH, value: 40_000},
		{path: "", kind: KindP2PKH, value: 40_000},
	}
	stdOuts := func() []*wire.TxOut {
		return []*wire.TxOut{payTo(t, other, "", KindP2WPKH, 50_000), payTo(t, w, "m/1/3", KindP2WPKH, 60_000)}
	}
	okChange := []ChangeSpec{{Output: 1, DerivationPath: "m/1/3"}}
	otherTx := func() *wire.MsgTx {
		tx := wire.NewMsgTx(1)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 7}, nil, nil))
		tx.AddTxOut(wire.NewTxOut(40_000, w.script(t, "m/0/1", KindP2WPKH)))
		tx.AddTxOut(wire.NewTxOut(40_000, w.script(t, "m/0/1", KindP2WPKH)))
		return tx
	}

	type mod struct {
		ins    []testInput
		outs   []*wire.TxOut
		edit   func(b *built)
		specs  func(s []InputSpec) []InputSpec
		change []ChangeSpec
		raw    func(b *built) []byte
	}
	cases := []struct {
		name string
		mod  mod
		code string
		want string // in Detail
	}{
		{"garbage", mod{raw: func(*built) []byte { return []byte("definitely not a psbt") }}, CodeInvalid, "magic"},
		{"empty", mod{raw: func(*built) []byte { return nil }}, CodeInvalid, "magic"},
		{"truncated", mod{raw: func(b *built) []byte { r := b.raw(); return r[:len(r)-3] }}, CodeInvalid, ""},
		{"trailing bytes", mod{raw: func(b *built) []byte { return append(b.raw(), 0x00) }}, CodeInvalid, "trailing"},
		{"too large", mod{raw: func(b *built) []byte { return append(b.raw(), make([]byte, MaxPSBTSize)...) }}, CodeInvalid, "more than 1048576"},
		{"psbt version 2", mod{edit: func(b *built) { addUnknown(&b.pkt.Unknowns, []byte{0xfb}, le32(2)) }}, CodeInvalid, "version 2"},
		{"malformed version", mod{edit: func(b *built) { addUnknown(&b.pkt.Unknowns, []byte{0xfb}, []byte{0}) }}, CodeInvalid, "malformed version"},
		{"duplicate key", mod{edit: func(b *built) { addUnknown(&b.pkt.Inputs[0].Unknowns, []byte{0x03}, le32(1)) }}, CodeInvalid, "duplicate key"},
		{"duplicate unknown key", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Inputs[2].Unknowns, []byte{0xfc, 0x01, 'x'}, []byte{1})
			addUnknown(&b.pkt.Inputs[2].Unknowns, []byte{0xfc, 0x01, 'x'}, []byte{2})
		}}, CodeInvalid, "input 2 map: duplicate key fc0178"},
		{"duplicate global key", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Unknowns, []byte{0x42}, []byte{1})
			addUnknown(&b.pkt.Unknowns, []byte{0x42}, []byte{2})
		}}, CodeInvalid, "global map: duplicate key 42"},
		{"duplicate output key", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Outputs[1].Unknowns, []byte{0x42}, []byte{1})
			addUnknown(&b.pkt.Outputs[1].Unknowns, []byte{0x42}, []byte{1})
		}}, CodeInvalid, "duplicate key"},
		{"scriptSig in unsigned tx", mod{edit: func(b *built) { b.pkt.UnsignedTx.TxIn[0].SignatureScript = []byte{1} }}, CodeInvalid, "has a scriptSig"},
		{"same outpoint twice", mod{edit: func(b *built) {
			b.pkt.UnsignedTx.TxIn[1].PreviousOutPoint = b.pkt.UnsignedTx.TxIn[0].PreviousOutPoint
		}}, CodeInvalid, "same outpoint"},
		{"no outputs", mod{outs: []*wire.TxOut{}}, CodeInvalid, "no outputs"},
		{"already finalized", mod{edit: func(b *built) { b.pkt.Inputs[1].FinalScriptSig = []byte{0} }}, CodeInvalid, "already finalized"},
		{"finalized with leftover signing data", mod{edit: func(b *built) {
			b.pkt.Inputs[2].FinalScriptSig = []byte{0}
			addUnknown(&b.pkt.Inputs[2].Unknowns, []byte{0x03}, le32(1))
		}}, CodeInvalid, "input 2 is already finalized"},
		{"already finalized, witness", mod{edit: func(b *built) { b.pkt.Inputs[0].FinalScriptWitness = []byte{0} }}, CodeInvalid, "input 0 is already finalized"},
		{"empty bip32 derivation (parser panic)", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Inputs[0].Unknowns, append([]byte{0x06}, w.pub...), nil)
		}}, CodeInvalid, "parser failed"},
		{"trailing bytes in non_witness_utxo", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Inputs[1].Unknowns, []byte{0x00}, append(txBytes(b.pkt.Inputs[1].NonWitnessUtxo), 0))
			b.pkt.Inputs[1].NonWitnessUtxo = nil
		}}, CodeInvalid, "re-encodes"},
		{"explicit sighash type 0", mod{edit: func(b *built) {
			b.pkt.Inputs[2].SighashType = 0
			addUnknown(&b.pkt.Inputs[2].Unknowns, []byte{0x03}, le32(0))
		}}, CodeInvalid, "re-encodes"},
		{"key type above 0xff", mod{edit: func(b *built) {
			addUnknown(&b.pkt.Outputs[0].Unknowns, []byte{0xfd, 0x00, 0x01, 7}, []byte{1})
		}}, CodeInvalid, "re-encodes"},

		{"unlisted input", mod{specs: func(s []InputSpec) []InputSpec { return s[:2] }}, CodeInvalid, "input 2 is not listed"},
		{"duplicate listing", mod{specs: func(s []InputSpec) []InputSpec { return append(s, s[1]) }}, CodeInvalid, "input 1 is listed more than once"},
		{"listed index out of range", mod{specs: func(s []InputSpec) []InputSpec { return append(s, InputSpec{Index: 3}) }}, CodeInvalid, "input 3 is out of range"},
		{"negative index", mod{specs: func(s []InputSpec) []InputSpec { return append(s, InputSpec{Index: -1}) }}, CodeInvalid, "input -1 is out of range"},
		{"bad input path", mod{specs: func(s []InputSpec) []InputSpec { s[0].DerivationPath = "m/1'"; return s }}, CodeInvalid, "input 0: derivation path"},

		{"missing non_witness_utxo", mod{edit: func(b *built) { b.pkt.Inputs[0].NonWitnessUtxo = nil }}, CodeInputNotOurs, "input 0 has no non_witness_utxo"},
		{"missing non_witness_utxo, p2pkh", mod{edit: func(b *built) { b.pkt.Inputs[2].NonWitnessUtxo = nil }}, CodeInputNotOurs, "input 2 has no non_witness_utxo"},
		{"non_witness_utxo txid mismatch", mod{edit: func(b *built) { b.pkt.Inputs[1].NonWitnessUtxo = otherTx() }}, CodeInputNotOurs, "input 1: non_witness_utxo is transaction"},
		{"non_witness_utxo unparsable", mod{edit: func(b *built) {
			b.pkt.Inputs[1].NonWitnessUtxo = nil
			addUnknown(&b.pkt.Inputs[1].Unknowns, []byte{0x00}, []byte{1, 2, 3})
		}}, CodeInvalid, "malformed psbt"},
		{"non_witness_utxo lacks the output", mod{edit: func(b *built) {
			b.pkt.UnsignedTx.TxIn[0].PreviousOutPoint.Index = 5
		}}, CodeInputNotOurs, "non_witness_utxo has no output 5"},
		{"witness_utxo value mismatch", mod{edit: func(b *built) {
			b.pkt.Inputs[0].WitnessUtxo = wire.NewTxOut(40_001, w.script(t, "m/0/1", KindP2WPKH))
		}}, CodeInputNotOurs, "input 0: witness_utxo does not match"},
		{"witness_utxo script mismatch", mod{edit: func(b *built) {
			b.pkt.Inputs[1].WitnessUtxo = wire.NewTxOut(40_000, w.script(t, "m/0/1", KindP2WPKH))
		}}, CodeInputNotOurs, "input 1: witness_utxo does not match"},
		{"witness_utxo on p2pkh mismatch", mod{edit: func(b *built) {
			b.pkt.Inputs[2].WitnessUtxo = wire.NewTxOut(40_000, w.script(t, "", KindP2WPKH))
		}}, CodeInputNotOurs, "input 2: witness_utxo does not match"},
		{"witness_utxo malformed", mod{edit: func(b *built) {
			b.pkt.Inputs[0].WitnessUtxo = nil
			addUnknown(&b.pkt.Inputs[0].Unknowns, []byte{0x01}, []byte{1})
		}}, CodeInvalid, "malformed psbt"},
		{"sighash NONE", mod{edit: func(b *built) { b.pkt.Inputs[0].SighashType = txscript.SigHashNone }}, CodeInvalid, "not SIGHASH_ALL"},
		{"sighash ALL|ANYONECANPAY", mod{edit: func(b *built) {
			b.pkt.Inputs[2].SighashType = txscript.SigHashAll | txscript.SigHashAnyOneCanPay
		}}, CodeInvalid, "input 2: sighash type 0x81"},
		{"wrong redeem script", mod{edit: func(b *built) { b.pkt.Inputs[1].RedeemScript = []byte{0x51} }}, CodeInvalid, "redeem_script"},
		{"key data on a keyless field", mod{edit: func(b *built) { addUnknown(&b.pkt.Inputs[2].Unknowns, []byte{0x01, 1}, []byte{}) }}, CodeInvalid, "key data"},

		{"foreign p2wpkh input", mod{ins: append(std[:2:2], testInput{path: "", kind: "script", script: other.script(t, "", KindP2WPKH), value: 40_000})}, CodeInputNotOurs, "input 2 spends a script that does not pay"},
		{"input at another path", mod{specs: func(s []InputSpec) []InputSpec { s[0].DerivationPath = "m/0/2"; return s }}, CodeInputNotOurs, "input 0 spends"},
		{"taproot input", mod{ins: append(std[:2:2], testInput{kind: "script", script: taprootScript(w.priv.PubKey()), value: 40_000})}, CodeInputNotOurs, "script type not supported"},
		{"multisig input", mod{ins: append(std[:2:2], testInput{kind: "script", script: multisig(w.pub, other.pub), value: 40_000})}, CodeInputNotOurs, "script type not supported"},
		{"p2wsh input", mod{ins: append(std[:2:2], testInput{kind: "script", script: append([]byte{0, 32}, make([]byte, 32)...), value: 40_000})}, CodeInputNotOurs, "script type not supported"},

		{"change paying a foreign script", mod{change: []ChangeSpec{{Output: 0, DerivationPath: "m/1/3"}}}, CodeChangeMismatch, "change output 0 does not pay"},
		{"change at the wrong path", mod{change: []ChangeSpec{{Output: 1, DerivationPath: "m/1/4"}}}, CodeChangeMismatch, "change output 1 does not pay"},
		{"change index out of range", mod{change: []ChangeSpec{{Output: 2, DerivationPath: "m/1/3"}}}, CodeChangeMismatch, "change output 2 is out of range"},
		{"change index negative", mod{change: []ChangeSpec{{Output: -1, DerivationPath: "m/1/3"}}}, CodeChangeMismatch, "out of range"},
		{"change listed twice", mod{change: append(okChange, okChange...)}, CodeChangeMismatch, "more than once"},
		{"change bad path", mod{change: []ChangeSpec{{Output: 1, DerivationPath: "1/3"}}}, CodeChangeMismatch, "must start with"},

		{"outputs exceed inputs", mod{outs: []*wire.TxOut{payTo(t, other, "", KindP2WPKH, 120_001)}}, CodeInvalid, "exceed inputs"},
		{"negative output", mod{outs: []*wire.TxOut{wire.NewTxOut(-1, []byte{0x51})}}, CodeInvalid, "out of range"},
		{"output above 21M", mod{outs: []*wire.TxOut{wire.NewTxOut(btcutil.MaxSatoshi+1, []byte{0x51})}}, CodeInvalid, "out of range"},
		{"outputs overflow", mod{outs: []*wire.TxOut{wire.NewTxOut(btcutil.MaxSatoshi, []byte{0x51}), wire.NewTxOut(btcutil.MaxSatoshi, []byte{0x51})}}, CodeInvalid, "more than 21 million"},
		{"input above 21M", mod{ins: []testInput{{path: "", kind: KindP2WPKH, value: btcutil.MaxSatoshi + 1}}}, CodeInvalid, "out of range"},
		{"inputs overflow", mod{ins: []testInput{{path: "", kind: KindP2WPKH, value: btcutil.MaxSatoshi}, {path: "m/1", kind: KindP2WPKH, value: btcutil.MaxSatoshi}}}, CodeInvalid, "more than 21 million"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ins, outs := c.mod.ins, c.mod.outs
			if ins == nil {
				ins = std
			}
			if outs == nil {
				outs = stdOuts()
			}
			b := build(t, w, ins, outs)
			if c.mod.edit != nil {
				c.mod.edit(b)
			}
			specs := append([]InputSpec(nil), b.specs...)
			if c.mod.specs != nil {
				specs = c.mod.specs(specs)
			}
			change := c.mod.change
			if change == nil && len(outs) > 1 && c.mod.outs == nil {
				change = okChange
			}
			raw := b.raw()
			if c.mod.raw != nil {
				raw = c.mod.raw(b)
			}
			plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, specs, change)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("PlanPSBT = %+v, %v; want a %s refusal", plan, err, c.code)
			}
			if e.Code != c.code || !strings.Contains(e.Detail, c.want) {
				t.Fatalf("refusal %q, want %s containing %q", e, c.code, c.want)
			}
		})
	}

	// The baseline the cases modify is accepted.
	b := build(t, w, std, stdOuts())
	if _, err := PlanPSBT(b.raw(), testParams, w.pub, w.cc, b.specs, okChange); err != nil {
		t.Fatalf("baseline refused: %v", err)
	}
}

func multisig(a, b []byte) []byte {
	s, _ := txscript.NewScriptBuilder().AddOp(txscript.OP_1).AddData(a).AddData(b).AddOp(txscript.OP_2).AddOp(txscript.OP_CHECKMULTISIG).Script()
	return s
}

func TestPlanLimits(t *testing.T) {
	w := newWallet("limits")
	tooMany := func(nIn, nOut int) []byte {
		tx := wire.NewMsgTx(2)
		for i := 0; i < nIn; i++ {
			tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: uint32(i)}, nil, nil))
		}
		for i := 0; i < nOut; i++ {
			tx.AddTxOut(wire.NewTxOut(1, []byte{0x51}))
		}
		p, err := psbt.NewFromUnsignedTx(tx)
		if err != nil {
			t.Fatal(err)
		}
		return encode(p)
	}
	for _, c := range []struct {
		raw  []byte
		want string
	}{
		{tooMany(MaxInputs+1, 1), "257 inputs, more than 256"},
		{tooMany(1, MaxOutputs+1), "1001 outputs, more than 1000"},
		{tooMany(0, 1), "no inputs"},
	} {
		_, err := PlanPSBT(c.raw, testParams, w.pub, w.cc, nil, nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalid || !strings.Contains(e.Detail, c.want) {
			t.Errorf("got %v, want psbt.invalid saying %q", err, c.want)
		}
	}
	// Bad key material is the caller's error, not a refusal.
	b := build(t, w, []testInput{{path: "", kind: KindP2WPKH, value: 1000}}, []*wire.TxOut{wire.NewTxOut(900, []byte{0x51})})
	for _, k := range []struct{ pub, cc []byte }{{w.pub[:32], w.cc}, {w.pub, w.cc[:31]}, {append([]byte{0x04}, w.pub[1:]...), w.cc}} {
		_, err := PlanPSBT(b.raw(), testParams, k.pub, k.cc, b.specs, nil)
		var e *Error
		if err == nil || errors.As(err, &e) {
			t.Errorf("bad key: %v", err)
		}
	}
	if _, err := PlanPSBT(b.raw(), nil, w.pub, w.cc, b.specs, nil); err == nil {
		t.Error("nil params accepted")
	}
}

// TestMaxInputsSigns: a transaction with the most inputs plans, signs and verifies.
func TestMaxInputsSigns(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	w := newWallet("many")
	kinds := []string{KindP2WPKH, KindP2SHP2WPKH, KindP2PKH}
	var ins []testInput
	for i := 0; i < MaxInputs; i++ {
		ins = append(ins, testInput{path: fmt.Sprintf("m/%d", i%5), kind: kinds[i%3], value: 1000})
	}
	b := build(t, w, ins, []*wire.TxOut{payTo(t, w, "m/0", KindP2WPKH, 200_000)})
	plan, err := PlanPSBT(b.raw(), testParams, w.pub, w.cc, b.specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, txHex, _, err := Finalize(b.raw(), plan, sign(t, w, plan))
	if err != nil {
		t.Fatal(err)
	}
	verifyTx(t, txHex, b.prevOuts)
}

// TestFinalizeKeepsUnknowns: the finalizer keeps UTXOs, proprietary and unknown pairs,
// global and output maps, and drops the signing data, including partial signatures and
// scripts a creator left that custos does not use.
func TestFinalizeKeepsUnknowns(t *testing.T) {
	w := newWallet("unknowns")
	other := newWallet("another signer")
	b := build(t, w, []testInput{{path: "m/4", kind: KindP2SHP2WPKH, value: 10_000}}, []*wire.TxOut{payTo(t, w, "m/8", KindP2PKH, 9_000)})
	prop := []byte{0xfc, 0x03, 'a', 'b', 'c'}
	unknown := []byte{0x42, 1}
	in := &b.pkt.Inputs[0]
	addUnknown(&in.Unknowns, prop, []byte("kept"))
	addUnknown(&in.Unknowns, unknown, []byte("also kept"))
	in.Bip32Derivation = []*psbt.Bip32Derivation{{PubKey: w.pub, MasterKeyFingerprint: 0x04030201}}
	h := sha256.Sum256([]byte("someone's signature"))
	in.PartialSigs = []*psbt.PartialSig{{PubKey: other.pub, Signature: append(ecdsa.Sign(other.priv, h[:]).Serialize(), 1)}}
	in.WitnessScript = []byte{txscript.OP_TRUE}
	addUnknown(&b.pkt.Unknowns, []byte{0xfc, 0x01}, []byte("global"))
	addUnknown(&b.pkt.Outputs[0].Unknowns, []byte{0xfc, 0x09}, []byte("output"))
	raw := b.raw()
	plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, b.specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, txHex, _, err := Finalize(raw, plan, sign(t, w, plan))
	if err != nil {
		t.Fatal(err)
	}
	verifyTx(t, txHex, b.prevOuts)
	p, err := parsePacket(out)
	if err != nil {
		t.Fatal(err)
	}
	f := &p.Inputs[0]
	if f.NonWitnessUtxo == nil || f.WitnessUtxo == nil || f.FinalScriptSig == nil || f.FinalScriptWitness == nil {
		t.Errorf("finalized input lacks a utxo or final field: %+v", f)
	}
	if len(f.Unknowns) != 2 || !bytes.Equal(f.Unknowns[0].Key, prop) || !bytes.Equal(f.Unknowns[1].Key, unknown) || string(f.Unknowns[0].Value) != "kept" {
		t.Errorf("finalized input's unknown pairs: %+v", f.Unknowns)
	}
	if f.SighashType != 0 || f.RedeemScript != nil || f.WitnessScript != nil || len(f.PartialSigs) != 0 || len(f.Bip32Derivation) != 0 {
		t.Errorf("finalized input still has signing data: %+v", f)
	}
	if len(p.Unknowns) != 1 || string(p.Unknowns[0].Value) != "global" || len(p.Outputs[0].Unknowns) != 1 || string(p.Outputs[0].Unknowns[0].Value) != "output" {
		t.Error("global or output pairs lost")
	}
}

// TestFinalizeUnusualButValid: inputs that lack optional fields or carry redundant ones
// finalize: segwit inputs without witness_utxo (the finalizer adds it), P2SH-P2WPKH
// without a redeem script, no sighash type, and a P2PKH input with a matching
// witness_utxo (which the finalizer drops).
func TestFinalizeUnusualButValid(t *testing.T) {
	w := newWallet("unusual")
	ins := []testInput{
		{path: "m/1", kind: KindP2WPKH, value: 10_000},
		{path: "m/2", kind: KindP2SHP2WPKH, value: 10_000},
		{path: "m/3", kind: KindP2PKH, value: 10_000},
	}
	b := build(t, w, ins, []*wire.TxOut{payTo(t, w, "m/8", KindP2WPKH, 29_000)})
	for i := range b.pkt.Inputs {
		in := &b.pkt.Inputs[i]
		in.WitnessUtxo, in.RedeemScript, in.SighashType = nil, nil, 0
	}
	spent := b.pkt.Inputs[2].NonWitnessUtxo.TxOut[1]
	b.pkt.Inputs[2].WitnessUtxo = wire.NewTxOut(spent.Value, spent.PkScript)
	raw := b.raw()
	plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, b.specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, txHex, _, err := Finalize(raw, plan, sign(t, w, plan))
	if err != nil {
		t.Fatal(err)
	}
	verifyTx(t, txHex, b.prevOuts)
	p, err := parsePacket(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.Inputs[0].WitnessUtxo == nil || p.Inputs[1].WitnessUtxo == nil || p.Inputs[2].WitnessUtxo != nil {
		t.Error("witness_utxo fields not as BIP 174's finalizer leaves them")
	}
}
