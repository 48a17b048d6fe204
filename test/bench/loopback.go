//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos/custos/protocol/baseline"
	"github.com/custos/custos/test/cluster"
)

// op is one timed operation: it returns the time of the measured part only (checks of
// the result are done after the clock stops).
type op func(ctx context.Context) (time.Duration, error)

// cellDef is one row of the table: the same operation in-process and through the
// cluster.
type cellDef struct {
	name, title string
	kind        string // kindLatency or kindThroughput
	conc        int
	samples     int // per side per repetition (operations of a throughput run)
	base, clu   op
	target      *target
	rss         bool // measure the nodes' peak RSS around the cluster run
	// baseOp and cluOp say what each side measures when the two differ in kind (the
	// PSBT cell); empty otherwise.
	baseOp, cluOp string
}

const (
	kindLatency    = "latency"
	kindThroughput = "throughput"
)

// maxLoggedErrors bounds how many operation errors a run logs (all are counted).
const maxLoggedErrors = 5

// Targets of the issue (reported, not asserted).
const (
	targetECDSASign  = 1.15
	targetEdDSASign  = 1.3
	targetKeygen     = 1.2
	targetThroughput = 0.9
	targetRSSBytes   = 200 << 20
	targetConc       = 16
)

func runLoopback(ctx context.Context, o *options, bin string, base *baseline.Baseline, rep *report, log *slog.Logger) error {
	log.Info("starting cluster", "nodes", o.nodes, "k", o.k)
	c, err := cluster.New(ctx, cluster.Options{Nodes: o.nodes, Threshold: o.k, Binary: bin, KeepDir: o.keep, Extra: clusterExtra(o), Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			log.Info("cluster directory kept", "dir", c.Dir())
		}
		if err := c.Close(); err != nil {
			log.Warn("closing the cluster", "err", err)
		}
	}()
	cs, err := newClusterSide(ctx, c, o.k)
	if err != nil {
		return err
	}
	ecdsaB := func(ctx context.Context) (time.Duration, error) { return base.SignECDSA(ctx, randomDigest()) }
	ecdsaC := func(ctx context.Context) (time.Duration, error) {
		return cs.signECDSA(ctx, cs.randomEntry(), randomDigest())
	}
	eddsaB := func(ctx context.Context) (time.Duration, error) { return base.SignEdDSA(ctx, randomMessage(o.msgSize)) }
	eddsaC := func(ctx context.Context) (time.Duration, error) {
		return cs.signEdDSA(ctx, cs.randomEntry(), randomMessage(o.msgSize))
	}
	keygenB := base.KeygenECDSA
	keygenC := func(ctx context.Context) (time.Duration, error) {
		_, took, err := cs.createKey(ctx, cs.randomEntry(), curveSecp256k1)
		return took, err
	}
	kn := fmt.Sprintf("%d-of-%d", o.k, o.nodes)
	cells := []cellDef{
		{name: "ecdsa_sign", title: "ECDSA sign " + kn, kind: kindLatency, conc: 1, samples: o.samples, base: ecdsaB, clu: ecdsaC,
			target: &target{Metric: "ratio_p50", Op: "<=", Value: targetECDSASign}},
		{name: "ed25519_sign", title: "Ed25519 sign " + kn, kind: kindLatency, conc: 1, samples: o.samples, base: eddsaB, clu: eddsaC,
			target: &target{Metric: "ratio_p50", Op: "<=", Value: targetEdDSASign}},
	}
	if o.keygenSamples > 0 {
		cells = append(cells, cellDef{name: "ecdsa_keygen", title: fmt.Sprintf("ECDSA keygen %s (warm pool)", kn), kind: kindLatency, conc: 1,
			samples: o.keygenSamples, base: keygenB, clu: keygenC, target: &target{Metric: "ratio_p50", Op: "<=", Value: targetKeygen}})
	}
	rssConc := slices.Max(o.conc)
	if slices.Contains(o.conc, targetConc) {
		rssConc = targetConc
	}
	for _, cc := range o.conc {
		d := cellDef{name: throughputCellName(cc), title: fmt.Sprintf("ECDSA sign throughput c=%d", cc), kind: kindThroughput,
			conc: cc, samples: max(o.samples, 4*cc), base: ecdsaB, clu: ecdsaC, rss: cc == rssConc}
		if cc == targetConc {
			d.target = &target{Metric: "ratio_throughput", Op: ">=", Value: targetThroughput}
		}
		cells = append(cells, d)
	}
	// warm are the cells whose two sides run once, unmeasured, after the sign warm-up.
	var warm []cellDef
	if o.psbt && o.selected(psbtCellName) {
		ps, err := newPSBTSide(ctx, cs)
		if err != nil {
			return fmt.Errorf("PSBT cell: %w", err)
		}
		d := psbtCell(o, base, ps)
		cells = append(cells, d)
		warm = append(warm, d)
	}
	if o.reshare && o.selected(reshareCellName) {
		rs, err := newReshareSide(ctx, cs)
		if err != nil {
			return fmt.Errorf("%s cell: %w", reshareCellName, err)
		}
		d := reshareCell(o, base, rs)
		cells = append(cells, d)
		warm = append(warm, d)
	}
	cells = slices.DeleteFunc(cells, func(d cellDef) bool { return !o.selected(d.name) })
	runEvents := o.events && o.selected(eventsCellName(o))
	if len(cells) == 0 && !runEvents {
		return fmt.Errorf("-only %s selects no cell", strings.Join(o.only, ","))
	}

	log.Info("warm-up (not measured)")
	for range 3 {
		for _, f := range []op{ecdsaB, ecdsaC, eddsaB, eddsaC} {
			if _, err := f(ctx); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	for _, d := range warm {
		log.Info("warm-up (not measured)", "cell", d.name)
		for _, f := range []op{d.base, d.clu} {
			if _, err := f(ctx); err != nil {
				return fmt.Errorf("%s warm-up: %w", d.name, err)
			}
		}
	}

	results := make([]struct{ b, c []summary }, len(cells))
	windows := make([][]phaseWindow, len(cells))
	var rss *rssReport
	for r := range o.reps {
		for i, d := range cells {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Info("cell", "rep", r+1, "of", o.reps, "cell", d.name, "samples", d.samples, "concurrency", d.conc)
			var bRun, cRun runResult
			var before []phaseSnapshot
			if o.phases {
				before = snapshotPhases(ctx, c, d.name, "start", log)
			}
			switch d.kind {
			case kindLatency:
				bRun, cRun = latencyRuns(ctx, d, r, log)
			case kindThroughput:
				// Alternate which side goes first from one repetition to the next.
				sideRun := func(cluSide bool) runResult {
					if !cluSide {
						return throughputRun(ctx, d.conc, d.samples, d.base, log)
					}
					var before []int
					if d.rss {
						before = resetRSS(c, log)
					}
					out := throughputRun(ctx, d.conc, d.samples, d.clu, log)
					if d.rss {
						rss = rss.add(c, d.conc, before, log)
					}
					return out
				}
				if r%2 == 0 {
					bRun, cRun = sideRun(false), sideRun(true)
				} else {
					cRun, bRun = sideRun(true), sideRun(false)
				}
			}
			if o.phases {
				sleepCtx(ctx, phaseSettle)
				windows[i] = append(windows[i], phaseWindow{before: before, after: snapshotPhases(ctx, c, d.name, "end", log)})
			}
			bs, csum := bRun.summary(), cRun.summary()
			log.Info("cell done", "cell", d.name, "rep", r+1,
				"baseline_p50_ms", bs.P50ms, "cluster_p50_ms", csum.P50ms,
				"baseline_per_s", round2(bs.Throughput), "cluster_per_s", round2(csum.Throughput),
				"errors", bs.Errors+csum.Errors)
			results[i].b = append(results[i].b, bs)
			results[i].c = append(results[i].c, csum)
		}
	}
	for i, d := range cells {
		rep.addCell(d, aggregate(results[i].b), aggregate(results[i].c))
		if o.phases {
			ps, err := collectPhases(windows[i])
			if err != nil {
				log.Warn("some phase histograms could not be added up", "cell", d.name, "err", err)
			}
			if len(ps) == 0 {
				log.Warn("no "+phaseMetric+" observations in the cell's windows (do the nodes export the histogram?)", "cell", d.name)
			}
			rep.Cells[len(rep.Cells)-1].Phases = ps
		}
	}
	rep.RSS = rss.finish()
	rep.Cluster = &clusterInfo{Nodes: c.N(), Threshold: o.k, Binary: c.Binary()}
	if runEvents {
		if err := runEventsCell(ctx, o, c, cs, rep, log); err != nil {
			return fmt.Errorf("%s cell: %w", eventsCellName(o), err)
		}
	}
	if o.cpuProfile != "" {
		signCells := slices.DeleteFunc(slices.Clone(cells), func(d cellDef) bool { return d.name != "ecdsa_sign" && d.name != "ed25519_sign" })
		profs, err := profileCells(ctx, o, c, signCells, log)
		rep.Profiles = profs
		if err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
	}
	return nil
}

// throughputCellName is the name of the ECDSA sign throughput cell of concurrency c.
func throughputCellName(c int) string { return fmt.Sprintf("ecdsa_sign_throughput_c%d", c) }

// latencyRuns measures a latency cell: samples one at a time, baseline and cluster
// alternating sample by sample (which goes first alternates too), so that load from
// elsewhere on the machine hits both sides alike.
func latencyRuns(ctx context.Context, d cellDef, rep int, log *slog.Logger) (b, c runResult) {
	one := func(f op, r *runResult, what string) {
		took, err := f(ctx)
		if err != nil {
			r.errors++
			if r.errors <= maxLoggedErrors {
				log.Warn("operation failed", "cell", d.name, "side", what, "err", err)
			}
			return
		}
		r.lat = append(r.lat, took)
		r.wall += took
	}
	for i := range d.samples {
		if ctx.Err() != nil {
			return b, c
		}
		if (i+rep)%2 == 0 {
			one(d.base, &b, "baseline")
			one(d.clu, &c, "cluster")
		} else {
			one(d.clu, &c, "cluster")
			one(d.base, &b, "baseline")
		}
	}
	return b, c
}

// throughputRun runs total operations with conc of them in flight at any time (conc
// workers taking the next operation as soon as theirs ends) and records each latency
// and the wall time from the first start to the last end.
func throughputRun(ctx context.Context, conc, total int, f op, log *slog.Logger) runResult {
	var (
		next atomic.Int64
		mu   sync.Mutex
		r    = runResult{lat: make([]time.Duration, 0, total)}
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) && ctx.Err() == nil {
				took, err := f(ctx)
				mu.Lock()
				if err != nil {
					r.errors++
					if r.errors <= maxLoggedErrors {
						log.Warn("operation failed", "concurrency", conc, "err", err)
					}
				} else {
					r.lat = append(r.lat, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.wall = time.Since(start)
	return r
}

// resetRSS resets every node's peak RSS and returns the pids it reset (0 where it could
// not).
func resetRSS(c *cluster.Cluster, log *slog.Logger) []int {
	pids := make([]int, c.N())
	for i := range pids {
		if err := c.ResetPeakRSS(i); err != nil {
			log.Warn("cannot reset peak RSS; VmHWM will be the peak since the node started", "node", c.NodeID(i), "err", err)
			continue
		}
		pids[i] = c.PID(i)
	}
	return pids
}

// snapshotPhases scrapes every node's phase histograms at the start or the end (when) of
// one repetition of a cell; failures are logged, and the failed nodes' windows left out.
func snapshotPhases(ctx context.Context, c *cluster.Cluster, cell, when string, log *slog.Logger) []phaseSnapshot {
	snap, err := scrapePhases(ctx, c)
	if err != nil {
		log.Warn("cannot scrape the phase histograms", "cell", cell, "at", when, "err", err)
	}
	return snap
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
