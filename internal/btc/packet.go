package btc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/wire"
)

// PSBTs are read and written with btcd's psbt package (BIP 174, version 0). This file
// adds what custos needs on top of it: limits, a guard against the parser panicking on
// hostile bytes, and the structural checks the parser does not make.

// Limits on what Plan and Finalize accept.
const (
	// MaxPSBTSize is the largest serialized PSBT accepted, in bytes.
	MaxPSBTSize = 1 << 20
	// MaxInputs is the most inputs a PSBT's transaction may have.
	MaxInputs = 256
	// MaxOutputs is the most outputs a PSBT's transaction may have.
	MaxOutputs = 1000
)

// psbtMagic is BIP 174's "psbt" 0xff.
var psbtMagic = []byte{0x70, 0x73, 0x62, 0x74, 0xff}

// decodePSBT runs btcd's parser on raw and reports how much of raw it did not read. A
// panic in the parser (it indexes into values it has not length-checked, e.g. an empty
// BIP 32 derivation) is turned into an error: on hostile input PlanPSBT must refuse, not
// crash a node inside raft Apply.
func decodePSBT(raw []byte) (p *psbt.Packet, unread int, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, unread, err = nil, 0, fmt.Errorf("malformed psbt (the parser failed: %v)", r)
		}
	}()
	rd := bytes.NewReader(raw)
	p, err = psbt.NewFromRawBytes(rd, false)
	if err != nil {
		return nil, 0, errors.New(describeParseError(err))
	}
	return p, rd.Len(), nil
}

// describeParseError words an error of btcd's parser for a refusal's detail.
func describeParseError(err error) string {
	switch {
	case errors.Is(err, psbt.ErrInvalidMagicBytes):
		return "not a psbt (bad magic bytes)"
	case errors.Is(err, psbt.ErrDuplicateKey):
		return "malformed psbt: duplicate key"
	case errors.Is(err, psbt.ErrInvalidKeyData):
		return "malformed psbt: a field has key data it must not have, or a malformed key or value"
	case errors.Is(err, psbt.ErrInvalidRawTxSigned):
		return "unsigned transaction has a scriptSig or witness"
	case errors.Is(err, psbt.ErrInvalidPsbtFormat):
		return "malformed psbt: not a well-formed BIP 174 version 0 psbt (whose global map begins with the unsigned transaction)"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed psbt: truncated (it, or a value in it, ends early)"
	}
	return "malformed psbt: " + err.Error()
}

// parsePacket parses a serialized PSBT with btcd's psbt package and checks what that
// parser leaves unchecked. Its errors say what is wrong, in words fit for a refusal's
// detail.
func parsePacket(raw []byte) (*psbt.Packet, error) {
	// Size and magic first: the parser must never see more than MaxPSBTSize bytes, and
	// an empty or foreign blob gets a clear message.
	if len(raw) > MaxPSBTSize {
		return nil, fmt.Errorf("psbt is %d bytes, more than %d", len(raw), MaxPSBTSize)
	}
	if !bytes.HasPrefix(raw, psbtMagic) {
		return nil, errors.New("not a psbt (bad magic bytes)")
	}
	p, unread, err := decodePSBT(raw)
	if err != nil {
		return nil, err
	}
	if unread != 0 {
		return nil, fmt.Errorf("%d trailing bytes after the last map", unread)
	}
	tx := p.UnsignedTx
	if tx == nil || len(p.Inputs) != len(tx.TxIn) || len(p.Outputs) != len(tx.TxOut) {
		return nil, errors.New("malformed psbt: maps do not match the transaction")
	}
	if err := checkVersion(p.Unknowns); err != nil {
		return nil, err
	}
	if err := checkUnknownKeys("global map", p.Unknowns); err != nil {
		return nil, err
	}
	for i := range p.Inputs {
		if err := checkUnknownKeys(fmt.Sprintf("input %d map", i), p.Inputs[i].Unknowns); err != nil {
			return nil, err
		}
	}
	for i := range p.Outputs {
		if err := checkUnknownKeys(fmt.Sprintf("output %d map", i), p.Outputs[i].Unknowns); err != nil {
			return nil, err
		}
	}
	switch {
	case len(tx.TxIn) == 0:
		return nil, errors.New("transaction has no inputs")
	case len(tx.TxIn) > MaxInputs:
		return nil, fmt.Errorf("transaction has %d inputs, more than %d", len(tx.TxIn), MaxInputs)
	case len(tx.TxOut) == 0:
		return nil, errors.New("transaction has no outputs")
	case len(tx.TxOut) > MaxOutputs:
		return nil, fmt.Errorf("transaction has %d outputs, more than %d", len(tx.TxOut), MaxOutputs)
	}
	seen := make(map[wire.OutPoint]int, len(tx.TxIn))
	for i, in := range tx.TxIn {
		if j, dup := seen[in.PreviousOutPoint]; dup {
			return nil, fmt.Errorf("inputs %d and %d spend the same outpoint", j, i)
		}
		seen[in.PreviousOutPoint] = i
	}
	// btcd's parser normalizes a few things silently: it ignores trailing bytes inside
	// the unsigned transaction's and the non_witness_utxo's values, drops an explicit
	// sighash type 0 (indistinguishable from none), and truncates key types above 0xff.
	// Each shortens the re-encoding, so a PSBT whose re-encoding is not as long as it is
	// carries something the parser did not keep, and is refused rather than rewritten.
	var buf bytes.Buffer
	if err := p.Serialize(&buf); err != nil {
		return nil, fmt.Errorf("malformed psbt: cannot be re-encoded: %v", err)
	}
	if buf.Len() != len(raw) {
		// btcd writes only the final fields of a finalized input: the likeliest cause.
		for i := range p.Inputs {
			if isFinalized(&p.Inputs[i]) {
				return nil, fmt.Errorf("input %d is already finalized", i)
			}
		}
		return nil, fmt.Errorf("malformed psbt: it re-encodes to %d bytes, not %d (a field with trailing bytes, an explicit sighash type 0, a non-canonical transaction or a key type above 0xff)", buf.Len(), len(raw))
	}
	return p, nil
}

// checkVersion refuses a global version other than 0. btcd's parser keeps
// PSBT_GLOBAL_VERSION (0xfb) as an unknown pair.
func checkVersion(global []*psbt.Unknown) error {
	for _, u := range global {
		if len(u.Key) == 0 || u.Key[0] != byte(psbt.VersionType) {
			continue
		}
		if len(u.Key) != 1 || len(u.Value) != 4 {
			return errors.New("global map: malformed version")
		}
		if v := binary.LittleEndian.Uint32(u.Value); v != 0 {
			return fmt.Errorf("psbt version %d is not supported (only version 0)", v)
		}
	}
	return nil
}

// checkUnknownKeys refuses a key repeated among the pairs btcd's parser did not
// interpret (it refuses repeats of the fields it knows, and of an unknown pair only when
// the value repeats too).
func checkUnknownKeys(where string, us []*psbt.Unknown) error {
	seen := make(map[string]struct{}, len(us))
	for _, u := range us {
		if _, dup := seen[string(u.Key)]; dup {
			return fmt.Errorf("%s: duplicate key %x", where, u.Key)
		}
		seen[string(u.Key)] = struct{}{}
	}
	return nil
}

// isFinalized reports whether a PSBT input carries a final scriptSig or witness.
func isFinalized(in *psbt.PInput) bool {
	return in.FinalScriptSig != nil || in.FinalScriptWitness != nil
}
