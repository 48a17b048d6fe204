package keystore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestMasterKeyFromFile(t *testing.T) {
	want, _ := hex.DecodeString(sampleHex)
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr error // nil: success
	}{
		{"hex and newline", sampleHex + "\n", 0o600, nil},
		{"hex without newline", sampleHex, 0o600, nil},
		{"hex and CRLF", sampleHex + "\r\n", 0o600, nil},
		{"upper-case hex", strings.ToUpper(sampleHex) + "\n", 0o400, nil},
		{"group readable", sampleHex + "\n", 0o640, ErrInsecureKeyFile},
		{"other readable", sampleHex + "\n", 0o604, ErrInsecureKeyFile},
		{"group writable", sampleHex + "\n", 0o620, ErrInsecureKeyFile},
		{"world readable", sampleHex + "\n", 0o644, ErrInsecureKeyFile},
		{"empty", "", 0o600, ErrInvalidMasterKey},
		{"too short", sampleHex[:62] + "\n", 0o600, ErrInvalidMasterKey},
		{"too long", sampleHex + "00\n", 0o600, ErrInvalidMasterKey},
		{"much too long", strings.Repeat(sampleHex, 100), 0o600, ErrInvalidMasterKey},
		{"two newlines", sampleHex + "\n\n", 0o600, ErrInvalidMasterKey},
		{"leading space", " " + sampleHex, 0o600, ErrInvalidMasterKey},
		{"not hex", strings.Repeat("zz", 32) + "\n", 0o600, ErrInvalidMasterKey},
		{"raw binary key", string(want), 0o600, ErrInvalidMasterKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := MasterKeyFromFile(path)
			if tc.wantErr != nil {
				wantErr(t, err, tc.wantErr)
				if strings.Contains(err.Error(), sampleHex[:16]) {
					t.Fatalf("error echoes key material: %v", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("MasterKeyFromFile = %x, %v", got, err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := MasterKeyFromFile(filepath.Join(t.TempDir(), "absent"))
		wantErr(t, err, fs.ErrNotExist)
	})
	t.Run("directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := MasterKeyFromFile(dir)
		wantErr(t, err, ErrInvalidMasterKey)
	})
	t.Run("insecure mode message", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "k")
		if err := os.WriteFile(path, []byte(sampleHex), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := MasterKeyFromFile(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("error %v does not tell the operator how to fix it", err)
		}
	})
}

func TestMasterKeyFromHex(t *testing.T) {
	want, _ := hex.DecodeString(sampleHex)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"plain", sampleHex, true},
		{"surrounding white space", "  " + sampleHex + "\n", true},
		{"upper case", strings.ToUpper(sampleHex), true},
		{"empty", "", false},
		{"short", sampleHex[:63], false},
		{"long", sampleHex + "0", false},
		{"not hex", "g" + sampleHex[1:], false},
		{"huge", strings.Repeat("0", 1<<20), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MasterKeyFromHex(tc.in)
			if !tc.ok {
				wantErr(t, err, ErrInvalidMasterKey)
				return
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("MasterKeyFromHex = %x, %v", got, err)
			}
		})
	}
}

func TestMasterKeyFromPassphrase(t *testing.T) {
	pass := []byte("correct horse battery staple")
	salt1 := []byte("custos-salt-0123")
	salt2 := []byte("custos-salt-0124")

	k1, err := MasterKeyFromPassphrase(pass, salt1)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != MasterKeySize {
		t.Fatalf("key is %d bytes", len(k1))
	}
	// Regression vector: Argon2id(t=3, m=64 MiB, p=2) from x/crypto. It
	// changes only if the fixed parameters change, which would lock every
	// passphrase-protected node out of its data.
	if got := hex.EncodeToString(k1); got != "ef73a2ab61e4f1438fe02acd8d90c9e8ec0da1d65e46af68ea40aaa456c162d4" {
		t.Fatalf("derived key %s does not match the pinned vector", got)
	}
	again, err := MasterKeyFromPassphrase(pass, salt1)
	if err != nil || !bytes.Equal(k1, again) {
		t.Fatal("same passphrase and salt gave a different key")
	}
	k2, err := MasterKeyFromPassphrase(pass, salt2)
	if err != nil || bytes.Equal(k1, k2) {
		t.Fatal("a different salt gave the same key")
	}
	k3, err := MasterKeyFromPassphrase([]byte("correct horse battery staplE"), salt1)
	if err != nil || bytes.Equal(k1, k3) {
		t.Fatal("a different passphrase gave the same key")
	}

	bad := []struct {
		name       string
		pass, salt []byte
	}{
		{"short salt", pass, salt1[:MinSaltSize-1]},
		{"no salt", pass, nil},
		{"empty passphrase", nil, salt1},
		{"huge passphrase", make([]byte, MaxPassphraseSize+1), salt1},
		{"huge salt", pass, make([]byte, MaxPassphraseSize+1)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MasterKeyFromPassphrase(tc.pass, tc.salt)
			wantErr(t, err, ErrInvalidMasterKey)
		})
	}
}

func TestWriteNewMasterKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	key, err := WriteNewMasterKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != MasterKeySize || bytes.Equal(key, make([]byte, MasterKeySize)) {
		t.Fatalf("bad key %x", key)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(content) != hex.EncodeToString(key)+"\n" {
		t.Fatal("file does not hold the key as hex and a newline")
	}
	read, err := MasterKeyFromFile(path)
	if err != nil || !bytes.Equal(read, key) {
		t.Fatalf("MasterKeyFromFile = %x, %v", read, err)
	}

	// Never overwrite.
	if _, err := WriteNewMasterKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, content) {
		t.Fatal("existing key file was modified")
	}

	other, err := WriteNewMasterKeyFile(filepath.Join(t.TempDir(), "other.key"))
	if err != nil || bytes.Equal(other, key) {
		t.Fatal("two new master keys are equal")
	}

	// A key from a file opens a store end to end.
	s := openTest(t, t.TempDir(), read)
	if err := s.PutMeta("identity", []byte("x")); err != nil {
		t.Fatal(err)
	}
}
