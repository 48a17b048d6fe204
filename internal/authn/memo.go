package authn

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Memo remembers the Ed25519 signatures that verified, keyed by everything the
// verification is a function of (the public key, the message and the signature, under
// SHA-256), so that a check made ahead of time on another core need not be made again.
// Ed25519 verification is a pure function of those three inputs, so a hit answers
// exactly what the check would answer: only successes are remembered, and a miss
// verifies. The FSM keeps one per raft batch: its workers verify the batch's signatures
// while Apply works through the entries in order (state.FSM.ApplyBatch), and Apply's
// own checks then find them done. A nil *Memo verifies every time.
//
// It is safe for concurrent use and holds one 32-byte key per signature that verified;
// whoever keeps it bounds how many (the FSM drops it with its batch).
type Memo struct {
	keys *KeyCache // verifies what the memo does not hold

	mu sync.Mutex
	ok map[[sha256.Size]byte]struct{} // guarded by mu
}

// NewMemo returns an empty memo that verifies through keys (nil: without a cache).
func NewMemo(keys *KeyCache) *Memo {
	return &Memo{keys: keys, ok: map[[sha256.Size]byte]struct{}{}}
}

// memoKey is SHA-256 over the length-prefixed public key and message and the signature:
// two different triples never share a key (short of a SHA-256 collision).
func memoKey(pub, msg, sig []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(pub)))
	h.Write(n[:])
	h.Write(pub)
	binary.BigEndian.PutUint64(n[:], uint64(len(msg)))
	h.Write(n[:])
	h.Write(msg)
	h.Write(sig)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// Verify is KeyCache.Verify (crypto/ed25519.Verify's verdicts), answered from the memo
// when this exact triple verified before; a public key of the wrong length fails.
func (m *Memo) Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	if m == nil {
		return (*KeyCache)(nil).Verify(pub, msg, sig)
	}
	k := memoKey(pub, msg, sig)
	m.mu.Lock()
	_, hit := m.ok[k]
	m.mu.Unlock()
	if hit {
		return true
	}
	if !m.keys.Verify(pub, msg, sig) {
		return false
	}
	m.mu.Lock()
	m.ok[k] = struct{}{}
	m.mu.Unlock()
	return true
}

// VerifyNode is the package's VerifyNode through the memo: an Ed25519 identity's
// signature is checked with Verify; any other key type (custos members have Ed25519
// identities) verifies as libp2p verifies it.
func (m *Memo) VerifyNode(peerID, domain string, body, sig []byte) error {
	if len(sig) == 0 || len(sig) > MaxNodeSignature {
		return errNodeSigSize
	}
	pid, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("authn: member peer id: %w", err)
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("authn: member public key: %w", err)
	}
	msg := nodeMessage(domain, body)
	var ok bool
	if pub.Type() == crypto.Ed25519 {
		raw, err := pub.Raw()
		if err != nil {
			return fmt.Errorf("authn: member public key: %w", err)
		}
		ok = len(raw) == ed25519.PublicKeySize && m.Verify(raw, msg, sig)
	} else {
		ok, err = pub.Verify(msg, sig)
		ok = ok && err == nil
	}
	if !ok {
		return errNodeSigInvalid
	}
	return nil
}
