package protocol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is an in-memory PoolStore; a nil entry is a corrupt record.
type memStore struct {
	mu       sync.Mutex
	entries  [][]byte
	countErr error
	takeErr  error
	// counts is how often the pool counted the store: the filler counts once per
	// round, so a test waits for rounds instead of sleeping.
	counts atomic.Int64
}

func (s *memStore) CountPreParams() (int, error) {
	s.counts.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.countErr != nil {
		return 0, s.countErr
	}
	return len(s.entries), nil
}

func (s *memStore) AddPreParams(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, bytes.Clone(b))
	return nil
}

func (s *memStore) TakePreParams() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.takeErr != nil {
		return nil, s.takeErr
	}
	if len(s.entries) == 0 {
		return nil, fmt.Errorf("mem: %w", ErrPoolStoreEmpty)
	}
	b := s.entries[0]
	s.entries = s.entries[1:]
	if b == nil {
		return nil, fmt.Errorf("mem: record failed authentication: %w", ErrPoolStoreCorrupt)
	}
	return b, nil
}

func (s *memStore) set(err error) {
	s.mu.Lock()
	s.countErr = err
	s.mu.Unlock()
}

// logBuffer collects a pool's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// sameSet reports whether a is fixture i.
func sameSet(t *testing.T, a *PreParams, i int) bool {
	t.Helper()
	return a != nil && a.p.NTildei.Cmp(loadPreParams(t, i).p.NTildei) == 0
}

// noGenerate fails the test if the pool tries to generate a set.
func noGenerate(t *testing.T) func(context.Context) (*PreParams, error) {
	return func(context.Context) (*PreParams, error) {
		t.Error("the pool generated a set")
		return nil, errors.New("no generation in this test")
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPoolTakeOrder(t *testing.T) {
	st := &memStore{}
	for i := 0; i < 3; i++ {
		if err := st.AddPreParams(fixtureBytes(t, i)); err != nil { // legacy form, as stored today
			t.Fatal(err)
		}
	}
	var inlineN atomic.Int32
	var sizes []int
	p, err := NewPool(PoolConfig{Store: st, OnInline: func() { inlineN.Add(1) }, OnSize: func(n int) { sizes = append(sizes, n) }})
	if err != nil {
		t.Fatal(err)
	}
	p.generate = func(context.Context) (*PreParams, error) { return loadPreParams(t, 5), nil }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		pre, inline, err := p.Take(ctx)
		if err != nil || inline || !sameSet(t, pre, i) {
			t.Fatalf("take %d: inline %v, err %v, fixture %d expected", i, inline, err, i)
		}
	}
	if fmt.Sprint(sizes) != "[2 1 0]" {
		t.Fatalf("OnSize saw %v", sizes)
	}
	pre, inline, err := p.Take(ctx)
	if err != nil || !inline || !sameSet(t, pre, 5) || inlineN.Load() != 1 {
		t.Fatalf("empty pool: inline %v, err %v, OnInline %d", inline, err, inlineN.Load())
	}
	// A store failure is returned, wrapped.
	boom := errors.New("disk on fire")
	st.takeErr = boom
	if _, _, err := p.Take(ctx); !errors.Is(err, boom) {
		t.Fatalf("store failure: got %v", err)
	}
	// Inline generation honours ctx (through the generator).
	st.takeErr = nil
	p.generate = func(ctx context.Context) (*PreParams, error) { <-ctx.Done(); return nil, ctx.Err() }
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, inline, err := p.Take(cctx); !inline || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("inline generation past its deadline: inline %v, err %v", inline, err)
	}
}

func TestPoolDiscardsCorruptAndInvalidSets(t *testing.T) {
	secret := loadPreParams(t, 0).p.PaillierSK.P.String()[:40]
	truncated := fixtureBytes(t, 0)
	truncated = truncated[:len(truncated)*3/4]
	st := &memStore{entries: [][]byte{nil, []byte("garbage"), truncated, fixtureBytes(t, 1)}}
	var logs logBuffer
	p, err := NewPool(PoolConfig{Store: st, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	p.generate = noGenerate(t)
	pre, inline, err := p.Take(context.Background())
	if err != nil || inline || !sameSet(t, pre, 1) {
		t.Fatalf("got inline %v, err %v; want fixture 1", inline, err)
	}
	out := logs.String()
	if n := strings.Count(out, "level=ERROR msg=\"discarding a corrupt"); n != 1 {
		t.Errorf("%d corrupt sets logged, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "level=ERROR msg=\"discarding an invalid"); n != 2 {
		t.Errorf("%d invalid sets logged, want 2:\n%s", n, out)
	}
	if strings.Contains(out, secret) {
		t.Fatal("a pre-parameter set reached the log")
	}
	if p.Size() != 0 {
		t.Fatalf("%d sets left", p.Size())
	}
}

func TestPoolFixturesRoundRobin(t *testing.T) {
	fixtures := [][]byte{fixtureBytes(t, 0), fixtureBytes(t, 1), fixtureBytes(t, 2)}
	st := &memStore{}
	var logs logBuffer
	p, err := NewPool(PoolConfig{Store: st, Fixtures: fixtures, Target: 5, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	p.generate = noGenerate(t)
	if !strings.Contains(logs.String(), "INSECURE") {
		t.Fatal("fixture mode was not announced")
	}
	// The empty store was seeded, in the versioned form.
	if len(st.entries) != 3 {
		t.Fatalf("store seeded with %d sets, want 3", len(st.entries))
	}
	for _, b := range st.entries {
		if !bytes.HasPrefix(b, []byte(preParamsMagic)) {
			t.Fatal("seeded set not in the versioned form")
		}
	}
	// Fixture mode generates nothing in the background.
	p.Start(context.Background())
	defer p.Stop()

	const workers, each = 16, 12 // 192 takes: 3 from the store, 189 round-robin
	var mu sync.Mutex
	counts := map[int]int{}
	seen := map[*PreParams]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				pre, inline, err := p.Take(context.Background())
				if err != nil || inline {
					t.Errorf("take: inline %v, err %v", inline, err)
					return
				}
				mu.Lock()
				if seen[pre] || pre.used.Load() {
					t.Error("a set was handed out twice as the same value")
				}
				seen[pre] = true
				for f := 0; f < 3; f++ {
					if pre.p.NTildei.Cmp(p.fixtures[f].p.NTildei) == 0 {
						counts[f]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if counts[0] != 64 || counts[1] != 64 || counts[2] != 64 {
		t.Fatalf("fixtures handed out %v times, want 64 each", counts)
	}

	// A store that already holds sets is not seeded again.
	st2 := &memStore{entries: [][]byte{fixtureBytes(t, 3)}}
	if _, err := NewPool(PoolConfig{Store: st2, Fixtures: fixtures}); err != nil || len(st2.entries) != 1 {
		t.Fatalf("non-empty store: err %v, %d sets", err, len(st2.entries))
	}
	// An unreadable fixture is refused up front.
	if _, err := NewPool(PoolConfig{Store: &memStore{}, Fixtures: [][]byte{fixtures[0], []byte("{}")}}); !errors.Is(err, ErrInvalidPreParams) {
		t.Fatalf("bad fixture: got %v", err)
	}
	if _, err := NewPool(PoolConfig{}); err == nil {
		t.Fatal("a pool without a store")
	}
}

func TestPoolFillsToTarget(t *testing.T) {
	st := &memStore{}
	var generated atomic.Int32
	var lastSize atomic.Int32
	p, err := NewPool(PoolConfig{
		Store:       st,
		Target:      3,
		OnGenerated: func(time.Duration) { generated.Add(1) },
		OnSize:      func(n int) { lastSize.Store(int32(n)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	p.poll = 2 * time.Millisecond
	var calls atomic.Int32
	p.generate = func(context.Context) (*PreParams, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("first attempt fails") // retried
		}
		return loadPreParams(t, 4), nil
	}
	if p.Ready() {
		t.Fatal("an empty pool without fixtures is ready")
	}
	p.Start(context.Background())
	waitFor(t, "the pool to fill", func() bool { return p.Size() == 3 })
	// Ten more rounds of the filler at its target: it generates nothing more.
	rounds := st.counts.Load()
	waitFor(t, "ten more rounds", func() bool { return st.counts.Load() >= rounds+10 })
	p.Stop()
	if p.Size() != 3 || generated.Load() != 3 || lastSize.Load() != 3 {
		t.Fatalf("size %d, generated %d, last reported size %d; want 3, 3, 3", p.Size(), generated.Load(), lastSize.Load())
	}
	if !p.Ready() {
		t.Fatal("a filled pool is not ready")
	}
	pre, inline, err := p.Take(context.Background())
	if err != nil || inline || !sameSet(t, pre, 4) {
		t.Fatalf("take from the filled pool: inline %v, err %v", inline, err)
	}
	// A store that cannot count reads as empty.
	st.set(errors.New("cannot count"))
	if p.Size() != 0 || p.Ready() {
		t.Fatal("a failing store reads as ready")
	}
}

func TestPoolPausesWhileBusy(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	var calls atomic.Int32
	var busyRounds atomic.Int32
	p, err := NewPool(PoolConfig{Store: &memStore{}, Target: 1, Busy: func() bool { busyRounds.Add(1); return busy.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	p.poll = 2 * time.Millisecond
	p.generate = func(context.Context) (*PreParams, error) {
		calls.Add(1)
		return loadPreParams(t, 4), nil
	}
	p.Start(context.Background())
	defer p.Stop()
	// Ten rounds of the filler finding ceremonies running: it generates nothing.
	waitFor(t, "ten busy rounds", func() bool { return busyRounds.Load() >= 10 })
	if calls.Load() != 0 {
		t.Fatal("generated while ceremonies ran")
	}
	busy.Store(false)
	waitFor(t, "generation to resume", func() bool { return p.Size() == 1 })
}

func TestPoolStopWaitsForTheFiller(t *testing.T) {
	baseline := runtime.NumGoroutine()
	p, err := NewPool(PoolConfig{Store: &memStore{}, Target: 2})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var returned atomic.Bool
	p.generate = func(ctx context.Context) (*PreParams, error) {
		close(entered)
		<-ctx.Done()
		time.Sleep(30 * time.Millisecond) // unwinding takes a moment
		returned.Store(true)
		return nil, ctx.Err()
	}
	p.Start(context.Background())
	p.Start(context.Background()) // a second Start does nothing
	<-entered
	p.Stop()
	if !returned.Load() {
		t.Fatal("Stop returned before the filler did")
	}
	p.Stop() // idempotent
	p.Start(context.Background())
	settleGoroutines(t, baseline) // nothing restarted, nothing left behind

	// Stop without Start, and a filler stopped by its context.
	q, err := NewPool(PoolConfig{Store: &memStore{}})
	if err != nil {
		t.Fatal(err)
	}
	q.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := NewPool(PoolConfig{Store: &memStore{}, Target: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.generate = func(ctx context.Context) (*PreParams, error) { <-ctx.Done(); return nil, ctx.Err() }
	r.Start(ctx)
	cancel()
	r.Stop()
	settleGoroutines(t, baseline)
}
