//go:build linux

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/cluster"
)

// Curve names of the API.
const (
	curveSecp256k1 = "secp256k1"
	curveEd25519   = "ed25519"
)

// pollInterval is how often a request still pending after the node's wait is polled.
const pollInterval = 20 * time.Millisecond

// clusterSide drives a real cluster through the Go SDK as one user: every call carries
// the user's token and an RFC 9421 signature by the user's key.
type clusterSide struct {
	c     *cluster.Cluster
	u     *cluster.User
	k     int
	ecKey *client.Key
	edKey *client.Key
	ecPub *btcec.PublicKey
	edPub ed25519.PublicKey
}

// newClusterSide creates the benchmark user and one ECDSA and one Ed25519 key of
// threshold k.
func newClusterSide(ctx context.Context, c *cluster.Cluster, k int) (*clusterSide, error) {
	u, err := c.NewUser(ctx, "bench", 4*time.Hour)
	if err != nil {
		return nil, err
	}
	s := &clusterSide{c: c, u: u, k: k}
	if s.ecKey, _, err = s.createKey(ctx, 0, curveSecp256k1); err != nil {
		return nil, fmt.Errorf("cluster ECDSA keygen: %w", err)
	}
	pub, err := hex.DecodeString(s.ecKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ECDSA public key: %w", err)
	}
	if s.ecPub, err = btcec.ParsePubKey(pub); err != nil {
		return nil, fmt.Errorf("ECDSA public key: %w", err)
	}
	if s.edKey, _, err = s.createKey(ctx, 1%c.N(), curveEd25519); err != nil {
		return nil, fmt.Errorf("cluster Ed25519 keygen: %w", err)
	}
	ed, err := hex.DecodeString(s.edKey.PublicKey)
	if err != nil || len(ed) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 public key %q", s.edKey.PublicKey)
	}
	s.edPub = ed25519.PublicKey(ed)
	return s, nil
}

// randomEntry is a uniformly random node to send a request to.
func (s *clusterSide) randomEntry() int { return mrand.IntN(s.c.N()) }

// createKey runs a keygen through node entry and returns the active key and how long
// the call took (until the key is active).
func (s *clusterSide) createKey(ctx context.Context, entry int, curve string) (*client.Key, time.Duration, error) {
	start := time.Now()
	key, req, err := s.u.Clients[entry].CreateKey(ctx, curve, s.k, "bench-"+curve, "")
	if err != nil {
		return nil, 0, err
	}
	if key == nil {
		r, err := s.u.Clients[entry].WaitRequest(ctx, req.RequestID, pollInterval)
		if err != nil {
			return nil, 0, err
		}
		if r.Status != client.StatusActive || r.Key == nil {
			return nil, 0, requestFailure(r)
		}
		key = r.Key
	}
	took := time.Since(start)
	if key.Status != client.StatusActive {
		return nil, 0, fmt.Errorf("key %s is %s", key.KeyID, key.Status)
	}
	return key, took, nil
}

func requestFailure(r *client.Request) error {
	if r.Error != nil {
		return fmt.Errorf("request %s %s: %s: %s", r.RequestID, r.Status, r.Error.Code, r.Error.Detail)
	}
	return fmt.Errorf("request %s ended %s", r.RequestID, r.Status)
}

// sign asks node entry for a signature and waits until it is signed; it returns the
// signature and the time from the call to the signed answer.
func (s *clusterSide) sign(ctx context.Context, entry int, keyID string, msg []byte) (*client.Signature, time.Duration, error) {
	start := time.Now()
	r, err := s.u.Clients[entry].Sign(ctx, keyID, msg, "", "")
	if err != nil {
		return nil, 0, err
	}
	if r.Status != client.StatusSigned {
		if r, err = s.u.Clients[entry].WaitRequest(ctx, r.RequestID, pollInterval); err != nil {
			return nil, 0, err
		}
	}
	took := time.Since(start)
	if r.Status != client.StatusSigned || r.Signature == nil {
		return nil, 0, requestFailure(r)
	}
	return r.Signature, took, nil
}

// signECDSA signs digest through node entry and verifies the signature (not timed).
func (s *clusterSide) signECDSA(ctx context.Context, entry int, digest []byte) (time.Duration, error) {
	sig, took, err := s.sign(ctx, entry, s.ecKey.KeyID, digest)
	if err != nil {
		return 0, err
	}
	der, err := hex.DecodeString(sig.DER)
	if err != nil {
		return 0, fmt.Errorf("signature DER: %w", err)
	}
	parsed, err := btcecdsa.ParseDERSignature(der)
	if err != nil {
		return 0, fmt.Errorf("signature DER: %w", err)
	}
	if !parsed.Verify(digest, s.ecPub) {
		return 0, errors.New("cluster ECDSA signature does not verify")
	}
	return took, nil
}

// signEdDSA signs msg through node entry and verifies the signature (not timed).
func (s *clusterSide) signEdDSA(ctx context.Context, entry int, msg []byte) (time.Duration, error) {
	sig, took, err := s.sign(ctx, entry, s.edKey.KeyID, msg)
	if err != nil {
		return 0, err
	}
	raw, err := hex.DecodeString(sig.Signature)
	if err != nil || !ed25519.Verify(s.edPub, msg, raw) {
		return 0, errors.New("cluster Ed25519 signature does not verify")
	}
	return took, nil
}

// randomDigest returns 32 random bytes below the secp256k1 order (what the API accepts
// as a digest).
func randomDigest() []byte {
	n := btcec.S256().N
	for {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		if new(big.Int).SetBytes(b).Cmp(n) < 0 {
			return b
		}
	}
}

// randomMessage returns n random bytes (the Ed25519 message).
func randomMessage(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
