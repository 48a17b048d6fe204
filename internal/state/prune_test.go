package state

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestAuditPrune: the admin drops an exported range of the audit by naming its last
// entry's hash; the chain then starts at the next entry, linked to the pruned head that
// the state keeps; a snapshot of the pruned state restores and verifies; a wrong hash, a
// range past the head, one already pruned, a non-admin and bad values are refused.
func TestAuditPrune(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	for i := 0; i < 5; i++ {
		h.submit("n1", h.userReq("GET", "/v1/keys/"+k.ID, "", 0), nil)
	}
	all, _ := h.f.Audit(0, 1000)
	if len(all) < 8 {
		t.Fatalf("%d audit entries", len(all))
	}
	prune := func(before uint64, hash string) Result {
		return h.submit("n1", h.admin("POST", "/v1/admin/audit/prune", fmt.Sprintf(`{"before":%d,"head_hash":%q}`, before, hash)), nil)
	}
	head := func(seq uint64) string { return all[seq-1].Hash }
	for _, tc := range []struct {
		name   string
		before uint64
		hash   string
		code   string
	}{
		{"nothing to prune", 1, GenesisHash, "request.malformed"},
		{"hash not hex", 5, strings.Repeat("z", 64), "request.malformed"},
		{"hash uppercase", 5, strings.ToUpper(head(4)), "request.malformed"},
		{"wrong hash", 5, head(3), "request.conflict"},
		{"past the head", uint64(len(all)) + 50, head(4), "request.conflict"},
	} {
		if r := prune(tc.before, tc.hash); r.Code != tc.code {
			t.Errorf("%s: %+v, want %s", tc.name, r, tc.code)
		}
	}
	if r := h.submit("n1", h.userReq("POST", "/v1/admin/audit/prune", fmt.Sprintf(`{"before":5,"head_hash":%q}`, head(4)), 0), nil); r.Code != "perm.denied" {
		t.Fatalf("a user pruned the audit: %+v", r)
	}
	if r := prune(5, head(4)); !r.OK() {
		t.Fatalf("prune: %+v", r)
	}
	if r := prune(4, head(3)); r.Code != "request.conflict" {
		t.Fatalf("prune of a pruned range: %+v", r)
	}
	seq, hash := h.f.AuditPruned()
	if seq != 4 || hash != head(4) {
		t.Fatalf("pruned anchor %d %s", seq, hash)
	}
	kept, _ := h.f.Audit(0, 1000)
	if kept[0].Seq != 5 || kept[0].PrevHash != head(4) || VerifyChain(head(4), kept) != -1 {
		t.Fatalf("kept chain starts at %d, links to %s", kept[0].Seq, kept[0].PrevHash)
	}
	var pruned []AuditEntry
	for _, e := range kept {
		if e.Action == OpAuditPrune && e.Outcome == "allowed" {
			pruned = append(pruned, e)
		}
	}
	if len(pruned) != 1 || pruned[0].Object != "audit:4" || pruned[0].Actor != "admin" {
		t.Fatalf("the prune's own entries: %+v", pruned)
	}
	// Entries before the cut are gone from reads; the rest is the same as before.
	for i, e := range all[4:] {
		if kept[i] != e {
			t.Fatalf("entry %d changed: %+v, was %+v", e.Seq, kept[i], e)
		}
	}
	// A snapshot of the pruned state restores (its chain verified from the anchor), and a
	// snapshot whose kept chain was tampered with is refused.
	snap := snapshotOf(t, h.f)
	g := restoredFSM(t, snap)
	if _, h1 := h.f.Hash(); func() string { _, h2 := g.Hash(); return h2 }() != h1 {
		t.Fatal("restored state differs")
	}
	if seq, _ := g.AuditPruned(); seq != 4 {
		t.Fatalf("restored anchor %d", seq)
	}
	forged := forgeRecords(t, snap, func(k, v []byte) []byte {
		if bytes.HasPrefix(k, key(tAudit)) {
			return bytes.Replace(v, []byte(`"outcome":"allowed"`), []byte(`"outcome":"refused"`), 1)
		}
		return v
	})
	if err := openTestFSM(t, okVerifier{}, nil, nil).Restore(io.NopCloser(bytes.NewReader(forged))); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a snapshot with an altered audit entry restored: %v", err)
	}
}
