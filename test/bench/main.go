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
// and Ed25519 sign throughput with and without 50 event streams open (events.go),
// an ECDSA key refresh (reshare k-of-n → k-of-n) against tss-lib's in-process resharing,
// and, once and on a cluster of its own, 100 keys reshared to a new member (reshare.go);
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
//	    [-events-duration 20s] [-reshare=false] [-reshare-samples 3]
//	    [-member=false] [-member-keys 100] [-member-curve ed25519]
//	    [-only psbt,ecdsa_sign,events,reshare,reshare_,...]
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
	"slices"
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
	reshare        bool
	reshareSamples int
	member         bool
	memberKeys     int
	memberCurve    string
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
Reshare: -reshare-samples N (default 3) refreshes of one ECDSA key (k-of-n → k-of-n, admin
RefreshKey until active) against tss-lib's in-process resharing; -reshare=false skips the
cell; -only reshare runs only it (and not the member cell, whose name it prefixes).
Member: once, on a cluster of its own, -member-keys N (default 100) keys of -member-curve
(ed25519 or secp256k1) are reshared to a new member (AddNode, admin AddMember), the
change polled every second and its progress printed to stderr; no baseline, -reps does
not apply; -member=false skips it; -only reshare_ (or its full name,
reshare_100_to_new_member with the default -member-keys) runs only it.

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
	fs.BoolVar(&o.reshare, "reshare", true, "run the reshare cell: admin RefreshKey of one ECDSA key (k-of-n → k-of-n) against protocol/baseline's in-process tss-lib resharing")
	fs.IntVar(&o.reshareSamples, "reshare-samples", 3, "reshare cell samples per side per repetition (a reshare takes seconds)")
	fs.BoolVar(&o.member, "member", true, "run the member cell once: on a cluster of its own, -member-keys keys reshared to a new member (AddNode + admin AddMember), progress on stderr")
	fs.IntVar(&o.memberKeys, "member-keys", 100, "keys the member cell creates before adding the member")
	fs.StringVar(&o.memberCurve, "member-curve", curveEd25519, "curve of the member cell's keys: ed25519 or secp256k1")
	only := fs.String("only", "", "comma-separated cell name prefixes: run only the cells whose name starts with one (e.g. psbt, ecdsa_sign, ed25519, ecdsa_keygen, events, reshare, reshare_); an entry that is a cell's whole name among "+strings.Join(exactOnlyNames(), ", ")+" selects that cell alone")
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
	case o.reshareSamples < 1 || o.reshareSamples > maxSamples:
		return nil, fmt.Errorf("-reshare-samples must be 1..%d", maxSamples)
	case o.memberKeys < 1 || o.memberKeys > maxMemberKeys:
		return nil, fmt.Errorf("-member-keys must be 1..%d", maxMemberKeys)
	case o.memberCurve != curveEd25519 && o.memberCurve != curveSecp256k1:
		return nil, fmt.Errorf("-member-curve must be %s or %s, not %q", curveEd25519, curveSecp256k1, o.memberCurve)
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
	var errs []error
	loop, member := o.runsLoopback(), o.runsMember()
	if !o.wanOnly && !loop && !member {
		err := fmt.Errorf("loopback run: -only %s selects no cell", strings.Join(o.only, ","))
		if o.wan == 0 {
			return err
		}
		errs = append(errs, err)
	}
	var base *baseline.Baseline
	if loop || o.wan > 0 {
		log.Info("in-process baseline: ECDSA and EdDSA keygen", "parties", o.nodes, "k", o.k)
		if base, err = baseline.New(ctx, fixtures, o.nodes, o.k); err != nil {
			return err
		}
	}
	if loop {
		if err := runLoopback(ctx, o, bin, base, rep, log); err != nil {
			errs = append(errs, fmt.Errorf("loopback run: %w", err))
		}
	}
	if member && ctx.Err() == nil {
		if err := runMemberCell(ctx, o, bin, rep, os.Stderr, log); err != nil {
			errs = append(errs, fmt.Errorf("%s cell: %w", memberCellName(o), err))
		}
	}
	if o.wan > 0 && ctx.Err() == nil {
		if err := runWAN(ctx, o, bin, base, rep, log); err != nil {
			errs = append(errs, fmt.Errorf("wide-area run: %w", err))
		}
	}
	rep.finish(began)
	if len(rep.Cells) > 0 || rep.WAN != nil || rep.Member != nil {
		rep.printTable(stdout)
		if err := results.WriteJSON(o.out, rep); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(stdout, "\nresults written to %s\n", o.out)
		}
	}
	return errors.Join(errs...)
}

// exactOnly are the cell names that, given whole to -only, select that cell alone and
// not the longer names they prefix: -only reshare runs the refresh cell, not the member
// cell reshare_N_to_new_member (-only reshare_ or that name runs the member cell). Other
// entries are plain prefixes (-only ecdsa_sign also runs ecdsa_sign_throughput_c*).
var exactOnly = map[string]bool{reshareCellName: true}

func exactOnlyNames() []string {
	var out []string
	for n := range exactOnly {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// selected reports whether -only lets the cell name run.
func (o *options) selected(name string) bool {
	if len(o.only) == 0 {
		return true
	}
	for _, p := range o.only {
		if name == p || strings.HasPrefix(name, p) && !exactOnly[p] {
			return true
		}
	}
	return false
}

// loopbackCellNames are the names of the cells of the loopback run (on the shared
// cluster) that the flags other than -only enable.
func loopbackCellNames(o *options) []string {
	names := []string{"ecdsa_sign", "ed25519_sign"}
	if o.keygenSamples > 0 {
		names = append(names, "ecdsa_keygen")
	}
	for _, c := range o.conc {
		names = append(names, throughputCellName(c))
	}
	if o.psbt {
		names = append(names, psbtCellName)
	}
	if o.events {
		names = append(names, eventsCellName(o))
	}
	if o.reshare {
		names = append(names, reshareCellName)
	}
	return names
}

// runsLoopback reports whether the loopback run (the shared cluster) has a cell to run.
func (o *options) runsLoopback() bool {
	return !o.wanOnly && slices.ContainsFunc(loopbackCellNames(o), o.selected)
}

// runsMember reports whether the member cell (its own cluster) runs.
func (o *options) runsMember() bool {
	return !o.wanOnly && o.member && o.selected(memberCellName(o))
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
