package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sizes and limits.
const (
	// MasterKeySize is the length of a master key in bytes (AES-256).
	MasterKeySize = 32
	// MaxValueSize is the largest value PutShare, AddPreParams and PutMeta
	// accept.
	MaxValueSize = 16 << 20
	// MaxNameLen is the longest key id or metadata name, in bytes.
	MaxNameLen = 128

	dataKeySize   = 32
	nonceSize     = 12
	recordVersion = byte(1)
	// recordOverhead is version + nonce + GCM tag.
	recordOverhead = 1 + nonceSize + 16
	// maxRecordSize bounds what openRecord accepts from disk.
	maxRecordSize = MaxValueSize + recordOverhead
)

// Pebble keys and prefixes (see the package documentation).
const (
	keyCheck        = "chk"
	keyNodeDataKey  = "ndk"
	keyPreParamsSeq = "ppseq"
	prefixDataKey   = "dk/"
	prefixShare     = "s/"
	prefixPreParams = "pp/"
	prefixMeta      = "m/"

	// checkPlaintext is what the check record holds, sealed by the master key.
	checkPlaintext = "custos keystore master key check v1"

	hkdfInfoPreParams = "custos/keystore/v1/preparams"
	hkdfInfoMeta      = "custos/keystore/v1/meta"

	preParamsIDLen = 16 // hex digits of a uint64
)

// errAuth marks an AEAD authentication failure inside an ErrCorrupt error, so
// Open can tell a wrong master key from a malformed check record.
var errAuth = errors.New("authentication failed")

// newAEAD returns AES-256-GCM keyed with key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: AES-256 key must be 32 bytes, got %d", ErrInvalidArgument, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("keystore: aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keystore: gcm: %w", err)
	}
	return aead, nil
}

// deriveAEAD derives a per-purpose AES-256-GCM key from the node data key
// with HKDF-SHA256 (no salt; info names the purpose).
func deriveAEAD(nodeDataKey []byte, info string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, nodeDataKey, nil, info, 32)
	if err != nil {
		return nil, fmt.Errorf("keystore: hkdf: %w", err)
	}
	defer clear(k)
	return newAEAD(k)
}

// recordAAD is the associated data of the record stored at dbKey.
func recordAAD(dbKey []byte) []byte {
	aad := make([]byte, 0, 1+len(dbKey))
	aad = append(aad, recordVersion)
	return append(aad, dbKey...)
}

// sealRecord encrypts plaintext for storage at dbKey.
func sealRecord(aead cipher.AEAD, dbKey, plaintext []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, recordOverhead+len(plaintext))
	out[0] = recordVersion
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, fmt.Errorf("keystore: random nonce: %w", err)
	}
	return aead.Seal(out, out[1:1+nonceSize], plaintext, recordAAD(dbKey)), nil
}

// openRecord authenticates and decrypts the value stored at dbKey. Every
// failure wraps ErrCorrupt; an authentication failure also wraps errAuth.
func openRecord(aead cipher.AEAD, dbKey, value []byte) ([]byte, error) {
	switch {
	case len(value) < recordOverhead:
		return nil, fmt.Errorf("%w: record %q: %d bytes is too short", ErrCorrupt, dbKey, len(value))
	case len(value) > maxRecordSize:
		return nil, fmt.Errorf("%w: record %q: %d bytes is too long", ErrCorrupt, dbKey, len(value))
	case value[0] != recordVersion:
		return nil, fmt.Errorf("%w: record %q: unknown format version %d", ErrCorrupt, dbKey, value[0])
	}
	pt, err := aead.Open(nil, value[1:1+nonceSize], value[1+nonceSize:], recordAAD(dbKey))
	if err != nil {
		return nil, fmt.Errorf("%w: record %q: %w", ErrCorrupt, dbKey, errAuth)
	}
	return pt, nil
}

// unwrapDataKey opens a wrapped 32-byte data key stored at dbKey.
func unwrapDataKey(master cipher.AEAD, dbKey, value []byte) ([]byte, error) {
	k, err := openRecord(master, dbKey, value)
	if err != nil {
		return nil, err
	}
	if len(k) != dataKeySize {
		clear(k)
		return nil, fmt.Errorf("%w: record %q: data key is %d bytes", ErrCorrupt, dbKey, len(k))
	}
	return k, nil
}

// nameAllowed reports whether c may appear in a key id or metadata name.
func nameAllowed(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', ':', '@', '+', '~':
		return true
	}
	return false
}

// validateName checks a key id or metadata name (what says which).
func validateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidArgument, what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalidArgument, what, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameAllowed(name[i]) {
			return fmt.Errorf("%w: %s has byte %#x at offset %d; allowed are A-Z a-z 0-9 and -_.:@+~",
				ErrInvalidArgument, what, name[i], i)
		}
	}
	return nil
}

// validateValue checks a value's size.
func validateValue(what string, v []byte, allowEmpty bool) error {
	if len(v) == 0 && !allowEmpty {
		return fmt.Errorf("%w: %s is empty", ErrInvalidArgument, what)
	}
	if len(v) > MaxValueSize {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalidArgument, what, len(v), MaxValueSize)
	}
	return nil
}

func shareKey(keyID string) []byte   { return []byte(prefixShare + keyID) }
func dataKeyKey(keyID string) []byte { return []byte(prefixDataKey + keyID) }
func metaKey(name string) []byte     { return []byte(prefixMeta + name) }

// preParamsID formats a sequence number as a pre-parameter id.
func preParamsID(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return hex.EncodeToString(b[:])
}

func preParamsKey(seq uint64) []byte { return []byte(prefixPreParams + preParamsID(seq)) }

// parsePreParamsKey returns the sequence number of a "pp/<16 hex>" key.
func parsePreParamsKey(k []byte) (uint64, error) {
	if len(k) != len(prefixPreParams)+preParamsIDLen || string(k[:len(prefixPreParams)]) != prefixPreParams {
		return 0, fmt.Errorf("%w: malformed pre-parameter key %q", ErrCorrupt, k)
	}
	id := k[len(prefixPreParams):]
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, fmt.Errorf("%w: malformed pre-parameter key %q", ErrCorrupt, k)
		}
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], id); err != nil {
		return 0, fmt.Errorf("%w: malformed pre-parameter key %q", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// prefixEnd returns the smallest key greater than every key with prefix p
// (p must not end in 0xff, which none of ours do).
func prefixEnd(p string) []byte {
	end := []byte(p)
	end[len(end)-1]++
	return end
}
