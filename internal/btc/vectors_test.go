package btc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestForeignVectors parses PSBTs other software wrote (BIP 174's creator vector and
// two small ones), so the codec is not only checked against itself.
func TestForeignVectors(t *testing.T) {
	w := newWallet("vectors")
	cases := []struct {
		name, hex       string
		inputs, outputs int
		refusal         string // PlanPSBT's detail when every input is listed
	}{
		{"bip174 creator", "70736274ff01009a020000000258e87a21b56daf0c23be8e7070456c336f7cbaa5c8757924f545887bb2abdd750000000000ffffffff838d0427d0ec650a68aa46bb0b098aea4422c071b2ca78352a077959d07cea1d0100000000ffffffff0270aaf00800000000160014d85c2b71d0060b09c9886aeb815e50991dda124d00e1f5050000000016001400aea9a2e5f0f876a588df5546e8742d1d87008f000000000000000000", 2, 2, "input 0 has no non_witness_utxo"},
		{"one in one out", "70736274ff0100550200000001eb63366191dbaf74d30c6de8cbb7208de3fb65ad266b41c56990a5a7e6a2eac90000000000ffffffff010017a804000000001976a914c1752bf5bffbd320ab2ab625b32b9fe48337dce488ac00000000000000", 1, 1, "input 0 has no non_witness_utxo"},
		{"empty transaction", "70736274ff01000a0200000000000000000000", -1, -1, "no inputs"},
		{"psbt v2 style, no unsigned tx", "70736274ff0102020000000102020000000104010105010001060100000e207b1eabe0209b1fe794124575ef807057c77ada2138ae4fa8d6c4de0398a14f3f010f0400000000010100160014d85c2b71d0060b09c9886aeb815e50991dda124d0103040100000006210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f8179810d90c6a4f540000800000008001000080000000000700000000030008e80300000000000004160014d85c2b71d0060b09c9886aeb815e50991dda124d06210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f8179810d90c6a4f5400008000000080010000800100000003000000", -1, -1, "version 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := hex.DecodeString(c.hex)
			if err != nil {
				t.Fatal(err)
			}
			p, err := parsePacket(raw)
			if c.inputs >= 0 {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				if len(p.Inputs) != c.inputs || len(p.Outputs) != c.outputs {
					t.Fatalf("%d inputs %d outputs", len(p.Inputs), len(p.Outputs))
				}
				if !bytes.Equal(encode(p), raw) {
					t.Fatal("re-serialized differently")
				}
			}
			var specs []InputSpec
			for i := 0; i < max(c.inputs, 0); i++ {
				specs = append(specs, InputSpec{Index: i})
			}
			_, err = PlanPSBT(raw, testParams, w.pub, w.cc, specs, nil)
			var e *Error
			// A PSBT that parses but whose inputs do not prove what they spend
			// (non_witness_utxo) is not ours to sign: API.md's psbt.input_not_ours.
			want := CodeInvalid
			if strings.Contains(c.refusal, "non_witness_utxo") {
				want = CodeInputNotOurs
			}
			if !errors.As(err, &e) || e.Code != want || !strings.Contains(e.Detail, c.refusal) {
				t.Fatalf("PlanPSBT: %v, want %s saying %q", err, want, c.refusal)
			}
		})
	}
}
