package keystore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// filesContaining lists the files in dir whose bytes contain any needle.
func filesContaining(t *testing.T, dir string, needles ...[]byte) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var hits []string
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if os.IsNotExist(err) {
			continue // deleted while we scanned
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				hits = append(hits, e.Name())
				break
			}
		}
	}
	return hits
}

// eventuallyAbsent waits for Pebble's asynchronous obsolete-file deletion.
func eventuallyAbsent(t *testing.T, dir string, needles ...[]byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		hits := filesContaining(t, dir, needles...)
		if len(hits) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("old ciphertext still present in %v", hits)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestErasedRecordsLeaveNoCiphertext(t *testing.T) {
	tests := []struct {
		name  string
		gone  []string // raw keys whose current values must vanish from disk
		erase func(s *Store) error
	}{
		{"delete share", []string{"dk/a", "s/a"}, func(s *Store) error { return s.DeleteShare("a") }},
		{"replace share", []string{"dk/a", "s/a"}, func(s *Store) error { return s.PutShare("a", []byte("reshared a")) }},
		{"take pre-parameters", []string{"pp/0000000000000000"}, func(s *Store) error {
			_, _, err := s.TakePreParams()
			return err
		}},
	}
	for _, tc := range tests {
		for _, flushed := range []bool{false, true} {
			where := map[bool]string{false: "in WAL", true: "in sstable"}[flushed]
			t.Run(tc.name+" "+where, func(t *testing.T) {
				dir := t.TempDir()
				s := openTest(t, dir, testKey(1))
				for _, id := range []string{"a", "b"} {
					if err := s.PutShare(id, []byte("share "+id)); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.AddPreParams([]byte("pre-parameters")); err != nil {
					t.Fatal(err)
				}
				if flushed {
					if err := s.db.Flush(); err != nil {
						t.Fatal(err)
					}
				}
				var old [][]byte
				for _, k := range tc.gone {
					v := rawGet(t, s, k)
					if len(filesContaining(t, dir, v)) == 0 {
						t.Fatalf("scan does not find %q before erasure", k)
					}
					old = append(old, v)
				}
				kept := rawGet(t, s, "s/b")
				if err := tc.erase(s); err != nil {
					t.Fatal(err)
				}
				eventuallyAbsent(t, dir, old...)
				if len(filesContaining(t, dir, kept)) == 0 {
					t.Fatal("an unrelated record disappeared from disk")
				}
			})
		}
	}
}

func TestRotateLeavesNoOldWrappedKeys(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	if err := s.PutShare("a", []byte("share a")); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	old := [][]byte{rawGet(t, s, "chk"), rawGet(t, s, "ndk"), rawGet(t, s, "dk/a")}
	if err := s.RotateMasterKey(testKey(2)); err != nil {
		t.Fatal(err)
	}
	eventuallyAbsent(t, dir, old...)
	if got, err := s.GetShare("a"); err != nil || string(got) != "share a" {
		t.Fatalf("GetShare = %q, %v", got, err)
	}
}
