package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// fillBackupStore puts two shares, an identity, a session marker and two pre-parameter
// sets into s.
func fillBackupStore(t testing.TB, s *Store) {
	t.Helper()
	for id, v := range map[string]string{"key_b": "share b", "key_a": "share a"} {
		if err := s.PutShare(id, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string][]byte{"identity": []byte("libp2p identity"), "session-abc": []byte("1700000000000"), "empty": {}} {
		if err := s.PutMeta(name, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"pp1", "pp2"} {
		if _, err := s.AddPreParams([]byte(v)); err != nil {
			t.Fatal(err)
		}
	}
}

func exportBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Export(&buf); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

// TestBackupRoundTrip: Export then Import under another master key gives the same
// shares and metadata (plus the import time), fresh data keys and nonces, no
// pre-parameters, and the stream holds no data key.
func TestBackupRoundTrip(t *testing.T) {
	src := openTest(t, filepath.Join(t.TempDir(), "src"), testKey(1))
	fillBackupStore(t, src)
	stream := exportBytes(t, src)
	if !bytes.Equal(stream, exportBytes(t, src)) {
		t.Fatal("Export is not canonical: two exports of one store differ")
	}
	if bytes.Contains(stream, []byte("pp1")) {
		t.Fatal("pre-parameters in the backup")
	}
	if bytes.Contains(stream, rawGet(t, src, "dk/key_a")) || bytes.Contains(stream, rawGet(t, src, "ndk")) {
		t.Fatal("wrapped keys in the backup")
	}

	dst := filepath.Join(t.TempDir(), "restored", "keystore")
	before := time.Now().UnixMilli()
	if err := Import(dst, testKey(2), bytes.NewReader(stream), Options{Logger: quietLogger()}); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if _, err := os.Stat(dst + ".partial-import"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial import directory left behind: %v", err)
	}
	if _, err := Open(dst, testKey(1), Options{Logger: quietLogger()}); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("restored store opens under the old master key: %v", err)
	}
	s := openTest(t, dst, testKey(2))
	ids, err := s.ListShares()
	if err != nil || !slices.Equal(ids, []string{"key_a", "key_b"}) {
		t.Fatalf("shares = %v, %v", ids, err)
	}
	for id, want := range map[string]string{"key_a": "share a", "key_b": "share b"} {
		got, err := s.GetShare(id)
		if err != nil || string(got) != want {
			t.Fatalf("share %s = %q, %v", id, got, err)
		}
		if bytes.Equal(rawGet(t, s, "s/"+id), rawGet(t, src, "s/"+id)) {
			t.Fatalf("share %s was copied sealed, not re-sealed", id)
		}
	}
	for name, want := range map[string]string{"identity": "libp2p identity", "session-abc": "1700000000000", "empty": ""} {
		got, err := s.GetMeta(name)
		if err != nil || string(got) != want {
			t.Fatalf("meta %s = %q, %v", name, got, err)
		}
	}
	at, err := s.GetMeta(ImportedAtMeta)
	if err != nil {
		t.Fatal(err)
	}
	if ms, err := strconv.ParseInt(string(at), 10, 64); err != nil || ms < before || ms > time.Now().UnixMilli() {
		t.Fatalf("imported-at = %q", at)
	}
	if n, err := s.CountPreParams(); err != nil || n != 0 {
		t.Fatalf("pre-parameters restored: %d, %v", n, err)
	}
	if _, err := s.AddPreParams([]byte("new")); err != nil {
		t.Fatal(err)
	}
	// A backup of the restored store imports again (imported-at is replaced, not doubled).
	again := exportBytes(t, s)
	if err := Import(filepath.Join(t.TempDir(), "ks"), testKey(3), bytes.NewReader(again), Options{Logger: quietLogger()}); err != nil {
		t.Fatalf("Import of a restored store's backup: %v", err)
	}
}

// TestBackupEmptyStore: a store with nothing in it round-trips.
func TestBackupEmptyStore(t *testing.T) {
	fs := vfs.NewMem()
	src := openTestFS(t, "src", testKey(1), fs)
	stream := exportBytes(t, src)
	if err := Import("dst", testKey(2), bytes.NewReader(stream), Options{FS: fs, Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
}

// importMem imports stream into a fresh in-memory filesystem and reports what is left
// in it besides "dst"'s parent.
func importMem(stream []byte) (vfs.FS, error) {
	fs := vfs.NewMem()
	return fs, Import("dst", testKey(2), bytes.NewReader(stream), Options{FS: fs, Logger: quietLogger()})
}

// wantNothingCreated checks that a failed import left no directory behind.
func wantNothingCreated(t testing.TB, fs vfs.FS) {
	t.Helper()
	for _, p := range []string{"dst", "dst.partial-import"} {
		if _, err := fs.Stat(p); err == nil {
			t.Fatalf("failed import left %s behind", p)
		}
	}
}

// TestImportTruncated: every strict prefix of a backup is refused, and creates nothing.
func TestImportTruncated(t *testing.T) {
	src := openTestFS(t, "src", testKey(1), vfs.NewMem())
	fillBackupStore(t, src)
	stream := exportBytes(t, src)
	for n := 0; n < len(stream); n++ {
		fs, err := importMem(stream[:n])
		if !errors.Is(err, ErrBadBackup) {
			t.Fatalf("prefix of %d/%d bytes: error %v, want ErrBadBackup", n, len(stream), err)
		}
		wantNothingCreated(t, fs)
	}
	if _, err := importMem(append(slices.Clone(stream), 0)); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// TestImportTampered: flipping any bit is refused (the digest, or stricter checks
// before it).
func TestImportTampered(t *testing.T) {
	src := openTestFS(t, "src", testKey(1), vfs.NewMem())
	fillBackupStore(t, src)
	stream := exportBytes(t, src)
	for i := range stream {
		bad := slices.Clone(stream)
		bad[i] ^= 0x01
		fs, err := importMem(bad)
		if !errors.Is(err, ErrBadBackup) {
			t.Fatalf("bit flipped at byte %d: error %v, want ErrBadBackup", i, err)
		}
		wantNothingCreated(t, fs)
	}
}

// buildStream writes a backup stream by hand (records as given, a correct trailer
// unless count is given).
func buildStream(version byte, recs []record, count *uint64) []byte {
	var b bytes.Buffer
	b.WriteString(backupMagic)
	b.WriteByte(version)
	for _, r := range recs {
		_ = writeRecord(&b, r.typ, r.name, r.value)
	}
	n := uint64(len(recs))
	if count != nil {
		n = *count
	}
	var tr [9]byte
	tr[0] = recEnd
	binary.BigEndian.PutUint64(tr[1:], n)
	b.Write(tr[:])
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

// TestImportStrict: a well-digested stream that breaks a rule is refused.
func TestImportStrict(t *testing.T) {
	share := func(name, v string) record { return record{typ: recShare, name: name, value: []byte(v)} }
	meta := func(name, v string) record { return record{typ: recMeta, name: name, value: []byte(v)} }
	three := uint64(3)
	for name, stream := range map[string][]byte{
		"version 2":          buildStream(2, nil, nil),
		"version 0":          buildStream(0, nil, nil),
		"repeated share":     buildStream(BackupVersion, []record{share("a", "x"), share("a", "y")}, nil),
		"out of order":       buildStream(BackupVersion, []record{share("b", "x"), share("a", "y")}, nil),
		"share after meta":   buildStream(BackupVersion, []record{meta("m", "x"), share("a", "y")}, nil),
		"empty share":        buildStream(BackupVersion, []record{share("a", "")}, nil),
		"wrong count":        buildStream(BackupVersion, []record{share("a", "x")}, &three),
		"bad name":           buildStream(BackupVersion, []record{{typ: recShare, name: "a/b", value: []byte("x")}}, nil),
		"unknown type":       buildStream(BackupVersion, []record{{typ: 'P', name: "a", value: []byte("x")}}, nil),
		"not a backup":       []byte("age-encryption.org/v1\n-> X25519 ...\n"),
		"empty":              nil,
		"magic only":         []byte(backupMagic),
		"valid then garbage": append(buildStream(BackupVersion, []record{share("a", "x")}, nil), 'x'),
	} {
		t.Run(name, func(t *testing.T) {
			fs, err := importMem(stream)
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("error %v, want ErrBadBackup", err)
			}
			wantNothingCreated(t, fs)
		})
	}
	// The hand-built form of a valid stream imports (the test's builder is right).
	if _, err := importMem(buildStream(BackupVersion, []record{share("a", "x"), share("b", "y"), meta("identity", "z")}, nil)); err != nil {
		t.Fatalf("valid hand-built stream: %v", err)
	}
}

// TestImportLimits: a value length past MaxValueSize is refused before anything is
// read into memory for it.
func TestImportLimits(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(backupMagic)
	b.WriteByte(BackupVersion)
	b.Write([]byte{recShare, 0, 1, 'a'})
	var vl [4]byte
	binary.BigEndian.PutUint32(vl[:], MaxValueSize+1)
	b.Write(vl[:])
	if _, err := importMem(b.Bytes()); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("oversized value: %v", err)
	}
}

// TestImportRefusesNonEmptyDir: Import never writes into a directory that holds
// something; an empty one is fine.
func TestImportRefusesNonEmptyDir(t *testing.T) {
	src := openTestFS(t, "src", testKey(1), vfs.NewMem())
	fillBackupStore(t, src)
	stream := exportBytes(t, src)

	base := t.TempDir()
	full := filepath.Join(base, "full")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Import(full, testKey(2), bytes.NewReader(stream), Options{Logger: quietLogger()}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("non-empty dir: %v", err)
	}
	// An existing store is never overwritten.
	existing := filepath.Join(base, "existing")
	s, err := Open(existing, testKey(3), Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if err := Import(existing, testKey(3), bytes.NewReader(stream), Options{Logger: quietLogger()}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("existing store: %v", err)
	}
	empty := filepath.Join(base, "empty")
	if err := os.MkdirAll(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Import(empty, testKey(2), bytes.NewReader(stream), Options{Logger: quietLogger()}); err != nil {
		t.Fatalf("empty dir: %v", err)
	}
	// A leftover partial import is cleared, not mistaken for the target.
	again := filepath.Join(base, "again")
	if err := os.MkdirAll(again+".partial-import", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(again+".partial-import", "junk"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Import(again, testKey(2), bytes.NewReader(stream), Options{Logger: quietLogger()}); err != nil {
		t.Fatalf("after an interrupted import: %v", err)
	}
}

// TestExportRefusesCorruptStore: a record that does not open stops the export.
func TestExportRefusesCorruptStore(t *testing.T) {
	s := openTestFS(t, "src", testKey(1), vfs.NewMem())
	fillBackupStore(t, s)
	rawSet(t, s, "s/key_a", rawGet(t, s, "s/key_b"))
	if err := s.Export(&bytes.Buffer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("export of a swapped share: %v", err)
	}
	s2 := openTestFS(t, "src2", testKey(1), vfs.NewMem())
	rawSet(t, s2, "s/orphan", []byte("x"))
	if err := s2.Export(&bytes.Buffer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("export of a share without data key: %v", err)
	}
}

// TestExportWhileRotating: an export and a master-key rotation may run together; the
// export is whole either way.
func TestExportWhileRotating(t *testing.T) {
	s := openTestFS(t, "src", testKey(1), vfs.NewMem())
	fillBackupStore(t, s)
	done := make(chan error, 1)
	go func() { done <- s.RotateMasterKey(testKey(9)) }()
	stream := exportBytes(t, s)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := importMem(stream); err != nil {
		t.Fatal(err)
	}
}
