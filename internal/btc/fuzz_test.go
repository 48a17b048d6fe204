package btc

import (
	"testing"

	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/wire"
)

// FuzzPlan: PlanPSBT never panics, and whatever it accepts, honest signatures finalize
// into a transaction whose scripts verify.
func FuzzPlan(f *testing.F) {
	w := newWallet("fuzz")
	paths := []string{"", "m/0/1", "m/2"}
	kinds := []string{KindP2WPKH, KindP2SHP2WPKH, KindP2PKH}
	var ins []testInput
	for i := range paths {
		ins = append(ins, testInput{path: paths[i], kind: kinds[i], value: 30_000})
	}
	b := build(f, w, ins, []*wire.TxOut{payTo(f, w, "m/1/1", KindP2WPKH, 50_000), payTo(f, newWallet("x"), "", KindP2PKH, 30_000)})
	f.Add(b.raw(), uint8(1))
	one := build(f, w, ins[:1], []*wire.TxOut{payTo(f, w, "m/1/1", KindP2WPKH, 20_000)})
	f.Add(one.raw(), uint8(0))
	f.Add([]byte("psbt\xff\x01\x00\x0a\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), uint8(0))

	// Child private keys, derived once (the fuzz body must stay fast).
	privs := map[string][]byte{}
	for _, p := range paths {
		privs[p] = w.childPriv(f, p).Serialize()
	}

	f.Fuzz(func(t *testing.T, raw []byte, changeOut uint8) {
		var specs []InputSpec
		if p, err := parsePacket(raw); err == nil {
			for i := range p.UnsignedTx.TxIn {
				specs = append(specs, InputSpec{Index: i, DerivationPath: paths[i%len(paths)]})
			}
		}
		plan, err := PlanPSBT(raw, testParams, w.pub, w.cc, specs, []ChangeSpec{{Output: int(changeOut), DerivationPath: "m/1/1"}})
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("non-refusal error: %v", err)
			}
			return
		}
		sigs := make([]Signature, len(plan.Inputs))
		for i, in := range plan.Inputs {
			priv := privKey(privs[in.Path])
			sigs[i] = sigOf(ecdsa.Sign(priv, in.Sighash))
		}
		if _, _, _, err := Finalize(raw, plan, sigs); err != nil {
			t.Fatalf("planned psbt does not finalize: %v", err)
		}
	})
}
