package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state/oracle"
	"github.com/custos/custos/internal/statedb"
)

// Apply equivalence (issue 11): the in-memory FSM the state moved from is kept, frozen,
// as internal/state/oracle. The same log applied to it and to the on-disk FSM — one entry
// at a time, and in raft batches of random sizes — gives the same result for every entry
// and the same state: the oracle's final state, laid out in tables by the conversion
// that upgrades old snapshots, equals the on-disk FSM's database record for record
// (audit chain included), but for the prune bookkeeping in the cluster record (the old
// FSM pruned every 60 s of stamps, this one every second).

type oracleOK struct{}

func (oracleOK) VerifySignature(curve string, pub, cc []byte, path []uint32, msg []byte, sig *oracle.Signature) error {
	return okVerifier{}.VerifySignature(curve, pub, cc, path, msg, (*Signature)(sig))
}

// equivalenceLog drives a signed harness through every entry kind and most outcomes:
// users, both curves' keygens (one failing), signing with retries, reschedules, failures
// and bad results, idempotency keys, replays, access keys granted, used, revoked and
// pruned, checkpoints, and stamps far enough apart that nonces, proposal results and
// dead access keys expire.
func equivalenceLog(t *testing.T) *signedHarness {
	h := newSignedHarnessEvents(t, 3, 2, false)
	rng := rand.New(rand.NewPCG(1, 2))
	ed := h.activeKey()
	failing := h.keygen(CurveSecp256k1, 2)
	h.reportAs("n1", "n1", TypeShareStored, &ShareStored{RequestID: failing.ID, Nonce: failing.Nonce, Node: "n1", PublicKey: []byte{2, 1}})
	h.reportAs("n2", "n2", TypeShareStored, &ShareStored{RequestID: failing.ID, Nonce: failing.Nonce, Node: "n2", PublicKey: []byte{2, 2}})
	h.reportAs("n3", "n3", TypeCeremonyFailed, &CeremonyFailed{RequestID: failing.ID, Nonce: failing.Nonce, Node: "n3", Code: "ceremony.failed", Detail: "x"})

	grant := func(seed byte, perms string) string {
		body := fmt.Sprintf(`{"scheme":"ed25519","public_key":"%s","permissions":[%s]}`, strings.Repeat(fmt.Sprintf("%02x", seed), 32), perms)
		return h.submit("n1", h.userReq("POST", "/v1/access-keys", body, 0), &Schedule{AccessKeyID: "ak_" + randHex()}).AccessKeyID
	}
	ak1, ak2 := grant(0xa1, `"keys:read"`), grant(0xa2, `"keys:read","keys:sign"`)
	for round := 0; round < 6; round++ {
		for i := 0; i < 12; i++ {
			body := fmt.Sprintf(`{"message":"%s"}`, hex32(rng))
			if i%4 == 0 {
				body = fmt.Sprintf(`{"message":"%s","idempotency_key":"idem-%d-%d"}`, hex32(rng), round, i%8)
			}
			f := h.userReq("POST", "/v1/keys/"+ed.ID+"/sign", body, 0)
			committee := []string{"n1", "n2"}
			res := h.submit("n1", f, &Schedule{RequestID: "req_" + randHex(), Committee: committee, Nonce: freshNonce()})
			if i%5 == 0 { // the same signed request proposed again: a replay
				h.apply(TypeSubmit, h.submitAs("n2", "n2", f, randHex(), &Schedule{RequestID: "req_" + randHex(), Committee: committee, Nonce: freshNonce()}))
			}
			if !res.OK() || res.Existing {
				continue
			}
			r := h.f.Request(res.RequestID)
			switch i % 6 {
			case 0, 1, 2:
				h.reportAs("n2", "n2", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: Signature{Sig: []byte("good")}})
			case 3:
				h.reportAs("n2", "n2", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: Signature{Sig: []byte("bad")}})
				h.reportAs("n1", "n1", TypeCeremonyFailed, &CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Code: "ceremony.timeout", Culprits: []string{"n2"}})
				h.reportAs("n1", "n1", TypeReschedule, &Reschedule{RequestID: r.ID, Attempt: 1, Committee: []string{"n1", "n3"}, Nonce: freshNonce()})
				r = h.f.Request(r.ID)
				h.reportAs("n3", "n3", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n3", Signature: Signature{Sig: []byte("good")}})
			case 4:
				h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: r.ID, Code: "cluster.unavailable", Detail: "no committee"})
			}
			h.stamp += int64(rng.IntN(5000))
		}
		h.submit("n2", h.userReq("GET", "/v1/keys", "", 0), nil)
		h.submit("n3", h.userReq("GET", "/v1/access-keys", "", 0), nil)
		h.submit("n1", h.userReq("GET", "/v1/access-keys/"+ak1+"/log", "", 0), nil)
		h.submit("n1", h.admin("GET", "/v1/audit?limit=10", ""), nil)
		if round == 1 {
			h.submit("n1", h.admin("POST", fmt.Sprintf("/v1/admin/users/%d/disable", h.user), ""), nil)
			h.submit("n2", h.userReq("GET", "/v1/keys", "", 0), nil) // refused: disabled
			h.submit("n1", h.admin("POST", fmt.Sprintf("/v1/admin/users/%d/enable", h.user), ""), nil)
			h.submit("n1", h.userReq("DELETE", "/v1/access-keys/"+ak1, "", 0), nil)
		}
		if round == 2 {
			h.reportAs("n2", "n2", TypeCheckpointRequest, &CheckpointRequest{Node: "n2"})
			idx := h.index
			for _, n := range h.nodes {
				h.reportAs(n, n, TypeCheckpoint, &StateCheckpoint{Node: n, Index: idx, StateHash: strings.Repeat("ab", 32)})
			}
		}
		h.submit("n1", h.admin("POST", "/v1/admin/users", fmt.Sprintf(`{"name":"user-%d"}`, round)), nil)
		// Stamps move past the nonce and proposal windows (15 and 5 minutes); in round 4,
		// past the dead access key's retention.
		h.stamp += 16 * 60 * 1000
		if round == 4 {
			h.stamp += AccessKeyRetentionMs
		}
	}
	_ = ak2
	// A last entry more than 60 s after the one before, so the old FSM prunes on it too.
	h.stamp += 61_000
	h.submit("n1", h.admin("GET", "/v1/admin/users", ""), nil)
	return h
}

func hex32(rng *rand.Rand) string {
	var b [32]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return fmt.Sprintf("%x", b)
}

func TestApplyEquivalence(t *testing.T) {
	h := equivalenceLog(t)
	if h.f.Halted() != "" {
		t.Fatal(h.f.Halted())
	}
	checkEquivalent(t, h.log, h.f.authn)
}

// TestLegacyLogEquivalence: the same for the log the binary before signed entries wrote.
func TestLegacyLogEquivalence(t *testing.T) {
	raw, err := os.ReadFile("testdata/legacy-log-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Entries []struct {
			Index uint64 `json:"index"`
			Data  []byte `json:"data"`
		} `json:"entries"`
		StateHash string `json:"state_hash"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	var log []*raft.Log
	for _, e := range golden.Entries {
		log = append(log, &raft.Log{Index: e.Index, Type: raft.LogCommand, Data: e.Data})
	}
	o := checkEquivalent(t, log, nil)
	// The oracle is the binary that wrote the log: same state hash.
	if got := o.Checkpoint().StateHash; got != golden.StateHash {
		t.Fatalf("oracle state hash %s, the old binary %s", got, golden.StateHash)
	}
}

// checkEquivalent applies log to the oracle and to fresh on-disk FSMs (entry by entry,
// and in random batches) and compares results and final states.
func checkEquivalent(t *testing.T, log []*raft.Log, an *authn.Verifier) *oracle.FSM {
	t.Helper()
	o := oracle.NewFSM(oracleOK{}, an, nil)
	var want []string
	for _, l := range log {
		want = append(want, resultJSON(t, o.Apply(l)))
	}
	if o.Halted() != "" {
		t.Fatalf("oracle halted: %s", o.Halted())
	}
	wantRecs := oracleRecords(t, o)
	for _, batched := range []bool{false, true} {
		f := openTestFSM(t, okVerifier{}, an, nil)
		rng := rand.New(rand.NewPCG(3, 4))
		var got []any
		for i := 0; i < len(log); {
			n := 1
			if batched {
				n = 1 + rng.IntN(64)
			}
			n = min(n, len(log)-i)
			got = append(got, f.ApplyBatch(log[i:i+n])...)
			i += n
		}
		for i := range log {
			if g := resultJSON(t, got[i]); g != want[i] {
				t.Fatalf("batched=%v: entry %d: result %s, the in-memory FSM's %s", batched, log[i].Index, g, want[i])
			}
		}
		compareRecords(t, fmt.Sprintf("batched=%v", batched), withoutEvents(t, fsmRecords(t, f)), wantRecs)
	}
	return o
}

func resultJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oracleRecords lays the oracle's state out in tables, through its snapshot and the
// legacy conversion.
func oracleRecords(t *testing.T, o *oracle.FSM) []statedb.Record {
	t.Helper()
	snap, err := o.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	var d legacyState
	if err := json.NewDecoder(bytes.NewReader(s.Bytes())).Decode(&d); err != nil {
		t.Fatal(err)
	}
	recs, err := d.records()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func fsmRecords(t *testing.T, f *FSM) []statedb.Record {
	t.Helper()
	v, err := f.db.View()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out []statedb.Record
	if err := v.Scan(nil, nil, func(k, val []byte) error {
		out = append(out, statedb.Record{Key: bytes.Clone(k), Value: bytes.Clone(val)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// compareRecords compares two states record by record, but the applied record and the
// prune bookkeeping.
func compareRecords(t *testing.T, name string, got, want []statedb.Record) {
	t.Helper()
	norm := func(recs []statedb.Record) map[string]string {
		out := map[string]string{}
		for _, r := range recs {
			if statedb.AppliedKey(r.Key) {
				continue
			}
			v := r.Value
			if bytes.Equal(r.Key, key(tMeta)) {
				var m meta
				if err := json.Unmarshal(v, &m); err != nil {
					t.Fatal(err)
				}
				m.LastPrune, m.PruneBehind, m.PrunedTo = 0, false, nil
				v, _ = json.Marshal(&m)
			}
			out[fmt.Sprintf("%q", r.Key)] = string(v)
		}
		return out
	}
	g, w := norm(got), norm(want)
	// Used session nonces are now forgotten after twice the request retention (the old FSM kept
	// them forever): drop those the new one pruned from the oracle's side.
	var last int64
	for _, r := range got {
		if statedb.AppliedKey(r.Key) {
			last = int64(binary.BigEndian.Uint64(r.Value[8:]))
		}
	}
	for _, r := range want {
		if bytes.HasPrefix(r.Key, key(tSession)) && int64(binary.BigEndian.Uint64(r.Value))^math.MinInt64 < last-2*RequestRetentionMs {
			delete(w, fmt.Sprintf("%q", r.Key))
		}
		if bytes.HasPrefix(r.Key, key(tSessionExp)) {
			d := statedb.NewKeyDecoder(r.Key)
			d.Table()
			if d.Int64() < last-2*RequestRetentionMs {
				delete(w, fmt.Sprintf("%q", r.Key))
			}
		}
	}
	for k, wv := range w {
		if gv, ok := g[k]; !ok {
			t.Errorf("%s: record %s missing (the in-memory FSM has %s)", name, k, wv)
		} else if gv != wv {
			t.Errorf("%s: record %s is\n%s\nthe in-memory FSM's\n%s", name, k, gv, wv)
		}
	}
	for k, gv := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: extra record %s = %s", name, k, gv)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(g) < 50 {
		t.Fatalf("%s: only %d records compared", name, len(g))
	}
}

// withoutEvents drops what the in-memory FSM never had: the event log (events.go) and its
// counter in the cluster record. Everything else must be the same record for record.
func withoutEvents(t *testing.T, recs []statedb.Record) []statedb.Record {
	t.Helper()
	var out []statedb.Record
	var events int64
	metaAt := -1
	for _, r := range recs {
		switch {
		case bytes.HasPrefix(r.Key, key(tEvent)):
			events++
			continue
		case bytes.Equal(r.Key, key(tMeta)):
			metaAt = len(out)
		}
		out = append(out, r)
	}
	if metaAt >= 0 {
		// The cluster record counts the events among the records checkpoints hash.
		var m meta
		if err := json.Unmarshal(out[metaAt].Value, &m); err != nil {
			t.Fatal(err)
		}
		m.EventSeq = 0
		m.Objects -= events
		out[metaAt].Value = mustJSON(&m)
	}
	return out
}
