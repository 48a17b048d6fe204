package vouch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

func TestCheckpointVerdict(t *testing.T) {
	votes := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name              string
		own               string
		votes             map[string]string
		k                 int
		vouched, diverged bool
	}{
		{"k others agree", "A", votes("n1", "A", "n2", "A", "n3", "A"), 2, true, false},
		{"own vote does not count", "A", votes("n3", "A", "n1", "A"), 2, false, false},
		{"one compromised member agrees with a forged state", "F", votes("n1", "F", "n2", "A", "n3", "F"), 2, false, false},
		{"k others signed another state", "F", votes("n1", "A", "n2", "A", "n3", "F"), 2, false, true},
		{"k-1 others cannot make a node diverge", "A", votes("n1", "B", "n2", "A"), 2, false, false},
		{"no own hash", "", votes("n1", "A", "n2", "A"), 2, false, false},
		{"5 nodes, two colluding", "F", votes("n1", "F", "n2", "F", "n4", "A", "n5", "A"), 3, false, false},
		{"5 nodes, three honest", "A", votes("n1", "F", "n2", "A", "n4", "A", "n5", "A"), 3, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, d := checkpointVerdict(tt.own, tt.votes, "n3", tt.k)
			if v != tt.vouched || d != tt.diverged {
				t.Fatalf("vouched %v diverged %v, want %v %v", v, d, tt.vouched, tt.diverged)
			}
		})
	}
}

// memStore is an in-memory meta store.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) GetMeta(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[name]
	if !ok {
		return nil, keystore.ErrNotFound
	}
	return b, nil
}

func (s *memStore) PutMeta(name string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[name] = v
	return nil
}

// views is a state whose checkpoint views and applied index the test sets.
type views struct {
	mu      sync.Mutex
	at      map[uint64]state.CheckpointView
	applied uint64
}

func (v *views) AppliedIndex() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.applied
}

func (v *views) CheckpointAt(index uint64) state.CheckpointView {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.at[index]
}
func (v *views) Cluster() (string, int, []state.Member) { return "test", 2, nil }

// reports is a Reporter that hands each report to the test.
type reports chan string

func (r reports) Report(_ context.Context, kind string, _ any) (state.Result, error) {
	r <- kind
	return state.Result{}, nil
}

// TestUnverifiedSurvivesRestart: a node that restored a snapshot it did not take and
// stopped before k members vouched for it still waits after it starts again (the attack:
// a compromised leader's forged snapshot, then a restart of the node — which a crash or
// an operator brings — must not make the node act on it).
func TestUnverifiedSurvivesRestart(t *testing.T) {
	st := &views{at: map[uint64]state.CheckpointView{}, applied: 150}
	store := &memStore{m: map[string][]byte{}}
	c := newCluster(t)
	restart := func() *Vouch {
		return New(Config{NodeID: "n3", State: st, Store: store, Registerer: prometheus.NewRegistry(), Members: c.init.Members, Threshold: 2})
	}
	v := restart()
	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	if v.Blocked() == "" {
		t.Fatal("not blocked while a snapshot is being restored")
	}
	v.OnRestore(200, [32]byte{2})
	if v.Blocked() == "" {
		t.Fatal("foreign snapshot not blocked")
	}
	st.applied = 200
	v = restart()
	if why := v.Blocked(); !strings.Contains(why, "index 200") {
		t.Fatalf("after a restart: blocked %q, want waiting for the snapshot at 200", why)
	}
	st.at[300] = state.CheckpointView{Own: "A", Votes: map[string]string{"n1": "A", "n2": "A"}}
	v.judgeCheckpoint(300)
	if v.Blocked() == "" {
		t.Fatal("vouched for by the votes the restored state holds, not by votes it verified")
	}
	c.votes(t, v, 300, "A")
	v.judgeCheckpoint(300)
	if why := v.Blocked(); why != "" {
		t.Fatalf("still blocked after k members vouched: %s", why)
	}

	// Stopped between the restore's switch and OnRestore: the state as it is (at 320)
	// waits.
	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	st.applied = 320
	if why := restart().Blocked(); !strings.Contains(why, "index 320") {
		t.Fatalf("after a stop mid-restore: blocked %q, want waiting at 320", why)
	}
	// A damaged record, or one that cannot be read, blocks too.
	store.m[unverifiedKey] = []byte("garbage")
	if why := restart().Blocked(); !strings.Contains(why, "index 320") {
		t.Fatalf("a damaged record: blocked %q", why)
	}
	// An empty state database (the node resynchronised: state moved aside) holds nothing
	// restored: the record is cleared.
	st.applied = 0
	if why := restart().Blocked(); why != "" {
		t.Fatalf("a fresh state database is blocked: %s", why)
	}
	st.applied = 10
	if why := restart().Blocked(); why != "" {
		t.Fatalf("the cleared record came back: %s", why)
	}
	// The record cannot be written: the restore is refused.
	if err := restart().OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	failing := &failStore{}
	v = New(Config{NodeID: "n3", State: st, Store: failing, Registerer: prometheus.NewRegistry()})
	if err := v.OnRestoreStart(); err == nil {
		t.Fatal("a restore went ahead without its record")
	}
	if why := v.Blocked(); !strings.Contains(why, "index 10") {
		t.Fatalf("a keystore that cannot be read: blocked %q, want waiting at 10", why)
	}
}

// failStore is a keystore whose meta records cannot be read or written.
type failStore struct{}

func (failStore) GetMeta(string) ([]byte, error) { return nil, errors.New("disk gone") }
func (failStore) PutMeta(string, []byte) error   { return errors.New("disk gone") }

// TestRestoreNeedsVouching: a snapshot this node took itself is adopted at once; one from
// elsewhere blocks the node, which asks for a checkpoint, until k other members signed its
// state hash at a later index; k others signing another hash stops it for good.
func TestRestoreNeedsVouching(t *testing.T) {
	st := &views{at: map[uint64]state.CheckpointView{}}
	store := &memStore{m: map[string][]byte{}}
	c := newCluster(t)
	v := New(Config{NodeID: "n3", State: st, Store: store, Registerer: prometheus.NewRegistry(), Members: c.init.Members, Threshold: 2})
	rep := make(reports, 16)
	v.Start(context.Background(), rep)
	defer v.Stop()

	own := [32]byte{1}
	v.OnSnapshot(100, own)
	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	v.OnRestore(100, own)
	if why := v.Blocked(); why != "" {
		t.Fatalf("own snapshot blocked: %s", why)
	}
	v.OnRestore(200, [32]byte{2})
	if why := v.Blocked(); !strings.Contains(why, "not yet vouched") {
		t.Fatalf("foreign snapshot not blocked: %q", why)
	}
	if kind := <-rep; kind != state.TypeCheckpointRequest {
		t.Fatalf("reported %s, want a checkpoint request", kind)
	}
	v.OnSnapshot(201, [32]byte{3}) // taken while in doubt: not remembered
	if b, _ := store.GetMeta(ownSnapshotsKey); strings.Contains(string(b), "201") {
		t.Fatal("a snapshot taken in doubt was remembered")
	}

	// Votes at the snapshot's own index do not count; k others at a later one do.
	st.mu.Lock()
	st.at[200] = state.CheckpointView{Own: "A", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st.at[300] = state.CheckpointView{Own: "A", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st.mu.Unlock()
	c.votes(t, v, 200, "A")
	v.judgeCheckpoint(200)
	if v.Blocked() == "" {
		t.Fatal("vouched by a checkpoint at the snapshot's own index")
	}
	c.votes(t, v, 300, "A")
	v.judgeCheckpoint(300)
	if why := v.Blocked(); why != "" {
		t.Fatalf("still blocked after k members vouched: %s", why)
	}
	if why := New(Config{NodeID: "n3", State: st, Store: store, Registerer: prometheus.NewRegistry()}).Blocked(); why != "" {
		t.Fatalf("blocked after a restart, once vouched for: %s", why)
	}

	// A checkpoint event is signed and reported.
	v.Notify(state.Event{Kind: state.EventCheckpoint, Index: 400, Hash: "A"})
	if kind := <-rep; kind != state.TypeCheckpoint {
		t.Fatalf("reported %s, want a checkpoint", kind)
	}

	st.mu.Lock()
	st.at[500] = state.CheckpointView{Own: "F", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st.mu.Unlock()
	v.judgeCheckpoint(500)
	if why := v.Blocked(); !strings.Contains(why, "differs from the state") {
		t.Fatalf("diverged node not blocked: %q", why)
	}
	if _, err := store.GetMeta("missing"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatal(err)
	}

	// A restart keeps the state that diverged, so it keeps the node from signing: until
	// the operator resynchronises it (an empty state database), which clears the record.
	restart := func() *Vouch {
		return New(Config{NodeID: "n3", State: st, Store: store, Registerer: prometheus.NewRegistry()})
	}
	st.mu.Lock()
	st.applied = 500
	st.mu.Unlock()
	r := restart()
	if why := r.Blocked(); !strings.Contains(why, "index 500 differs from the state") {
		t.Fatalf("a diverged node signs again after a restart: blocked %q", why)
	}
	// k others signing its state at a checkpoint before the divergence (late votes) lift
	// nothing; at a later one (say, every member now hashes the same way after an
	// upgrade) they do, for good.
	st.mu.Lock()
	st.at[450] = state.CheckpointView{Own: "A", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st.at[700] = state.CheckpointView{Own: "G", Votes: map[string]string{"n1": "G", "n2": "G"}}
	st.mu.Unlock()
	r.judgeCheckpoint(450)
	if r.Blocked() == "" {
		t.Fatal("votes at a checkpoint before the divergence lifted it")
	}
	r.judgeCheckpoint(700)
	if why := r.Blocked(); why != "" {
		t.Fatalf("k others signed its state after the divergence, still blocked: %q", why)
	}
	if why := restart().Blocked(); why != "" {
		t.Fatalf("the lifted divergence came back after a restart: %q", why)
	}
	st.mu.Lock()
	st.at[800] = state.CheckpointView{Own: "F", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st.mu.Unlock()
	r.judgeCheckpoint(800)
	if why := restart().Blocked(); !strings.Contains(why, "index 800 differs") {
		t.Fatalf("diverged again: blocked %q after a restart", why)
	}
	st.mu.Lock()
	st.applied = 0
	st.mu.Unlock()
	if why := restart().Blocked(); why != "" {
		t.Fatalf("a resynchronised node is blocked: %q", why)
	}
	st.mu.Lock()
	st.applied = 600
	st.mu.Unlock()
	if why := restart().Blocked(); why != "" {
		t.Fatalf("the cleared record came back: %q", why)
	}
}

// votes hands v the signed checkpoint votes of n1 and n2 for hash at index.
func (c *cluster) votes(t *testing.T, v *Vouch, index uint64, hash string) {
	t.Helper()
	v.recordVote(signedReport(t, "n1", c.sk1, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n1", Index: index, StateHash: hash}))
	v.recordVote(signedReport(t, "n2", c.sk2, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n2", Index: index, StateHash: hash}))
}

// TestSnapshotIndexNotBelowOwnState mounts a forged snapshot that names an applied index
// below the state this node held before the restore: an honest member's old vote for an
// index the node's earlier state reached (replayed into the log), with the hash the
// node's own earlier state had there, must not vouch for the new state.
func TestSnapshotIndexNotBelowOwnState(t *testing.T) {
	st := &views{at: map[uint64]state.CheckpointView{}, applied: 150}
	c := newCluster(t)
	v := New(Config{NodeID: "n3", State: st, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry(), Members: c.init.Members, Threshold: 2})
	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	v.OnRestore(5, [32]byte{5})
	if why := v.Blocked(); !strings.Contains(why, "index 150") {
		t.Fatalf("blocked %q, want waiting after index 150, where this node was", why)
	}
	st.mu.Lock()
	st.at[100] = state.CheckpointView{Own: "OLD"}
	st.mu.Unlock()
	c.votes(t, v, 100, "OLD")
	v.judgeCheckpoint(100)
	if v.Blocked() == "" {
		t.Fatal("vouched for by old votes for an index the node's earlier state reached")
	}
}

// TestNoVoteForAStateNotTrusted mounts a compromised leader (n=3, k=2) that sends a
// forged snapshot to one honest follower. Votes are counted by member, whoever cast
// them: had that follower voted for the state it restored, its vote and the leader's
// would be k votes for the forged state — vouching for it on another follower fed the
// same snapshot, and making the honest member that trusts its own state look diverged
// (for good: the verdict is recorded). A node votes only on a state it trusts: not
// while a restored snapshot waits to be vouched for, not once it diverged.
func TestNoVoteForAStateNotTrusted(t *testing.T) {
	st := &views{at: map[uint64]state.CheckpointView{}, applied: 100}
	v := New(Config{NodeID: "n3", State: st, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry()})
	rep := make(reports, 64)
	v.Start(context.Background(), rep)
	defer v.Stop()
	// votes waits briefly and returns the checkpoint votes reported meanwhile.
	votes := func() int {
		n := 0
		deadline := time.After(500 * time.Millisecond)
		for {
			select {
			case kind := <-rep:
				if kind == state.TypeCheckpoint {
					n++
				}
			case <-deadline:
				return n
			}
		}
	}
	v.Notify(state.Event{Kind: state.EventCheckpoint, Index: 100, Hash: "A"})
	if n := votes(); n != 1 {
		t.Fatalf("a node that trusts its state cast %d votes, want 1", n)
	}

	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	v.OnRestore(200, [32]byte{9}) // a snapshot from the leader: not yet vouched for
	st.mu.Lock()
	st.applied = 200
	st.mu.Unlock()
	v.Notify(state.Event{Kind: state.EventCheckpoint, Index: 300, Hash: "F"})
	if n := votes(); n != 0 {
		t.Fatalf("a node whose restored state is not vouched for voted for it (%d votes)", n)
	}

	// Diverged (trusting its state until k others signed another hash): no vote either.
	st2 := &views{at: map[uint64]state.CheckpointView{}, applied: 400}
	d := New(Config{NodeID: "n3", State: st2, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry()})
	rep = make(reports, 64)
	d.Start(context.Background(), rep)
	defer d.Stop()
	st2.mu.Lock()
	st2.at[400] = state.CheckpointView{Own: "F", Votes: map[string]string{"n1": "A", "n2": "A"}}
	st2.mu.Unlock()
	d.Notify(state.Event{Kind: state.EventCheckpointVote, Index: 400})
	d.Notify(state.Event{Kind: state.EventCheckpoint, Index: 500, Hash: "F"})
	if n := votes(); n != 0 || d.Blocked() == "" {
		t.Fatalf("a diverged node voted (%d votes; blocked %q)", n, d.Blocked())
	}
}

// TestVerdictWhenOwnHashComesLast: the others' votes at a checkpoint can be applied
// before this node has hashed its own state there (it hashes in the background); the
// verdict then comes with its own hash, also when it casts no vote itself.
func TestVerdictWhenOwnHashComesLast(t *testing.T) {
	c := newCluster(t)
	st := &views{at: map[uint64]state.CheckpointView{}, applied: 100}
	v := New(Config{NodeID: "n3", State: st, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry(), Members: c.init.Members, Threshold: 2})
	rep := make(reports, 64)
	v.Start(context.Background(), rep)
	defer v.Stop()
	if err := v.OnRestoreStart(); err != nil {
		t.Fatal(err)
	}
	v.OnRestore(200, [32]byte{9}) // not yet vouched for: it will not vote
	st.mu.Lock()
	st.applied = 260
	st.at[261] = state.CheckpointView{} // its own hash not yet computed
	st.mu.Unlock()
	c.votes(t, v, 261, "A")
	v.Notify(state.Event{Kind: state.EventCheckpointVote, Index: 261})
	time.Sleep(200 * time.Millisecond)
	if why := v.Blocked(); strings.Contains(why, "differs") {
		t.Fatalf("a verdict without its own hash: %q", why)
	}
	st.mu.Lock()
	st.at[261] = state.CheckpointView{Own: "F"}
	st.mu.Unlock()
	v.Notify(state.Event{Kind: state.EventCheckpoint, Index: 261, Hash: "F"})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(v.Blocked(), "differs") {
		if time.Now().After(deadline) {
			t.Fatalf("no verdict once its own hash came: %q", v.Blocked())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
