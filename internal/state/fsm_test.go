package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/statedb"
)

// okVerifier accepts signatures whose Sig field says "good"; a unit-test fake of the
// node's pure verifier.
type okVerifier struct{}

func (okVerifier) VerifySignature(curve string, pub, cc []byte, path []uint32, msg []byte, sig *Signature) error {
	if string(sig.Sig) != "good" {
		return errors.New("bad signature")
	}
	return nil
}

type harness struct {
	t      *testing.T
	f      *FSM
	index  uint64
	stamp  int64
	events []Event
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, stamp: 1_700_000_000_000}
	h.f = openTestFSM(t, okVerifier{}, nil, func(e Event) { h.events = append(h.events, e) })
	h.apply(TypeClusterInit, &ClusterInit{Name: "test", Threshold: 2, Members: []Member{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}}, Events: true})
	return h
}

func (h *harness) apply(typ string, payload any) Result {
	h.t.Helper()
	h.index++
	h.stamp += 10
	b, err := Encode(typ, h.stamp, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	res, ok := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}).(Result)
	if !ok {
		h.t.Fatalf("apply %s returned no Result", typ)
	}
	return res
}

func (h *harness) admin(nonce string) Caller {
	return Caller{Kind: "admin", TokenIssuedAt: h.stamp / 1000, TokenExpires: h.stamp/1000 + 120, NonceKey: nonce}
}

func (h *harness) user(id uint64, nonce string) Caller {
	return Caller{Kind: "user", UserID: id, TokenIssuedAt: h.stamp/1000 - 10, TokenExpires: h.stamp/1000 + 3600, Created: h.stamp / 1000, NonceKey: nonce}
}

func (h *harness) createUser(name string) uint64 {
	h.t.Helper()
	res := h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserCreate, UserName: name})
	if !res.OK() {
		h.t.Fatalf("create user: %+v", res)
	}
	return res.UserID
}

var nonceN byte

func freshNonce() []byte {
	nonceN++
	return bytes.Repeat([]byte{nonceN}, 32)
}

func (h *harness) activeKey(owner uint64, curve string) string {
	h.t.Helper()
	res := h.apply(TypeCall, &Call{Caller: h.user(owner, ""), Op: OpKeyCreate, Curve: curve, Threshold: 2,
		Schedule: &Schedule{RequestID: "req_k" + string(rune('a'+nonceN)), KeyID: "key_" + string(rune('a'+nonceN)), Committee: []string{"n3", "n1", "n2"}, Nonce: freshNonce(), ChainCode: bytes.Repeat([]byte{9}, 32)}})
	if !res.OK() {
		h.t.Fatalf("keygen: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	for _, n := range []string{"n1", "n2", "n3"} {
		h.apply(TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n, PublicKey: []byte{2, 1}})
	}
	if k := h.f.Key(res.KeyID); k.Status != KeyActive {
		h.t.Fatalf("key status %s", k.Status)
	}
	return res.KeyID
}

func TestUserAuthentication(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	tests := []struct {
		name   string
		caller func() Caller
		want   string
	}{
		{"ok", func() Caller { return h.user(alice, "n-1") }, ""},
		{"replayed nonce", func() Caller { return h.user(alice, "n-1") }, "auth.nonce_reused"},
		{"unknown user", func() Caller { return h.user(99, "n-2") }, "auth.token_invalid"},
		{"expired token", func() Caller { c := h.user(alice, "n-3"); c.TokenExpires = h.stamp/1000 - 1; return c }, "auth.token_expired"},
		{"stale signature", func() Caller { c := h.user(alice, "n-4"); c.Created = h.stamp/1000 - 301; return c }, "auth.signature_expired"},
		{"future signature", func() Caller { c := h.user(alice, "n-5"); c.Created = h.stamp/1000 + 400; return c }, "auth.signature_invalid"},
		{"expires passed", func() Caller { c := h.user(alice, "n-6"); c.Expires = h.stamp/1000 - 1; return c }, "auth.signature_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.apply(TypeCall, &Call{Caller: tt.caller(), Op: OpKeyList})
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
		})
	}
}

func TestOrderOfChecks(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	bob := h.createUser("bob")
	key := h.activeKey(alice, CurveSecp256k1)
	h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserPermissions, TargetUserID: bob, Permissions: []string{PermKeysRead}})
	sched := func() *Schedule {
		return &Schedule{RequestID: "req_" + string(rune('A'+nonceN)), Committee: []string{"n1", "n2"}, Nonce: freshNonce()}
	}
	digest := "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	tests := []struct {
		name string
		call Call
		want string
	}{
		{"malformed JSON before permission", Call{Caller: h.user(bob, "o-1"), Op: OpKeySign, KeyID: key, Malformed: "bad json"}, "request.malformed"},
		{"permission before object", Call{Caller: h.user(bob, "o-2"), Op: OpKeySign, KeyID: "key_missing"}, "perm.denied"},
		{"another user's key is not found", Call{Caller: h.user(bob, "o-3"), Op: OpKeyGet, KeyID: key}, "key.not_found"},
		{"object before fields", Call{Caller: h.user(alice, "o-4"), Op: OpKeySign, KeyID: "key_missing", MessageHex: "zz"}, "key.not_found"},
		{"digest of wrong length", Call{Caller: h.user(alice, "o-5"), Op: OpKeySign, KeyID: key, MessageHex: "0011", Schedule: sched()}, "request.malformed"},
		{"hardened path", Call{Caller: h.user(alice, "o-6"), Op: OpKeySign, KeyID: key, MessageHex: digest, Path: "m/0'", Schedule: sched()}, "request.malformed"},
		{"user on admin route", Call{Caller: h.user(alice, "o-7"), Op: OpUserList}, "perm.denied"},
		{"admin on user route", Call{Caller: h.admin("o-8"), Op: OpKeyList}, "perm.denied"},
		{"sign ok", Call{Caller: h.user(alice, "o-9"), Op: OpKeySign, KeyID: key, MessageHex: digest, Path: "m/0/7", Schedule: sched()}, ""},
		{"unschedulable", Call{Caller: h.user(alice, "o-10"), Op: OpKeySign, KeyID: key, MessageHex: digest, Unschedulable: "too few nodes"}, "cluster.unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.call
			res := h.apply(TypeCall, &c)
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
		})
	}
}

func TestUserAdministration(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	if res := h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserDisable, TargetUserID: alice}); !res.OK() {
		t.Fatal(res)
	}
	if res := h.apply(TypeCall, &Call{Caller: h.user(alice, "d-1"), Op: OpKeyList}); res.Code != "auth.user_disabled" {
		t.Fatalf("disabled user: %+v", res)
	}
	h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserEnable, TargetUserID: alice})
	old := h.user(alice, "d-2")
	h.stamp += 2000
	h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserRevokeTokens, TargetUserID: alice})
	if res := h.apply(TypeCall, &Call{Caller: old, Op: OpKeyList}); res.Code != "auth.token_invalid" {
		t.Fatalf("revoked token: %+v", res)
	}
	fresh := h.user(alice, "d-3")
	fresh.TokenIssuedAt = h.stamp / 1000
	if res := h.apply(TypeCall, &Call{Caller: fresh, Op: OpKeyList}); !res.OK() {
		t.Fatalf("new token after revocation: %+v", res)
	}
	if res := h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserPermissions, TargetUserID: alice, Permissions: []string{"keys:fly"}}); res.Code != "request.malformed" {
		t.Fatalf("unknown permission: %+v", res)
	}
	if res := h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserGet, TargetUserID: 42}); res.Code != "user.not_found" {
		t.Fatalf("missing user: %+v", res)
	}
	sig := h.admin("")
	sig.SigpairOnly = true
	if res := h.apply(TypeCall, &Call{Caller: sig, Op: OpUserList}); res.Code != "perm.denied" {
		t.Fatalf("sigpair token on another route: %+v", res)
	}
	if res := h.apply(TypeCall, &Call{Caller: sig, Op: OpSigpairCreate, UserName: "carol"}); !res.OK() || res.UserID != alice+1 {
		t.Fatalf("sigpair create: %+v", res)
	}
}

func TestSignLifecycle(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	key := h.activeKey(alice, CurveEd25519)
	nonce := freshNonce()
	res := h.apply(TypeCall, &Call{Caller: h.user(alice, "s-1"), Op: OpKeySign, KeyID: key, MessageHex: "00ff", IdempotencyKey: "idem-1", BodyHash: "h1",
		Schedule: &Schedule{RequestID: "req_s1", Committee: []string{"n2", "n1"}, Nonce: nonce}})
	if !res.OK() {
		t.Fatal(res)
	}
	r := h.f.Request("req_s1")
	if r.Status != StatusScheduled || r.Committee[0] != "n1" {
		t.Fatalf("request %+v", r)
	}
	// Same idempotency key, same body: the first request; different body: conflict.
	if again := h.apply(TypeCall, &Call{Caller: h.user(alice, "s-2"), Op: OpKeySign, KeyID: key, MessageHex: "00ff", IdempotencyKey: "idem-1", BodyHash: "h1",
		Schedule: &Schedule{RequestID: "req_s2", Committee: []string{"n1", "n2"}, Nonce: freshNonce()}}); again.RequestID != "req_s1" || !again.Existing {
		t.Fatalf("idempotent replay: %+v", again)
	}
	if c := h.apply(TypeCall, &Call{Caller: h.user(alice, "s-3"), Op: OpKeySign, KeyID: key, MessageHex: "01", IdempotencyKey: "idem-1", BodyHash: "h2",
		Schedule: &Schedule{RequestID: "req_s3", Committee: []string{"n1", "n2"}, Nonce: freshNonce()}}); c.Code != "request.idempotency_conflict" {
		t.Fatalf("idempotency conflict: %+v", c)
	}
	// A reused session nonce is refused.
	if c := h.apply(TypeCall, &Call{Caller: h.user(alice, "s-4"), Op: OpKeySign, KeyID: key, MessageHex: "01",
		Schedule: &Schedule{RequestID: "req_s4", Committee: []string{"n1", "n2"}, Nonce: nonce}}); c.Code != "cluster.unavailable" {
		t.Fatalf("reused session nonce: %+v", c)
	}
	// A failure asks for a retry; the leader reschedules with a new committee and nonce.
	h.apply(TypeCeremonyFailed, &CeremonyFailed{RequestID: "req_s1", Nonce: nonce, Node: "n2", Code: "ceremony.failed", Detail: "timeout", Culprits: []string{"n2"}})
	if r := h.f.Request("req_s1"); !r.Retry {
		t.Fatal("retry not flagged")
	}
	if c := h.apply(TypeReschedule, &Reschedule{RequestID: "req_s1", Attempt: 1, Committee: []string{"n1", "n3"}, Nonce: freshNonce()}); !c.OK() {
		t.Fatal(c)
	}
	if c := h.apply(TypeReschedule, &Reschedule{RequestID: "req_s1", Attempt: 1, Committee: []string{"n1", "n3"}, Nonce: freshNonce()}); c.OK() {
		t.Fatal("a second reschedule of the same attempt was accepted")
	}
	// A signature that does not verify is refused; a good one settles the request.
	if c := h.apply(TypeCeremonyResult, &CeremonyResult{RequestID: "req_s1", Node: "n1", Signature: Signature{Sig: []byte("bad")}}); c.Code != "ceremony.failed" {
		t.Fatalf("bad signature accepted: %+v", c)
	}
	h.apply(TypeCeremonyResult, &CeremonyResult{RequestID: "req_s1", Node: "n3", Signature: Signature{Sig: []byte("good")}})
	r = h.f.Request("req_s1")
	if r.Status != StatusSigned || r.SignedBy != "n3" || r.Attempt != 2 {
		t.Fatalf("request %+v", r)
	}
}

func TestKeygenDisagreementFails(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	res := h.apply(TypeCall, &Call{Caller: h.user(alice, "k-1"), Op: OpKeyCreate, Curve: CurveEd25519, Threshold: 2,
		Schedule: &Schedule{RequestID: "req_k", KeyID: "key_k", Committee: []string{"n1", "n2", "n3"}, Nonce: freshNonce()}})
	r := h.f.Request(res.RequestID)
	h.apply(TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", PublicKey: []byte{1}})
	h.apply(TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", PublicKey: []byte{1}})
	h.events = nil
	h.apply(TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n3", PublicKey: []byte{2}})
	if k := h.f.Key("key_k"); k.Status != KeyFailed {
		t.Fatalf("key %s", k.Status)
	}
	var erased bool
	for _, e := range h.events {
		erased = erased || (e.Kind == EventKeyFailed && e.KeyID == "key_k")
	}
	if !erased {
		t.Fatal("no key_failed event: nodes would keep their shares")
	}
	// Keygen needing every node: a wrong committee is refused.
	if c := h.apply(TypeCall, &Call{Caller: h.user(alice, "k-2"), Op: OpKeyCreate, Curve: CurveEd25519, Threshold: 2,
		Schedule: &Schedule{RequestID: "req_k2", KeyID: "key_k2", Committee: []string{"n1", "n2"}, Nonce: freshNonce()}}); c.Code != "cluster.unavailable" {
		t.Fatalf("partial keygen committee: %+v", c)
	}
}

func TestStampsNeverDecrease(t *testing.T) {
	h := newHarness(t)
	b, _ := Encode(TypeCall, h.stamp-1, &Call{Caller: h.admin(""), Op: OpUserList})
	h.index++
	res := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}).(Result)
	if res.Code != "cluster.unavailable" {
		t.Fatalf("entry stamped in the past applied: %+v", res)
	}
}

func TestUnknownCommandHalts(t *testing.T) {
	h := newHarness(t)
	b, _ := json.Marshal(Envelope{Type: "from.the.future", Version: 1, Stamp: h.stamp + 1, Payload: []byte("{}")})
	h.index++
	h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b})
	if h.f.Halted() == "" {
		t.Fatal("unknown command did not halt")
	}
	b, _ = Encode(TypeCall, h.stamp+2, &Call{Caller: h.admin(""), Op: OpUserCreate, UserName: "x"})
	h.index++
	if res := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}).(Result); res.OK() {
		t.Fatal("applied an entry after halting")
	}
	// Raft counts those entries applied: a snapshot labelled at its index would hold a
	// state that stops before them.
	if _, err := h.f.Snapshot(); err == nil {
		t.Fatal("a halted state machine was snapshotted")
	}
	// Its state can still be read, as it was before the entry it could not apply.
	var buf bytes.Buffer
	if _, err := h.f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	if idx, err := statedb.StreamAppliedIndex(&buf); err != nil || idx != h.index-2 {
		t.Fatalf("the halted state reads as index %d (%v), want %d", idx, err, h.index-2)
	}
}

type sink struct {
	bytes.Buffer
}

func (s *sink) ID() string    { return "s" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

// checkpointSink keeps a snapshot as a checkpoint in a directory under base (as
// raftnode's store does), recording the index the checkpoint holds.
type checkpointSink struct {
	sink
	base    string
	n       int
	content uint64
}

func (s *checkpointSink) Checkpoint(take func(dir string) (uint64, error)) error {
	s.n++
	idx, err := take(filepath.Join(s.base, fmt.Sprintf("cp-%d", s.n)))
	s.content = idx
	return err
}

func TestSnapshotRestoreAndAuditChain(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	h.activeKey(alice, CurveSecp256k1)
	snap := snapshotOf(t, h.f)
	g := restoredFSM(t, snap)
	_, h1 := h.f.Hash()
	_, h2 := g.Hash()
	if h1 != h2 {
		t.Fatal("restored state differs")
	}
	entries, _ := g.Audit(0, 1000)
	if len(entries) < 3 || entries[0].PrevHash != GenesisHash {
		t.Fatalf("audit: %d entries", len(entries))
	}
	if i := VerifyChain(GenesisHash, entries); i != -1 {
		t.Fatalf("chain broken at %d", i)
	}
	entries[1].Outcome = "allowed-ish"
	if i := VerifyChain(GenesisHash, entries); i != 1 {
		t.Fatalf("tampering found at %d, want 1", i)
	}
}

// TestSnapshotAsCheckpoint: a snapshot kept as a checkpoint holds the state at its index
// or later, streams to exactly the snapshot a stream would have been, restores to the
// same state, and is not reported as a stream this node wrote (OnSnapshot).
func TestSnapshotAsCheckpoint(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	h.activeKey(alice, CurveSecp256k1)
	var told int
	h.f.OnSnapshot(func(uint64, [32]byte) { told++ })
	want := snapshotOf(t, h.f)
	told = 0
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cs := &checkpointSink{base: t.TempDir()}
	if err := snap.Persist(cs); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if cs.content != h.f.AppliedIndex() || told != 0 {
		t.Fatalf("checkpoint at %d (applied %d), OnSnapshot told %d times", cs.content, h.f.AppliedIndex(), told)
	}
	if cs.Len() != 0 {
		t.Fatal("a checkpoint snapshot was also streamed into the sink")
	}
	h.createUser("bob") // the state moves on; the checkpoint does not
	var buf bytes.Buffer
	n, idx, err := h.f.StreamCheckpoint(filepath.Join(cs.base, "cp-1"), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || idx != cs.content || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("checkpoint streamed %d bytes at index %d; the stream at %d was %d bytes (equal: %v)", n, idx, cs.content, len(want), bytes.Equal(buf.Bytes(), want))
	}
	g := restoredFSM(t, buf.Bytes())
	if gi, _ := g.Hash(); gi != cs.content {
		t.Fatalf("restored at %d, want %d", gi, cs.content)
	}
	if err := snapshotOfErr(h.f, &checkpointSink{base: cs.base}); err == nil {
		t.Fatal("a checkpoint over an existing directory was kept")
	}
}

// TestRestoreChecksBeforeSwitching: a stream that passes the layout and audit checks but
// holds what the FSM cannot load once switched in (a policy record that does not decode)
// is refused before the switch — the attack: the state switched in, the restore failed,
// and nothing told the node it runs on a state restored from the leader's word — and a
// restore the OnRestoreStart hook refuses leaves the state as it was.
func TestRestoreChecksBeforeSwitching(t *testing.T) {
	h := newHarness(t)
	h.createUser("alice")
	recs, err := statedb.ReadRecords(bytes.NewReader(snapshotOf(t, h.f)))
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, statedb.Record{Key: keyStr(tPolicy, "forged"), Value: []byte("{")})
	sort.Slice(recs, func(i, j int) bool { return bytes.Compare(recs[i].Key, recs[j].Key) < 0 })
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, recs); err != nil {
		t.Fatal(err)
	}
	g := openTestFSM(t, okVerifier{}, nil, nil)
	var started, told int
	g.OnRestoreStart(func() error { started++; return nil })
	g.OnRestore(func(uint64, [32]byte) { told++ })
	if err := g.Restore(io.NopCloser(&forged)); err == nil {
		t.Fatal("a state whose policy record does not decode was restored")
	}
	if idx, _, _ := g.db.AppliedIndex(); idx != 0 || started != 1 || told != 0 {
		t.Fatalf("after the refused restore: database at index %d, restore hook run %d times, told %d times", idx, started, told)
	}
	g.OnRestoreStart(func() error { return errors.New("keystore down") })
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, h.f)))); err == nil {
		t.Fatal("a restore its start hook refused went ahead")
	}
	if idx, _, _ := g.db.AppliedIndex(); idx != 0 || told != 0 {
		t.Fatalf("a refused restore switched the state in (index %d)", idx)
	}
}

// snapshotOfErr persists a snapshot of f into s.
func snapshotOfErr(f *FSM, s raft.SnapshotSink) error {
	snap, err := f.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	return snap.Persist(s)
}

func TestCanonicalJSON(t *testing.T) {
	e := AuditEntry{Seq: 7, Time: "2026-11-21T15:04:05.000Z", Actor: "user:1", Action: "a\"b\\c\n\u0001<>&é", Object: "o", Outcome: "allowed", PrevHash: GenesisHash}
	want := `{"action":"a\"b\\c\n\u0001<>&é","actor":"user:1","code":"","object":"o","outcome":"allowed","prev_hash":"` + GenesisHash + `","seq":7,"time":"2026-11-21T15:04:05.000Z"}`
	if got := string(AuditCanonical(&e)); got != want {
		t.Fatalf("canonical:\n got %s\nwant %s", got, want)
	}
}

func FuzzApply(f *testing.F) {
	b, _ := Encode(TypeCall, 1, &Call{Caller: Caller{Kind: "admin"}, Op: OpUserCreate, UserName: "x"})
	f.Add(b)
	f.Add([]byte(`{"t":"call","v":1,"s":5,"p":{"op":"keys.sign"}}`))
	// One FSM serves the inputs until one halts it (opening a database per input would
	// leave the fuzzer little time for inputs).
	var fsm *FSM
	var index uint64
	dir, opened := f.TempDir(), 0
	f.Cleanup(func() {
		if fsm != nil {
			_ = fsm.Close()
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if fsm == nil || fsm.Halted() != "" {
			if fsm != nil {
				_ = fsm.Close()
			}
			var err error
			opened++
			if fsm, err = Open(Config{Dir: filepath.Join(dir, strconv.Itoa(opened)), Verifier: okVerifier{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
				t.Fatal(err)
			}
			index = fsm.AppliedIndex()
		}
		index++
		fsm.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	})
}

// TestRetriedProposalGetsFirstResult: an entry node that retries a proposal after an
// ambiguous failure (its first copy did commit) gets the first copy's result, not
// auth.nonce_reused, and nothing happens twice; another proposal with the same nonce is
// still a replay. Found by the chaos harness: a sign reported refused was signed.
func TestRetriedProposalGetsFirstResult(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	key := h.activeKey(alice, CurveEd25519)
	call := func(reqID, proposal string) *Call {
		return &Call{Caller: h.user(alice, "n-1"), Op: OpKeySign, KeyID: key, MessageHex: "00ff", ProposalID: proposal,
			Schedule: &Schedule{RequestID: reqID, Committee: []string{"n1", "n2"}, Nonce: freshNonce()}}
	}
	first := h.apply(TypeCall, call("req_a", "prop-1"))
	if !first.OK() || first.RequestID != "req_a" {
		t.Fatalf("first: %+v", first)
	}
	seq, _ := h.f.AuditHead()
	tests := []struct {
		name     string
		call     *Call
		wantReq  string
		wantCode string
	}{
		{"retry of the same proposal", call("req_b", "prop-1"), "req_a", ""},
		{"another proposal reusing the nonce", call("req_c", "prop-2"), "", "auth.nonce_reused"},
		{"no proposal id reusing the nonce", call("req_d", ""), "", "auth.nonce_reused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.apply(TypeCall, tt.call)
			if res.RequestID != tt.wantReq || res.Code != tt.wantCode {
				t.Fatalf("result %+v, want request %q code %q", res, tt.wantReq, tt.wantCode)
			}
		})
	}
	if h.f.Request("req_b") != nil {
		t.Fatal("the retry created a second request")
	}
	if s2, _ := h.f.AuditHead(); s2 != seq+2 {
		t.Fatalf("audit grew by %d, want 2 (the two refused replays only)", s2-seq)
	}
}

// TestInlinePreParamsReported: nodes that generated ECDSA pre-parameters during a keygen
// (their pool was empty) are listed on the request; such a report is a v2 entry.
func TestInlinePreParamsReported(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	res := h.apply(TypeCall, &Call{Caller: h.user(alice, ""), Op: OpKeyCreate, Curve: CurveSecp256k1, Threshold: 2,
		Schedule: &Schedule{RequestID: "req_inline", KeyID: "key_inline", Committee: []string{"n1", "n2", "n3"}, Nonce: freshNonce(), ChainCode: bytes.Repeat([]byte{9}, 32)}})
	if !res.OK() {
		t.Fatal(res)
	}
	r := h.f.Request("req_inline")
	for _, tc := range []struct {
		node    string
		inline  bool
		version int
	}{{"n1", false, 1}, {"n2", true, 2}, {"n3", true, 2}} {
		c := &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: tc.node, PublicKey: []byte{2, 1}, InlinePreParams: tc.inline}
		b, err := Encode(TypeShareStored, 1, c)
		if err != nil {
			t.Fatal(err)
		}
		var env Envelope
		if err := json.Unmarshal(b, &env); err != nil || env.Version != tc.version {
			t.Fatalf("%s: version %d (%v), want %d", tc.node, env.Version, err, tc.version)
		}
		h.apply(TypeShareStored, c)
	}
	if got := h.f.Request("req_inline"); got.Status != StatusActive || !slices.Equal(got.InlinePreParams, []string{"n2", "n3"}) {
		t.Fatalf("request %s, inline %v", got.Status, got.InlinePreParams)
	}
}
