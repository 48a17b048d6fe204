package state

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/custos/custos/internal/statedb"
)

// Attacks on the replicated state as issue 11 reshaped it (stamps, retention, the audit
// on disk, snapshot restore checks, key encoding, API reads), by one compromised member,
// a replaying network or a client. Each test mounts one attack and fails while it works.

// applyNoPanic applies through fn and reports a panic as a test failure (a panic in
// Apply is not a dbFault: it is re-raised, the raft goroutine dies, the process exits,
// and raft replays the same entry at the next start).
func applyNoPanic(t *testing.T, what string, fn func() Result) (res Result, panicked bool) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s: Apply panicked (every node crashes, and again on every restart): %v", what, p)
			panicked = true
		}
	}()
	return fn(), false
}

// TestAttack2ShareReportForAnApprovedKeygenCrashesEveryNode: a keygen that needed
// approval is approved (status scheduled, no session nonce yet, its key not created
// until the leader releases it). Any one member — no leader needed: the propose RPC
// forwards a member's own share report — reports a share stored for it with an empty
// nonce: equalBytes(nil, nil) passes the session check, the key is nil, and Apply
// dereferences it.
func TestAttack2ShareReportForAnApprovedKeygenCrashesEveryNode(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	res := approvedKeygen(t, h)
	if r := h.f.Request(res.RequestID); r.Status != StatusScheduled || len(r.Nonce) != 0 || h.f.Key(r.KeyID) != nil {
		t.Fatalf("approved keygen: %+v", r)
	}
	// n3 alone, in its own name.
	rr, panicked := applyNoPanic(t, "share report", func() Result {
		return h.reportAs("n3", "n3", TypeShareStored, &ShareStored{RequestID: res.RequestID, Node: "n3", PublicKey: []byte{2, 1}})
	})
	if panicked {
		return
	}
	if rr.OK() {
		t.Fatalf("a share report for a keygen that has not run was accepted: %+v", rr)
	}
	// The keygen still runs when released.
	h.stamp += 60_001
	if rel := h.release(res.RequestID, h.nodes); !rel.OK() || h.f.Key(res.KeyID) == nil {
		t.Fatalf("release after the refused report: %+v", rel)
	}
}

// TestAttack2SnapshotAuditEntriesAtOtherKeys: the state hash leaves the audit out (its
// head is in meta), so a restored audit is checked link by link only — not that entry
// seq sits under key seq. A compromised leader sends a follower the honest state with the
// audit's last entries shifted one key up: the chain reads in order and verifies, the
// state hash equals everyone's (the node is vouched for), and then the node's own next
// audit entry overwrites one it holds (an audit entry lost on that node), and the
// admin's next prune is refused there and applied everywhere else: an honest node made
// to look diverged.
func TestAttack2SnapshotAuditEntriesAtOtherKeys(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	for i := 0; i < 4; i++ {
		h.submit("n1", h.userReq("GET", "/v1/keys/"+k.ID, "", 0), nil)
	}
	seq, _ := h.f.AuditHead()
	const from = 3 // entries from..seq move to keys from+1..seq+1
	recs, err := statedb.ReadRecords(bytes.NewReader(snapshotOf(t, h.f)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		d := statedb.NewKeyDecoder(recs[i].Key)
		if d.Table() != tAudit {
			continue
		}
		if s := d.Uint64(); d.Done() == nil && s >= from {
			recs[i].Key = keyU64(tAudit, s+1)
		}
	}
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, recs); err != nil {
		t.Fatal(err)
	}
	g := openTestFSM(t, okVerifier{}, harnessAuthn(t), nil)
	if err := g.Restore(io.NopCloser(&forged)); err != nil {
		if !strings.Contains(err.Error(), "audit") {
			t.Fatalf("refused, but not for its audit: %v", err)
		}
		return // refused: the attack fails here
	}
	t.Errorf("a snapshot whose audit entries %d..%d sit one key up was restored", from, seq)
	if _, h1 := h.f.Hash(); func() string { _, h2 := g.Hash(); return h2 }() == h1 {
		t.Logf("its state hash equals the honest nodes': k members vouch for it")
	}
	// The leader's next entries reach both nodes: the admin prunes an exported range.
	all, _ := h.f.Audit(0, 1000)
	n := len(h.log)
	if r := h.submit("n1", h.admin("POST", "/v1/admin/audit/prune", fmt.Sprintf(`{"before":%d,"head_hash":%q}`, seq, all[seq-2].Hash)), nil); !r.OK() {
		t.Fatalf("prune: %+v", r)
	}
	for _, l := range h.log[n:] {
		g.Apply(l)
	}
	if _, h1 := h.f.Hash(); func() string { _, h2 := g.Hash(); return h2 }() != h1 {
		t.Errorf("after the admin's prune the restored node's state hash differs from the honest nodes': it is declared diverged")
	}
	pseq, phash := g.AuditPruned()
	if pseq == 0 {
		phash = GenesisHash
	}
	if es, _ := g.Audit(0, 1000); VerifyChain(phash, es) != -1 {
		t.Errorf("the restored node's audit chain no longer verifies: an entry was overwritten")
	}
}

// TestAttack2LongIdempotencyKeyBreaksEverySnapshot: an idempotency key is stored inside
// a record's key (its scope: caller | route | key), and nothing bounds its length but the
// API's body limit (1 MiB). Any user with keys:sign (or keys:create) sends one of 70 KiB:
// Pebble stores it, but the snapshot stream refuses keys over 64 KiB, so from then on
// (for the request's retention, 24 h by default; again at will) no node can install a
// snapshot: a new, replaced or lagging member cannot catch up.
func TestAttack2LongIdempotencyKeyBreaksEverySnapshot(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	long := strings.Repeat("i", 70<<10)
	s := &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:k.Threshold], Nonce: randNonce()}
	res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q,"idempotency_key":%q}`, digest, long), 0), s)
	if res.Code != "request.malformed" {
		t.Errorf("a sign request with a %d-byte idempotency key: %+v, want request.malformed", len(long), res)
	}
	// A field value: an unknown key is 404 first.
	s = &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:k.Threshold], Nonce: randNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys/key_"+randHex()+"/sign", fmt.Sprintf(`{"message":%q,"idempotency_key":%q}`, digest, long), 0), s); res.Code != "key.not_found" {
		t.Errorf("a long idempotency key for an unknown key: %+v, want key.not_found", res)
	}
	// 256 bytes is the limit.
	for n, ok := range map[int]bool{MaxIdempotencyKey: true, MaxIdempotencyKey + 1: false} {
		s = &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:k.Threshold], Nonce: randNonce()}
		res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q,"idempotency_key":%q}`, digest, strings.Repeat("j", n)), 0), s)
		if res.OK() != ok {
			t.Errorf("a %d-byte idempotency key: %+v", n, res)
		}
	}
	kg := &Schedule{RequestID: "req_" + randHex(), KeyID: "key_" + randHex(), Committee: h.nodes, Nonce: randNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys", fmt.Sprintf(`{"curve":"ed25519","threshold":2,"idempotency_key":%q}`, long), 0), kg); res.OK() {
		t.Errorf("a keygen with a %d-byte idempotency key was admitted", len(long))
	}
	g := openTestFSM(t, okVerifier{}, nil, nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, h.f)))); err != nil {
		t.Fatalf("no node can restore this cluster's snapshot any more: %v", err)
	}
	// An ordinary idempotency key still works.
	s = &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:k.Threshold], Nonce: randNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q,"idempotency_key":"order-42"}`, digest), 0), s); !res.OK() {
		t.Fatalf("sign with an idempotency key: %+v", res)
	}
}

// TestAttack2CheckpointRequestsEvictTheVotes: any member (a follower: the propose RPC
// forwards its own checkpoint requests) asks for a checkpoint with every entry it can
// get into the log. Had one been granted every MinCheckpointGap (64) entries — the
// refused ones are entries too, so the member paces them itself — the state, which keeps
// the votes of MaxCheckpointIndices (8) indices only, would forget every index 512
// entries after it opened, before the members' background hashes of a large state
// arrive (and every node would hash its whole state every 64 entries): a restored node
// would never gather k votes. A requested checkpoint is now granted only while none
// waits for k votes, so a member's requests cannot push out the index the cluster is
// hashing; once it has them, the next request opens a new index.
func TestAttack2CheckpointRequestsEvictTheVotes(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	// A restored node (n2) asks for the checkpoint it waits for.
	if r := h.reportAs("n2", "n2", TypeCheckpointRequest, &CheckpointRequest{Node: "n2", Reason: "restored snapshot"}); !r.OK() {
		t.Fatalf("request: %+v", r)
	}
	idx := h.index
	if v := h.f.CheckpointAt(idx); v.Votes == nil {
		t.Fatalf("no checkpoint at %d", idx)
	}
	// n3 asks again and again: each is served by the checkpoint waiting for its votes.
	n := MaxCheckpointIndices*MinCheckpointGap + 1
	for range n {
		if r := h.reportAs("n3", "n3", TypeCheckpointRequest, &CheckpointRequest{Node: "n3"}); !r.OK() || !r.Existing {
			t.Fatalf("request while checkpoint %d waits for its votes: %+v, want the existing one", idx, r)
		}
	}
	// The members' hashes of index idx arrive, and are kept.
	hash := strings.Repeat("ab", 32)
	for _, node := range []string{"n1", "n3"} {
		if vote := h.reportAs(node, node, TypeCheckpoint, &StateCheckpoint{Node: node, Index: idx, StateHash: hash}); !vote.OK() {
			t.Fatalf("after %d checkpoint requests by one member, %s's vote for checkpoint %d: %s (%s)", n, node, idx, vote.Code, vote.Detail)
		}
	}
	if v := h.f.CheckpointAt(idx); len(v.Votes) != 2 {
		t.Fatalf("votes at %d: %v", idx, v.Votes)
	}
	// With k votes in, the next request (past the gap) opens a new checkpoint.
	if r := h.reportAs("n2", "n2", TypeCheckpointRequest, &CheckpointRequest{Node: "n2"}); !r.OK() || r.Existing {
		t.Fatalf("request once checkpoint %d has its votes: %+v, want a new checkpoint", idx, r)
	}
	if v := h.f.CheckpointAt(h.index); v.Votes == nil {
		t.Fatalf("no checkpoint opened at %d", h.index)
	}
}

// TestAttack2OversizedReportFieldsAreKept: a member's own reports are capped only by the
// propose RPC (4 MiB), and two of their fields are stored as sent. A committee member
// reports failures of an open request with 16 culprits of 128 KiB each, again and again:
// the request keeps its last 64 failures, up to 256 MiB in one record — over the 64 MiB
// value a snapshot stream may carry (no node can install a snapshot while it is kept),
// and decoded whole by every read of the request (each node's runner reads every open
// request every 2 s). A keygen member reports a 1 MiB "public key": the key keeps it
// forever, and every node's runner decodes every key every 2 s.
func TestAttack2OversizedReportFieldsAreKept(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	res := h.sign(k, digest)
	if !res.OK() {
		t.Fatalf("sign: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	culprits := make([]string, 16)
	for i := range culprits {
		culprits[i] = strings.Repeat("x", 128<<10)
	}
	for i := 0; i < 2; i++ {
		if rr := h.reportAs("n2", "n2", TypeCeremonyFailed, &CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Code: "ceremony.failed", Detail: "x", Culprits: culprits}); !rr.OK() {
			t.Fatalf("failure report: %+v", rr)
		}
	}
	if size := len(mustJSON(h.f.Request(r.ID))); size > 64<<10 {
		t.Errorf("two failure reports made request %s a record of %d KiB (64 reports: %d MiB)", r.ID, size>>10, 64*size/2>>20)
	}
	kg := h.keygen(CurveEd25519, 2)
	h.reportAs("n3", "n3", TypeShareStored, &ShareStored{RequestID: kg.ID, Nonce: kg.Nonce, Node: "n3", PublicKey: bytes.Repeat([]byte{7}, 1<<20)})
	if size := len(mustJSON(h.f.Key(kg.KeyID))); size > 4<<10 {
		t.Errorf("a share report made key %s a record of %d KiB", kg.KeyID, size>>10)
	}
}
