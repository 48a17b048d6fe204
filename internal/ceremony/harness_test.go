package ceremony

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
	"github.com/custos/custos/protocol"
)

// This file is the runner's test bench: three runners, each with its own real
// protocol.Engine (joined by an in-memory transport) and its own real keystore in a temp
// dir, over a state the test writes (fakeState) and a fake proposer that records their
// reports (reports). Raft, libp2p and the FSM are out of the picture: what a runner does
// is judged from what it reports and stores.

// fakeState is the runner's view of a replicated state the test writes.
type fakeState struct {
	mu       sync.Mutex
	keys     map[string]*state.Key
	requests map[string]*state.Request
	version  uint64 // moves with every key put, as state.FSM.KeysVersion
	scans    int    // AllKeys calls
}

func (f *fakeState) put(k *state.Key, r *state.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys, f.requests = map[string]*state.Key{}, map[string]*state.Request{}
	}
	if k != nil {
		c := *k
		f.keys[k.ID] = &c
		f.version++
	}
	if r != nil {
		c := *r
		f.requests[r.ID] = &c
	}
}

func (f *fakeState) Request(id string) *state.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[id]
}

func (f *fakeState) Key(id string) *state.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[id]
}

func (f *fakeState) OpenRequests() []*state.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*state.Request
	for _, r := range f.requests {
		if r.Status == state.StatusScheduled {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeState) KeysVersion() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

func (f *fakeState) AllKeys() []*state.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans++
	var out []*state.Key
	for _, k := range f.keys {
		out = append(out, k)
	}
	return out
}

// report is one report a runner proposed.
type report struct {
	node, kind string
	payload    any
}

// reports is a fake proposer: it records every report on a channel and accepts it.
type reports struct {
	node string
	ch   chan report
}

func (r *reports) Report(_ context.Context, kind string, payload any) (state.Result, error) {
	r.ch <- report{r.node, kind, payload}
	return state.Result{}, nil
}

// memNet joins engines in memory: a message sent to a node is delivered to its engine
// with the sender set, as the libp2p transport does.
type memNet struct {
	mu      sync.Mutex
	engines map[string]*protocol.Engine
}

type memTransport struct {
	net  *memNet
	self string
}

func (t *memTransport) Send(_ context.Context, to string, m *protocol.Message) error {
	t.net.mu.Lock()
	e := t.net.engines[to]
	t.net.mu.Unlock()
	if e == nil {
		return fmt.Errorf("unknown node %q", to)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	in, err := protocol.UnmarshalMessage(b, t.self)
	if err != nil {
		return err
	}
	e.Deliver(in)
	return nil
}

// fixturePool hands out this node's fixture pre-parameters.
type fixturePool struct{ pre *protocol.PreParams }

func (p fixturePool) Take(context.Context) (*protocol.PreParams, bool, error) {
	return p.pre, false, nil
}

func loadFixture(t testing.TB, i int) *protocol.PreParams {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "fixtures", "preparams", fmt.Sprintf("preparams-%02d.json", i)))
	if err != nil {
		t.Fatal(err)
	}
	pre, err := protocol.ParsePreParams(b)
	if err != nil {
		t.Fatal(err)
	}
	return pre
}

func testConfig(id string) *config.Config {
	cfg := &config.Config{NodeID: id}
	cfg.Ceremony.SignTimeout.Duration = time.Minute
	cfg.Ceremony.KeygenTimeout.Duration = 2 * time.Minute
	return cfg
}

func openStore(t testing.TB) *keystore.Store {
	t.Helper()
	mk := make([]byte, keystore.MasterKeySize)
	_, _ = rand.Read(mk)
	ks, err := keystore.Open(t.TempDir(), mk, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

// newTestRunner is one runner over st; ks nil means a fresh keystore. Its engine talks to
// nobody and its reports are dropped: for tests of a runner's own decisions.
func newTestRunner(t testing.TB, st State, ks *keystore.Store) *Runner {
	t.Helper()
	if ks == nil {
		ks = openStore(t)
	}
	e := protocol.NewEngine(protocol.EngineConfig{Self: "n1", Transport: &memTransport{net: &memNet{}, self: "n1"}, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(e.Close)
	r, err := New(Config{Config: testConfig("n1"), Logger: slog.New(slog.DiscardHandler), State: st, Reporter: &reports{node: "n1", ch: make(chan report, 64)},
		Engine: e, PreParams: fixturePool{}, Store: ks, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// bench is three runners over one fake state.
type bench struct {
	st      *fakeState
	ids     []string
	runners map[string]*Runner
	stores  map[string]*keystore.Store
	reports chan report
	blocked map[string]string
	mu      sync.Mutex
}

func newBench(t *testing.T) *bench {
	t.Helper()
	b := &bench{st: &fakeState{}, ids: []string{"n1", "n2", "n3"}, runners: map[string]*Runner{}, stores: map[string]*keystore.Store{},
		reports: make(chan report, 64), blocked: map[string]string{}}
	net := &memNet{engines: map[string]*protocol.Engine{}}
	for i, id := range b.ids {
		e := protocol.NewEngine(protocol.EngineConfig{Self: id, Transport: &memTransport{net: net, self: id}, Logger: slog.New(slog.DiscardHandler)})
		net.mu.Lock()
		net.engines[id] = e
		net.mu.Unlock()
		b.stores[id] = openStore(t)
		r, err := New(Config{Config: testConfig(id), Logger: slog.New(slog.DiscardHandler), State: b.st, Reporter: &reports{node: id, ch: b.reports},
			Engine: e, PreParams: fixturePool{loadFixture(t, i)}, Store: b.stores[id], Registerer: prometheus.NewRegistry(),
			Blocked: func() string { b.mu.Lock(); defer b.mu.Unlock(); return b.blocked[id] }})
		if err != nil {
			t.Fatal(err)
		}
		b.runners[id] = r
		t.Cleanup(func() {
			e.Close()
			r.Stop()
		})
	}
	return b
}

// schedule writes a scheduled request into the state and tells every runner.
func (b *bench) schedule(k *state.Key, r *state.Request) {
	b.st.put(k, r)
	for _, id := range b.ids {
		b.runners[id].Scheduled(r.ID)
	}
}

// collect waits for n reports.
func (b *bench) collect(t *testing.T, n int) []report {
	t.Helper()
	var out []report
	timeout := time.After(3 * time.Minute)
	for len(out) < n {
		select {
		case r := <-b.reports:
			out = append(out, r)
		case <-timeout:
			t.Fatalf("got %d reports, want %d: %+v", len(out), n, out)
		}
	}
	return out
}

func nonce() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func scheduledRequest(id, kind, keyID string, committee []string, msg []byte) *state.Request {
	now := time.Now().UnixMilli()
	return &state.Request{ID: id, Kind: kind, KeyID: keyID, Status: state.StatusScheduled, Committee: committee, Nonce: nonce(),
		Attempt: 1, CreatedAt: now, ScheduledAt: now, Message: msg}
}

// TestRunnerKeygenAndSign: a keygen scheduled on all three stores a share on each and
// reports the same public key; a sign scheduled on two runs on those two only, and the
// signature they report verifies; the session never runs twice; a share that does not
// yield the key's public key never signs.
func TestRunnerKeygenAndSign(t *testing.T) {
	for _, curve := range []string{state.CurveEd25519, state.CurveSecp256k1} {
		t.Run(curve, func(t *testing.T) {
			b := newBench(t)
			key := &state.Key{ID: "key_" + curve, Curve: curve, Threshold: 2, Members: b.ids, Status: state.KeyGenerating}
			kg := scheduledRequest("req_keygen", state.KindKeygen, key.ID, b.ids, nil)
			b.schedule(key, kg)
			var pub []byte
			for _, r := range b.collect(t, 3) {
				ss, ok := r.payload.(*state.ShareStored)
				if r.kind != state.TypeShareStored || !ok || ss.Node != r.node || ss.RequestID != kg.ID {
					t.Fatalf("report %+v", r)
				}
				if pub == nil {
					pub = ss.PublicKey
				} else if !slices.Equal(pub, ss.PublicKey) {
					t.Fatal("parties report different public keys")
				}
				if ok, err := b.stores[r.node].HasShare(key.ID); !ok || err != nil {
					t.Fatalf("%s stored no share: %v", r.node, err)
				}
			}

			key.PublicKey, key.Status = pub, state.KeyActive
			if curve == state.CurveSecp256k1 {
				key.ChainCode = nonce()
			}
			kg.Status = state.StatusActive
			b.st.put(key, kg)
			digest := sha256.Sum256([]byte("runner test"))
			sg := scheduledRequest("req_sign", state.KindSign, key.ID, []string{"n1", "n3"}, digest[:])
			if curve == state.CurveSecp256k1 {
				sg.Path, sg.PathIdx = "m/1/2", []uint32{1, 2}
			}
			b.schedule(key, sg)
			var signers []string
			for _, r := range b.collect(t, 2) {
				res, ok := r.payload.(*state.CeremonyResult)
				if r.kind != state.TypeCeremonyResult || !ok {
					t.Fatalf("report %+v", r)
				}
				if err := (SignatureVerifier{}).VerifySignature(curve, key.PublicKey, key.ChainCode, sg.PathIdx, sg.Message, &res.Signature); err != nil {
					t.Fatalf("%s's signature: %v", r.node, err)
				}
				signers = append(signers, r.node)
			}
			slices.Sort(signers)
			if !slices.Equal(signers, []string{"n1", "n3"}) {
				t.Fatalf("signed by %v", signers)
			}

			// The same session again, run synchronously: the marker stops it.
			b.runners["n1"].run(b.st.Request(sg.ID), time.Now())
			select {
			case r := <-b.reports:
				t.Fatalf("a session ran twice: %+v", r)
			default:
			}

			// A share that does not yield the key's public key: refused, counted.
			bad := *key
			bad.PublicKey = slices.Clone(pub)
			bad.PublicKey[len(bad.PublicKey)-1] ^= 1
			sg2 := scheduledRequest("req_sign2", state.KindSign, key.ID, []string{"n1", "n2"}, digest[:])
			b.st.put(&bad, sg2)
			b.runners["n1"].run(b.st.Request(sg2.ID), time.Now())
			r := <-b.reports
			if f, ok := r.payload.(*state.CeremonyFailed); r.kind != state.TypeCeremonyFailed || !ok || f.Code != "ceremony.failed" {
				t.Fatalf("report %+v", r)
			}
			if got := testCounter(t, b.runners["n1"].shareMismatch); got != 1 {
				t.Fatalf("custos_share_mismatch_total = %v", got)
			}
		})
	}
}

// TestRunnerRefuses: what the FSM cannot judge, the runner does — a schedule stamped too
// far from this clock is ignored, one stamped long after its submission and one met while
// the node's state is in doubt are refused with a report, a request this node is not a
// committee member of is left alone.
func TestRunnerRefuses(t *testing.T) {
	b := newBench(t)
	key := &state.Key{ID: "key_x", Curve: state.CurveEd25519, Threshold: 2, Members: b.ids, Status: state.KeyActive, PublicKey: make([]byte, 32)}

	stale := scheduledRequest("req_stale", state.KindSign, key.ID, []string{"n1", "n2"}, []byte{1})
	stale.ScheduledAt = time.Now().Add(-time.Minute).UnixMilli()
	b.st.put(key, stale)
	b.runners["n1"].maybeRun(stale.ID)
	if b.runners["n1"].Active() != 0 {
		t.Fatal("joined a stale schedule")
	}
	outsider := scheduledRequest("req_other", state.KindSign, key.ID, []string{"n2", "n3"}, []byte{1})
	b.st.put(nil, outsider)
	b.runners["n1"].maybeRun(outsider.ID)
	if _, running := b.runners["n1"].active.Load(outsider.ID + "/1"); running {
		t.Fatal("joined another committee's ceremony")
	}

	late := scheduledRequest("req_late", state.KindSign, key.ID, []string{"n1", "n2"}, []byte{1})
	late.CreatedAt = late.ScheduledAt - (state.SignatureWindowS+1)*1000
	b.st.put(nil, late)
	b.runners["n1"].run(b.st.Request(late.ID), time.Now())
	r := <-b.reports
	if f, ok := r.payload.(*state.CeremonyFailed); !ok || f.Code != "ceremony.refused" || f.RequestID != late.ID {
		t.Fatalf("late schedule: %+v", r)
	}

	b.mu.Lock()
	b.blocked["n1"] = "state not vouched for"
	b.mu.Unlock()
	doubt := scheduledRequest("req_doubt", state.KindSign, key.ID, []string{"n1", "n2"}, []byte{1})
	b.st.put(nil, doubt)
	b.runners["n1"].maybeRun(doubt.ID)
	r = <-b.reports
	if f, ok := r.payload.(*state.CeremonyFailed); !ok || f.Code != "ceremony.refused" || !slices.Equal(f.Culprits, []string{"n1"}) {
		t.Fatalf("blocked node: %+v", r)
	}
	if got := testCounter(t, b.runners["n1"].refusedCeremonies); got != 2 {
		t.Fatalf("custos_ceremonies_refused_total = %v, want 2", got)
	}
}

// TestRunnerStopEndsCeremonies: a party whose peers never come would wait for its
// ceremony's timeout; Stop cancels it and returns once its goroutine ended.
func TestRunnerStopEndsCeremonies(t *testing.T) {
	b := newBench(t)
	key := &state.Key{ID: "key_y", Curve: state.CurveEd25519, Threshold: 2, Members: b.ids, Status: state.KeyGenerating}
	kg := scheduledRequest("req_alone", state.KindKeygen, key.ID, b.ids, nil)
	b.st.put(key, kg)
	b.runners["n1"].Scheduled(kg.ID) // the others are never told
	if _, running := b.runners["n1"].active.Load(kg.ID + "/1"); !running {
		t.Fatal("ceremony did not start")
	}
	done := make(chan struct{})
	go func() {
		b.runners["n1"].Stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not end the ceremony")
	}
	if b.runners["n1"].Active() != 0 {
		t.Fatal("a ceremony outlived Stop")
	}
	// Nothing starts after Stop.
	b.runners["n1"].Scheduled(kg.ID)
	if b.runners["n1"].Active() != 0 {
		t.Fatal("a ceremony started after Stop")
	}
}

func testCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
