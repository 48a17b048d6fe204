package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAndSyncDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, body := range []string{"first, longer", "second"} {
		if err := WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != body {
			t.Fatalf("read %q, %v; want %q", b, err, body)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"file in a missing dir": WriteFile(filepath.Join(dir, "no", "f"), nil, 0o600),
		"missing dir":           SyncDir(filepath.Join(dir, "no")),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
