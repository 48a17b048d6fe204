package state

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/custos/custos/internal/authn"
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
	h.f.waitHashed()
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
	// Only the newest MaxCheckpointIndices indices are kept (each requested once the one
	// before has k votes: while one waits for them, it serves every request).
	for i := 0; i < MaxCheckpointIndices+2; i++ {
		h.index += MinCheckpointGap
		if r := h.reportAs("n1", "n1", TypeCheckpointRequest, &CheckpointRequest{Node: "n1"}); !r.OK() || r.Existing {
			t.Fatalf("request %d: %+v, want a new checkpoint", i, r)
		}
		at := h.index
		for _, n := range []string{"n1", "n2"} {
			if r := vote(n, n, at, own); !r.OK() {
				t.Fatalf("vote of %s at %d: %+v", n, at, r)
			}
		}
	}
	if got := len(h.f.meta().Checkpoints); got != MaxCheckpointIndices {
		t.Fatalf("%d checkpoint indices kept", got)
	}
	if _, ok := h.f.meta().Checkpoints[idx]; ok {
		t.Fatal("the oldest checkpoint was not dropped")
	}
}

// tamper returns b with one byte in its middle changed (the records are compressed: a
// byte's position is all one knows of it).
func tamper(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)/2] ^= 0x01
	return b
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
	defer snap.Release()
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
		{"tampered", tamper(buf.Bytes()), false},
	} {
		g := openTestFSM(t, okVerifier{}, nil, nil)
		var restored [32]byte
		g.OnRestore(func(_ uint64, s [32]byte) { restored = s })
		if err := g.Restore(io.NopCloser(bytes.NewReader(tc.bytes))); err != nil {
			if tc.same {
				t.Fatal(err)
			}
			continue // the stream's own checksum refuses it: not restored at all
		}
		if (restored == made) != tc.same {
			t.Fatalf("%s snapshot: restored sum equal to the produced one: %v", tc.name, restored == made)
		}
	}
}

// TestNewerEntriesHalt: an older node halts on a command kind, a version or a field it
// does not know — in the entry, in a signed body, in a report's body — rather than skip
// or half-read it; and ValidateEntry (the propose gate) refuses each first.
func TestNewerEntriesHalt(t *testing.T) {
	withField := func(payload any, field string) []byte {
		b, _ := json.Marshal(payload)
		return append(b[:len(b)-1], []byte(`,"`+field+`":1}`)...)
	}
	cases := []struct {
		name    string
		typ     string
		version int
		payload func(h *signedHarness) []byte
	}{
		{"unknown kind", "policy.create", 1, func(h *signedHarness) []byte { return []byte(`{}`) }},
		{"newer version", TypeSubmit, 2, func(h *signedHarness) []byte {
			b, _ := json.Marshal(h.submitAs("n1", "n1", h.userReq("GET", "/v1/keys", "", 0), randHex(), nil))
			return b
		}},
		{"newer field in a submit", TypeSubmit, 1, func(h *signedHarness) []byte {
			return withField(h.submitAs("n1", "n1", h.userReq("GET", "/v1/keys", "", 0), randHex(), nil), "policy_ids")
		}},
		{"newer field in a signed submit body", TypeSubmit, 1, func(h *signedHarness) []byte {
			body := withField(&SubmitBody{Signed: h.userReq("GET", "/v1/keys", "", 0)}, "approvals")
			sig, _ := authn.SignNode(h.ids["n1"], authn.DomainRequest, body)
			b, _ := json.Marshal(&Submit{Origin: "n1", Body: body, OriginSig: sig})
			return b
		}},
		{"newer field in a report body", TypeReport, 1, func(h *signedHarness) []byte {
			body := withField(&CheckpointRequest{Node: "n2"}, "scope")
			sig, _ := signNodeForTest(h, "n2", TypeCheckpointRequest, body)
			b, _ := json.Marshal(&Report{Node: "n2", Kind: TypeCheckpointRequest, Body: body, Sig: sig})
			return b
		}},
		{"unknown report kind", TypeReport, 1, func(h *signedHarness) []byte {
			b, _ := json.Marshal(&Report{Node: "n2", Kind: "key.deleted", Body: []byte(`{}`)})
			return b
		}},
		{"newer field in an upgrade", TypeUpgrade, 1, func(h *signedHarness) []byte { return []byte(`{"features":["x"]}`) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newSignedHarness(t, 3, 2)
			p := tc.payload(h)
			if tc.version == 1 {
				if err := ValidateEntry(tc.typ, p); err == nil {
					t.Fatal("ValidateEntry accepts it")
				}
			}
			before := h.f.Checkpoint().StateHash
			env, _ := json.Marshal(Envelope{Type: tc.typ, Version: tc.version, Stamp: h.stamp, Payload: p})
			if res := h.applyRaw(env); res.Code != "cluster.unavailable" || h.f.Halted() == "" {
				t.Fatalf("applied: %+v (halted %q)", res, h.f.Halted())
			}
			if h.f.Checkpoint().StateHash != before {
				t.Fatal("the state changed")
			}
			// Halted for good: nothing after it applies either.
			if res := h.submit("n1", h.userReq("GET", "/v1/keys", "", 0), nil); res.Code != "cluster.unavailable" {
				t.Fatalf("after the halt: %+v", res)
			}
		})
	}
}

// TestCheckpointSpacing: periodic checkpoints come every CheckpointEvery entries while
// the state is small, and further apart as it grows (one entry per two object records),
// so that hashing it costs the same per applied entry whatever its size.
func TestCheckpointSpacing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		last    uint64
		objects int64
		index   uint64
		due     bool
	}{
		{"genesis", 0, 0, CheckpointEvery - 1, false},
		{"first", 0, 0, CheckpointEvery, true},
		{"small state", 50_000, 1000, 50_000 + CheckpointEvery, true},
		{"a million records, not yet", 100_000, 1_000_000, 100_000 + 499_999, false},
		{"a million records", 100_000, 1_000_000, 100_000 + 500_000, true},
	} {
		m := &meta{LastCheckpoint: tc.last}
		if got := m.checkpointDue(tc.index, tc.objects); got != tc.due {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.due)
		}
	}
}

// TestKeysVersion: KeysVersion moves when a key record changes (a keygen, a key's
// deletion) and on a restore, not while the cluster signs with its keys.
func TestKeysVersion(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	before := h.f.KeysVersion()
	k := h.activeKey()
	if h.f.KeysVersion() == before {
		t.Fatal("a keygen left KeysVersion")
	}
	v := h.f.KeysVersion()
	for i := range 3 {
		res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"02"}`, 0), &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()})
		r := h.f.Request(res.RequestID)
		if r == nil {
			t.Fatalf("sign %d: %+v", i, res)
		}
		if res := h.reportAs("n1", "n1", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signature: Signature{Sig: []byte("good")}}); !res.OK() {
			t.Fatalf("result %d: %+v", i, res)
		}
		if r = h.f.Request(r.ID); r.Status != StatusSigned {
			t.Fatalf("request %d: %s", i, r.Status)
		}
	}
	if got := h.f.KeysVersion(); got != v {
		t.Fatalf("signing moved KeysVersion from %d to %d", v, got)
	}
	if res := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, "", 0), nil); !res.OK() {
		t.Fatalf("delete: %+v", res)
	}
	if got := h.f.KeysVersion(); got == v {
		t.Fatal("scheduling the key's deletion left KeysVersion")
	}
	v = h.f.KeysVersion()
	g := openTestFSM(t, okVerifier{}, nil, nil)
	w := g.KeysVersion()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	if g.KeysVersion() == w {
		t.Fatal("a restore left KeysVersion")
	}
}
