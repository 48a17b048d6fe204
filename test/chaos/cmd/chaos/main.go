//go:build linux

// Command chaos runs custos's long fault-injection scenario (`make chaos`): a real
// cluster under load through a schedule of crashes, partitions, slow links, resets, disk
// faults and frozen nodes, then prints the summary and the invariants, writes the full
// report as JSON, and exits non-zero when an invariant broke.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/custos/custos/test/chaos"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
}

func run() error {
	nodes := flag.Int("nodes", 3, "cluster size n (3 or 5)")
	threshold := flag.Int("threshold", 0, "k (default 2 for 3 nodes, 3 for 5)")
	workers := flag.Int("workers", chaos.DefaultWorkers, "concurrent clients")
	rounds := flag.Int("rounds", 1, "how many times to run the fault schedule")
	faults := flag.String("faults", "", "comma-separated fault kinds (default: every kind once per round)")
	hold := flag.Duration("hold", chaos.DefaultHold, "how long each fault lasts")
	keygens := flag.Int("keygens", 4, "keygens in the load besides the fault-started ones")
	seed := flag.Uint64("seed", 0, "random seed (0 picks one; the report prints it)")
	out := flag.String("out", "bench-results/chaos.json", "JSON report path (empty: none)")
	keep := flag.Bool("keep", false, "keep the cluster directory (logs) after the run")
	verbose := flag.Bool("v", false, "log progress")
	flag.Parse()
	if *threshold == 0 {
		*threshold = *nodes/2 + 1
	}
	var kinds []chaos.Kind
	if *faults != "" {
		for _, k := range strings.Split(*faults, ",") {
			kinds = append(kinds, chaos.Kind(strings.TrimSpace(k)))
		}
	} else {
		kinds = chaos.DefaultSchedule()
	}
	var sched []chaos.Kind
	for range max(1, *rounds) {
		sched = append(sched, kinds...)
	}
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelInfo
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir := ""
	if *keep {
		d, err := os.MkdirTemp("", "custos-chaos-")
		if err != nil {
			return err
		}
		dir = d
		fmt.Fprintln(os.Stderr, "chaos: cluster directory", d)
	}
	start := time.Now()
	rep, err := chaos.Run(ctx, chaos.Config{
		Nodes: *nodes, Threshold: *threshold, Workers: *workers, Faults: sched, Hold: *hold,
		Keygens: *keygens, Seed: *seed, Dir: dir, KeepDir: *keep,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if err != nil {
		return err
	}
	fmt.Print(rep.String())
	fmt.Printf("wall time %.0f s\n", time.Since(start).Seconds())
	if *out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dirOf(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Println("report:", *out)
	}
	if !rep.OK() {
		fmt.Printf("chaos: %d invariant(s) broken\n", len(rep.Failures))
		os.Exit(1)
	}
	return nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}
