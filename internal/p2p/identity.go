package p2p

import (
	"crypto/rand"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxIdentitySize bounds the marshalled key accepted by UnmarshalIdentity. A marshalled
// Ed25519 key is 68 bytes (protobuf header and 64-byte seed||public key); the legacy
// 96-byte form is 100.
const maxIdentitySize = 256

// GenerateIdentity creates a fresh Ed25519 libp2p identity from crypto/rand. The node does
// this once, at init, and keeps the result (MarshalIdentity) in its keystore.
func GenerateIdentity() (crypto.PrivKey, error) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate identity: %w", err)
	}
	return sk, nil
}

// MarshalIdentity encodes an Ed25519 identity with crypto.MarshalPrivateKey. The result is
// secret: store it encrypted and never log it.
func MarshalIdentity(sk crypto.PrivKey) ([]byte, error) {
	if err := checkIdentity(sk); err != nil {
		return nil, err
	}
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("p2p: marshal identity: %w", err)
	}
	return b, nil
}

// UnmarshalIdentity decodes a key written by MarshalIdentity. It refuses anything that is
// not an Ed25519 private key, and inputs longer than 256 bytes.
func UnmarshalIdentity(b []byte) (crypto.PrivKey, error) {
	if len(b) == 0 || len(b) > maxIdentitySize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadIdentity, len(b))
	}
	sk, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	if err := checkIdentity(sk); err != nil {
		return nil, err
	}
	return sk, nil
}

// PeerIDOfKey returns the peer id of an identity (derived from its public key).
func PeerIDOfKey(sk crypto.PrivKey) (peer.ID, error) {
	if err := checkIdentity(sk); err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	return id, nil
}

func checkIdentity(sk crypto.PrivKey) error {
	if sk == nil {
		return fmt.Errorf("%w: nil key", ErrBadIdentity)
	}
	if sk.Type() != pb.KeyType_Ed25519 {
		return fmt.Errorf("%w: key type %s, want Ed25519", ErrBadIdentity, sk.Type())
	}
	return nil
}
