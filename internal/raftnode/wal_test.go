package raftnode

import (
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// TestWALReopensAfterTailTruncation: raft truncates a follower's log tail when it meets a
// conflicting leader (after partitions and leader changes); the store must reopen after
// that. raft-wal v0.4.0 marked the tail segment sealed without writing its index, and the
// node then panicked at start ("sealed segment has no index block", hashicorp/raft-wal#31);
// found by the chaos harness after a partition and a restart, fixed by v0.4.1.
func TestWALReopensAfterTailTruncation(t *testing.T) {
	dir := t.TempDir()
	w, err := wal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(8, 10); err != nil { // a tail truncation
		t.Fatal(err)
	}
	if err := w.StoreLogs([]*raft.Log{{Index: 8, Term: 2, Type: raft.LogCommand, Data: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = wal.Open(dir)
	if err != nil {
		t.Fatalf("reopen after a tail truncation: %v", err)
	}
	defer w.Close()
	for _, idx := range []uint64{1, 7, 8} {
		var l raft.Log
		if err := w.GetLog(idx, &l); err != nil {
			t.Fatalf("GetLog(%d) after reopen: %v", idx, err)
		}
	}
	if last, err := w.LastIndex(); err != nil || last != 8 {
		t.Fatalf("LastIndex = %d, %v; want 8", last, err)
	}
}
