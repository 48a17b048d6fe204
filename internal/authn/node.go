package authn

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// What nodes sign in their own name. Each kind of statement has its own domain, so that
// a signature made for one can never pass for another.
const (
	// DomainReport is a node's report on a ceremony (share stored, result, failure,
	// reschedule, fail).
	DomainReport = "report"
	// DomainRequest is an entry node vouching that it received a client's request.
	DomainRequest = "request"
)

// MaxNodeSignature bounds a node signature (Ed25519: 64 bytes).
const MaxNodeSignature = 128

func nodeMessage(domain string, body []byte) []byte {
	m := make([]byte, 0, len("custos/node/1\x00")+len(domain)+1+len(body))
	m = append(m, "custos/node/1\x00"...)
	m = append(m, domain...)
	m = append(m, 0)
	return append(m, body...)
}

// SignNode signs body as a statement of kind domain with a node's identity key.
func SignNode(key crypto.PrivKey, domain string, body []byte) ([]byte, error) {
	sig, err := key.Sign(nodeMessage(domain, body))
	if err != nil {
		return nil, fmt.Errorf("authn: sign %s: %w", domain, err)
	}
	return sig, nil
}

// VerifyNode checks that the member whose libp2p peer id is peerID signed body as a
// statement of kind domain. The peer id embeds the member's Ed25519 public key, so the
// replicated member list is all it needs.
func VerifyNode(peerID, domain string, body, sig []byte) error {
	if len(sig) == 0 || len(sig) > MaxNodeSignature {
		return errors.New("authn: node signature missing or oversized")
	}
	pid, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("authn: member peer id: %w", err)
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("authn: member public key: %w", err)
	}
	ok, err := pub.Verify(nodeMessage(domain, body), sig)
	if err != nil || !ok {
		return errors.New("authn: node signature does not verify")
	}
	return nil
}
