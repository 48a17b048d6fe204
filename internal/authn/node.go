package authn

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
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
	return (*Memo)(nil).VerifyNode(peerID, domain, body, sig)
}

var (
	errNodeSigSize    = errors.New("authn: node signature missing or oversized")
	errNodeSigInvalid = errors.New("authn: node signature does not verify")
)
