//go:build linux

// Command bench measures custos against its own engine, tss-lib, on one machine in one
// run: (a) an in-process baseline (protocol/baseline: tss-lib parties in this process,
// every message serialised with WireBytes and parsed again, same curve, k, n and message
// sizes) and
// (b) the same operations through a real custosd cluster on loopback (test/cluster),
// called through the Go SDK with full authentication (user token and an RFC 9421
// signature on every request). Cells: ECDSA sign (k-of-n), Ed25519 sign, ECDSA keygen
// with a warm pre-parameter pool, ECDSA sign throughput at several concurrencies, and a
// 10-input PSBT signing against 10 concurrent in-process ECDSA signings (psbt.go),
// and Ed25519 sign throughput with and without 50 event streams open (events.go);
// plus the nodes' peak RSS (VmHWM) under the highest concurrency. Baseline and cluster
// samples alternate, each cell runs -reps times and the median of the repetitions'
// p50, p95 and throughput is reported with the ratio cluster/baseline and the issue's
// targets (reported, never asserted). With -wan it also runs a simulated wide-area
// cluster behind TCP latency proxies and compares sign latency with the bound of
// wan.go.
//
//	go run ./test/bench [-out bench-results/bench.json] [-nodes 3 -k 2] [-samples 30]
//	    [-keygen-samples 5] [-reps 3] [-conc 1,4,16] [-wan 50ms] [-wan-only]
//	    [-phases] [-cpuprofile DIR [-cpuprofile-seconds 10s]]
//	    [-psbt-samples 5] [-psbt=false] [-events=false] [-events-clients 50]
//	    [-events-duration 20s] [-only psbt,ecdsa_sign,events,...]
//
// -phases breaks each cell's cluster latency down into the sign path's phases, from the
// nodes' custos_phase_seconds histograms, scraped from their GET /metrics at the start
// and at the end of each repetition of the cell (see phases.go). -cpuprofile DIR saves
// each node's CPU profile, and the in-process baseline's, taken while the ECDSA and the
// Ed25519 sign cells run (after the measured repetitions), and prints their top entries
// (see profile.go).
//
// It must be run from inside the custos module (it builds ./cmd/custosd and reads the
// pre-parameter fixtures of test/fixtures/preparams); it never generates safe primes.
// Every process it starts is stopped before it exits (and dies with it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	golog "github.com/ipfs/go-log"

	"github.com/custos/custos/protocol/baseline"
	"github.com/custos/custos/test/cluster"
	results "github.com/custos/custos/test/report"
)

// Bounds on the flags, so that a typo cannot start an hour-long run.
const (
	maxSamples     = 10000
	maxReps        = 20
	maxConcurrency = 256
	maxNodes       = 7
)

// options are the command's flags.
type options struct {
	out            string
	nodes, k       int
	samples        int
	keygenSamples  int
	reps           int
	conc           []int
	msgSize        int
	wan            time.Duration
	wanOnly        bool
	keep           bool
	bin            string
	nodeLog        string
	verbose        bool
	phases         bool
	cpuProfile     string
	cpuProfileSecs time.Duration
	psbt           bool
	psbtSamples    int
	events         bool
	eventsClients  int
	eventsDuration time.Duration
	only           []string // cell name prefixes to run (nil = every cell)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: go run ./test/bench [flags]   (or: make bench BENCHFLAGS="flags")

Measures the in-process tss-lib baseline and a real custosd cluster on loopback in one
run, alternated, and prints a table and a JSON file. Profiling:
  -phases               add each cell's sign-path phase breakdown (from the nodes' /metrics)
  -cpuprofile DIR       save the nodes' (and the baseline's) CPU profiles of the sign cells
                        in DIR and print their top entries
e.g. go run ./test/bench -keygen-samples 0 -conc 16 -phases -cpuprofile bench-results/prof
PSBT: -psbt-samples N (default 5), -psbt=false skips the cell; -only psbt runs only it.
Events: -events-clients N (default 50) streams of GET /v1/events open while Ed25519 signs
run for -events-duration D (default 20s), against the same without streams;
-events=false skips the cell; -only events runs only it.

flags:
`)
		fs.PrintDefaults()
	}
	o := &options{}
	fs.StringVar(&o.out, "out", "bench-results/bench.json", "where to write the JSON results (the table goes to stdout)")
	fs.IntVar(&o.nodes, "nodes", 3, "cluster size n (3..7; 5 with -k 3 is the 3-of-5 variant)")
	fs.IntVar(&o.k, "k", 2, "signing threshold k (signers per ceremony)")
	fs.IntVar(&o.samples, "samples", 30, "samples per latency cell and side per repetition (also the minimum operations of a throughput run)")
	fs.IntVar(&o.keygenSamples, "keygen-samples", 5, "ECDSA keygen samples per side per repetition (a keygen takes seconds; 0 skips the cell)")
	fs.IntVar(&o.reps, "reps", 3, "repetitions; the median of the repetitions is reported")
	concs := fs.String("conc", "1,4,16", "comma-separated concurrencies of the sign throughput cells")
	fs.IntVar(&o.msgSize, "ed25519-msg", 32, "Ed25519 message size in bytes (ECDSA always signs a 32-byte digest)")
	fs.DurationVar(&o.wan, "wan", 0, "one-way delay of a simulated wide-area run (e.g. 50ms; 0 = no WAN run)")
	fs.BoolVar(&o.wanOnly, "wan-only", false, "run only the wide-area section (needs -wan)")
	fs.BoolVar(&o.keep, "keep", false, "keep the clusters' directories (configs, data, logs) for inspection")
	fs.StringVar(&o.bin, "custosd", "", "custosd binary to run (default: build ./cmd/custosd)")
	fs.StringVar(&o.nodeLog, "node-log-level", "info", "log level of the nodes (their logs go to files)")
	fs.BoolVar(&o.verbose, "v", false, "log progress at debug level")
	fs.BoolVar(&o.phases, "phases", false, "report each cell's sign-path phases (auth, commits, waits, ceremony) from the nodes' custos_phase_seconds histograms, scraped from GET /metrics around each repetition")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "after the measured repetitions, save every node's CPU profile (and the baseline's) taken while the sign cells run, in this directory, and print their top entries")
	fs.DurationVar(&o.cpuProfileSecs, "cpuprofile-seconds", 10*time.Second, "how long each -cpuprofile profile runs")
	fs.BoolVar(&o.psbt, "psbt", true, "run the PSBT cell: a 10-input PSBT signed by the cluster against 10 concurrent in-process ECDSA signings")
	fs.IntVar(&o.psbtSamples, "psbt-samples", 5, "PSBT cell samples per side per repetition")
	fs.BoolVar(&o.events, "events", true, "run the event-stream cell: Ed25519 sign throughput with -events-clients GET /v1/events streams open (half admin, half the signing user) against the same without, and each stream's lag behind the signs")
	fs.IntVar(&o.eventsClients, "events-clients", 50, "event streams the event-stream cell opens, spread over the nodes")
	fs.DurationVar(&o.eventsDuration, "events-duration", 20*time.Second, "how long each run (with and without streams) of the event-stream cell signs, per repetition")
	only := fs.String("only", "", "comma-separated cell name prefixes: run only the loopback cells whose name starts with one (e.g. psbt, ecdsa_sign, ed25519, ecdsa_keygen, events)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only = append(o.only, s)
		}
	}
	for _, s := range strings.Split(*concs, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 || c > maxConcurrency {
			return nil, fmt.Errorf("-conc: %q is not a concurrency in 1..%d", s, maxConcurrency)
		}
		o.conc = append(o.conc, c)
	}
	switch {
	case o.nodes < 2 || o.nodes > maxNodes:
		return nil, fmt.Errorf("-nodes must be 2..%d", maxNodes)
	case o.k < 2 || o.k > o.nodes:
		return nil, errors.New("-k must be 2..nodes")
	case o.samples < 1 || o.samples > maxSamples:
		return nil, fmt.Errorf("-samples must be 1..%d", maxSamples)
	case o.keygenSamples < 0 || o.keygenSamples > maxSamples:
		return nil, fmt.Errorf("-keygen-samples must be 0..%d", maxSamples)
	case o.psbtSamples < 1 || o.psbtSamples > maxSamples:
		return nil, fmt.Errorf("-psbt-samples must be 1..%d", maxSamples)
	case o.eventsClients < 1 || o.eventsClients > maxEventsClients:
		return nil, fmt.Errorf("-events-clients must be 1..%d", maxEventsClients)
	case o.eventsDuration < time.Second || o.eventsDuration > 10*time.Minute:
		return nil, errors.New("-events-duration must be 1s..10m")
	case o.reps < 1 || o.reps > maxReps:
		return nil, fmt.Errorf("-reps must be 1..%d", maxReps)
	case o.msgSize < 1 || o.msgSize > 1<<16:
		return nil, errors.New("-ed25519-msg must be 1..65536 bytes")
	case o.wan < 0 || o.wan > cluster.MaxProxyDelay:
		return nil, fmt.Errorf("-wan must be 0..%v", cluster.MaxProxyDelay)
	case o.wanOnly && o.wan == 0:
		return nil, errors.New("-wan-only needs -wan")
	case o.cpuProfileSecs < time.Second || o.cpuProfileSecs > maxProfileSecs*time.Second:
		return nil, fmt.Errorf("-cpuprofile-seconds must be 1s..%ds", maxProfileSecs)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, stdout io.Writer) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// tss-lib logs through go-log; keep it to errors, as custosd does.
	if err := golog.SetLogLevel("tss-lib", "error"); err != nil {
		return fmt.Errorf("tss-lib log level: %w", err)
	}
	began := time.Now()
	root, err := cluster.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	fixtures := filepath.Join(root, "test", "fixtures", "preparams")
	bin := o.bin
	if bin == "" {
		dir, err := os.MkdirTemp("", "custos-bench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		log.Info("building custosd")
		if bin, err = cluster.Build(ctx, root, dir); err != nil {
			return err
		}
	}
	rep := newReport(o)
	log.Info("in-process baseline: ECDSA and EdDSA keygen", "parties", o.nodes, "k", o.k)
	base, err := baseline.New(ctx, fixtures, o.nodes, o.k)
	if err != nil {
		return err
	}
	var errs []error
	if !o.wanOnly {
		if err := runLoopback(ctx, o, bin, base, rep, log); err != nil {
			errs = append(errs, fmt.Errorf("loopback run: %w", err))
		}
	}
	if o.wan > 0 && ctx.Err() == nil {
		if err := runWAN(ctx, o, bin, base, rep, log); err != nil {
			errs = append(errs, fmt.Errorf("wide-area run: %w", err))
		}
	}
	rep.finish(began)
	if len(rep.Cells) > 0 || rep.WAN != nil {
		rep.printTable(stdout)
		if err := results.WriteJSON(o.out, rep); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(stdout, "\nresults written to %s\n", o.out)
		}
	}
	return errors.Join(errs...)
}

// selected reports whether -only lets the loopback cell name run.
func (o *options) selected(name string) bool {
	if len(o.only) == 0 {
		return true
	}
	for _, p := range o.only {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// clusterExtra is the configuration every benchmark node gets on top of devcluster's:
// no per-caller rate limit (one user drives the throughput cells), room for slow
// ceremonies under load, and a wait that covers keygen so that calls answer 201/200.
func clusterExtra(o *options) map[string]any {
	return map[string]any{
		"log":      map[string]any{"level": o.nodeLog},
		"rate":     map[string]any{"per_caller_rps": 0},
		"api":      map[string]any{"wait_timeout": "60s"},
		"ceremony": map[string]any{"sign_timeout": "60s", "keygen_timeout": "3m"},
	}
}
