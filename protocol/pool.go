package protocol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Sentinels a PoolStore returns.
var (
	// ErrPoolStoreEmpty: TakePreParams found no stored set.
	ErrPoolStoreEmpty = errors.New("protocol: pre-parameter store is empty")
	// ErrPoolStoreCorrupt: TakePreParams removed a stored set it could not
	// read (failed authentication, malformed record). The pool logs it and
	// takes the next one.
	ErrPoolStoreCorrupt = errors.New("protocol: stored pre-parameter set is corrupt")
)

// PoolStore is where a Pool keeps its sets: the node implements it over its
// encrypted keystore (the bytes are secret). It must be safe for concurrent
// use. The pool stores only what PreParams.MarshalBinary wrote or the
// fixtures, and reads with ParsePreParams, so the store need not understand
// the bytes.
type PoolStore interface {
	// CountPreParams returns how many sets are stored.
	CountPreParams() (int, error)
	// AddPreParams stores one set, durably, after the ones already there.
	// It must not keep b: the pool wipes it once AddPreParams returns.
	AddPreParams(b []byte) error
	// TakePreParams removes the oldest set and returns it; the returned
	// bytes become the pool's, which wipes them once parsed. It returns an
	// error wrapping ErrPoolStoreEmpty when there is none, and one wrapping
	// ErrPoolStoreCorrupt when the set it removed could not be read (a
	// corrupt set is removed all the same, so that the next call moves on).
	TakePreParams() ([]byte, error)
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Store keeps the sets (required).
	Store PoolStore
	// Target is how many sets the background filler keeps stored; 0 or less
	// generates none in the background.
	Target int
	// Fixtures are pre-generated sets (each in the form ParsePreParams reads)
	// for tests and the dev cluster: INSECURE, they are recycled round-robin
	// across keys once the store runs dry, and nothing is generated. Only an
	// explicit insecure setting, which production configurations refuse, may
	// supply them; the node loads the files and gives each node a disjoint
	// slice, so that no two parties share a Paillier key.
	Fixtures [][]byte
	// Busy, if set, reports whether ceremonies are running on this node; the
	// filler does not start a generation while it returns true, so that
	// ceremonies never wait for CPU.
	Busy func() bool
	// Logger receives structured logs (never a set). Nil means slog.Default().
	Logger *slog.Logger
	// OnGenerated, if set, is called after each set the filler generated and
	// stored, with the time the generation took (for metrics).
	OnGenerated func(time.Duration)
	// OnInline, if set, is called each time Take has to generate a set inline.
	OnInline func()
	// OnSize, if set, is called with the store's size whenever the pool
	// learns it (for a gauge).
	OnSize func(int)
}

// Defaults of a Pool's timing.
const (
	// poolPoll is how often an idle or paused filler looks again.
	poolPoll = time.Second
	// poolGenerateTimeout bounds one background generation.
	poolGenerateTimeout = 10 * time.Minute
)

// Pool keeps this node's encrypted stock of ECDSA pre-parameters (Paillier
// keys and safe primes), filled in the background one set at a time so that
// keygen does not wait for primes when it is warm. Generating one set takes
// seconds to minutes (about 12–30 s on 2 cores), so generation runs one set at
// a time, at tss-lib's lowest concurrency, and does not start while
// ceremonies run. Every keygen
// takes a fresh set: a set is never used for two keys — except in the
// insecure fixture mode of tests and the dev cluster, which recycles a few
// test sets.
//
// Take, Size and Ready are safe for concurrent use; Start and Stop bound the
// life of the one background goroutine.
type Pool struct {
	cfg      PoolConfig
	log      *slog.Logger
	fixtures []*PreParams // parsed once; handed out as copies

	// generate makes one set (GeneratePreParams; tests replace it, before Start).
	generate func(context.Context) (*PreParams, error)
	// poll and genTimeout are poolPoll and poolGenerateTimeout (tests shorten them).
	poll, genTimeout time.Duration

	mu   sync.Mutex // guards next
	next int        // the next fixture to hand out

	life    sync.Mutex // guards started, stopped, cancel
	started bool
	stopped bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewPool returns a pool over cfg.Store. With fixtures it checks every one
// (an unreadable fixture is an error, not a surprise at the first keygen),
// warns loudly that the mode is insecure, and seeds an empty store with
// them. Call Start to fill the pool in the background, and Stop when done.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if cfg.Store == nil {
		return nil, errors.New("protocol: pre-parameter pool needs a store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Pool{
		cfg:        cfg,
		log:        cfg.Logger,
		generate:   GeneratePreParams,
		poll:       poolPoll,
		genTimeout: poolGenerateTimeout,
	}
	for i, b := range cfg.Fixtures {
		pre, err := ParsePreParams(b)
		if err != nil {
			return nil, fmt.Errorf("pre-parameter fixture %d: %w", i, err)
		}
		p.fixtures = append(p.fixtures, pre)
	}
	if len(p.fixtures) > 0 {
		if err := p.seed(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// seed warns that fixtures are in use and puts them in an empty store.
func (p *Pool) seed() error {
	p.log.Warn("INSECURE: ECDSA pre-parameters come from shared test fixtures and are reused across keys; never use this mode for real keys", "sets", len(p.fixtures))
	n, err := p.cfg.Store.CountPreParams()
	if err != nil {
		return fmt.Errorf("seed pre-parameter pool: %w", err)
	}
	if n > 0 {
		return nil
	}
	for _, pre := range p.fixtures {
		b, err := pre.MarshalBinary()
		if err != nil {
			return fmt.Errorf("seed pre-parameter pool: %w", err)
		}
		err = p.cfg.Store.AddPreParams(b)
		clear(b)
		if err != nil {
			return fmt.Errorf("seed pre-parameter pool: %w", err)
		}
	}
	return nil
}

// Size returns the number of stored sets (0 when the store cannot count).
func (p *Pool) Size() int {
	n, err := p.cfg.Store.CountPreParams()
	if err != nil {
		return 0
	}
	return n
}

// Ready reports whether keygen can start without generating primes inline.
func (p *Pool) Ready() bool { return len(p.fixtures) > 0 || p.Size() > 0 }

// Take returns a checked set for one keygen. It takes the oldest stored set,
// discarding (with an error log) corrupt and invalid ones; when the store is
// empty it hands out the next fixture (fixture mode), or else generates a set
// inline — slow: seconds to minutes, bounded by ctx — and reports inline.
func (p *Pool) Take(ctx context.Context) (pre *PreParams, inline bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		b, err := p.cfg.Store.TakePreParams()
		if errors.Is(err, ErrPoolStoreEmpty) {
			break
		}
		if errors.Is(err, ErrPoolStoreCorrupt) {
			p.log.Error("discarding a corrupt pre-parameter set", "err", err)
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("take pre-parameters: %w", err)
		}
		pre, err := ParsePreParams(b)
		clear(b)
		if err != nil {
			p.log.Error("discarding an invalid pre-parameter set", "err", err)
			continue
		}
		p.reportSize()
		return pre, false, nil
	}
	if len(p.fixtures) > 0 {
		p.mu.Lock()
		f := p.fixtures[p.next%len(p.fixtures)]
		p.next++
		p.mu.Unlock()
		return f.clone(), false, nil
	}
	p.log.Warn("pre-parameter pool empty: generating a set inline; keygen will be slow")
	if p.cfg.OnInline != nil {
		p.cfg.OnInline()
	}
	pre, err = p.generate(ctx)
	if err != nil {
		return nil, true, fmt.Errorf("generate pre-parameters inline: %w", err)
	}
	return pre, true, nil
}

// Start starts the background filler; it runs until ctx ends or Stop is
// called. In fixture mode, or with a Target of 0, it generates nothing.
// Start does nothing after the first call or after Stop.
func (p *Pool) Start(ctx context.Context) {
	p.life.Lock()
	defer p.life.Unlock()
	if p.started || p.stopped {
		return
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run(ctx)
	}()
}

// Stop stops the filler and waits for it to return: a generation in progress
// is cancelled (tss-lib's own prime-search goroutines notice it within
// moments and then exit too). Stop is idempotent.
func (p *Pool) Stop() {
	p.life.Lock()
	p.stopped = true
	cancel := p.cancel
	p.life.Unlock()
	if cancel != nil {
		cancel()
	}
	p.wg.Wait()
}

func (p *Pool) reportSize() {
	if p.cfg.OnSize != nil {
		p.cfg.OnSize(p.Size())
	}
}

// wait sleeps for d or until ctx ends; it reports whether to go on.
func (p *Pool) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// run fills the pool up to its target, one set at a time,
// pausing while ceremonies run here so that they never wait for CPU. A
// generation already under way when a ceremony starts is finished: it holds
// one core only, and abandoning it would waste what it has done.
func (p *Pool) run(ctx context.Context) {
	if len(p.fixtures) > 0 || p.cfg.Target <= 0 {
		return
	}
	countFailed := false
	for ctx.Err() == nil {
		size, err := p.cfg.Store.CountPreParams()
		if err != nil {
			if !countFailed {
				p.log.Warn("cannot count stored pre-parameters; not generating until it can", "err", err)
			}
			countFailed = true
			p.wait(ctx, p.poll)
			continue
		}
		countFailed = false
		if p.cfg.OnSize != nil {
			p.cfg.OnSize(size)
		}
		if size >= p.cfg.Target || (p.cfg.Busy != nil && p.cfg.Busy()) {
			p.wait(ctx, p.poll)
			continue
		}
		start := time.Now()
		gctx, cancel := context.WithTimeout(ctx, p.genTimeout)
		pre, err := p.generate(gctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("pre-parameter generation failed", "err", err)
				p.wait(ctx, p.poll)
			}
			continue
		}
		took := time.Since(start)
		b, err := pre.MarshalBinary()
		if err == nil {
			err = p.cfg.Store.AddPreParams(b)
			clear(b)
		}
		if err != nil {
			p.log.Error("could not store pre-parameters", "err", err)
			p.wait(ctx, p.poll)
			continue
		}
		if p.cfg.OnGenerated != nil {
			p.cfg.OnGenerated(took)
		}
		p.log.Info("pre-parameter set generated", "seconds", took.Seconds(), "pool", size+1)
	}
}
