package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// KeySize is the size of the cluster's webhook key, SecretSize that of a webhook secret.
const (
	KeySize    = 32
	SecretSize = 32
	nonceSize  = 12
	// secretPrefix starts a secret as the API shows it (Standard Webhooks).
	secretPrefix = "whsec_"
	// sealAD binds a sealed secret to its webhook: associated data is sealAD + webhook id.
	sealAD = "custos/webhook-secret/v1\x00"
)

// Keyring seals and opens webhook secrets under the cluster's webhook key (the same on
// every node, from its configuration): the replicated state holds secrets only sealed.
type Keyring struct {
	aead cipher.AEAD
}

// NewKeyring returns the keyring of a 32-byte key (AES-256-GCM).
func NewKeyring(key []byte) (*Keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("webhook: the webhook key must be %d bytes, not %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return &Keyring{aead: aead}, nil
}

func associatedData(webhookID string) []byte { return []byte(sealAD + webhookID) }

// Seal encrypts a webhook's secret: a fresh 12-byte nonce read from rand, followed by the
// AES-256-GCM ciphertext and tag, bound to webhookID (a ciphertext moved to another
// webhook does not open).
func (k *Keyring) Seal(webhookID string, secret []byte, rand io.Reader) ([]byte, error) {
	if rand == nil {
		return nil, errors.New("webhook: Seal needs a source of randomness")
	}
	out := make([]byte, nonceSize, nonceSize+len(secret)+k.aead.Overhead())
	if _, err := io.ReadFull(rand, out); err != nil {
		return nil, fmt.Errorf("webhook: nonce: %w", err)
	}
	return k.aead.Seal(out, out[:nonceSize], secret, associatedData(webhookID)), nil
}

// Open decrypts what Seal returned for the same webhookID.
func (k *Keyring) Open(webhookID string, ct []byte) ([]byte, error) {
	if len(ct) < nonceSize+k.aead.Overhead() {
		return nil, errors.New("webhook: sealed secret too short")
	}
	secret, err := k.aead.Open(nil, ct[:nonceSize], ct[nonceSize:], associatedData(webhookID))
	if err != nil {
		return nil, errors.New("webhook: sealed secret does not open (another webhook key, or another webhook's)")
	}
	return secret, nil
}

// NewSecret returns a new webhook secret: 32 bytes read from rand.
func NewSecret(rand io.Reader) ([]byte, error) {
	if rand == nil {
		return nil, errors.New("webhook: NewSecret needs a source of randomness")
	}
	s := make([]byte, SecretSize)
	if _, err := io.ReadFull(rand, s); err != nil {
		return nil, fmt.Errorf("webhook: secret: %w", err)
	}
	return s, nil
}

// FormatSecret is a secret as the API shows it: "whsec_" + standard base64.
func FormatSecret(secret []byte) string {
	return secretPrefix + base64.StdEncoding.EncodeToString(secret)
}

// ParseSecret is the inverse of FormatSecret (a receiver's side, and tests).
func ParseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New("webhook: a secret starts with " + secretPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(b) == 0 {
		return nil, errors.New("webhook: a secret is whsec_ and standard base64")
	}
	return b, nil
}
