package state

import (
	"encoding/binary"
	"sync"
)

// sigMemo is a batch's threshold signatures verified ahead of Apply (ahead.go): a
// Verifier that answers from the memo when it holds the exact arguments of a
// verification that passed, and verifies otherwise. Verification is a pure function of
// its arguments and only passes are kept, so Apply's verdict through the memo is the
// verifier's own, whatever the workers did. It lives for one ApplyBatch.
type sigMemo struct {
	v Verifier

	mu sync.Mutex
	// passed holds the encoded arguments (sigMemoKey) of verifications that passed.
	passed map[string]struct{}
}

func newSigMemo(v Verifier) *sigMemo { return &sigMemo{v: v, passed: map[string]struct{}{}} }

// VerifySignature implements Verifier.
func (m *sigMemo) VerifySignature(curve string, publicKey, chainCode []byte, path []uint32, message []byte, sig *Signature) error {
	k := sigMemoKey(curve, publicKey, chainCode, path, message, sig)
	m.mu.Lock()
	_, ok := m.passed[k]
	m.mu.Unlock()
	if ok {
		return nil
	}
	if err := m.v.VerifySignature(curve, publicKey, chainCode, path, message, sig); err != nil {
		return err
	}
	m.mu.Lock()
	m.passed[k] = struct{}{}
	m.mu.Unlock()
	return nil
}

// sigMemoKey encodes every argument of a verification, each length-prefixed, so that two
// different argument lists never share a key.
func sigMemoKey(curve string, publicKey, chainCode []byte, path []uint32, message []byte, sig *Signature) string {
	b := make([]byte, 0, 64+len(curve)+len(publicKey)+len(chainCode)+4*len(path)+len(message)+len(sig.R)+len(sig.S)+len(sig.DER)+len(sig.Sig))
	field := func(p []byte) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	field([]byte(curve))
	field(publicKey)
	field(chainCode)
	b = binary.AppendUvarint(b, uint64(len(path)))
	for _, i := range path {
		b = binary.BigEndian.AppendUint32(b, i)
	}
	field(message)
	field(sig.R)
	field(sig.S)
	b = binary.AppendVarint(b, int64(sig.RecoveryID))
	field(sig.DER)
	field(sig.Sig)
	return string(b)
}
