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

func TestDeleteShareLeavesNoCiphertext(t *testing.T) {
	for _, flushed := range []bool{false, true} {
		name := map[bool]string{false: "in WAL", true: "in sstable"}[flushed]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, testKey(1))
			for _, id := range []string{"a", "b"} {
				if err := s.PutShare(id, []byte("share "+id)); err != nil {
					t.Fatal(err)
				}
			}
			if flushed {
				if err := s.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			dkA, sA, sB := rawGet(t, s, "dk/a"), rawGet(t, s, "s/a"), rawGet(t, s, "s/b")
			if len(filesContaining(t, dir, dkA)) == 0 || len(filesContaining(t, dir, sA)) == 0 {
				t.Fatal("scan does not find the stored ciphertext before deletion")
			}
			if err := s.DeleteShare("a"); err != nil {
				t.Fatal(err)
			}
			eventuallyAbsent(t, dir, dkA, sA)
			if len(filesContaining(t, dir, sB)) == 0 {
				t.Fatal("the other share's ciphertext disappeared from disk")
			}
		})
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
