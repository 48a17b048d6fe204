//go:build linux

// Command soak is issue 11's cluster soak: a real 3-node custosd cluster (test/cluster, 2
// of 3, on loopback) signs Ed25519 as fast as -conc concurrent callers can make it, for
// -duration (10 minutes by default), through the Go SDK with full authentication, the
// callers spread over the three nodes. It measures whether the cluster's state and
// memory stay flat under sustained signing:
//
//   - each node's resident set size (VmRSS) at the start (after a -warmup of signing,
//     10 minutes by default: long enough for the bounded memory holders beside the Go
//     heap — Pebble's memtables, which grow to their size rotation by rotation, and its
//     block caches — to fill or nearly: since Apply's lookups read Bloom filters instead
//     of data blocks, the state database's cache fills slowly, 0.3 of its 16 MiB after
//     5 minutes in one run, which then judged the cache's filling as growth) and at
//     the end: flat within 10 %, each taken as the peak of the samples over a minute
//     (the first and the last of the run: the Go heap is a sawtooth between
//     collections); each node's memory by holder (Go heap, each
//     database's cache and memtables) is printed at both;
//   - signatures per second in 10-second windows: the last full window at least 80 % of
//     the first (windows while a follower is down are reported apart, not judged);
//   - at -kill-at of the run a follower (not the leader) is killed (SIGKILL), the other
//     two keep signing, and after -down it is restarted; the time until its applied
//     raft index reaches the leader's (GET /debug/state) is the catch-up time, judged
//     against 60 s. Its RSS at the end is judged against its peak in the minute before
//     the kill (a restarted process refills its caches from nothing): at most 10 % above;
//   - at the end, once no ceremony runs, every node's applied index and state hash are
//     equal.
//
// Progress (each window's rate and errors, each node's RSS and applied index) goes to
// stdout every window; at the end a verdict table ("met" / "NOT MET") and, with -out, a
// JSON report. A target not met is a finding, not a failure: the exit status is 0 then,
// and non-zero only when the harness itself fails (build, cluster start, keygen, a
// kill or restart that cannot be done, the report cannot be written) or on interrupt.
//
// Usage (from inside the custos module; not part of make test):
//
//	make soak [SOAKFLAGS="-duration 2m"]
//	go run ./test/soak [-duration 10m] [-conc 16] [-kill-at 0.5] [-down 20s]
//	    [-warmup 10m] [-out FILE] [-custosd PATH] [-node-log-level warn] [-keep]
//	    [-heap-profiles DIR]
//
// -kill-at 0 runs without the kill. Every process the soak starts is stopped before it
// exits, on SIGINT too (and dies with it otherwise).
package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/custos/custos/node"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/cluster"
	"github.com/custos/custos/test/report"
)

// Issue 11's targets and the soak's fixed parameters.
const (
	nodes     = 3
	threshold = 2
	// window is the length of one rate window.
	window = 10 * time.Second
	// rssTolerance: end RSS within this fraction of the start RSS.
	rssTolerance = 0.10
	// followerSettle: after the restarted follower caught up, its RSS baseline is taken
	// this much later (reported; it is judged against its RSS before the kill).
	followerSettle = 10 * time.Second
	// steadyFraction: the last full window's rate at least this fraction of the first's.
	steadyFraction = 0.80
	// catchUpTarget: the restarted follower's applied index reaches the leader's within
	// this time of its restart.
	catchUpTarget = 60 * time.Second
	// catchUpMax bounds how long the catch-up is watched (past the target, to report it).
	catchUpMax = 5 * time.Minute
	// signTimeout bounds one signature (the nodes wait up to apiWait for it).
	signTimeout = 90 * time.Second
	apiWait     = "60s"
	// errorPause is a worker's pause after a failed signature (a down node is not hammered).
	errorPause = 100 * time.Millisecond
	// probeTimeout bounds one /debug/state read.
	probeTimeout = 5 * time.Second
	// catchUpPoll is how often the catch-up is checked.
	catchUpPoll = 250 * time.Millisecond
	// settleTimeout bounds the end's wait for idle nodes and equal states.
	settleTimeout = 2 * time.Minute
	msgSize       = 32
)

// Bounds on the flags, so that a typo cannot start a day-long run.
const (
	maxDuration = 24 * time.Hour
	minDuration = 2 * window
	maxConc     = 256
	maxDown     = 10 * time.Minute
	maxWarmup   = 15 * time.Minute
)

// options are the command's flags.
type options struct {
	Duration time.Duration `json:"duration_ns"`
	Conc     int           `json:"concurrency"`
	KillAt   float64       `json:"kill_at"`
	Down     time.Duration `json:"down_ns"`
	Warmup   time.Duration `json:"warmup_ns"`
	NodeLog  string        `json:"node_log_level"`
	out      string
	bin      string
	keep     bool
	verbose  bool
	heapDir  string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: go run ./test/soak [flags]   (or: make soak SOAKFLAGS="flags")

Signs Ed25519 through a real 3-node custosd cluster for -duration, kills and restarts a
follower mid-way, and judges RSS, signature rate, catch-up and state agreement against
issue 11's targets. e.g. go run ./test/soak -duration 90s -kill-at 0.4 -down 10s

flags:
`)
		fs.PrintDefaults()
	}
	o := &options{}
	fs.DurationVar(&o.Duration, "duration", 10*time.Minute, "how long to sign (after the warm-up)")
	fs.IntVar(&o.Conc, "conc", 16, "concurrent signers, spread over the nodes")
	fs.Float64Var(&o.KillAt, "kill-at", 0.5, "fraction of -duration at which a follower is killed (0: no kill)")
	fs.DurationVar(&o.Down, "down", 20*time.Second, "how long the killed follower stays down before it is restarted")
	fs.DurationVar(&o.Warmup, "warmup", 10*time.Minute, "signing before the start RSS is taken and the windows begin: long enough for the nodes' bounded memory holders (Pebble's memtables, which grow to their size rotation by rotation, and block caches) to fill; the holders are printed at the start and the end")
	fs.StringVar(&o.NodeLog, "node-log-level", "warn", "log level of the nodes (their logs go to files)")
	fs.StringVar(&o.out, "out", "", "write the JSON report to this file")
	fs.StringVar(&o.bin, "custosd", "", "custosd binary to run (default: build ./cmd/custosd)")
	fs.BoolVar(&o.keep, "keep", false, "keep the cluster's directory (configs, data, logs) for inspection")
	fs.StringVar(&o.heapDir, "heap-profiles", "", "save each node's heap profile (/debug/pprof/heap) at the start and at the end in this `DIR`, as NODE-start.pb.gz and NODE-end.pb.gz (compare with go tool pprof -base)")
	fs.BoolVar(&o.verbose, "v", false, "log the harness's progress at debug level")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case o.Duration < minDuration || o.Duration > maxDuration:
		return nil, fmt.Errorf("-duration must be %v..%v", minDuration, maxDuration)
	case o.Conc < 1 || o.Conc > maxConc:
		return nil, fmt.Errorf("-conc must be 1..%d", maxConc)
	case o.KillAt < 0 || o.KillAt >= 1:
		return nil, errors.New("-kill-at must be in [0, 1)")
	case o.Down < time.Second || o.Down > maxDown:
		return nil, fmt.Errorf("-down must be 1s..%v", maxDown)
	case o.Warmup < 0 || o.Warmup > maxWarmup:
		return nil, fmt.Errorf("-warmup must be 0..%v", maxWarmup)
	case o.KillAt > 0 && o.killOffset()+o.Down >= o.Duration:
		return nil, fmt.Errorf("the follower would still be down at the end: -kill-at × -duration + -down (%v) must be below -duration (%v)", o.killOffset()+o.Down, o.Duration)
	}
	return o, nil
}

// killOffset is when, into the measured run, the follower is killed.
func (o *options) killOffset() time.Duration {
	return time.Duration(o.KillAt * float64(o.Duration))
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// Report is the JSON report.
type Report struct {
	Options   *options `json:"options"`
	GoVersion string   `json:"go_version"`
	CPUs      int      `json:"cpus"`
	Started   string   `json:"started"`
	Wall      string   `json:"wall"`
	KeyID     string   `json:"key_id"`
	// WarmupSignatures were made before the windows began.
	WarmupSignatures int64     `json:"warmup_signatures"`
	Windows          []Window  `json:"windows"`
	Signatures       int64     `json:"signatures"`
	Errors           int64     `json:"errors"`
	ErrorsByMessage  []ErrKind `json:"errors_by_message"`
	// LateSignatures completed after the run's end (requests in flight then).
	LateSignatures int64        `json:"late_signatures"`
	RSS            []NodeRSS    `json:"rss"`
	Kill           *KillReport  `json:"kill,omitempty"`
	Final          []FinalState `json:"final_states"`
	FinalNote      string       `json:"final_note,omitempty"`
	Targets        []Target     `json:"targets"`
}

// Window is one rate window: [Start, End) seconds into the measured run.
type Window struct {
	Index  int     `json:"index"`
	Start  float64 `json:"start_s"`
	End    float64 `json:"end_s"`
	Sigs   int64   `json:"signatures"`
	Errors int64   `json:"errors"`
	Rate   float64 `json:"sigs_per_s"`
	// Phase is "up" (all nodes running), "down" (overlaps the follower's downtime) or
	// "catch-up" (after its restart, before its applied index reached the leader's).
	Phase string `json:"phase"`
	// Full is false for a window cut short by the end of the run.
	Full bool `json:"full"`
	// RSS is each node's VmRSS in bytes at the window's end (0: not running).
	RSS []uint64 `json:"rss_bytes"`
	// Applied is each node's applied raft index at the window's end (0: not read).
	Applied []uint64 `json:"applied_index"`
	// Memory is each node's memory by holder at the window's end (nil: not read), to
	// tell an RSS change's holder and moment apart in the report.
	Memory []*Memory `json:"memory,omitempty"`
}

// ErrKind is one kind of signing error and how often it happened.
type ErrKind struct {
	Message string `json:"message"`
	Count   int64  `json:"count"`
}

// NodeRSS is one node's RSS at the start and at the end of the run.
type NodeRSS struct {
	Node  string `json:"node"`
	Start uint64 `json:"start_bytes"`
	End   uint64 `json:"end_bytes"`
	// Restarted: Start is its RSS followerSettle after it caught up following its
	// restart (StartAt seconds into the run), not at the run's start; End is judged
	// against BeforeKill.
	Restarted bool    `json:"restarted,omitempty"`
	StartAt   float64 `json:"start_at_s"`
	// BeforeKill is the restarted follower's RSS just before it was killed.
	BeforeKill uint64 `json:"before_kill_bytes,omitempty"`
	Note       string `json:"note,omitempty"`
	// StartMemory and EndMemory say where the memory is, from the node's /metrics, at
	// the run's start and end (nil: not read).
	StartMemory *Memory `json:"start_memory,omitempty"`
	EndMemory   *Memory `json:"end_memory,omitempty"`
}

// Memory is a node's memory by holder, in bytes: the Go heap in use and live, and its two
// Pebble databases' block caches and memtables (bounded by their options; on the Go heap
// in the pure-Go build, so also counted in the heap figures).
type Memory struct {
	GoHeapInUse uint64 `json:"go_heap_inuse_bytes"`
	// GoHeapLive is what the last collection kept (go_gc_heap_live_bytes; 0 from a node
	// that does not export it). The heap in use saws between it and twice it.
	GoHeapLive uint64 `json:"go_heap_live_bytes,omitempty"`
	// GoHeapFree is heap the runtime holds free and has not yet returned to the system
	// (heap idle less released): resident, though nothing uses it.
	GoHeapFree uint64 `json:"go_heap_free_bytes"`
	// RSSAnon and RSSFile split the RSS (/proc/PID/status): anonymous memory, and
	// file-backed pages, mostly the binary's code as it runs (0: not read).
	// Goroutines and GoStacks are the goroutines alive and the memory their stacks hold
	// (beside the heap, and counted in the collector's goal): a goroutine that never ends
	// grows both.
	Goroutines       uint64 `json:"goroutines,omitempty"`
	GoStacks         uint64 `json:"go_stacks_bytes,omitempty"`
	RSSAnon          uint64 `json:"rss_anon_bytes,omitempty"`
	RSSFile          uint64 `json:"rss_file_bytes,omitempty"`
	StateCache       uint64 `json:"state_block_cache_bytes"`
	StateMemTables   uint64 `json:"state_memtables_bytes"`
	KeystoreCache    uint64 `json:"keystore_block_cache_bytes"`
	KeystoreMemTable uint64 `json:"keystore_memtables_bytes"`
}

// String is the memory in MiB, one holder after the other.
func (m *Memory) String() string {
	if m == nil {
		return "-"
	}
	live := ""
	if m.GoHeapLive > 0 {
		live = fmt.Sprintf(" (live %.1f, of it outside Pebble %.1f)", mib(m.GoHeapLive), mib(m.liveOutsidePebble()))
	}
	return fmt.Sprintf("RSS anonymous %.1f + file-backed %.1f; heap %.1f%s + free not returned %.1f; %d goroutines, stacks %.1f; state db cache %.1f + memtables %.1f, keystore cache %.1f + memtables %.1f MiB",
		mib(m.RSSAnon), mib(m.RSSFile), mib(m.GoHeapInUse), live, mib(m.GoHeapFree), m.Goroutines, mib(m.GoStacks), mib(m.StateCache), mib(m.StateMemTables), mib(m.KeystoreCache), mib(m.KeystoreMemTable))
}

// pebble is what the two databases' block caches and memtables hold.
func (m *Memory) pebble() uint64 {
	return m.StateCache + m.StateMemTables + m.KeystoreCache + m.KeystoreMemTable
}

// liveOutsidePebble is the live heap less Pebble's bounded holders: the memory that would
// grow if something kept history in memory. The live figure is from the last collection
// and Pebble's from the scrape, so it is an estimate, never below 0.
func (m *Memory) liveOutsidePebble() uint64 {
	if p := m.pebble(); m.GoHeapLive > p {
		return m.GoHeapLive - p
	}
	return 0
}

// memoryNote says, for the RSS targets, how a node's live heap moved between start and
// end, outside Pebble's bounded holders and in them ("" without both figures), and its
// RSS's anonymous and file-backed parts: an RSS change that the holders explain is their
// filling to their bounds, doubled by the collector's headroom, and one in file-backed
// pages is code paged in; neither is history kept in memory.
func memoryNote(start, end *Memory) string {
	if start == nil || end == nil || start.GoHeapLive == 0 || end.GoHeapLive == 0 {
		return ""
	}
	note := fmt.Sprintf("live heap outside Pebble %.1f → %.1f MiB; Pebble's caches and memtables (bounded by their options) %.1f → %.1f MiB",
		mib(start.liveOutsidePebble()), mib(end.liveOutsidePebble()), mib(start.pebble()), mib(end.pebble()))
	if start.RSSFile > 0 && end.RSSFile > 0 {
		note += fmt.Sprintf("; RSS anonymous %.1f → %.1f, file-backed %.1f → %.1f MiB", mib(start.RSSAnon), mib(end.RSSAnon), mib(start.RSSFile), mib(end.RSSFile))
	}
	return note
}

// nodeMemory reads node i's memory figures from its /metrics (nil when it cannot).
func nodeMemory(ctx context.Context, c *cluster.Cluster, i int) *Memory {
	if c.PID(i) == 0 {
		return nil
	}
	m, err := c.Metrics(ctx, i)
	if err != nil {
		return nil
	}
	db := func(name, kind string) uint64 {
		return uint64(m[`custos_db_memory_bytes{db="`+name+`",kind="`+kind+`"}`])
	}
	mem := &Memory{
		GoHeapInUse: uint64(m["go_memstats_heap_inuse_bytes"]), GoHeapLive: uint64(m["go_gc_heap_live_bytes"]),
		GoHeapFree: uint64(max(0, m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"])),
		Goroutines: uint64(m["go_goroutines"]), GoStacks: uint64(m["go_memstats_stack_inuse_bytes"]),
		StateCache: db("state", "block_cache"), StateMemTables: db("state", "memtables"),
		KeystoreCache: db("keystore", "block_cache"), KeystoreMemTable: db("keystore", "memtables"),
	}
	if anon, file, err := cluster.ReadRSSParts(c.PID(i)); err == nil {
		mem.RSSAnon, mem.RSSFile = uint64(anon), uint64(file)
	}
	return mem
}

// saveHeapProfiles saves each running node's heap profile as DIR/NODE-when.pb.gz
// (-heap-profiles; nothing without it). A profile that cannot be had is reported, not
// fatal: the profiles explain a finding, they are not one.
func (s *soak) saveHeapProfiles(ctx context.Context, when string) {
	if s.o.heapDir == "" {
		return
	}
	if err := os.MkdirAll(s.o.heapDir, 0o755); err != nil {
		fmt.Fprintf(s.out, "heap profiles: %v\n", err)
		return
	}
	for i := range s.c.N() {
		if s.c.PID(i) == 0 {
			continue
		}
		b, err := s.c.Get(ctx, i, "/debug/pprof/heap")
		if err == nil {
			err = os.WriteFile(filepath.Join(s.o.heapDir, s.c.NodeID(i)+"-"+when+".pb.gz"), b, 0o644)
		}
		if err == nil {
			b, err = s.c.Get(ctx, i, "/debug/pprof/goroutine?debug=1")
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(s.o.heapDir, s.c.NodeID(i)+"-"+when+"-goroutines.txt"), b, 0o644)
		}
		if err != nil {
			fmt.Fprintf(s.out, "heap profile of %s (%s): %v\n", s.c.NodeID(i), when, err)
		}
	}
}

// KillReport is the follower's kill, restart and catch-up.
// Target is one of the soak's targets judged against the figures.
type Target = report.Target

type KillReport struct {
	Follower string  `json:"follower"`
	Leader   string  `json:"leader_at_kill"`
	KilledAt float64 `json:"killed_at_s"`
	// RestartedAt is 0 when the follower was not restarted.
	RestartedAt float64 `json:"restarted_at_s"`
	// LeaderIndexAtRestart and FollowerIndexAtRestart are the applied indexes when the
	// follower was restarted (the follower's as it first answered).
	LeaderIndexAtRestart   uint64 `json:"leader_index_at_restart"`
	FollowerIndexAtRestart uint64 `json:"follower_index_at_restart"`
	// ReadyAfter and CaughtUpAfter are measured from the restart; negative: never.
	ReadyAfter    time.Duration `json:"ready_after_ns"`
	CaughtUpAfter time.Duration `json:"caught_up_after_ns"`
	// CaughtUpAt is seconds into the run (0: never).
	CaughtUpAt float64 `json:"caught_up_at_s"`
	Note       string  `json:"note,omitempty"`
}

// FinalState is one node's /debug/state checkpoint at the end.
type FinalState struct {
	Node      string `json:"node"`
	Applied   uint64 `json:"applied_index"`
	StateHash string `json:"state_hash"`
	AuditSeq  uint64 `json:"audit_seq"`
	AuditHead string `json:"audit_head"`
	Err       string `json:"error,omitempty"`
}

// soak is one run's shared state. Its fields after the first group are safe for
// concurrent use.
type soak struct {
	o    *options
	c    *cluster.Cluster
	u    *cluster.User
	key  string
	pub  ed25519.PublicKey
	out  io.Writer
	t0   time.Time // the measured run's start (set before the workers count into windows)
	down []atomic.Bool
	m    *meter
	kill *killState
}

// run starts the cluster, soaks it and reports.
func run(ctx context.Context, o *options, stdout io.Writer) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	began := time.Now()
	rep := &Report{Options: o, GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Started: began.UTC().Format(time.RFC3339)}

	bin := o.bin
	if bin == "" {
		root, err := cluster.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "custos-soak-bin-")
		if err != nil {
			return fmt.Errorf("build directory: %w", err)
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(stdout, "building custosd…")
		if bin, err = cluster.Build(ctx, root, dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "starting a %d-node cluster (k=%d)…\n", nodes, threshold)
	c, err := cluster.New(ctx, cluster.Options{
		Nodes: nodes, Threshold: threshold, Binary: bin, KeepDir: o.keep, Logger: log,
		Extra: map[string]any{
			"log":  map[string]any{"level": o.NodeLog},
			"rate": map[string]any{"per_caller_rps": 0},
			"api":  map[string]any{"wait_timeout": apiWait},
		},
	})
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "soak: close cluster:", err)
		}
	}()
	if o.keep {
		fmt.Fprintln(stdout, "cluster directory (kept):", c.Dir())
	}

	s := &soak{o: o, c: c, out: stdout, down: make([]atomic.Bool, nodes), m: newMeter(), kill: &killState{}}
	if s.u, err = c.NewUser(ctx, "soak", o.Warmup+o.Duration+time.Hour); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	if err := s.createKey(ctx); err != nil {
		return err
	}
	rep.KeyID = s.key
	fmt.Fprintf(stdout, "Ed25519 key %s; signing with %d callers: %v warm-up, then %v", s.key, o.Conc, o.Warmup, o.Duration)
	if o.KillAt > 0 {
		fmt.Fprintf(stdout, " (a follower killed at %v for %v)", o.killOffset(), o.Down)
	}
	fmt.Fprintln(stdout)

	if err := s.soak(ctx, rep); err != nil {
		return err
	}
	rep.Wall = time.Since(began).Round(time.Second).String()
	rep.Targets = judge(rep)
	printReport(stdout, rep)
	if o.out != "" {
		if err := report.WriteJSON(o.out, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nreport written to %s\n", o.out)
	}
	return nil
}

// createKey runs the Ed25519 keygen through node 1.
func (s *soak) createKey(ctx context.Context) error {
	cl := s.u.Clients[0]
	key, req, err := cl.CreateKey(ctx, "ed25519", threshold, "soak", "")
	if err != nil {
		return fmt.Errorf("Ed25519 keygen: %w", err)
	}
	if key == nil {
		r, err := cl.WaitRequest(ctx, req.RequestID, 50*time.Millisecond)
		if err != nil {
			return fmt.Errorf("Ed25519 keygen: %w", err)
		}
		if r.Status != client.StatusActive || r.Key == nil {
			return fmt.Errorf("Ed25519 keygen: %w", requestError(r))
		}
		key = r.Key
	}
	if key.Status != client.StatusActive {
		return fmt.Errorf("Ed25519 keygen: key %s is %s", key.KeyID, key.Status)
	}
	pub, err := hex.DecodeString(key.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("Ed25519 keygen: public key %q", key.PublicKey)
	}
	s.key, s.pub = key.KeyID, pub
	return nil
}

// soak runs the warm-up, the measured run with the follower's kill and restart, and the
// end's checks, filling rep.
func (s *soak) soak(ctx context.Context, rep *Report) error {
	o, c := s.o, s.c
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	for w := range o.Conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(wctx, ctx, w)
		}()
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			stopWorkers()
			wg.Wait()
		}
	}
	defer stopAll()

	if err := sleepCtx(ctx, o.Warmup); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	s.t0 = s.m.begin(o.Duration)
	rep.RSS = make([]NodeRSS, nodes)
	for i := range nodes {
		rss, err := nodeRSS(c, i)
		if err != nil {
			return fmt.Errorf("start RSS: %w", err)
		}
		rep.RSS[i] = NodeRSS{Node: c.NodeID(i), Start: rss, StartMemory: nodeMemory(ctx, c, i)}
	}
	s.saveHeapProfiles(ctx, "start")
	fmt.Fprintf(s.out, "\nstart RSS: %s (after %d warm-up signatures)\n", fmtRSSList(rep.RSS, true), s.m.warmupCount())
	for _, r := range rep.RSS {
		fmt.Fprintf(s.out, "  %s: %s\n", r.Node, r.StartMemory)
	}
	fmt.Fprintf(s.out, "%6s %9s %6s %8s  %-40s %s\n", "t", "sig/s", "errors", "phase", "RSS MiB", "applied index")

	tick := time.NewTicker(window)
	defer tick.Stop()
	end := time.NewTimer(o.Duration)
	defer end.Stop()
	var killC, restartC <-chan time.Time
	if o.KillAt > 0 {
		kt := time.NewTimer(o.killOffset())
		defer kt.Stop()
		killC = kt.C
	}
	var catchUpDone chan struct{}
	defer func() {
		if catchUpDone != nil {
			<-catchUpDone // quick once ctx or wctx ended
		}
	}()
	follower := -1
	nWin := 0
loop:
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case <-tick.C:
			s.progress(ctx, nWin, rep)
			nWin++
		case <-killC:
			killC = nil
			f, err := s.killFollower(ctx, rep)
			if err != nil {
				return err
			}
			follower = f
			rt := time.NewTimer(o.Down)
			defer rt.Stop()
			restartC = rt.C
		case <-restartC:
			restartC = nil
			if err := c.Start(follower); err != nil {
				return fmt.Errorf("restart %s: %w", c.NodeID(follower), err)
			}
			catchUpDone = make(chan struct{})
			go func() {
				defer close(catchUpDone)
				s.watchCatchUp(ctx, wctx, follower, time.Now())
			}()
		case <-end.C:
			break loop
		}
	}
	// The end: RSS as the load stops, then the last window, then the workers' in-flight
	// requests, the catch-up watch, idle nodes and equal states.
	endRSS := make([]uint64, nodes)
	endMem := make([]*Memory, nodes)
	for i := range nodes {
		endRSS[i], _ = nodeRSS(c, i) // 0 for a node that is not running
		endMem[i] = nodeMemory(ctx, c, i)
	}
	s.saveHeapProfiles(ctx, "end")
	if nWin < int((o.Duration+window-1)/window) {
		s.progress(ctx, nWin, rep) // the last window, when the end came before its tick
	}
	fmt.Fprintln(s.out, "\nsigning stopped; waiting for requests in flight…")
	stopAll()
	if catchUpDone != nil {
		<-catchUpDone // bounded by catchUpMax after the restart
	}
	fmt.Fprintln(s.out, "memory at the end:")
	for i := range rep.RSS {
		rep.RSS[i].End, rep.RSS[i].EndMemory = endRSS[i], endMem[i]
		fmt.Fprintf(s.out, "  %s: %s\n", rep.RSS[i].Node, endMem[i])
	}
	s.fill(rep, follower)
	fmt.Fprintln(s.out, "waiting for idle nodes and comparing their states…")
	rep.Final, rep.FinalNote = s.finalStates(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return nil
}

// fill copies the meter's and the kill's figures into rep.
func (s *soak) fill(rep *Report, follower int) {
	k := s.kill.snapshot()
	wins, warm, late, errs := s.m.results()
	rep.WarmupSignatures, rep.LateSignatures, rep.ErrorsByMessage = warm, late, errs
	for i := range wins {
		w := &wins[i]
		if i < len(rep.Windows) {
			w.RSS, w.Applied, w.Memory = rep.Windows[i].RSS, rep.Windows[i].Applied, rep.Windows[i].Memory
		}
		w.Phase = phaseOf(w.Start, w.End, k)
		rep.Signatures += w.Sigs
		rep.Errors += w.Errors
	}
	rep.Windows = wins
	if k != nil {
		rep.Kill = &k.KillReport
		r := &rep.RSS[follower]
		r.Restarted, r.BeforeKill, r.Start, r.StartAt = true, k.rssBeforeKill, k.rssBaseline, k.rssBaselineAt
		if k.rssBaseline == 0 {
			r.Note = "no RSS baseline after the restart (it did not catch up before the end)"
		} else {
			r.Note = fmt.Sprintf("restarted at %.0f s; start RSS taken %v after it caught up", k.RestartedAt, followerSettle)
		}
	}
}

// worker signs until ctx ends, round-robin over the running nodes (from node w mod n).
// A request once sent runs to its end under reqCtx (an interrupt), not ctx (the run's
// end).
func (s *soak) worker(ctx, reqCtx context.Context, w int) {
	next := w % nodes
	msg := make([]byte, msgSize)
	for ctx.Err() == nil {
		entry := -1
		for range nodes {
			i := next
			next = (next + 1) % nodes
			if !s.down[i].Load() {
				entry = i
				break
			}
		}
		if entry < 0 {
			_ = sleepCtx(ctx, errorPause)
			continue
		}
		_, _ = rand.Read(msg)
		sctx, cancel := context.WithTimeout(reqCtx, signTimeout)
		err := s.sign(sctx, entry, msg)
		cancel()
		s.m.record(time.Now(), err)
		if err != nil {
			_ = sleepCtx(ctx, errorPause)
		}
	}
}

// sign asks node entry for a signature of msg, waits until it is signed and verifies it.
func (s *soak) sign(ctx context.Context, entry int, msg []byte) error {
	cl := s.u.Clients[entry]
	r, err := cl.Sign(ctx, s.key, msg, "", "")
	if err != nil {
		return err
	}
	if r.Status != client.StatusSigned {
		if r, err = cl.WaitRequest(ctx, r.RequestID, 20*time.Millisecond); err != nil {
			return err
		}
	}
	if r.Status != client.StatusSigned || r.Signature == nil {
		return requestError(r)
	}
	sig, err := hex.DecodeString(r.Signature.Signature)
	if err != nil || !ed25519.Verify(s.pub, msg, sig) {
		return errBadSignature
	}
	return nil
}

// errBadSignature is a signature that does not verify under the key's public key.
var errBadSignature = errors.New("signature does not verify")

// reqError is a sign request that ended without a signature.
type reqError struct{ status, code, detail string }

func (e *reqError) Error() string {
	if e.code == "" {
		return "request ended " + e.status
	}
	return fmt.Sprintf("request %s: %s: %s", e.status, e.code, e.detail)
}

func requestError(r *client.Request) error {
	e := &reqError{status: r.Status}
	if r.Error != nil {
		e.code, e.detail = r.Error.Code, r.Error.Detail
	}
	return e
}

// errKey is the kind under which an error is counted: its API code, its request's code,
// a timeout, a connection failure, or else its message's last part (without addresses).
func errKey(err error) string {
	var ae *client.APIError
	var re *reqError
	switch {
	case errors.Is(err, errBadSignature):
		return err.Error()
	case errors.As(err, &re):
		if re.code == "" {
			return "request ended " + re.status
		}
		return "request " + re.status + " " + re.code
	case errors.As(err, &ae):
		if ae.Code == "" {
			return fmt.Sprintf("HTTP %d", ae.Status)
		}
		return fmt.Sprintf("HTTP %d %s", ae.Status, ae.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed (EOF)"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if len(msg) > 100 {
		msg = msg[:100]
	}
	return msg
}

// progress prints window i (which just ended) with each node's RSS and applied index.
func (s *soak) progress(ctx context.Context, i int, rep *Report) {
	sigs, errs := s.m.window(i)
	w := Window{RSS: make([]uint64, nodes), Applied: make([]uint64, nodes), Memory: make([]*Memory, nodes)}
	var rss, applied []string
	for n := range nodes {
		mctx, cancel := context.WithTimeout(ctx, probeTimeout)
		w.Memory[n] = nodeMemory(mctx, s.c, n)
		cancel()
		if v, err := nodeRSS(s.c, n); err == nil {
			w.RSS[n] = v
			rss = append(rss, fmt.Sprintf("%7.1f", mib(v)))
		} else {
			rss = append(rss, fmt.Sprintf("%7s", "down"))
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		ds, err := s.c.DebugState(pctx, n)
		cancel()
		if err == nil {
			w.Applied[n] = ds.Index
			applied = append(applied, strconv.FormatUint(ds.Index, 10))
		} else {
			applied = append(applied, "-")
		}
	}
	for len(rep.Windows) <= i {
		rep.Windows = append(rep.Windows, Window{})
	}
	rep.Windows[i].RSS, rep.Windows[i].Applied, rep.Windows[i].Memory = w.RSS, w.Applied, w.Memory
	elapsed := time.Since(s.t0)
	from := time.Duration(i) * window
	secs := min(elapsed, from+window) - from
	rate := float64(sigs) / secs.Seconds()
	phase := phaseOf(from.Seconds(), (from + secs).Seconds(), s.kill.snapshot())
	fmt.Fprintf(s.out, "%5.0fs %9.1f %6d %8s  %-40s %s\n", (from + secs).Seconds(), rate, errs, phase, strings.Join(rss, " "), strings.Join(applied, "/"))
}

// killFollower kills a follower (the node after the leader) and returns its index.
func (s *soak) killFollower(ctx context.Context, rep *Report) (int, error) {
	c := s.c
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	leader, err := c.WaitLeader(lctx)
	cancel()
	if err != nil {
		return -1, fmt.Errorf("find the leader before the kill: %w", err)
	}
	f := (leader + 1) % nodes
	before, _ := nodeRSS(c, f)
	s.down[f].Store(true)
	at := time.Since(s.t0)
	if err := c.Kill(f); err != nil {
		return -1, fmt.Errorf("kill %s: %w", c.NodeID(f), err)
	}
	s.kill.set(&killRecord{
		KillReport:    KillReport{Follower: c.NodeID(f), Leader: c.NodeID(leader), KilledAt: at.Seconds(), ReadyAfter: -1, CaughtUpAfter: -1},
		rssBeforeKill: before,
	})
	fmt.Fprintf(s.out, "%5.0fs killed follower %s (leader %s, RSS %.1f MiB); restart in %v\n", at.Seconds(), c.NodeID(f), c.NodeID(leader), mib(before), s.o.Down)
	return f, nil
}

// watchCatchUp follows the restarted follower f: when it is ready (then it takes
// signers again), when its applied index first reaches the leader's (read just before
// it), and its RSS a warm-up later (while the run lasts: wctx).
func (s *soak) watchCatchUp(ctx, wctx context.Context, f int, restarted time.Time) {
	c := s.c
	at := restarted.Sub(s.t0)
	s.kill.update(func(k *killRecord) { k.RestartedAt = at.Seconds() })
	fmt.Fprintf(s.out, "%5.0fs restarted %s\n", at.Seconds(), c.NodeID(f))
	bctx, cancel := context.WithDeadline(ctx, restarted.Add(catchUpMax))
	defer cancel()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := c.WaitReady(bctx, f)
		took := time.Since(restarted)
		if err != nil {
			s.kill.update(func(k *killRecord) { k.Note = joinNote(k.Note, "not ready: "+firstLine(err.Error())) })
			fmt.Fprintf(s.out, "%5.0fs %s not ready: %v\n", time.Since(s.t0).Seconds(), c.NodeID(f), err)
			return
		}
		s.kill.update(func(k *killRecord) { k.ReadyAfter = took })
		s.down[f].Store(false)
		fmt.Fprintf(s.out, "%5.0fs %s ready %v after its restart; it takes signers again\n", time.Since(s.t0).Seconds(), c.NodeID(f), took.Round(time.Millisecond))
	}()
	defer wg.Wait()

	first := true
	var caughtUp time.Time
	err := cluster.Until(bctx, func() bool {
		lead, lidx, fidx, ok := s.indexes(bctx, f)
		if !ok {
			return false
		}
		if first {
			first = false
			s.kill.update(func(k *killRecord) { k.LeaderIndexAtRestart, k.FollowerIndexAtRestart = lidx, fidx })
		}
		if fidx < lidx && lead != f {
			return false
		}
		caughtUp = time.Now()
		return true
	})
	if err != nil {
		s.kill.update(func(k *killRecord) {
			k.Note = joinNote(k.Note, fmt.Sprintf("applied index did not reach the leader's within %v", catchUpMax))
		})
		fmt.Fprintf(s.out, "%5.0fs %s did not catch up within %v of its restart\n", time.Since(s.t0).Seconds(), c.NodeID(f), catchUpMax)
		return
	}
	took := caughtUp.Sub(restarted)
	s.kill.update(func(k *killRecord) {
		k.CaughtUpAfter, k.CaughtUpAt = took, caughtUp.Sub(s.t0).Seconds()
	})
	fmt.Fprintf(s.out, "%5.0fs %s caught up (applied index reached the leader's) %v after its restart\n", caughtUp.Sub(s.t0).Seconds(), c.NodeID(f), took.Round(time.Millisecond))
	if sleepCtx(wctx, followerSettle) != nil {
		return // the run ended first: no baseline
	}
	rss, err := nodeRSS(c, f)
	if err != nil {
		return
	}
	bat := time.Since(s.t0)
	s.kill.update(func(k *killRecord) { k.rssBaseline, k.rssBaselineAt = rss, bat.Seconds() })
	fmt.Fprintf(s.out, "%5.0fs %s RSS baseline after its restart: %.1f MiB\n", bat.Seconds(), c.NodeID(f), mib(rss))
}

// indexes reads the leader's applied index, then node f's: the leader's index, and
// whether both were read.
func (s *soak) indexes(ctx context.Context, f int) (leader int, lidx, fidx uint64, ok bool) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	l, err := s.c.Leader(pctx)
	if err != nil {
		return -1, 0, 0, false
	}
	lds, err := s.c.DebugState(pctx, l)
	if err != nil {
		return -1, 0, 0, false
	}
	fds, err := s.c.DebugState(pctx, f)
	if err != nil {
		return -1, 0, 0, false
	}
	return l, lds.Index, fds.Index, true
}

// finalStates waits until no node runs a ceremony and all report the same applied index,
// then returns their checkpoints (the last read when they never agree, with why).
func (s *soak) finalStates(ctx context.Context) ([]FinalState, string) {
	c := s.c
	sctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	var note string
	if err := c.WaitIdle(sctx, c.All()...); err != nil {
		note = "not idle: " + firstLine(err.Error())
	}
	var last []FinalState
	err := cluster.Until(sctx, func() bool {
		last = readStates(sctx, c)
		return sameIndex(last)
	})
	if err != nil {
		note = joinNote(note, fmt.Sprintf("applied indexes still differ after %v", settleTimeout))
	}
	return last, note
}

// readStates reads every node's checkpoint.
func readStates(ctx context.Context, c *cluster.Cluster) []FinalState {
	out := make([]FinalState, nodes)
	for i := range nodes {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		ds, err := c.DebugState(pctx, i)
		cancel()
		out[i] = finalState(c.NodeID(i), ds, err)
	}
	return out
}

func finalState(id string, ds *node.DebugState, err error) FinalState {
	if err != nil {
		return FinalState{Node: id, Err: firstLine(err.Error())}
	}
	return FinalState{Node: id, Applied: ds.Index, StateHash: ds.StateHash, AuditSeq: ds.AuditSeq, AuditHead: ds.AuditHead}
}

// sameIndex reports whether every state was read and all have the same applied index.
func sameIndex(st []FinalState) bool {
	for _, f := range st {
		if f.Err != "" || f.Applied != st[0].Applied {
			return false
		}
	}
	return len(st) > 0
}

// rssMinute is the span over which a node's RSS peak stands for its RSS at a moment.
const rssMinute = 60.0

// peakRSS is node i's highest RSS sample among the windows ending in (from, to] seconds.
func peakRSS(rep *Report, i int, from, to float64) uint64 {
	var p uint64
	for _, w := range rep.Windows {
		if w.End > from && w.End <= to && i < len(w.RSS) {
			p = max(p, w.RSS[i])
		}
	}
	return p
}

// measuredEnd is where the last window ends (seconds into the measured run).
func (rep *Report) measuredEnd() float64 {
	if len(rep.Windows) == 0 {
		return 0
	}
	return rep.Windows[len(rep.Windows)-1].End
}

// judge compares the report's figures with issue 11's targets.
func judge(rep *Report) []Target {
	var out []Target
	// RSS is a sawtooth (the Go heap, which holds Pebble's caches and memtables in this
	// pure-Go build, grows to twice what is live between collections), so a node's RSS
	// "at" a moment is the peak of its samples over the minute around it: the start
	// sample and the first minute's windows, the last minute's windows and the end sample.
	for i, r := range rep.RSS {
		t := Target{Name: "RSS flat " + r.Node, Note: joinNote(r.Note, memoryNote(r.StartMemory, r.EndMemory))}
		if r.Restarted && r.BeforeKill != 0 {
			// A restarted process refills its bounded caches from nothing: it must not end
			// above what it held before it was killed.
			t.Want = fmt.Sprintf("peak of the last minute at most %.0f %% above the minute before the kill", rssTolerance*100)
			before := max(r.BeforeKill, peakRSS(rep, i, rep.Kill.KilledAt-rssMinute, rep.Kill.KilledAt))
			end := max(r.End, peakRSS(rep, i, rep.measuredEnd()-rssMinute, rep.measuredEnd()))
			if end == 0 {
				t.Got = fmt.Sprintf("before the kill %.1f MiB, end not read (not running)", mib(before))
			} else {
				ch := float64(end)/float64(before) - 1
				t.Got = fmt.Sprintf("%.1f before the kill → %.1f MiB at the end (%+.1f %%)", mib(before), mib(end), ch*100)
				t.Met = ch <= rssTolerance
			}
			t.Judged = true
			out = append(out, t)
			continue
		}
		t.Want = fmt.Sprintf("peak of the last minute within %.0f %% of the first minute's", rssTolerance*100)
		start := max(r.Start, peakRSS(rep, i, 0, rssMinute))
		end := max(r.End, peakRSS(rep, i, rep.measuredEnd()-rssMinute, rep.measuredEnd()))
		switch {
		case start == 0:
			t.Got = "-"
		case r.End == 0:
			t.Got = fmt.Sprintf("start %.1f MiB, end not read (not running)", mib(start))
			t.Judged = true
		default:
			ch := float64(end)/float64(start) - 1
			t.Got = fmt.Sprintf("%.1f → %.1f MiB (%+.1f %%; at the two instants %.1f → %.1f)", mib(start), mib(end), ch*100, mib(r.Start), mib(r.End))
			t.Judged, t.Met = true, ch <= rssTolerance && ch >= -rssTolerance
		}
		out = append(out, t)
	}

	steady := Target{Name: "signatures/s steady", Want: fmt.Sprintf("last full window >= %.0f %% of the first (downtime windows excluded)", steadyFraction*100)}
	var judged []Window
	var downRates []string
	for _, w := range rep.Windows {
		switch {
		case !w.Full:
		case w.Phase == "down":
			downRates = append(downRates, fmt.Sprintf("%.1f", w.Rate))
		default:
			judged = append(judged, w)
		}
	}
	if len(judged) >= 2 {
		first, last := judged[0], judged[len(judged)-1]
		ratio := 0.0
		if first.Rate > 0 {
			ratio = last.Rate / first.Rate
		}
		steady.Got = fmt.Sprintf("first %.1f sig/s (%.0f-%.0f s), last %.1f sig/s (%.0f-%.0f s): %.0f %%", first.Rate, first.Start, first.End, last.Rate, last.Start, last.End, ratio*100)
		steady.Judged, steady.Met = true, first.Rate > 0 && ratio >= steadyFraction
	} else {
		steady.Got = "-"
		steady.Note = "needs two full windows outside the downtime"
	}
	if len(downRates) > 0 {
		steady.Note = joinNote(steady.Note, "while the follower was down: "+strings.Join(downRates, ", ")+" sig/s")
	}
	out = append(out, steady)

	if k := rep.Kill; k != nil {
		t := Target{Name: "follower catch-up " + k.Follower, Want: fmt.Sprintf("applied index = leader's within %v of restart", catchUpTarget), Note: k.Note, Judged: true}
		switch {
		case k.RestartedAt == 0:
			t.Got = "not restarted"
		case k.CaughtUpAfter < 0:
			t.Got = fmt.Sprintf("not within %v", catchUpMax)
		default:
			t.Got = fmt.Sprintf("%v (%d entries behind at restart; ready after %v)", k.CaughtUpAfter.Round(time.Millisecond),
				k.LeaderIndexAtRestart-min(k.LeaderIndexAtRestart, k.FollowerIndexAtRestart), max(k.ReadyAfter, 0).Round(time.Millisecond))
			t.Met = k.CaughtUpAfter <= catchUpTarget
		}
		out = append(out, t)
	}

	eq := Target{Name: "states equal at the end", Want: "same applied_index and state_hash on every node", Note: rep.FinalNote, Judged: len(rep.Final) > 0}
	if eq.Judged {
		var parts []string
		eq.Met = sameIndex(rep.Final)
		for _, f := range rep.Final {
			if f.Err != "" {
				parts = append(parts, f.Node+" unreadable")
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %d %s", f.Node, f.Applied, short(f.StateHash)))
			if f.StateHash == "" || f.StateHash != rep.Final[0].StateHash {
				eq.Met = false
			}
		}
		eq.Got = strings.Join(parts, ", ")
	}
	out = append(out, eq)
	return out
}

// printReport writes the windows, the errors and the verdict table.
func printReport(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\ncluster soak: %d nodes (k=%d), %d callers, %s, %d CPUs, wall %s\n", nodes, threshold, rep.Options.Conc, rep.GoVersion, rep.CPUs, rep.Wall)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "window\tfrom s\tto s\tsignatures\tsig/s\terrors\tphase\t")
	for _, win := range rep.Windows {
		full := ""
		if !win.Full {
			full = " (partial)"
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%d\t%.1f\t%d\t%s%s\t\n", win.Index, win.Start, win.End, win.Sigs, win.Rate, win.Errors, win.Phase, full)
	}
	tw.Flush()
	total := 0.0
	if n := len(rep.Windows); n > 0 {
		total = float64(rep.Signatures) / rep.Windows[n-1].End
	}
	fmt.Fprintf(w, "signatures: %d in the run (%.1f/s), %d in the warm-up, %d finished after the end; errors: %d\n",
		rep.Signatures, total, rep.WarmupSignatures, rep.LateSignatures, rep.Errors)
	for _, e := range rep.ErrorsByMessage {
		fmt.Fprintf(w, "  %6d  %s\n", e.Count, e.Message)
	}
	if k := rep.Kill; k != nil {
		fmt.Fprintf(w, "follower %s (leader %s) killed at %.0f s, restarted at %.0f s", k.Follower, k.Leader, k.KilledAt, k.RestartedAt)
		if k.ReadyAfter >= 0 {
			fmt.Fprintf(w, ", ready after %v", k.ReadyAfter.Round(time.Millisecond))
		}
		if k.CaughtUpAfter >= 0 {
			fmt.Fprintf(w, ", caught up after %v (index %d → leader's %d at restart)", k.CaughtUpAfter.Round(time.Millisecond), k.FollowerIndexAtRestart, k.LeaderIndexAtRestart)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "final states:")
	for _, f := range rep.Final {
		if f.Err != "" {
			fmt.Fprintf(w, "  %s  %s\n", f.Node, f.Err)
			continue
		}
		fmt.Fprintf(w, "  %s  applied %d  state %s  audit %d %s\n", f.Node, f.Applied, short(f.StateHash), f.AuditSeq, short(f.AuditHead))
	}
	fmt.Fprintln(w, "\nissue 11 targets (cluster soak):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range rep.Targets {
		note := ""
		if t.Note != "" {
			note = " (" + t.Note + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\twant %s\tgot %s%s\n", t.Verdict(), t.Name, t.Want, t.Got, note)
	}
	tw.Flush()
}

// meter counts signatures and errors per window by completion time. Safe for concurrent
// use.
type meter struct {
	mu     sync.Mutex
	t0     time.Time // zero during the warm-up
	d      time.Duration
	warmup int64
	late   int64
	sigs   []int64
	errs   []int64
	kinds  map[string]int64
}

func newMeter() *meter { return &meter{kinds: map[string]int64{}} }

// begin ends the warm-up: windows of a run of length d count from now, which it
// returns.
func (m *meter) begin(d time.Duration) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t0, m.d = time.Now(), d
	return m.t0
}

// record counts one signature (err nil) or error completed at t.
func (m *meter) record(t time.Time, err error) {
	var kind string
	if err != nil {
		kind = errKey(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.kinds[kind]++
	}
	if m.t0.IsZero() {
		if err == nil {
			m.warmup++
		}
		return
	}
	off := t.Sub(m.t0)
	if off >= m.d {
		if err == nil {
			m.late++
		}
		return
	}
	i := int(max(off, 0) / window)
	for len(m.sigs) <= i {
		m.sigs, m.errs = append(m.sigs, 0), append(m.errs, 0)
	}
	if err != nil {
		m.errs[i]++
	} else {
		m.sigs[i]++
	}
}

func (m *meter) warmupCount() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.warmup
}

// window returns window i's counts so far.
func (m *meter) window(i int) (sigs, errs int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i < len(m.sigs) {
		return m.sigs[i], m.errs[i]
	}
	return 0, 0
}

// results returns the run's windows (rates, no phases), the warm-up's signatures,
// those completed after the run's end, and the errors by kind, most frequent first.
func (m *meter) results() (wins []Window, warmup, late int64, kinds []ErrKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.d
	n := int((d + window - 1) / window)
	for i := range n {
		from, to := time.Duration(i)*window, min(time.Duration(i+1)*window, d)
		w := Window{Index: i, Start: from.Seconds(), End: to.Seconds(), Full: to-from == window}
		if i < len(m.sigs) {
			w.Sigs, w.Errors = m.sigs[i], m.errs[i]
		}
		w.Rate = float64(w.Sigs) / (to - from).Seconds()
		wins = append(wins, w)
	}
	for k, v := range m.kinds {
		kinds = append(kinds, ErrKind{Message: k, Count: v})
	}
	slices.SortFunc(kinds, func(a, b ErrKind) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return wins, m.warmup, m.late, kinds
}

// killRecord is the kill's report plus what judging the follower's RSS needs.
type killRecord struct {
	KillReport
	rssBeforeKill uint64
	rssBaseline   uint64
	rssBaselineAt float64
}

// killState holds the kill's record (nil before the kill). Safe for concurrent use.
type killState struct {
	mu sync.Mutex
	k  *killRecord
}

func (s *killState) set(k *killRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.k = k
}

func (s *killState) update(f func(*killRecord)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.k != nil {
		f(s.k)
	}
}

// snapshot returns a copy of the record, or nil before the kill.
func (s *killState) snapshot() *killRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.k == nil {
		return nil
	}
	k := *s.k
	return &k
}

// phaseOf is the phase of the window [from, to) seconds: "down" when it overlaps the
// follower's downtime (kill to restart; to the end when not restarted), "catch-up" when
// it overlaps the time from the restart until the follower caught up (to the end when it
// never did), else "up".
func phaseOf(from, to float64, k *killRecord) string {
	if k == nil {
		return "up"
	}
	restarted := k.RestartedAt
	if restarted == 0 {
		restarted = to + 1 // still down
	}
	if from < restarted && to > k.KilledAt {
		return "down"
	}
	caught := k.CaughtUpAt
	if caught == 0 {
		caught = to + 1
	}
	if from < caught && to > restarted {
		return "catch-up"
	}
	return "up"
}

// nodeRSS is node i's current resident set size in bytes.
func nodeRSS(c *cluster.Cluster, i int) (uint64, error) {
	pid := c.PID(i)
	if pid == 0 {
		return 0, fmt.Errorf("%w: %s", cluster.ErrNotRunning, c.NodeID(i))
	}
	v, err := cluster.ReadVmRSS(pid)
	if err != nil {
		return 0, fmt.Errorf("rss of %s: %w", c.NodeID(i), err)
	}
	return uint64(v), nil
}

// fmtRSSList formats each node's start (or end) RSS.
func fmtRSSList(rs []NodeRSS, start bool) string {
	var parts []string
	for _, r := range rs {
		v := r.End
		if start {
			v = r.Start
		}
		parts = append(parts, fmt.Sprintf("%s %.1f MiB", r.Node, mib(v)))
	}
	return strings.Join(parts, ", ")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// short abbreviates a hash for the tables.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// sleepCtx sleeps for d or until ctx ends (then its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
