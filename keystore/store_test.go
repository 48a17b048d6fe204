package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	key := testKey(1)
	fixture, err := os.ReadFile("../test/fixtures/preparams/preparams-00.json")
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	shares := map[string][]byte{
		"key_a":                         []byte("share of a"),
		"key_b":                         bytes.Repeat([]byte{0xab}, 4096),
		"k.1:x@y+z~_-":                  {0},
		strings.Repeat("x", MaxNameLen): []byte("longest id"),
	}
	metas := map[string][]byte{
		"identity": []byte("libp2p private key bytes"),
		"empty":    {},
	}
	pre := [][]byte{fixture, []byte("second set"), []byte("third set")}

	s, err := Open(dir, key, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for id, v := range shares {
		if err := s.PutShare(id, v); err != nil {
			t.Fatalf("PutShare(%q): %v", id, err)
		}
	}
	for name, v := range metas {
		if err := s.PutMeta(name, v); err != nil {
			t.Fatalf("PutMeta(%q): %v", name, err)
		}
	}
	var ids []string
	for _, p := range pre {
		id, err := s.AddPreParams(p)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) || ids[0] != "0000000000000000" {
		t.Fatalf("pre-parameter ids %v: want increasing from 0000000000000000", ids)
	}

	check := func(t *testing.T, s *Store) {
		t.Helper()
		for id, want := range shares {
			got, err := s.GetShare(id)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("GetShare(%q) = %q, %v", id, got, err)
			}
			if ok, err := s.HasShare(id); !ok || err != nil {
				t.Fatalf("HasShare(%q) = %v, %v", id, ok, err)
			}
		}
		for name, want := range metas {
			got, err := s.GetMeta(name)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("GetMeta(%q) = %q, %v", name, got, err)
			}
		}
		list, err := s.ListShares()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for id := range shares {
			want = append(want, id)
		}
		slices.Sort(want)
		if !slices.Equal(list, want) {
			t.Fatalf("ListShares = %v, want %v", list, want)
		}
		if n, err := s.CountPreParams(); n != len(pre) || err != nil {
			t.Fatalf("CountPreParams = %d, %v", n, err)
		}
	}
	check(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetShare("key_a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetShare after Close: %v, want ErrClosed", err)
	}

	s2 := openTest(t, dir, key)
	check(t, s2)
	for i, p := range pre {
		id, got, err := s2.TakePreParams()
		if err != nil || id != ids[i] || !bytes.Equal(got, p) {
			t.Fatalf("TakePreParams #%d = %s, %d bytes, %v; want %s", i, id, len(got), err, ids[i])
		}
	}
	// Ids are never reused, even after the pool drained and the store reopened.
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s3 := openTest(t, dir, key)
	id, err := s3.AddPreParams([]byte("fourth"))
	if err != nil || id != "0000000000000003" {
		t.Fatalf("AddPreParams after reopen = %q, %v; want 0000000000000003", id, err)
	}
}

func TestNotFound(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	if _, err := s.GetShare("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetShare: %v", err)
	}
	if ok, err := s.HasShare("nope"); ok || err != nil {
		t.Fatalf("HasShare: %v, %v", ok, err)
	}
	if _, err := s.GetMeta("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta: %v", err)
	}
	if _, _, err := s.TakePreParams(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakePreParams: %v", err)
	}
	if list, err := s.ListShares(); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("ListShares = %#v, %v; want empty non-nil", list, err)
	}
	if err := s.DeleteShare("nope"); err != nil {
		t.Fatalf("DeleteShare of a missing share: %v", err)
	}
	if err := s.DeleteMeta("nope"); err != nil {
		t.Fatalf("DeleteMeta of a missing record: %v", err)
	}
}

func TestOverwrite(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	if err := s.PutShare("k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	oldDK := rawGet(t, s, "dk/k")
	if err := s.PutShare("k", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetShare("k"); err != nil || string(got) != "new" {
		t.Fatalf("GetShare = %q, %v", got, err)
	}
	if bytes.Equal(oldDK, rawGet(t, s, "dk/k")) {
		t.Fatal("PutShare reused the wrapped data key; want a fresh data key per write")
	}
	if err := s.PutMeta("m", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("m", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetMeta("m"); err != nil || string(got) != "2" {
		t.Fatalf("GetMeta = %q, %v", got, err)
	}
	if err := s.DeleteMeta("m"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta("m"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta after DeleteMeta: %v", err)
	}
}

func TestValidation(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	big := make([]byte, MaxValueSize+1)
	tests := []struct {
		name string
		call func() error
	}{
		{"empty key id", func() error { return s.PutShare("", []byte("x")) }},
		{"long key id", func() error { return s.PutShare(strings.Repeat("a", MaxNameLen+1), []byte("x")) }},
		{"slash in key id", func() error { return s.PutShare("a/b", []byte("x")) }},
		{"space in key id", func() error { return s.PutShare("a b", []byte("x")) }},
		{"control byte in key id", func() error { return s.PutShare("a\x00", []byte("x")) }},
		{"non-ASCII key id", func() error { return s.PutShare("clé", []byte("x")) }},
		{"empty share", func() error { return s.PutShare("a", nil) }},
		{"huge share", func() error { return s.PutShare("a", big) }},
		{"get bad id", func() error { _, err := s.GetShare("../x"); return err }},
		{"has bad id", func() error { _, err := s.HasShare(""); return err }},
		{"delete bad id", func() error { return s.DeleteShare("a/b") }},
		{"empty preparams", func() error { _, err := s.AddPreParams(nil); return err }},
		{"huge preparams", func() error { _, err := s.AddPreParams(big); return err }},
		{"empty meta name", func() error { return s.PutMeta("", []byte("x")) }},
		{"bad meta name", func() error { return s.PutMeta("a/b", []byte("x")) }},
		{"huge meta", func() error { return s.PutMeta("a", big) }},
		{"get bad meta", func() error { _, err := s.GetMeta("%"); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.call(), ErrInvalidArgument) })
	}
	if keys := rawKeys(t, s); !slices.Equal(keys, []string{"chk", "ndk"}) {
		t.Fatalf("invalid calls wrote records: %v", keys)
	}
	if err := s.PutShare("max", make([]byte, MaxValueSize)); err != nil {
		t.Fatalf("PutShare of MaxValueSize bytes: %v", err)
	}
}

func TestOpenBadMasterKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		_, err := Open(t.TempDir(), make([]byte, n), Options{Logger: quietLogger()})
		wantErr(t, err, ErrInvalidMasterKey)
	}
}

func TestWrongMasterKey(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	if err := s.PutShare("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testKey(2), Options{Logger: quietLogger()})
	wantErr(t, err, ErrWrongMasterKey)
	if !strings.Contains(err.Error(), "master key does not match this data directory") {
		t.Fatalf("error %q lacks the operator message", err)
	}
	// The failed open released the directory: the right key still opens it.
	s = openTest(t, dir, testKey(1))
	if got, err := s.GetShare("k"); err != nil || string(got) != "v" {
		t.Fatalf("GetShare = %q, %v", got, err)
	}
}

// flip returns a copy of v with byte i (negative: from the end) inverted.
func flip(v []byte, i int) []byte {
	out := bytes.Clone(v)
	if i < 0 {
		i += len(out)
	}
	out[i] ^= 0xff
	return out
}

func TestTamperedRecords(t *testing.T) {
	type check func(t *testing.T, s *Store) error
	getShare := func(t *testing.T, s *Store) error { _, err := s.GetShare("a"); return err }
	getMeta := func(t *testing.T, s *Store) error { _, err := s.GetMeta("identity"); return err }
	take := func(t *testing.T, s *Store) error {
		_, data, err := s.TakePreParams()
		if data != nil {
			t.Errorf("TakePreParams returned %d bytes with error %v", len(data), err)
		}
		if n, cerr := s.CountPreParams(); cerr != nil || n != 0 {
			t.Errorf("corrupt set not removed: count %d, %v", n, cerr)
		}
		return err
	}
	tests := []struct {
		name    string
		key     string
		edit    func([]byte) []byte
		reopen  bool // the damage is seen by Open
		check   check
		wantErr error
	}{
		{"share version byte", "s/a", func(v []byte) []byte { return flip(v, 0) }, false, getShare, ErrCorrupt},
		{"share nonce", "s/a", func(v []byte) []byte { return flip(v, 5) }, false, getShare, ErrCorrupt},
		{"share ciphertext", "s/a", func(v []byte) []byte { return flip(v, 14) }, false, getShare, ErrCorrupt},
		{"share tag", "s/a", func(v []byte) []byte { return flip(v, -1) }, false, getShare, ErrCorrupt},
		{"share truncated", "s/a", func(v []byte) []byte { return v[:len(v)-1] }, false, getShare, ErrCorrupt},
		{"share too short", "s/a", func(v []byte) []byte { return v[:10] }, false, getShare, ErrCorrupt},
		{"share empty", "s/a", func(v []byte) []byte { return []byte{} }, false, getShare, ErrCorrupt},
		{"share extended", "s/a", func(v []byte) []byte { return append(v, 0) }, false, getShare, ErrCorrupt},
		{"data key", "dk/a", func(v []byte) []byte { return flip(v, 20) }, false, getShare, ErrCorrupt},
		{"data key deleted", "dk/a", nil, false, getShare, ErrCorrupt},
		{"meta", "m/identity", func(v []byte) []byte { return flip(v, -3) }, false, getMeta, ErrCorrupt},
		{"preparams", "pp/0000000000000000", func(v []byte) []byte { return flip(v, 30) }, false, take, ErrCorrupt},
		{"node data key", "ndk", func(v []byte) []byte { return flip(v, 15) }, true, nil, ErrCorrupt},
		{"node data key deleted", "ndk", nil, true, nil, ErrCorrupt},
		{"preparams counter", "ppseq", func(v []byte) []byte { return flip(v, -1) }, true, nil, ErrCorrupt},
		{"check record truncated", "chk", func(v []byte) []byte { return v[:5] }, true, nil, ErrCorrupt},
		{"check record deleted", "chk", nil, true, nil, ErrCorrupt},
		// An authentication failure of the check record cannot be told
		// apart from a wrong key; either way nothing is decrypted.
		{"check record tag", "chk", func(v []byte) []byte { return flip(v, -1) }, true, nil, ErrWrongMasterKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := testKey(7)
			s := openTest(t, dir, key)
			if err := s.PutShare("a", []byte("share a")); err != nil {
				t.Fatal(err)
			}
			if err := s.PutMeta("identity", []byte("id")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddPreParams([]byte("preparams")); err != nil {
				t.Fatal(err)
			}
			if tc.edit == nil {
				rawDelete(t, s, tc.key)
			} else {
				rawSet(t, s, tc.key, tc.edit(rawGet(t, s, tc.key)))
			}
			if tc.reopen {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s2, err := Open(dir, key, Options{Logger: quietLogger()})
				if err == nil {
					_ = s2.Close()
				}
				wantErr(t, err, tc.wantErr)
				return
			}
			wantErr(t, tc.check(t, s), tc.wantErr)
		})
	}
}

func TestRecordSwapping(t *testing.T) {
	tests := []struct {
		name   string
		copies [][2]string // {from, to}
		check  func(s *Store) error
	}{
		{"share value under another key id", [][2]string{{"s/a", "s/b"}},
			func(s *Store) error { _, err := s.GetShare("b"); return err }},
		{"data key under another key id", [][2]string{{"dk/a", "dk/b"}},
			func(s *Store) error { _, err := s.GetShare("b"); return err }},
		{"share and data key together", [][2]string{{"dk/a", "dk/b"}, {"s/a", "s/b"}},
			func(s *Store) error { _, err := s.GetShare("b"); return err }},
		{"share moved to a new key id", [][2]string{{"dk/a", "dk/c"}, {"s/a", "s/c"}},
			func(s *Store) error { _, err := s.GetShare("c"); return err }},
		{"meta under another name", [][2]string{{"m/x", "m/y"}},
			func(s *Store) error { _, err := s.GetMeta("y"); return err }},
		{"meta as a share", [][2]string{{"m/x", "s/b"}},
			func(s *Store) error { _, err := s.GetShare("b"); return err }},
		{"node data key as a data key", [][2]string{{"ndk", "dk/b"}},
			func(s *Store) error { _, err := s.GetShare("b"); return err }},
		{"older preparams set replayed", [][2]string{{"pp/0000000000000000", "pp/0000000000000001"}},
			func(s *Store) error {
				if _, _, err := s.TakePreParams(); err != nil {
					return fmt.Errorf("first take should succeed: %v", err)
				}
				_, _, err := s.TakePreParams()
				return err
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), testKey(3))
			for id, v := range map[string]string{"a": "share a", "b": "share b"} {
				if err := s.PutShare(id, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			for name, v := range map[string]string{"x": "meta x", "y": "meta y"} {
				if err := s.PutMeta(name, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range []string{"pp 0", "pp 1"} {
				if _, err := s.AddPreParams([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range tc.copies {
				rawSet(t, s, c[1], rawGet(t, s, c[0]))
			}
			wantErr(t, tc.check(s), ErrCorrupt)
		})
	}
}

func TestDeleteShareCryptoErase(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	for _, id := range []string{"a", "b"} {
		if err := s.PutShare(id, []byte("share "+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteShare("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetShare("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetShare after delete: %v", err)
	}
	if rawHas(t, s, "dk/a") || rawHas(t, s, "s/a") {
		t.Fatal("data key or share still present after DeleteShare")
	}
	if ok, _ := s.HasShare("a"); ok {
		t.Fatal("HasShare true after delete")
	}
	if err := s.DeleteShare("a"); err != nil {
		t.Fatalf("second DeleteShare: %v", err)
	}
	if list, _ := s.ListShares(); !slices.Equal(list, []string{"b"}) {
		t.Fatalf("ListShares = %v", list)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, testKey(1))
	if _, err := s.GetShare("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetShare after reopen: %v", err)
	}
	if got, err := s.GetShare("b"); err != nil || string(got) != "share b" {
		t.Fatalf("GetShare(b) = %q, %v", got, err)
	}
}

func TestRotateMasterKey(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := testKey(1), testKey(2)
	s := openTest(t, dir, oldKey)
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		if err := s.PutShare(id, []byte("share "+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutMeta("identity", []byte("id")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPreParams([]byte("pp")); err != nil {
		t.Fatal(err)
	}
	shareCT := rawGet(t, s, "s/a")
	dkCT := rawGet(t, s, "dk/a")

	wantErr(t, s.RotateMasterKey(testKey(9)[:31]), ErrInvalidMasterKey)
	if err := s.RotateMasterKey(newKey); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shareCT, rawGet(t, s, "s/a")) {
		t.Fatal("rotation rewrote a share ciphertext")
	}
	if bytes.Equal(dkCT, rawGet(t, s, "dk/a")) {
		t.Fatal("rotation did not re-wrap the data key")
	}
	// The open store keeps working, including writes under the new key.
	if err := s.PutShare("d", []byte("share d")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	_, err := Open(dir, oldKey, Options{Logger: quietLogger()})
	wantErr(t, err, ErrWrongMasterKey)

	s = openTest(t, dir, newKey)
	for _, id := range append(ids, "d") {
		if got, err := s.GetShare(id); err != nil || string(got) != "share "+id {
			t.Fatalf("GetShare(%q) = %q, %v", id, got, err)
		}
	}
	if got, err := s.GetMeta("identity"); err != nil || string(got) != "id" {
		t.Fatalf("GetMeta = %q, %v", got, err)
	}
	if _, got, err := s.TakePreParams(); err != nil || string(got) != "pp" {
		t.Fatalf("TakePreParams = %q, %v", got, err)
	}
}

func TestRotateMasterKeyAbortsOnCorruptDataKey(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	for _, id := range []string{"a", "b"} {
		if err := s.PutShare(id, []byte("share "+id)); err != nil {
			t.Fatal(err)
		}
	}
	rawSet(t, s, "dk/b", flip(rawGet(t, s, "dk/b"), -1))
	before := map[string][]byte{"chk": rawGet(t, s, "chk"), "ndk": rawGet(t, s, "ndk"), "dk/a": rawGet(t, s, "dk/a")}
	wantErr(t, s.RotateMasterKey(testKey(2)), ErrCorrupt)
	for k, v := range before {
		if !bytes.Equal(v, rawGet(t, s, k)) {
			t.Fatalf("aborted rotation changed %q", k)
		}
	}
	if got, err := s.GetShare("a"); err != nil || string(got) != "share a" {
		t.Fatalf("GetShare(a) after aborted rotation = %q, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = openTest(t, dir, testKey(1)) // the old key still opens the store
}

func TestPreParamsFIFO(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	const n = 20 // more than 16 so hex ordering matters
	var ids []string
	for i := range n {
		id, err := s.AddPreParams([]byte(fmt.Sprintf("set %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if c, err := s.CountPreParams(); c != n || err != nil {
		t.Fatalf("CountPreParams = %d, %v", c, err)
	}
	for i := range n {
		id, data, err := s.TakePreParams()
		if err != nil || id != ids[i] || string(data) != fmt.Sprintf("set %d", i) {
			t.Fatalf("take %d = %s %q %v; want %s", i, id, data, err, ids[i])
		}
		if c, _ := s.CountPreParams(); c != n-i-1 {
			t.Fatalf("count after %d takes = %d", i+1, c)
		}
	}
	if _, _, err := s.TakePreParams(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("take from empty pool: %v", err)
	}
}

func TestConcurrentTakePreParams(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	const sets, workers = 40, 6
	for i := range sets {
		if _, err := s.AddPreParams([]byte(fmt.Sprintf("set %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id, data, err := s.TakePreParams()
				if errors.Is(err, ErrNotFound) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, dup := seen[id]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("set %s (%q) taken twice, first %q", id, data, prev)
					return
				}
				seen[id] = string(data)
				mu.Unlock()
			}
		}()
	}
	// Writers run alongside so locking between adds, takes and shares is
	// exercised too.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 5 {
			if err := s.PutShare(fmt.Sprintf("k%d", i), []byte("v")); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != sets {
		t.Fatalf("took %d distinct sets, want %d", len(seen), sets)
	}
	data := map[string]bool{}
	for _, d := range seen {
		data[d] = true
	}
	if len(data) != sets {
		t.Fatalf("took %d distinct payloads, want %d", len(data), sets)
	}
}

func TestConcurrentSharesAndRotation(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := fmt.Sprintf("w%d-%d", w, i)
				want := []byte("share " + id)
				if err := s.PutShare(id, want); err != nil {
					errs <- err
					return
				}
				// Overwrites race with reads of the same id: a read must see
				// a consistent data key and share.
				if err := s.PutShare(id, want); err != nil {
					errs <- err
					return
				}
				got, err := s.GetShare(id)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("GetShare(%s) = %q, %v", id, got, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 3 {
			if err := s.RotateMasterKey(testKey(byte(10 + i))); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := s.ListShares()
	if err != nil || len(list) != 40 {
		t.Fatalf("ListShares: %d ids, %v", len(list), err)
	}
	for _, id := range list {
		if _, err := s.GetShare(id); err != nil {
			t.Fatalf("GetShare(%s) after rotations: %v", id, err)
		}
	}
}

func TestOpenRefusesForeignDatabase(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	rawDelete(t, s, "chk")
	rawDelete(t, s, "ndk")
	rawSet(t, s, "x", []byte("unrelated"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testKey(1), Options{Logger: quietLogger()})
	wantErr(t, err, ErrCorrupt)
}

func TestDataDirectoryMode(t *testing.T) {
	dir := t.TempDir() + "/data"
	_ = openTest(t, dir, testKey(1))
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("data directory mode %v, want no group/other access", st.Mode().Perm())
	}
}

func TestPreParamsSequenceExhausted(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testKey(1))
	sealed, err := sealRecord(s.ppAEAD, preParamsKey(^uint64(0)), []byte("last"))
	if err != nil {
		t.Fatal(err)
	}
	rawSet(t, s, "pp/ffffffffffffffff", sealed)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, testKey(1))
	if _, err := s.AddPreParams([]byte("more")); err == nil {
		t.Fatal("AddPreParams wrapped the sequence instead of refusing")
	}
	if id, data, err := s.TakePreParams(); err != nil || id != "ffffffffffffffff" || string(data) != "last" {
		t.Fatalf("TakePreParams = %s %q %v", id, data, err)
	}
}

func TestPruneMeta(t *testing.T) {
	s := openTest(t, t.TempDir(), testKey(1))
	for _, n := range []string{"session-a", "session-b", "session-c", "identity"} {
		if err := s.PutMeta(n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	n, err := s.PruneMeta("session-", func(name string, v []byte) bool {
		seen[name] = string(v)
		return name == "session-b"
	})
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	if len(seen) != 3 || seen["session-a"] != "session-a" {
		t.Fatalf("keep saw %v", seen)
	}
	for name, want := range map[string]bool{"session-a": false, "session-b": true, "session-c": false, "identity": true} {
		_, err := s.GetMeta(name)
		if (err == nil) != want {
			t.Errorf("%s: present %v, want %v", name, err == nil, want)
		}
	}
}
