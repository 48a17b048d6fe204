//go:build !race

// The race detector makes this test take minutes; `make test` runs it without (see the
// Makefile's test-large), the rest of the package runs under -race.

package state

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// TestSnapshotRoundTrip100k: a state built by 100 000 entries (50 000 sign lifecycles,
// their audit entries, nonces, idempotency keys) streams out and back into a fresh FSM,
// which then holds the same records and hashes alike, and goes on applying as the
// original does.
func TestSnapshotRoundTrip100k(t *testing.T) {
	if testing.Short() {
		t.Skip("100 000 entries")
	}
	h := newHarness(t)
	alice := h.createUser("alice")
	key := h.activeKey(alice, CurveEd25519)
	const lifecycles = 50_000
	logs := make([]*raft.Log, 0, 64)
	flush := func() {
		for i, r := range h.f.ApplyBatch(logs) {
			if res := r.(Result); !res.OK() {
				t.Fatalf("entry %d: %+v", logs[i].Index, res)
			}
		}
		logs = logs[:0]
	}
	add := func(typ string, payload any) {
		h.index++
		h.stamp += 3
		b, err := Encode(typ, h.stamp, payload)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: h.index, Type: raft.LogCommand, Data: b})
		if len(logs) == 64 {
			flush()
		}
	}
	for i := 0; i < lifecycles; i++ {
		nonce := make([]byte, 32)
		binary.BigEndian.PutUint64(nonce, uint64(i)+1)
		id := fmt.Sprintf("req_%08d", i)
		c := &Call{Caller: h.user(alice, fmt.Sprintf("n-%d", i)), Op: OpKeySign, KeyID: key, MessageHex: fmt.Sprintf("%08x", i),
			Schedule: &Schedule{RequestID: id, Committee: []string{"n1", "n2"}, Nonce: nonce}}
		if i%10 == 0 {
			c.IdempotencyKey, c.BodyHash = fmt.Sprintf("idem-%d", i), "h"
		}
		add(TypeCall, c)
		add(TypeCeremonyResult, &CeremonyResult{RequestID: id, Node: "n2", Signature: Signature{Sig: []byte("good")}})
	}
	flush()
	if h.index < 100_000 {
		t.Fatalf("%d entries", h.index)
	}
	snap := snapshotOf(t, h.f)
	g := restoredFSM(t, snap)
	if g.AppliedIndex() != h.index {
		t.Fatalf("restored at %d, snapshot of %d", g.AppliedIndex(), h.index)
	}
	compareRecords(t, "restored", fsmRecords(t, g), fsmRecords(t, h.f))
	if c1, c2 := h.f.Checkpoint(), g.Checkpoint(); c1 != c2 {
		t.Fatalf("checkpoints differ: %+v, restored %+v", c1, c2)
	}
	if seq, _ := g.AuditHead(); seq < 100_000 {
		t.Fatalf("restored audit head %d", seq)
	}
	// Both go on alike.
	h.stamp += 10
	b, _ := Encode(TypeCall, h.stamp, &Call{Caller: h.user(alice, "after"), Op: OpKeyList})
	next := &raft.Log{Index: h.index + 1, Type: raft.LogCommand, Data: b}
	if r1, r2 := h.f.Apply(next).(Result), g.Apply(next).(Result); !r1.OK() || r1 != r2 {
		t.Fatalf("after the restore: %+v, restored %+v", r1, r2)
	}
	if c1, c2 := h.f.Checkpoint(), g.Checkpoint(); c1 != c2 {
		t.Fatalf("checkpoints differ after one more entry: %+v, restored %+v", c1, c2)
	}
	t.Logf("snapshot of %d entries: %d bytes", h.index, len(snap))
}
