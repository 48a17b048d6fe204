package statedb

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestCheckpointStreamsLikeASnapshot: a checkpoint's stream is byte for byte the stream
// of a snapshot at the same index, restores to the same state, carries that index, and
// keeps what it held while the database moves on (compactions included).
func TestCheckpointStreamsLikeASnapshot(t *testing.T) {
	d := openTest(t, "")
	idx := fillDB(t, d, 20000, 100, 0)
	want := stream(t, d)
	dir := filepath.Join(t.TempDir(), "cp")
	got, err := d.Checkpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != idx {
		t.Fatalf("checkpoint at index %d, want %d", got, idx)
	}
	if _, err := d.Checkpoint(dir); err == nil {
		t.Fatal("a checkpoint over an existing directory was written")
	}
	// The database moves on: overwrites, deletions and a full compaction.
	fillDB(t, d, 20000, 1000, idx)
	commitAll(t, d, idx+100, map[string]string{"t/new": "x"})
	compactAll(t, d)

	var buf bytes.Buffer
	n, sidx, err := d.StreamCheckpoint(dir, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || sidx != idx {
		t.Fatalf("stream: %d bytes (wrote %d), index %d, want index %d", n, buf.Len(), sidx, idx)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("the checkpoint's stream (%d bytes) differs from the snapshot's at the same index (%d bytes)", buf.Len(), len(want))
	}
	ai, err := StreamAppliedIndex(bytes.NewReader(buf.Bytes()))
	if err != nil || ai != idx {
		t.Fatalf("StreamAppliedIndex = %d, %v; want %d", ai, err, idx)
	}
	d2 := openTest(t, "")
	if err := d2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, d2.Get, []byte("t/new")); got != "<absent>" {
		t.Fatalf("the checkpoint holds a later commit: t/new = %s", got)
	}
}

// TestCheckpointWhileCommitting: a checkpoint taken while batches commit holds the state
// after one whole batch, at or after the index when it was asked for.
func TestCheckpointWhileCommitting(t *testing.T) {
	d := openTest(t, "")
	start := fillDB(t, d, 1000, 10, 0)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		idx := start
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Each batch writes the same ten keys with its own index.
			idx++
			v := []byte{byte(idx), byte(idx >> 8), byte(idx >> 16)}
			b, err := d.NewBatch()
			if err != nil {
				t.Error(err)
				return
			}
			for j := range 10 {
				if err := b.Set(k("c", uint64(j)), v); err != nil {
					t.Error(err)
					return
				}
			}
			if err := b.Commit(idx, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 5 {
		before, _, _ := d.AppliedIndex()
		dir := filepath.Join(t.TempDir(), "cp")
		idx, err := d.Checkpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		if idx < before {
			t.Fatalf("checkpoint %d at index %d, before the %d applied when it was asked for", i, idx, before)
		}
		var buf bytes.Buffer
		if _, _, err := d.StreamCheckpoint(dir, &buf); err != nil {
			t.Fatal(err)
		}
		recs, err := ReadRecords(&buf)
		if err != nil {
			t.Fatal(err)
		}
		var seen []byte
		for _, r := range recs {
			if bytes.HasPrefix(r.Key, AppendTable(nil, "c")) {
				if seen != nil && !bytes.Equal(seen, r.Value) {
					t.Fatalf("checkpoint %d holds part of a batch: %x and %x", i, seen, r.Value)
				}
				seen = r.Value
			}
		}
		if idx > start && seen != nil && !bytes.Equal(seen, []byte{byte(idx), byte(idx >> 8), byte(idx >> 16)}) {
			t.Fatalf("checkpoint %d at index %d holds the batch %x", i, idx, seen)
		}
	}
	close(stop)
	wg.Wait()
}

func TestStreamAppliedIndexRefusesOthers(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":      nil,
		"json":       []byte(`{"version":2}`),
		"no applied": mustRecords(t, []Record{{Key: []byte("t/a"), Value: []byte("1")}}),
	} {
		if _, err := StreamAppliedIndex(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: read an applied index", name)
		} else if name == "no applied" && !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
	}
}

func mustRecords(t *testing.T, recs []Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := WriteRecords(&buf, recs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSeparatedValuesEverywhere: values long enough to live in blob files (and short
// ones beside them) read back the same through every path a node uses — Get, a View's
// scan, the state hash — after flushes, overwrites, deletions and a full compaction,
// after a restart, from a checkpoint (which must carry the blob files) and from its
// stream restored into another database.
func TestSeparatedValuesEverywhere(t *testing.T) {
	dir := t.TempDir()
	d := openTest(t, dir)
	want := map[string]string{}
	value := func(i, round int) string {
		n := 16 // short: stays in the table
		if i%4 != 0 {
			n = separateValuesFrom + i%700 // long: separated, of many sizes
		}
		return fmt.Sprintf("%08d/%d/%s", i, round, strings.Repeat(string(rune('a'+i%26)), n))
	}
	var idx uint64
	for round := range 3 {
		for start := 0; start < 3000; start += 500 {
			kv := map[string]string{}
			for i := start; i < start+500; i++ {
				key := string(k("r", uint64(i)))
				if round == 2 && i%7 == 0 {
					continue
				}
				kv[key] = value(i, round)
			}
			idx++
			commitAll(t, d, idx, kv)
			maps.Copy(want, kv)
		}
		if round == 2 { // deletions, in a batch of their own
			b, err := d.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3000; i += 7 {
				key := k("r", uint64(i))
				if err := b.Delete(key); err != nil {
					t.Fatal(err)
				}
				delete(want, string(key))
			}
			idx++
			if err := b.Commit(idx, int64(idx)); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Sync(); err != nil { // flushes the memtables
			t.Fatal(err)
		}
	}
	g, err := d.acquire()
	if err != nil {
		t.Fatal(err)
	}
	blobFiles := g.db.Metrics().BlobFiles.LiveCount
	_ = g.release()
	if blobFiles == 0 {
		t.Fatalf("no blob file after flushing about %d long values: value separation is off", len(want)*3/4)
	}
	compactAll(t, d)

	check := func(name string, d *DB) [32]byte {
		t.Helper()
		for key, v := range want {
			if got := mustGet(t, d.Get, []byte(key)); got != v {
				t.Fatalf("%s: Get(%x) = %.40q…, want %.40q…", name, key, got, v)
			}
		}
		v, err := d.View()
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		seen := 0
		if err := v.ScanPrefix(AppendTable(nil, "r"), func(key, val []byte) error {
			if want[string(key)] != string(val) {
				return fmt.Errorf("scan: %x holds %.40q…, want %.40q…", key, val, want[string(key)])
			}
			seen++
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if seen != len(want) {
			t.Fatalf("%s: scan saw %d records, want %d", name, seen, len(want))
		}
		return hashDB(t, d)
	}
	h := check("after compaction", d)

	cp := filepath.Join(t.TempDir(), "cp")
	if _, err := d.Checkpoint(cp); err != nil {
		t.Fatal(err)
	}
	blobs, err := filepath.Glob(filepath.Join(cp, "*.blob"))
	if err != nil || len(blobs) == 0 {
		t.Fatalf("the checkpoint holds no blob file (%v): its long values would be missing", err)
	}
	var buf bytes.Buffer
	if _, _, err := d.StreamCheckpoint(cp, &buf); err != nil {
		t.Fatal(err)
	}
	d2 := openTest(t, "")
	if err := d2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := check("restored from the checkpoint's stream", d2); got != h {
		t.Fatalf("restored state hash %x, want %x", got, h)
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d3 := openTest(t, dir)
	if got := check("after a restart", d3); got != h {
		t.Fatalf("state hash after a restart %x, want %x", got, h)
	}
}

// compactAll runs a manual compaction of every key of the current generation, releasing
// it before failing (a generation still held would keep Pebble working in a directory
// the test is about to remove).
func compactAll(t testing.TB, d *DB) {
	t.Helper()
	g, err := d.acquire()
	if err != nil {
		t.Fatal(err)
	}
	err = g.db.Compact(t.Context(), []byte{0x00}, []byte{0xff}, true)
	_ = g.release()
	if err != nil {
		t.Fatal(err)
	}
}
