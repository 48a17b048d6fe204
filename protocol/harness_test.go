package protocol

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ----- in-memory transport with fault injection

// hookFunc rewrites what from sends to to: it returns the messages actually
// delivered (none to drop, several to duplicate, modified copies to tamper).
type hookFunc func(from, to string, m *Message) []*Message

// memNet connects engines in one process. Messages are encoded and decoded
// exactly as on the wire, and From is set from the sending engine's identity.
type memNet struct {
	mu      sync.Mutex
	engines map[string]*Engine
	hook    hookFunc
	drops   map[string]*atomic.Int64 // reason -> count, across all engines
}

func newMemNet() *memNet {
	return &memNet{engines: map[string]*Engine{}, drops: map[string]*atomic.Int64{}}
}

func (n *memNet) setHook(h hookFunc) {
	n.mu.Lock()
	n.hook = h
	n.mu.Unlock()
}

func (n *memNet) dropCount(reason string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.drops[reason]; c != nil {
		return c.Load()
	}
	return 0
}

func (n *memNet) onDrop(reason string) {
	n.mu.Lock()
	c := n.drops[reason]
	if c == nil {
		c = new(atomic.Int64)
		n.drops[reason] = c
	}
	n.mu.Unlock()
	c.Add(1)
}

type memTransport struct {
	net  *memNet
	self string
}

func (t *memTransport) Send(ctx context.Context, to string, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.net.mu.Lock()
	dst := t.net.engines[to]
	hook := t.net.hook
	t.net.mu.Unlock()
	if dst == nil {
		return fmt.Errorf("no route to %q", to)
	}
	msgs := []*Message{m}
	if hook != nil {
		msgs = hook(t.self, to, m)
	}
	for _, mm := range msgs {
		b, err := mm.MarshalBinary()
		if err != nil {
			return err
		}
		got, err := UnmarshalMessage(b, t.self)
		if err != nil {
			return err
		}
		dst.Deliver(got)
	}
	return nil
}

// addEngine creates an engine for id on the network.
func (n *memNet) addEngine(t testing.TB, id string, tweak func(*EngineConfig)) *Engine {
	cfg := EngineConfig{
		Self:      id,
		Transport: &memTransport{net: n, self: id},
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnDrop:    n.onDrop,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e := NewEngine(cfg)
	n.mu.Lock()
	n.engines[id] = e
	n.mu.Unlock()
	t.Cleanup(e.Close)
	return e
}

func newCluster(t testing.TB, ids ...string) (*memNet, map[string]*Engine) {
	n := newMemNet()
	es := map[string]*Engine{}
	for _, id := range ids {
		es[id] = n.addEngine(t, id, nil)
	}
	return n, es
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// runParties runs f for every id concurrently and collects the outcomes.
func runParties[T any](ids []string, f func(id string) (T, error)) (map[string]T, map[string]error) {
	var mu sync.Mutex
	res, errs := map[string]T{}, map[string]error{}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f(id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[id] = err
				return
			}
			res[id] = r
		}()
	}
	wg.Wait()
	return res, errs
}

// runWithBad runs f for the honest and the misbehaving ids concurrently; the
// misbehaving ones get a context that is cancelled once every honest party
// has returned, so the test never waits for their timeouts.
func runWithBad[T any](ctx context.Context, honest, bad []string, f func(ctx context.Context, id string) (T, error)) (map[string]T, map[string]error) {
	badCtx, cancelBad := context.WithCancel(ctx)
	defer cancelBad()
	var badWG sync.WaitGroup
	for _, id := range bad {
		badWG.Add(1)
		go func() {
			defer badWG.Done()
			_, _ = f(badCtx, id)
		}()
	}
	res, errs := runParties(honest, func(id string) (T, error) { return f(ctx, id) })
	cancelBad()
	badWG.Wait()
	return res, errs
}

func randomSID(t testing.TB) SessionID {
	var s SessionID
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

// requireCeremonyError checks that err is a CeremonyError blaming exactly
// culprits and wrapping target.
func requireCeremonyError(t *testing.T, who string, err error, target error, culprits ...string) {
	t.Helper()
	var ce *CeremonyError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: want a *CeremonyError, got %v", who, err)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("%s: want an error wrapping %v, got %v", who, target, err)
	}
	want := append([]string(nil), culprits...)
	sort.Strings(want)
	if fmt.Sprint(ce.Culprits) != fmt.Sprint(want) {
		t.Fatalf("%s: culprits %v, want %v (err: %v)", who, ce.Culprits, want, err)
	}
}

// settleGoroutines waits for the goroutine count to come back to baseline.
func settleGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutine leak: %d goroutines, baseline %d\n%s", n, baseline, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ----- fixtures

// fixtureBytes returns the bytes of pre-parameter fixture i, in the legacy
// form (json.Marshal of tss-lib's LocalPreParams) today's nodes read.
func fixtureBytes(t testing.TB, i int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "test", "fixtures", "preparams", fmt.Sprintf("preparams-%02d.json", i)))
	if err != nil {
		t.Fatalf("read pre-parameters fixture: %v", err)
	}
	return b
}

// loadPreParams returns pre-parameter fixture i, fresh (never used).
func loadPreParams(t testing.TB, i int) *PreParams {
	t.Helper()
	p, err := ParsePreParams(fixtureBytes(t, i))
	if err != nil {
		t.Fatalf("pre-parameters fixture %d: %v", i, err)
	}
	return p
}

// ecdsaKey is the result of the one ECDSA keygen this test binary runs.
type ecdsaKey struct {
	ids       []string
	shares    map[string]*Share
	pub       []byte
	chainCode []byte
	took      time.Duration
	err       error
}

var (
	ecdsaOnce  sync.Once
	ecdsaFixed ecdsaKey
)

// sharedECDSAKey runs a 2-of-3 ECDSA keygen (through Engine.Keygen, with
// fixture pre-parameters) once per test binary (it takes seconds) and
// returns it; tests must not modify the shares.
func sharedECDSAKey(t testing.TB) *ecdsaKey {
	t.Helper()
	ecdsaOnce.Do(func() {
		ids := []string{"node-a", "node-b", "node-c"}
		_, es := newCluster(t, ids...)
		sid := NewSessionID(SessionParams{Kind: KindKeygenECDSA, KeyID: "k1", RequestID: "r1", Committee: ids})
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		pres := map[string]*PreParams{}
		for i, id := range ids {
			pres[id] = loadPreParams(t, i)
		}
		start := time.Now()
		res, errs := runParties(ids, func(id string) (*Share, error) {
			return es[id].Keygen(ctx, sid, CurveSecp256k1, ids, 2, pres[id])
		})
		ecdsaFixed.took = time.Since(start)
		if len(errs) > 0 {
			ecdsaFixed.err = fmt.Errorf("ECDSA keygen failed: %v", errs)
			return
		}
		ecdsaFixed.ids = ids
		ecdsaFixed.shares = res
		ecdsaFixed.pub = res[ids[0]].PublicKey()
		ecdsaFixed.chainCode = make([]byte, 32)
		if _, err := rand.Read(ecdsaFixed.chainCode); err != nil {
			ecdsaFixed.err = err
		}
	})
	if ecdsaFixed.err != nil {
		t.Fatal(ecdsaFixed.err)
	}
	return &ecdsaFixed
}

// raceSlowdown is how much longer the deadlines that must leave tss-lib time to finish
// its computation are under the race detector (raceEnabled).
const raceSlowdown = 5

// computeTimeout scales a deadline that must outlast tss-lib's own computation (not
// only a wait for messages) when the race detector slows that computation down. A test
// that always runs into its deadline (a party withholds messages) gets as much longer.
func computeTimeout(d time.Duration) time.Duration {
	if raceEnabled {
		return d * raceSlowdown
	}
	return d
}
