package statedb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
)

func testOptions() Options { return Options{Logger: slog.New(slog.DiscardHandler)} }

// openTest opens a DB in dir (a fresh temp dir when empty) closed at cleanup.
func openTest(t testing.TB, dir string) *DB {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	d, err := Open(dir, testOptions())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func k(table string, n uint64) []byte { return AppendUint64(AppendTable(nil, table), n) }

// commitAll writes kv in one batch committed at index.
func commitAll(t testing.TB, d *DB, index uint64, kv map[string]string) {
	t.Helper()
	b, err := d.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range kv {
		if err := b.Set([]byte(key), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(index, int64(index)*10); err != nil {
		t.Fatalf("Commit(%d): %v", index, err)
	}
}

func mustGet(t testing.TB, get func([]byte) ([]byte, error), key []byte) string {
	t.Helper()
	v, err := get(key)
	if errors.Is(err, ErrNotFound) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestBatchReadYourWritesAndAtomicity(t *testing.T) {
	d := openTest(t, "")
	commitAll(t, d, 1, map[string]string{"t/a": "1", "t/b": "2", "t/c": "3"})

	b, err := d.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		op   func() error
	}{
		{"set new", func() error { return b.Set([]byte("t/d"), []byte("4")) }},
		{"overwrite", func() error { return b.Set([]byte("t/a"), []byte("10")) }},
		{"delete", func() error { return b.Delete([]byte("t/b")) }},
		{"delete range", func() error { return b.DeleteRange([]byte("t/c"), []byte("t/d")) }},
	}
	for _, s := range steps {
		if err := s.op(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	want := map[string]string{"t/a": "10", "t/b": "<absent>", "t/c": "<absent>", "t/d": "4"}
	before := map[string]string{"t/a": "1", "t/b": "2", "t/c": "3", "t/d": "<absent>"}
	for key := range want {
		if got := mustGet(t, b.Get, []byte(key)); got != want[key] {
			t.Errorf("batch Get(%s) = %s, want %s", key, got, want[key])
		}
		// Not visible outside the batch before Commit.
		if got := mustGet(t, d.Get, []byte(key)); got != before[key] {
			t.Errorf("db Get(%s) before commit = %s, want %s", key, got, before[key])
		}
	}
	var seen []string
	if err := b.ScanPrefix([]byte("t/"), func(k, v []byte) error {
		seen = append(seen, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[t/a=10 t/d=4]" {
		t.Errorf("batch scan = %v", seen)
	}
	if err := b.Commit(2, 20); err != nil {
		t.Fatal(err)
	}
	for key := range want {
		if got := mustGet(t, d.Get, []byte(key)); got != want[key] {
			t.Errorf("db Get(%s) after commit = %s, want %s", key, got, want[key])
		}
	}
	if err := b.Set([]byte("t/x"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Commit = %v, want ErrClosed", err)
	}
}

// TestBatchGetSeesEachWrite reads between the writes of one batch: Get keeps one
// iterator per batch and refreshes it before each read, and must see every write made
// since (a range deletion too, which Pebble handles apart), over committed keys that sit
// in the bottom level (whose Bloom filters Get reads) as well as in the memtable.
func TestBatchGetSeesEachWrite(t *testing.T) {
	for _, bottom := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed_in_L6=%v", bottom), func(t *testing.T) {
			d := openTest(t, "")
			commitAll(t, d, 1, map[string]string{"t/a": "1", "t/ab": "2", "t/c": "3", "t/e": "5"})
			if bottom {
				g := d.cur
				if err := g.db.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := g.db.Compact(context.Background(), []byte("t/"), []byte("t0"), false); err != nil {
					t.Fatal(err)
				}
				if m := g.db.Metrics(); m.Levels[6].TablesCount == 0 {
					t.Fatalf("no table in L6 after a manual compaction: %v", m)
				}
			}
			b, err := d.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			steps := []struct {
				name string
				op   func() error
				want map[string]string // after op
			}{
				{"nothing written", nil, map[string]string{"t/a": "1", "t/ab": "2", "t/b": "<absent>", "t/aa": "<absent>", "t/": "<absent>"}},
				{"set new", func() error { return b.Set([]byte("t/b"), []byte("4")) }, map[string]string{"t/b": "4", "t/a": "1"}},
				{"overwrite", func() error { return b.Set([]byte("t/a"), []byte("10")) }, map[string]string{"t/a": "10", "t/ab": "2"}},
				{"delete", func() error { return b.Delete([]byte("t/ab")) }, map[string]string{"t/ab": "<absent>", "t/a": "10"}},
				{"delete range", func() error { return b.DeleteRange([]byte("t/b"), []byte("t/d")) }, map[string]string{"t/b": "<absent>", "t/c": "<absent>", "t/e": "5"}},
				{"set inside the deleted range", func() error { return b.Set([]byte("t/c"), []byte("6")) }, map[string]string{"t/c": "6", "t/b": "<absent>"}},
				{"second delete range", func() error { return b.DeleteRange([]byte("t/e"), []byte("t/f")) }, map[string]string{"t/e": "<absent>", "t/c": "6"}},
			}
			for _, s := range steps {
				if s.op != nil {
					if err := s.op(); err != nil {
						t.Fatalf("%s: %v", s.name, err)
					}
				}
				for key, want := range s.want {
					if got := mustGet(t, b.Get, []byte(key)); got != want {
						t.Errorf("after %s: Get(%s) = %s, want %s", s.name, key, got, want)
					}
				}
			}
			if err := b.Commit(2, 20); err != nil {
				t.Fatal(err)
			}
			for key, want := range map[string]string{"t/a": "10", "t/ab": "<absent>", "t/b": "<absent>", "t/c": "6", "t/e": "<absent>"} {
				if got := mustGet(t, d.Get, []byte(key)); got != want {
					t.Errorf("after commit: Get(%s) = %s, want %s", key, got, want)
				}
			}
		})
	}
}

func TestUncommittedBatchLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	d := openTest(t, dir)
	commitAll(t, d, 5, map[string]string{"t/a": "1"})
	b, err := d.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := b.Set(k("t", uint64(i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete([]byte("t/a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openTest(t, dir)
	v, err := d.View()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var keys []string
	_ = v.Scan(nil, nil, func(k, _ []byte) error { keys = append(keys, fmt.Sprintf("%q", k)); return nil })
	if fmt.Sprint(keys) != `["\x00applied" "t/a"]` {
		t.Errorf("after an uncommitted batch the keys are %v", keys)
	}
	if idx, _, _ := d.AppliedIndex(); idx != 5 {
		t.Errorf("applied index %d, want 5", idx)
	}
}

func TestAppliedIndexAfterReopen(t *testing.T) {
	dir := t.TempDir()
	d := openTest(t, dir)
	if idx, stamp, err := d.AppliedIndex(); idx != 0 || stamp != 0 || err != nil {
		t.Fatalf("fresh AppliedIndex = %d, %d, %v", idx, stamp, err)
	}
	// Several raft entries in one batch (BatchingFSM): the last index counts.
	b, _ := d.NewBatch()
	for i := uint64(1); i <= 7; i++ {
		_ = b.Set(k("t", i), []byte("v"))
	}
	if err := b.Commit(7, -1234); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openTest(t, dir)
	idx, stamp, err := d.AppliedIndex()
	if idx != 7 || stamp != -1234 || err != nil {
		t.Fatalf("AppliedIndex after reopen = %d, %d, %v; want 7, -1234", idx, stamp, err)
	}
	for _, bad := range []uint64{0, 6, 7} {
		b, _ := d.NewBatch()
		if err := b.Commit(bad, 0); !errors.Is(err, ErrIndexNotIncreasing) {
			t.Errorf("Commit(%d) after 7 = %v, want ErrIndexNotIncreasing", bad, err)
		}
	}
	commitAll(t, d, 8, nil)
	if idx, _, _ := d.AppliedIndex(); idx != 8 {
		t.Errorf("applied %d, want 8", idx)
	}
}

func TestReservedKeysRefused(t *testing.T) {
	d := openTest(t, "")
	b, _ := d.NewBatch()
	defer b.Close()
	tests := []struct {
		name string
		op   func() error
	}{
		{"set applied", func() error { return b.Set(appliedKey, []byte("x")) }},
		{"set empty", func() error { return b.Set(nil, []byte("x")) }},
		{"delete applied", func() error { return b.Delete(appliedKey) }},
		{"delete range from start", func() error { return b.DeleteRange(nil, []byte("z")) }},
	}
	for _, tt := range tests {
		if err := tt.op(); !errors.Is(err, ErrReservedKey) {
			t.Errorf("%s: %v, want ErrReservedKey", tt.name, err)
		}
	}
	for _, r := range [][2][]byte{{[]byte("t/a"), nil}, {[]byte("t/b"), []byte("t/a")}, {[]byte("t/a"), []byte("t/a")}} {
		if err := b.DeleteRange(r[0], r[1]); err == nil {
			t.Errorf("DeleteRange(%q, %q) accepted", r[0], r[1])
		}
	}
}

func TestViewIsConsistentWhileCommitting(t *testing.T) {
	d := openTest(t, "")
	commitAll(t, d, 1, map[string]string{"t/a": "old"})
	v, err := d.View()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	commitAll(t, d, 2, map[string]string{"t/a": "new", "t/b": "new"})
	if got := mustGet(t, v.Get, []byte("t/a")); got != "old" {
		t.Errorf("view sees %s", got)
	}
	if got := mustGet(t, v.Get, []byte("t/b")); got != "<absent>" {
		t.Errorf("view sees t/b = %s", got)
	}
	if idx, _, _ := v.AppliedIndex(); idx != 1 {
		t.Errorf("view applied %d, want 1", idx)
	}
	if got := mustGet(t, d.Get, []byte("t/a")); got != "new" {
		t.Errorf("db sees %s", got)
	}
}

func TestPage(t *testing.T) {
	d := openTest(t, "")
	kv := map[string]string{}
	for i := range 25 {
		kv[string(k("audit", uint64(i)))] = fmt.Sprint(i)
		kv[string(k("other", uint64(i)))] = "x"
	}
	commitAll(t, d, 1, kv)
	v, _ := d.View()
	defer v.Close()
	prefix := TablePrefix("audit")
	tests := []struct {
		limit int
		pages []int // sizes
	}{
		{10, []int{10, 10, 5}},
		{5, []int{5, 5, 5, 5, 5}},
		{25, []int{25}},
		{1000, []int{25}},
	}
	for _, tt := range tests {
		var after []byte
		var sizes []int
		n := 0
		for {
			recs, next, err := v.Page(prefix, after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(recs))
			for _, r := range recs {
				if got := NewKeyDecoder(r.Key[len(prefix):]).Uint64(); got != uint64(n) || string(r.Value) != fmt.Sprint(n) {
					t.Fatalf("limit %d: record %d is %d=%s", tt.limit, n, got, r.Value)
				}
				n++
			}
			if next == nil {
				break
			}
			after = next
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tt.pages) {
			t.Errorf("limit %d: pages %v, want %v", tt.limit, sizes, tt.pages)
		}
	}
	for _, bad := range []int{0, -1, MaxPageLimit + 1} {
		if _, _, err := v.Page(prefix, nil, bad); err == nil {
			t.Errorf("Page limit %d accepted", bad)
		}
	}
}

func TestContentHash(t *testing.T) {
	base := map[string]string{"t/a": "1", "t/b": "2", "t/c": "3", "u/x": ""}
	hashOf := func(t *testing.T, index uint64, order []string, kv map[string]string) [32]byte {
		t.Helper()
		d := openTest(t, "")
		// Write in the given order, one batch per key, then the rest.
		i := uint64(0)
		for _, key := range order {
			i++
			commitAll(t, d, i, map[string]string{key: kv[key]})
		}
		b, _ := d.NewBatch()
		_ = b.Set([]byte("t/tmp"), []byte("gone"))
		_ = b.Delete([]byte("t/tmp"))
		if err := b.Commit(index+i, 99); err != nil {
			t.Fatal(err)
		}
		v, _ := d.View()
		defer v.Close()
		h, err := v.ContentHash(AppliedKey)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	keys := func(kv map[string]string) []string {
		var out []string
		for k := range kv {
			out = append(out, k)
		}
		return out
	}
	ref := hashOf(t, 100, []string{"t/a", "t/b", "t/c", "u/x"}, base)
	if got := hashOf(t, 5000, []string{"u/x", "t/c", "t/a", "t/b"}, base); got != ref {
		t.Error("same contents in another order (and another applied index) hash differently")
	}
	with := func(f func(m map[string]string)) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		f(m)
		return m
	}
	tests := []struct {
		name string
		kv   map[string]string
	}{
		{"changed value", with(func(m map[string]string) { m["t/b"] = "22" })},
		{"added record", with(func(m map[string]string) { m["t/d"] = "4" })},
		{"added empty record", with(func(m map[string]string) { m["t/0"] = "" })},
		{"removed record", with(func(m map[string]string) { delete(m, "u/x") })},
		{"bytes moved from value to key", with(func(m map[string]string) { delete(m, "t/a"); m["t/a1"] = "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if hashOf(t, 100, keys(tt.kv), tt.kv) == ref {
				t.Error("hash did not change")
			}
		})
	}
	// Without excluding the applied index, the per-node index changes it.
	d := openTest(t, "")
	commitAll(t, d, 1, base)
	v1, _ := d.View()
	h1, _ := v1.ContentHash(nil)
	h1x, _ := v1.ContentHash(AppliedKey)
	_ = v1.Close()
	b, _ := d.NewBatch()
	_ = b.Commit(2, 0)
	v2, _ := d.View()
	h2, _ := v2.ContentHash(nil)
	h2x, _ := v2.ContentHash(AppliedKey)
	_ = v2.Close()
	if h1 == h2 || h1x != h2x {
		t.Errorf("exclusion: unexcluded equal=%v, excluded equal=%v", h1 == h2, h1x == h2x)
	}
	if !bytes.Equal(h1x[:], h2x[:]) {
		t.Error("excluded hashes differ")
	}
}

func TestClosedHandles(t *testing.T) {
	d, err := Open(t.TempDir(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	v, _ := d.View()
	if err := d.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("Close with an open view = %v, want a report wrapping ErrClosed", err)
	}
	if _, err := v.Get([]byte("t/a")); !errors.Is(err, ErrNotFound) {
		t.Errorf("view still readable after DB.Close: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get([]byte("t/a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Get on closed view = %v", err)
	}
	if _, err := d.Get([]byte("t/a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Get on closed DB = %v", err)
	}
	if _, err := d.NewBatch(); !errors.Is(err, ErrClosed) {
		t.Errorf("NewBatch on closed DB = %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
