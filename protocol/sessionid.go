package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
)

// Session kinds bound into a SessionID.
const (
	KindKeygenECDSA = "keygen/ecdsa"
	KindKeygenEdDSA = "keygen/eddsa"
	KindSignECDSA   = "sign/ecdsa"
	KindSignEdDSA   = "sign/eddsa"
	// KindReshareECDSA and KindReshareEdDSA: resharing (ReshareSessionID).
	KindReshareECDSA = "reshare/ecdsa"
	KindReshareEdDSA = "reshare/eddsa"
)

// sessionIDTag domain-separates session ids from every other hash in custos.
const sessionIDTag = "custos/protocol/session-id/v1"

// SessionID names one ceremony attempt. It is agreed through raft before any
// party starts and is never reused (tss-lib v2.0.2's own SSID nonce is fixed
// at 0, so without it two signings with the same key and committee would look
// alike).
type SessionID [32]byte

// String returns the id in lower-case hex.
func (s SessionID) String() string { return hex.EncodeToString(s[:]) }

// SessionParams is everything a SessionID binds.
type SessionParams struct {
	// Kind is one of KindKeygenECDSA, KindKeygenEdDSA, KindSignECDSA,
	// KindSignEdDSA (resharing session ids come from ReshareSessionID).
	Kind string
	// KeyID and RequestID name the key and the request in the replicated state.
	KeyID, RequestID string
	// Payload is the digest to sign (ECDSA) or the raw message (EdDSA); empty for keygen.
	Payload []byte
	// Path is the non-hardened BIP32 derivation path (ECDSA signing only).
	Path []uint32
	// Committee are the node ids taking part, in any order (a sorted copy is bound).
	Committee []string
	// Nonce is fresh randomness from the raft leader.
	Nonce [32]byte
}

// NewSessionID hashes p with SHA-256 over an unambiguous encoding: a domain
// tag, then every field length-prefixed (uint32 big endian) in a fixed order,
// the path as a count followed by each step, the committee sorted (a copy; p is
// not modified) as a count followed by each id, and the 32-byte nonce.
func NewSessionID(p SessionParams) SessionID {
	h := sha256.New()
	var n [4]byte
	putBytes := func(b []byte) {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	putUint := func(v uint32) {
		binary.BigEndian.PutUint32(n[:], v)
		h.Write(n[:])
	}
	putBytes([]byte(sessionIDTag))
	putBytes([]byte(p.Kind))
	putBytes([]byte(p.KeyID))
	putBytes([]byte(p.RequestID))
	putBytes(p.Payload)
	putUint(uint32(len(p.Path)))
	for _, step := range p.Path {
		putUint(step)
	}
	committee := slices.Clone(p.Committee)
	slices.Sort(committee)
	putUint(uint32(len(committee)))
	for _, id := range committee {
		putBytes([]byte(id))
	}
	h.Write(p.Nonce[:])
	var out SessionID
	h.Sum(out[:0])
	return out
}
