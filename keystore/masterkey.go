package keystore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/argon2"

	"github.com/custos/custos/internal/durable"
)

// Limits of MasterKeyFromPassphrase.
const (
	// MinSaltSize is the shortest salt MasterKeyFromPassphrase accepts.
	MinSaltSize = 16
	// MaxPassphraseSize bounds the passphrase (and the salt) given to
	// Argon2id.
	MaxPassphraseSize = 1024
)

// Argon2id parameters of MasterKeyFromPassphrase. Changing them changes every
// derived key, so they are fixed.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024 // KiB = 64 MiB
	argonThreads = 2
)

const (
	// hexKeyLen is the length of a master key in hex.
	hexKeyLen = 2 * MasterKeySize
	// maxKeyFileSize bounds what MasterKeyFromFile reads.
	maxKeyFileSize = hexKeyLen + 2
)

// MasterKeyFromFile reads a master key file: exactly 64 hex digits, then
// optionally "\n" or "\r\n". It refuses a file whose mode grants any access
// to group or others (ErrInsecureKeyFile) and anything that is not a
// regular file.
func MasterKeyFromFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: master key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keystore: master key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidMasterKey, path)
	}
	if err := checkPrivateMode(path, st); err != nil {
		return nil, err
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keystore: master key file %s: %w", path, err)
	}
	defer clear(buf)
	if len(buf) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is longer than %d hex digits and a newline", ErrInvalidMasterKey, path, hexKeyLen)
	}
	body := bytes.TrimSuffix(buf, []byte("\n"))
	body = bytes.TrimSuffix(body, []byte("\r"))
	key, err := decodeHexKey(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// checkPrivateMode refuses a file whose mode grants any access to group or others.
func checkPrivateMode(path string, st os.FileInfo) error {
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrInsecureKeyFile, path, perm, path)
	}
	return nil
}

// ReadSecretFile reads a small secret file other than the master key (for example the
// shared ADMIN_KEY file) with MasterKeyFromFile's checks: it refuses anything that is not
// a regular file (ErrInvalidArgument), a file whose mode grants any access to group or
// others (ErrInsecureKeyFile; the error says to chmod 600) and a file longer than maxSize
// bytes (ErrInvalidArgument). The checks are made on the opened file, so they apply to
// the bytes read. Errors never echo the content.
func ReadSecretFile(path string, maxSize int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keystore: secret file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidArgument, path)
	}
	if err := checkPrivateMode(path, st); err != nil {
		return nil, err
	}
	buf, err := io.ReadAll(io.LimitReader(f, int64(maxSize)+1))
	if err != nil {
		clear(buf)
		return nil, fmt.Errorf("keystore: secret file %s: %w", path, err)
	}
	if len(buf) > maxSize {
		clear(buf)
		return nil, fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidArgument, path, maxSize)
	}
	return buf, nil
}

// MasterKeyFromHex decodes a master key given as 64 hex digits, for example
// from an environment variable. Surrounding white space is ignored.
func MasterKeyFromHex(s string) ([]byte, error) {
	if len(s) > 4*hexKeyLen {
		return nil, fmt.Errorf("%w: hex master key is %d bytes long, want %d hex digits", ErrInvalidMasterKey, len(s), hexKeyLen)
	}
	return decodeHexKey([]byte(strings.TrimSpace(s)))
}

// decodeHexKey decodes exactly 64 hex digits. Errors never echo the input.
func decodeHexKey(h []byte) ([]byte, error) {
	if len(h) != hexKeyLen {
		return nil, fmt.Errorf("%w: want %d hex digits, got %d characters", ErrInvalidMasterKey, hexKeyLen, len(h))
	}
	key := make([]byte, MasterKeySize)
	if _, err := hex.Decode(key, h); err != nil {
		clear(key)
		return nil, fmt.Errorf("%w: not hexadecimal", ErrInvalidMasterKey)
	}
	return key, nil
}

// MasterKeyFromPassphrase derives a master key with Argon2id (time 3,
// memory 64 MiB, 2 threads, 32-byte output). The salt must be at least
// MinSaltSize random bytes, stored next to the data directory by the
// caller; the same passphrase and salt always give the same key.
func MasterKeyFromPassphrase(passphrase []byte, salt []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w: empty passphrase", ErrInvalidMasterKey)
	}
	if len(passphrase) > MaxPassphraseSize {
		return nil, fmt.Errorf("%w: passphrase is %d bytes, limit %d", ErrInvalidMasterKey, len(passphrase), MaxPassphraseSize)
	}
	if len(salt) < MinSaltSize {
		return nil, fmt.Errorf("%w: salt is %d bytes, need at least %d", ErrInvalidMasterKey, len(salt), MinSaltSize)
	}
	if len(salt) > MaxPassphraseSize {
		return nil, fmt.Errorf("%w: salt is %d bytes, limit %d", ErrInvalidMasterKey, len(salt), MaxPassphraseSize)
	}
	return argon2.IDKey(passphrase, salt, argonTime, argonMemory, argonThreads, MasterKeySize), nil
}

// WriteNewMasterKeyFile creates path (mode 0600, never overwriting an
// existing file) holding a fresh random master key as 64 hex digits and a
// newline, syncs it and its directory, and returns the key.
func WriteNewMasterKeyFile(path string) ([]byte, error) {
	key := make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("keystore: random master key: %w", err)
	}
	if err := writeKeyFile(path, key); err != nil {
		clear(key)
		return nil, err
	}
	return key, nil
}

// writeKeyFile creates path exclusively and writes key as hex; on any error
// after creating the file it removes it.
func writeKeyFile(path string, key []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keystore: create master key file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	out := make([]byte, hexKeyLen+1)
	defer clear(out)
	hex.Encode(out, key)
	out[hexKeyLen] = '\n'
	if _, err := f.Write(out); err != nil {
		return fmt.Errorf("keystore: write master key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keystore: sync master key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keystore: close master key file: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(path)); err != nil && !errors.Is(err, syscall.EINVAL) { // some filesystems cannot sync directories
		return fmt.Errorf("keystore: sync directory of master key file: %w", err)
	}
	return nil
}
