package state

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

// TestLegacyLogReplays: a log written by the binary before signed entries (every legacy
// entry kind and schema version — Call v1–v3, ShareStored v1–v2, results, failures,
// reschedules, fails — applied and recorded by that binary, testdata/legacy-log-v3.json)
// replays on this one with the same result for every entry, the same audit chain and
// the same state (TestLegacyLogEquivalence compares it with the old binary's, record by
// record); an Upgrade entry then makes the cluster strict, and the legacy
// kinds are refused from there on.
func TestLegacyLogReplays(t *testing.T) {
	raw, err := os.ReadFile("testdata/legacy-log-v3.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Entries []struct {
			Index  uint64          `json:"index"`
			Data   []byte          `json:"data"`
			Result json.RawMessage `json:"result"`
		} `json:"entries"`
		StateHash string       `json:"state_hash"`
		Audit     []AuditEntry `json:"audit"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	f := openTestFSM(t, okVerifier{}, nil, nil)
	var last []byte
	for _, e := range golden.Entries {
		res, ok := f.Apply(&raft.Log{Index: e.Index, Type: raft.LogCommand, Data: e.Data}).(Result)
		if !ok {
			t.Fatalf("entry %d: no result", e.Index)
		}
		var want Result
		if err := json.Unmarshal(e.Result, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("entry %d: got %+v, the old binary %+v", e.Index, res, want)
		}
		last = e.Data
	}
	if h := f.Halted(); h != "" {
		t.Fatalf("halted: %s", h)
	}
	audit, _ := f.Audit(0, 10000)
	if !reflect.DeepEqual(audit, golden.Audit) {
		t.Fatalf("audit chain differs: %d entries, the old binary %d", len(audit), len(golden.Audit))
	}
	// The first new leader makes the cluster strict; legacy kinds are refused after it.
	n := uint64(len(golden.Entries))
	var env Envelope
	_ = json.Unmarshal(last, &env)
	up, _ := Encode(TypeUpgrade, env.Stamp+1000, &Upgrade{})
	if res := f.Apply(&raft.Log{Index: n + 1, Type: raft.LogCommand, Data: up}).(Result); !res.OK() || !f.Strict() {
		t.Fatalf("upgrade: %+v", res)
	}
	legacy, _ := Encode(TypeCall, env.Stamp+2000, &Call{Caller: Caller{Kind: CallerAdmin, NonceKey: "jti|late"}, Op: OpUserCreate, UserName: "mallory"})
	if res := f.Apply(&raft.Log{Index: n + 2, Type: raft.LogCommand, Data: legacy}).(Result); res.Code != "auth.signature_invalid" {
		t.Fatalf("legacy call after the upgrade: %+v", res)
	}
}
