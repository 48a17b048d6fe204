package statedb

import (
	"bytes"
	"errors"
	"path/filepath"
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
	g, _ := d.acquire()
	if err := g.db.Compact(t.Context(), []byte{0x00}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	_ = g.release()

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
