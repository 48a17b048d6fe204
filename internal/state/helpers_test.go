package state

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/statedb"
)

// openTestFSM opens an FSM over a fresh database in a temporary directory, closed when
// the test ends.
func openTestFSM(t testing.TB, v Verifier, an *authn.Verifier, onEvent func(Event)) *FSM {
	t.Helper()
	f, err := Open(Config{Dir: t.TempDir(), Verifier: v, Authn: an, OnEvent: onEvent, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// waitHashed waits until the background checkpoint hashes are done.
func (f *FSM) waitHashed() {
	for !f.hash.idle() {
		time.Sleep(time.Millisecond)
	}
}

// auditEntries reads the audit log an applier wrote.
func auditEntries(t testing.TB, a *applier) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	for seq := uint64(1); seq <= a.m.AuditSeq; seq++ {
		e, ok := load[AuditEntry](a.t, keyU64(tAudit, seq))
		if !ok {
			t.Fatalf("audit entry %d missing", seq)
		}
		out = append(out, *e)
	}
	return out
}

// memApplier is an applier over a state in memory (unit tests of one apply method).
func memApplier(stamp int64) *applier {
	return &applier{t: newTx(memKV{}), m: newMeta(), stamp: stamp, events: new([]Event)}
}

// forgeRecords rewrites a snapshot stream's values with edit and re-encodes it as a
// well-formed stream (its checksum detects corruption, not forgery).
func forgeRecords(t testing.TB, snap []byte, edit func(k, v []byte) []byte) []byte {
	t.Helper()
	recs, err := statedb.ReadRecords(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		recs[i].Value = edit(recs[i].Key, recs[i].Value)
	}
	var out bytes.Buffer
	if _, err := statedb.WriteRecords(&out, recs); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// snapshotOf streams f's snapshot into memory, as raft's Persist would.
func snapshotOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	return s.Bytes()
}

// restoredFSM opens a fresh FSM and restores the snapshot b into it.
func restoredFSM(t testing.TB, b []byte) *FSM {
	t.Helper()
	g := openTestFSM(t, okVerifier{}, nil, nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	return g
}
