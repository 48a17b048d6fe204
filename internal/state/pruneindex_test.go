package state

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/custos/custos/internal/statedb"
)

// TestPruneIndexResumes: a time index is pruned in bounds of pruneBatch; each prune
// starts where the last one left off (meta.PrunedTo) instead of walking the keys it
// deleted (tombstones, until Pebble compacts them), drops exactly what lies before the
// bound — also a run of entries at one time cut by the bound — and keeps the rest. An
// index pruned without resume still scans from its start.
func TestPruneIndexResumes(t *testing.T) {
	const before = 1000
	for _, tc := range []struct {
		name  string
		times []int64 // one index entry at each time (several may share one)
	}{
		{"empty", nil},
		{"one", []int64{10}},
		{"one batch less one", spread(pruneBatch-1, 0, before)},
		{"exactly one batch", spread(pruneBatch, 0, before)},
		{"a run at one time across the bound", append(spread(pruneBatch-3, 0, 500), same(20, 500)...)},
		{"several batches and later entries", append(spread(3*pruneBatch+5, 0, before), spread(40, before, 2*before)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := statedb.Open(t.TempDir(), statedb.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			b, err := db.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			a := &applier{t: newTx(b), m: &meta{}}
			want := map[string]bool{}
			for i, at := range tc.times {
				id := fmt.Sprintf("id%05d", i)
				a.t.setRaw(keyAt(tNonceExp, at, id), nil)
				if at < before {
					want[id] = true
				}
			}
			dropped := map[string]bool{}
			drop := func(id string) {
				if dropped[id] {
					t.Fatalf("%s dropped twice", id)
				}
				dropped[id] = true
			}
			rounds := 0
			for a.pruneIndex(tNonceExp, before, true, drop) {
				if rounds++; rounds > len(tc.times) {
					t.Fatal("prune never caught up")
				}
			}
			if len(dropped) != len(want) {
				t.Fatalf("dropped %d, want %d", len(dropped), len(want))
			}
			for id := range want {
				if !dropped[id] {
					t.Fatalf("%s not dropped", id)
				}
			}
			left := 0
			scanKeys(a.t, key(tNonceExp), statedb.PrefixEnd(key(tNonceExp)), func([]byte) bool { left++; return true })
			if left != len(tc.times)-len(want) {
				t.Fatalf("%d index entries left, want %d", left, len(tc.times)-len(want))
			}
			if got := a.m.PrunedTo[tNonceExp]; got != before {
				t.Fatalf("mark %d, want %d", got, before)
			}

			// A key behind the mark (none is ever written there) shows where a scan starts:
			// the resuming prune does not reach it, a prune without resume does.
			a.t.setRaw(keyAt(tNonceExp, 5, "planted"), nil)
			var got []string
			a.pruneIndex(tNonceExp, 2*before+1, true, func(id string) { got = append(got, id) })
			for _, id := range got {
				if id == "planted" {
					t.Fatal("the resuming prune scanned behind its mark")
				}
			}
			if a.m.PrunedTo[tNonceExp] != 2*before+1 {
				t.Fatalf("mark %d after the second prune", a.m.PrunedTo[tNonceExp])
			}
			got = nil
			a.pruneIndex(tNonceExp, 2*before+1, false, func(id string) { got = append(got, id) })
			if len(got) != 1 || got[0] != "planted" {
				t.Fatalf("a prune without resume dropped %v", got)
			}
			// A bound behind the mark (a longer retention set since) prunes nothing.
			a.t.setRaw(keyAt(tNonceExp, 7, "again"), nil)
			if a.pruneIndex(tNonceExp, 100, true, func(id string) { t.Fatalf("dropped %s behind the mark", id) }) {
				t.Fatal("behind")
			}
		})
	}
}

// spread returns n times evenly in [from, to).
func spread(n int, from, to int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)*(to-from)/int64(n)
	}
	return out
}

// same returns n copies of at.
func same(n int, at int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = at
	}
	return out
}
