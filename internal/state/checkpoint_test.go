package state

import (
	"bytes"
	"io"
	"testing"
)

func TestCheckpoints(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	var events []Event
	h.f.onEvent = func(e Event) { events = append(events, e) }
	// A member asks for a checkpoint: every node hashes its state at that entry.
	if r := h.reportAs("n2", "n2", TypeCheckpointRequest, &CheckpointRequest{Node: "n2"}); !r.OK() {
		t.Fatal(r)
	}
	idx := h.index
	var own string
	for _, e := range events {
		if e.Kind == EventCheckpoint && e.Index == idx {
			own = e.Hash
		}
	}
	if own == "" || h.f.CheckpointAt(idx).Own != own {
		t.Fatalf("no checkpoint at %d: %+v", idx, events)
	}
	// A second request right after is served by that checkpoint.
	if r := h.reportAs("n3", "n3", TypeCheckpointRequest, &CheckpointRequest{Node: "n3"}); !r.Existing {
		t.Fatalf("a checkpoint at every request: %+v", r)
	}
	vote := func(node, signer string, index uint64, hash string) Result {
		return h.reportAs(node, signer, TypeCheckpoint, &StateCheckpoint{Node: node, Index: index, StateHash: hash})
	}
	for _, n := range []string{"n1", "n2"} {
		if r := vote(n, n, idx, own); !r.OK() {
			t.Fatalf("vote of %s: %+v", n, r)
		}
	}
	// A member votes once, only for itself, only for an open index, never for the future.
	bad := []struct {
		name string
		res  Result
	}{
		{"for another member", h.reportAs("n3", "n3", TypeCheckpoint, &StateCheckpoint{Node: "n1", Index: idx, StateHash: own})},
		{"signed by another member", vote("n3", "n1", idx, own)},
		{"an index that is no checkpoint", vote("n3", "n3", idx+1, own)},
		{"a later index", vote("n3", "n3", idx+1000, own)},
		{"a malformed hash", vote("n3", "n3", idx, "zz")},
	}
	for _, b := range bad {
		if b.res.OK() {
			t.Errorf("vote %s accepted", b.name)
		}
	}
	// A second vote does not replace the first.
	if r := vote("n1", "n1", idx, string(bytes.Repeat([]byte("ab"), 32))); !r.Existing {
		t.Fatalf("second vote: %+v", r)
	}
	votes := h.f.CheckpointAt(idx).Votes
	if len(votes) != 2 || votes["n1"] != own || votes["n2"] != own {
		t.Fatalf("votes %v", votes)
	}
	// Only the newest MaxCheckpointIndices indices are kept.
	for i := 0; i < MaxCheckpointIndices+2; i++ {
		h.index += MinCheckpointGap
		h.reportAs("n1", "n1", TypeCheckpointRequest, &CheckpointRequest{Node: "n1"})
	}
	if got := len(h.f.d.Checkpoints); got != MaxCheckpointIndices {
		t.Fatalf("%d checkpoint indices kept", got)
	}
	if _, ok := h.f.d.Checkpoints[idx]; ok {
		t.Fatal("the oldest checkpoint was not dropped")
	}
}

// TestSnapshotRestoreSums: the sum the FSM reports for the snapshot it produces equals
// the sum it reports when that snapshot is restored; a tampered snapshot has another.
func TestSnapshotRestoreSums(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	var made [32]byte
	h.f.OnSnapshot(func(_ uint64, s [32]byte) { made = s })
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf sink
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
		same  bool
	}{
		{"own", buf.Bytes(), true},
		{"tampered", bytes.Replace(buf.Bytes(), []byte(`"status":"active"`), []byte(`"status":"disabled"`), 1), false},
	} {
		g := NewFSM(okVerifier{}, nil, nil)
		var restored [32]byte
		g.OnRestore(func(_ uint64, s [32]byte) { restored = s })
		if err := g.Restore(io.NopCloser(bytes.NewReader(tc.bytes))); err != nil {
			t.Fatal(err)
		}
		if (restored == made) != tc.same {
			t.Fatalf("%s snapshot: restored sum equal to the produced one: %v", tc.name, restored == made)
		}
	}
}
