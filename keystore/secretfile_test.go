package keystore

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecretFile(t *testing.T) {
	const content = sampleHex + "\n"
	tests := []struct {
		name    string
		mode    os.FileMode
		max     int
		wantErr error // nil: success
	}{
		{"owner only", 0o600, 1024, nil},
		{"owner read only", 0o400, 1024, nil},
		{"group readable", 0o640, 1024, ErrInsecureKeyFile},
		{"other readable", 0o604, 1024, ErrInsecureKeyFile},
		{"group writable", 0o620, 1024, ErrInsecureKeyFile},
		{"world readable", 0o644, 1024, ErrInsecureKeyFile},
		{"exactly max", 0o600, len(content), nil},
		{"longer than max", 0o600, len(content) - 1, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "admin.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := ReadSecretFile(path, tc.max)
			if tc.wantErr != nil {
				wantErr(t, err, tc.wantErr)
				if strings.Contains(err.Error(), sampleHex[:16]) {
					t.Fatalf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil || string(got) != content {
				t.Fatalf("ReadSecretFile = %q, %v", got, err)
			}
		})
	}
	t.Run("insecure mode message", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "admin.key")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadSecretFile(path, 1024)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("error %v does not tell the operator how to fix it", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := ReadSecretFile(filepath.Join(t.TempDir(), "absent"), 1024)
		wantErr(t, err, fs.ErrNotExist)
	})
	t.Run("directory", func(t *testing.T) {
		_, err := ReadSecretFile(t.TempDir(), 1024)
		wantErr(t, err, ErrInvalidArgument)
	})
}
