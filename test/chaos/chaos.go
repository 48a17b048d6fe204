//go:build linux

package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/custos/custos/test/cluster"
)

// Defaults for Config.
const (
	DefaultNodes     = 3
	DefaultThreshold = 2
	DefaultWorkers   = 3
	DefaultHold      = 15 * time.Second
	DefaultSettle    = 6 * time.Second
	DefaultWarmup    = 15 * time.Second
	DefaultCooldown  = 15 * time.Second
	DefaultClockSkew = 2 * time.Second
	// RequestBudget is how long a client keeps retrying one logical request (with its
	// idempotency key, on other nodes) before it reports the failure: the issue's "a
	// clear code within 60 s".
	RequestBudget = 60 * time.Second
	// AttemptTimeout bounds one HTTP attempt (a frozen node never answers).
	AttemptTimeout = 15 * time.Second
	// maxFaults bounds a schedule.
	maxFaults = 200
)

// Config says what to run.
type Config struct {
	// Nodes and Threshold: default 3 and 2.
	Nodes, Threshold int
	// Workers is the number of concurrent clients (default 3).
	Workers int
	// Faults is the schedule, run one after the other; nil means DefaultSchedule(n).
	Faults []Kind
	// Hold is how long each fault lasts; Settle the fault-free pause after each heal once
	// every node is ready again; Warmup and Cooldown the fault-free load before the first
	// fault and after the last.
	Hold, Settle, Warmup, Cooldown time.Duration
	// Keygens is how many keygens the load runs besides the ones faults start (default 2).
	Keygens int
	// ClockSkew spreads the nodes' clocks over ±ClockSkew (test-only clock offsets).
	ClockSkew time.Duration
	// Seed makes the choices (nodes, operations, messages) reproducible; 0 picks one.
	Seed uint64
	// Binary is the custosd to run (empty builds one). Dir and KeepDir as in
	// cluster.Options.
	Binary  string
	Dir     string
	KeepDir bool
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if c.Threshold == 0 {
		c.Threshold = DefaultThreshold
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Faults == nil {
		c.Faults = DefaultSchedule()
	}
	if len(c.Faults) > maxFaults {
		return fmt.Errorf("chaos: %d faults, at most %d", len(c.Faults), maxFaults)
	}
	for _, k := range c.Faults {
		if _, ok := faultSpecs[k]; !ok {
			return fmt.Errorf("chaos: unknown fault %q", k)
		}
	}
	if c.Hold == 0 {
		c.Hold = DefaultHold
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	}
	if c.Cooldown == 0 {
		c.Cooldown = DefaultCooldown
	}
	if c.Keygens == 0 {
		c.Keygens = 2
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.Seed == 0 {
		c.Seed = mrand.Uint64()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Workers < 1 || c.Workers > 64 {
		return fmt.Errorf("chaos: workers %d outside 1..64", c.Workers)
	}
	return nil
}

// harness is one run's shared state.
type harness struct {
	cfg  Config
	c    *cluster.Cluster
	log  *slog.Logger
	main *cluster.User // signs and creates keys
	// reader may only read keys: its sign requests must all be refused (invariant 3).
	reader *cluster.User

	rngMu sync.Mutex
	rng   *mrand.Rand

	keysMu sync.Mutex
	keys   []keyInfo

	recMu   sync.Mutex
	records []*Record

	faultMu sync.Mutex
	faults  []*FaultRecord
	// expectedExit marks nodes the harness itself stopped, killed or made fail-stop.
	expectedExit map[int]bool
	// restarted marks nodes whose process was replaced during the run.
	restarted map[int]bool

	faultFiles []string
	baseline   []procHealth
	// bg runs the keygens faults start, so that the run waits for them.
	bg       sync.WaitGroup
	resolved int
	awaited  int
}

// keyInfo is a key the load signs with.
type keyInfo struct {
	ID, Curve, PublicKey, ChainCode string
}

func (h *harness) intn(n int) int {
	h.rngMu.Lock()
	defer h.rngMu.Unlock()
	return h.rng.IntN(n)
}

func (h *harness) bytes(n int) []byte {
	b := make([]byte, n)
	h.rngMu.Lock()
	for i := range b {
		b[i] = byte(h.rng.Uint32())
	}
	h.rngMu.Unlock()
	return b
}

func newIdem() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "chaos-" + hex.EncodeToString(b)
}

// Run starts the cluster, runs the load and the fault schedule, heals everything, checks
// the invariants and returns the report. An error means the harness itself could not run
// (the cluster did not start); broken invariants are in Report.Failures.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, log: cfg.Logger, rng: mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		expectedExit: map[int]bool{}, restarted: map[int]bool{}}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "custos-chaos-")
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		dir = d
		if !cfg.KeepDir {
			defer os.RemoveAll(d)
		}
	}
	nodeExtra := map[int]map[string]any{}
	for i := range cfg.Nodes {
		// Spread the clocks over ±ClockSkew: node 0 behind, the last node ahead.
		off := time.Duration(0)
		if cfg.Nodes > 1 {
			off = -cfg.ClockSkew + time.Duration(i)*2*cfg.ClockSkew/time.Duration(cfg.Nodes-1)
		}
		ff := filepath.Join(dir, fmt.Sprintf("write-fault-%d", i))
		h.faultFiles = append(h.faultFiles, ff)
		nodeExtra[i] = map[string]any{"insecure_testing": map[string]any{"clock_offset": off.String(), "write_fault_file": ff}}
	}
	c, err := cluster.New(ctx, cluster.Options{
		Nodes: cfg.Nodes, Threshold: cfg.Threshold, Binary: cfg.Binary,
		Dir: filepath.Join(dir, "cluster"), KeepDir: true,
		Proxied: true, PerLink: true,
		Extra: map[string]any{
			"rate":     map[string]any{"per_caller_rps": 0},
			"api":      map[string]any{"wait_timeout": "10s", "debug": true},
			"ceremony": map[string]any{"sign_timeout": "20s", "keygen_timeout": "90s"},
			"log":      map[string]any{"level": "info"},
		},
		NodeExtra: nodeExtra,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("chaos: start cluster: %w", err)
	}
	h.c = c
	defer c.Close()
	rep, err := h.run(ctx)
	if err != nil {
		return nil, err
	}
	rep.Seed = cfg.Seed
	return rep, nil
}

func (h *harness) run(ctx context.Context) (*Report, error) {
	if _, err := h.c.VerifyProxied(); err != nil {
		return nil, fmt.Errorf("chaos: the proxies are not the only path between nodes: %w", err)
	}
	var err error
	if h.main, err = h.c.NewUser(ctx, "chaos-main", 24*time.Hour); err != nil {
		return nil, err
	}
	if h.reader, err = h.c.NewUser(ctx, "chaos-reader", 24*time.Hour, "keys:read"); err != nil {
		return nil, err
	}
	for _, curve := range []string{"secp256k1", "ed25519"} {
		rec := h.keygen(ctx, curve, "initial")
		if rec.Outcome != OutcomeOK {
			return nil, fmt.Errorf("chaos: initial %s keygen: %s %s", curve, rec.Outcome, rec.Code)
		}
	}
	// The baseline of goroutines and descriptors: once the keygens' last parties ended.
	ictx, icancel := context.WithTimeout(ctx, 30*time.Second)
	err = h.c.WaitIdle(ictx, h.c.All()...)
	icancel()
	if err != nil {
		return nil, fmt.Errorf("chaos: after the initial keygens: %w", err)
	}
	h.baseline = h.health(ctx)

	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range h.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.worker(loadCtx, w)
		}()
	}
	total := h.cfg.Warmup + time.Duration(len(h.cfg.Faults))*(h.cfg.Hold+h.cfg.Settle+10*time.Second) + h.cfg.Cooldown
	if h.cfg.Keygens > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every := total / time.Duration(h.cfg.Keygens+1)
			for i := range h.cfg.Keygens {
				select {
				case <-loadCtx.Done():
					return
				case <-time.After(every):
				}
				curve := "secp256k1"
				if i%2 == 1 {
					curve = "ed25519"
				}
				h.keygen(context.WithoutCancel(loadCtx), curve, "load")
			}
		}()
	}
	start := time.Now()
	faultErr := h.runFaults(loadCtx)
	if faultErr == nil {
		sleepCtx(loadCtx, h.cfg.Cooldown)
	}
	stopLoad()
	wg.Wait()
	h.bg.Wait()
	loadTime := time.Since(start)
	if faultErr != nil && !errors.Is(faultErr, context.Canceled) {
		return nil, faultErr
	}
	if err := h.healAll(ctx); err != nil {
		return nil, err
	}
	rep := h.check(ctx)
	rep.LoadSeconds = loadTime.Seconds()
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
