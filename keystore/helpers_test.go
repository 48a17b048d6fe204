package keystore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// testKey returns a deterministic 32-byte master key.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, MasterKeySize) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTest opens a store in dir (real disk) and closes it at test end.
func openTest(t testing.TB, dir string, key []byte) *Store {
	t.Helper()
	return openTestFS(t, dir, key, nil)
}

func openTestFS(t testing.TB, dir string, key []byte, fs vfs.FS) *Store {
	t.Helper()
	s, err := Open(dir, key, Options{FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawGet reads the stored (encrypted) bytes at key, bypassing the store.
func rawGet(t testing.TB, s *Store, key string) []byte {
	t.Helper()
	v, err := getRaw(s.db, []byte(key))
	if err != nil {
		t.Fatalf("raw get %q: %v", key, err)
	}
	return v
}

// rawHas reports whether key is present in the database.
func rawHas(t testing.TB, s *Store, key string) bool {
	t.Helper()
	ok, err := exists(s.db, []byte(key))
	if err != nil {
		t.Fatalf("raw exists %q: %v", key, err)
	}
	return ok
}

// rawSet writes bytes at key directly, bypassing encryption.
func rawSet(t testing.TB, s *Store, key string, value []byte) {
	t.Helper()
	if err := s.db.Set([]byte(key), value, pebble.Sync); err != nil {
		t.Fatalf("raw set %q: %v", key, err)
	}
}

// rawDelete deletes key directly.
func rawDelete(t testing.TB, s *Store, key string) {
	t.Helper()
	if err := s.db.Delete([]byte(key), pebble.Sync); err != nil {
		t.Fatalf("raw delete %q: %v", key, err)
	}
}

// rawKeys lists every key in the database.
func rawKeys(t testing.TB, s *Store) []string {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var keys []string
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, string(it.Key()))
	}
	return keys
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
}
