// Command benchstate is issue 11's state benchmark: it drives custos's raft FSM
// (internal/state) through Apply with realistic signed sign lifecycles — a submit entry
// carrying the caller's signed HTTP request vouched for by the entry node, then a member's
// signed ceremony.result — and, every -step lifecycles, reports the Go heap in use, the
// process's RSS, apply throughput, the raft snapshot's size and time, the longest Apply
// stall while that snapshot is taken and persisted, the time to make the stream a
// follower would be sent and to restore it into a fresh FSM, next to the targets.
//
// Snapshots go into the snapshot store a node uses (raftnode.SnapshotStore): a node's
// own snapshot is a checkpoint of its state database, and the stream is made from it
// when a follower needs one. The bench makes it at every step with applying paused
// (timed, as the restore is), and at the final step while applying goes on, to measure
// what making it does to Apply (the "stream" stall columns).
//
// It measures the on-disk FSM (its own Pebble database in a temporary directory), fed as
// raft feeds it: ApplyBatch with up to -batch entries (raft's MaxAppendEntries, 64, by
// default). Each batch's entries are made (signed) before it is applied, never alongside,
// and only the ApplyBatch calls are timed; the process's CPU time over those calls (all
// its threads: Apply, its verifying workers, Pebble's flushes and compactions) gives
// the "cores" busy and the "CPU/entry" columns, and with them the most entries a second
// this machine's cores could apply at that cost. Every check is the one custosd makes:
// callers' RFC 9421 signatures and tokens, nodes' identity signatures, and the threshold
// signature itself (internal/ceremony's verifier: the key derived for the request's path
// m/0/i, the ECDSA signature, its recovery id), over a real secp256k1 key.
//
// Usage:
//
//	go run ./test/benchstate [-n 1000000] [-step 100000] [-batch 64] [-out FILE] [-max-heap 3GiB]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/ceremony"
	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/test/report"
)

// newFSM opens the FSM under test over a state database in dir, logging to h.
func newFSM(dir string, v state.Verifier, an *authn.Verifier, onEvent func(state.Event), h slog.Handler) (*state.FSM, error) {
	return state.Open(state.Config{Dir: dir, Verifier: v, Authn: an, OnEvent: onEvent, Logger: slog.New(h)})
}

// writeStallCounter is the measured FSM's log: it counts the state database's write
// stalls (Pebble holding a commit until flushes or compactions catch up) and drops
// everything else.
type writeStallCounter struct{ n atomic.Int64 }

func (c *writeStallCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (c *writeStallCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "state database write stall") {
		c.n.Add(1)
	}
	return nil
}

func (c *writeStallCounter) WithAttrs([]slog.Attr) slog.Handler { return c }

func (c *writeStallCounter) WithGroup(string) slog.Handler { return c }

// config is the run's parameters.
type config struct {
	N       int    `json:"lifecycles"`
	Step    int    `json:"step"`
	Batch   int    `json:"batch"`
	MaxHeap uint64 `json:"max_heap_bytes"`
	// ResultLag is how many lifecycles after its submit a result is logged (see run).
	ResultLag int `json:"result_lag"`
}

// Step is the figures at one step: the state as of Lifecycles sign lifecycles.
type Step struct {
	Lifecycles  int           `json:"lifecycles"`
	Entries     uint64        `json:"entries"` // raft index: setup entries, a submit per lifecycle, a result per lifecycle but the last ResultLag
	HeapInUse   uint64        `json:"heap_in_use_bytes"`
	RSS         uint64        `json:"rss_bytes"`
	ApplyTime   time.Duration `json:"apply_time_ns"` // sum of the step's Apply calls
	StepEntries int           `json:"step_entries"`  // entries applied in the step
	ApplyPerSec float64       `json:"apply_entries_per_s"`
	// ApplyCPU is the process's CPU time (user and system, all threads: Apply, its
	// verifying workers, Pebble's flushes and compactions) over the step's Apply calls:
	// ApplyCPU/ApplyTime is how many cores they kept busy, ApplyCPU per entry what an
	// entry costs this machine in all.
	ApplyCPU      time.Duration `json:"apply_cpu_ns"`
	SnapshotBytes int64         `json:"snapshot_bytes"`         // the stream a follower is sent
	CheckpointB   int64         `json:"checkpoint_bytes"`       // the checkpoint's files (hard links)
	SnapshotCall  time.Duration `json:"snapshot_call_ns"`       // FSM.Snapshot(), on the FSM goroutine
	PersistTime   time.Duration `json:"persist_ns"`             // Persist into the store: the checkpoint
	StreamTime    time.Duration `json:"stream_ns"`              // making the stream from the checkpoint
	StreamApplies int           `json:"applies_during_stream"`  // final step: applies while it was made
	StreamMax     time.Duration `json:"max_stall_in_stream_ns"` // and the longest of them
	StreamOver    int           `json:"applies_in_stream_over_50ms"`
	MaxStall      time.Duration `json:"max_stall_ns"`
	MaxStallCause string        `json:"max_stall_cause"`
	StallApplies  int           `json:"applies_during_snapshot"`
	P99Stall      time.Duration `json:"p99_stall_ns"`      // of the applies during the snapshot
	StallsOver    int           `json:"applies_over_50ms"` // applies during the snapshot over the target
	WriteStalls   int           `json:"write_stalls"`      // the state database's write stalls in the step
	RestoreTime   time.Duration `json:"restore_ns"`
	// Calm* are the step's applies while no snapshot streamed, for comparison: what
	// the machine does to an Apply without a snapshot (a garbage collection, a
	// compaction, the host).
	CalmApplies int           `json:"applies_without_snapshot"`
	CalmMax     time.Duration `json:"max_apply_without_snapshot_ns"`
	CalmOver    int           `json:"applies_without_snapshot_over_50ms"`
}

// Report is the run's output.
type Report struct {
	Config       config    `json:"config"`
	FSM          string    `json:"fsm"`
	GoVersion    string    `json:"go_version"`
	CPUs         int       `json:"cpus"`
	SetupEntries int       `json:"setup_entries"`
	Steps        []Step    `json:"steps"`
	Extra        int       `json:"extra_lifecycles_during_final_snapshot"`
	StoppedEarly string    `json:"stopped_early,omitempty"`
	Targets      []Target  `json:"targets"`
	Started      time.Time `json:"started"`
	Wall         string    `json:"wall"`
}

func main() {
	n := flag.Int("n", 1000000, "total sign lifecycles (2 entries each: a submit, a result)")
	step := flag.Int("step", 100000, "lifecycles between measurements")
	out := flag.String("out", "", "write the report as JSON to `FILE`")
	batch := flag.Int("batch", 64, "entries per ApplyBatch (raft hands the FSM up to MaxAppendEntries, 64, at once)")
	lag := flag.Int("result-lag", 256, "lifecycles between a request's submit and its result in the log (at most 1000: requests in flight are bounded by 1024)")
	maxHeap := flag.String("max-heap", "3GiB", "stop early when the Go heap in use exceeds this (e.g. 512MiB, 3GiB)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to `FILE`")
	flag.Parse()
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchstate:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintln(os.Stderr, "benchstate:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	mh, err := parseBytes(*maxHeap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchstate: -max-heap:", err)
		os.Exit(2)
	}
	cfg := config{N: *n, Step: *step, Batch: *batch, MaxHeap: mh, ResultLag: *lag}
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "benchstate:", err)
		os.Exit(2)
	}
	rep, err := run(context.Background(), cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchstate:", err)
		os.Exit(1)
	}
	printReport(os.Stdout, rep)
	if *out != "" {
		if err := report.WriteJSON(*out, rep); err != nil {
			fmt.Fprintln(os.Stderr, "benchstate:", err)
			os.Exit(1)
		}
		fmt.Printf("wrote %s\n", *out)
	}
}

func (c config) check() error {
	if c.N < 1 || c.Step < 1 || c.Batch < 2 {
		return fmt.Errorf("-n and -step must be positive, -batch at least 2")
	}
	if c.MaxHeap == 0 {
		return fmt.Errorf("-max-heap must be positive")
	}
	if c.ResultLag < 0 || c.ResultLag > 1000 {
		return fmt.Errorf("-result-lag must be 0..1000 (requests in flight are bounded by %d)", state.MaxOpenRequests)
	}
	return nil
}

// parseBytes reads a size such as 3GiB, 512MiB, 100KiB or a plain byte count.
func parseBytes(s string) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("size %q: %w", s, err)
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("size %q", s)
}

// heapInUse is the Go heap in use (live and not yet swept objects), without a GC.
func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// persisted is a finished Persist.
type persisted struct {
	d    time.Duration
	meta *raft.SnapshotMeta
	err  error
}

// opened is a finished Open of a snapshot.
type opened struct {
	meta *raft.SnapshotMeta
	rc   io.ReadCloser
	err  error
}

// run is the benchmark. Progress lines go to progress.
func run(ctx context.Context, cfg config, progress io.Writer) (*Report, error) {
	rep := &Report{Config: cfg, FSM: "state.Open (on disk, ApplyBatch)", GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Started: time.Now()}
	dir, err := os.MkdirTemp("", "benchstate-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	c, err := newCluster(time.Now())
	if err != nil {
		return nil, err
	}
	var stalls writeStallCounter
	f, err := newFSM(filepath.Join(dir, "state"), ceremony.SignatureVerifier{}, c.an, nil, &stalls)
	if err != nil {
		return nil, fmt.Errorf("new fsm: %w", err)
	}
	defer f.Close()
	store, err := raftnode.NewSnapshotStore(filepath.Join(dir, "raft"), 2, f, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	var index uint64
	applyEntry := func(data []byte) (state.Result, error) {
		index++
		return applyOne(f, index, data)
	}
	restores := 0
	if rep.SetupEntries, err = c.setup(applyEntry); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	// Entries are made outside the timed applies and never alongside them: on a node
	// they arrive from raft already made (by callers and other members), so the
	// benchmark does not let their making (three Ed25519 signatures per lifecycle) take
	// CPU from the apply it times. It does run while a snapshot persists, as raft's
	// other work on a node does.
	//
	// A result is logged cfg.ResultLag lifecycles after its submit: on a node a ceremony
	// takes tens of milliseconds at the least while other requests keep arriving, so a
	// result never shares a raft batch with its request, and its threshold signature is
	// checked ahead against the committed request (internal/state/ahead.go). The last
	// cfg.ResultLag requests are left open when the run ends.
	made := 0
	var trailing []pendingResult
	// next makes the next lifecycle's submit, and the result that is due (nil: none yet).
	next := func() (submit, result []byte, err error) {
		submit, res, err := c.lifecycle(made)
		if err != nil {
			return nil, nil, fmt.Errorf("lifecycle %d: %w", made, err)
		}
		made++
		if trailing = append(trailing, res); len(trailing) > cfg.ResultLag {
			if result, err = c.result(trailing[0]); err != nil {
				return nil, nil, fmt.Errorf("result of lifecycle %d: %w", made-1-cfg.ResultLag, err)
			}
			trailing = trailing[1:]
		}
		return submit, result, nil
	}

	var (
		stall     stallTracker // applies while a snapshot is taken and persisted
		streaming stallTracker // final step: applies while its stream is made
		calm      stallTracker // the others
		applied   int
		stepApply time.Duration
		stepCPU   time.Duration
		pending   chan persisted // non-nil while a snapshot persists
		snapStep  int            // index in rep.Steps of the pending snapshot
	)
	// applyLifecycles applies the next n lifecycles in batches of cfg.Batch entries,
	// timing each ApplyBatch.
	applyLifecycles := func(n int) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		entries := make([][]byte, 0, 2*n)
		for i := 0; i < n; i++ {
			sub, res, err := next()
			if err != nil {
				return err
			}
			if entries = append(entries, sub); res != nil {
				entries = append(entries, res)
			}
		}
		for len(entries) > 0 {
			b := entries[:min(cfg.Batch, len(entries))]
			entries = entries[len(b):]
			c0 := processCPU()
			t := time.Now()
			err := applyBatch(f, index+1, b)
			d := time.Since(t)
			stepCPU += processCPU() - c0
			index += uint64(len(b))
			stepApply += d
			if !stall.observe("ApplyBatch", d) && !streaming.observe("ApplyBatch", d) {
				calm.observe("ApplyBatch", d)
			}
			if err != nil {
				return fmt.Errorf("lifecycles %d+: %w", applied, err)
			}
		}
		return nil
	}
	// open makes the stream of snapshot id (a follower's, on a node); with apply, it
	// applies meanwhile, tracking those applies in streaming.
	open := func(id string, apply bool) (opened, error) {
		if !apply {
			m, rc, err := store.Open(id)
			return opened{m, rc, err}, nil
		}
		ch := make(chan opened, 1)
		go func() {
			m, rc, err := store.Open(id)
			ch <- opened{m, rc, err}
		}()
		streaming.start()
		for {
			select {
			case o := <-ch:
				return o, nil
			default:
			}
			if err := applyLifecycles(cfg.Batch / 2); err != nil {
				o := <-ch
				if o.rc != nil {
					o.rc.Close()
				}
				return opened{}, err
			}
			rep.Extra += cfg.Batch / 2
		}
	}
	// finish closes the pending snapshot's stall window, makes its stream (final: while
	// applying) and restores it into a fresh FSM.
	finish := func(p persisted, final bool) error {
		pending = nil
		s := &rep.Steps[snapStep]
		st := stall.stop()
		s.MaxStall, s.MaxStallCause, s.StallApplies, s.P99Stall, s.StallsOver = st.Max, st.Cause, st.N, st.P99, st.Over
		if p.err != nil {
			return fmt.Errorf("persist at %d lifecycles: %w", s.Lifecycles, p.err)
		}
		s.PersistTime, s.CheckpointB = p.d, p.meta.Size
		t := time.Now()
		var rc io.ReadCloser
		o, err := open(p.meta.ID, final)
		if err != nil {
			return err
		}
		if o.err != nil {
			return fmt.Errorf("open snapshot: %w", o.err)
		}
		s.StreamTime, s.SnapshotBytes, rc = time.Since(t), o.meta.Size, o.rc
		if final {
			ss := streaming.stop()
			s.StreamApplies, s.StreamMax, s.StreamOver = ss.N, ss.Max, ss.Over
		}
		restores++
		g, err := newFSM(filepath.Join(dir, fmt.Sprintf("restore-%d", restores)), ceremony.SignatureVerifier{}, c.an, nil, slog.DiscardHandler)
		if err != nil {
			rc.Close()
			return fmt.Errorf("new fsm: %w", err)
		}
		defer func() {
			_ = g.Close()
			_ = os.RemoveAll(filepath.Join(dir, fmt.Sprintf("restore-%d", restores)))
			// The restored copy (2.5 GB at 1 M) is the benchmark's, not the node's: its
			// removal — on a file system that discards freed blocks, a burst of disk work
			// after the unlinks — must be over before the next snapshot's stall window
			// opens (it stalled that window's applies, up to 90 in 1 720 over 50 ms).
			syscall.Sync()
		}()
		t = time.Now()
		err = g.Restore(rc) // closes rc
		s.RestoreTime = time.Since(t)
		if err != nil {
			return fmt.Errorf("restore at %d lifecycles: %w", s.Lifecycles, err)
		}
		// The checkpoint may hold entries applied while it was taken.
		if g.AppliedIndex() < s.Entries {
			return fmt.Errorf("restored index %d, snapshot taken at %d", g.AppliedIndex(), s.Entries)
		}
		fmt.Fprintf(progress, "  %d lifecycles: checkpoint %.1f MiB in %v, longest stall %v (%s), p99 %v, %d of %d over %v; stream %.1f MiB made in %v, restored in %v\n",
			s.Lifecycles, float64(s.CheckpointB)/(1<<20), s.PersistTime.Round(time.Millisecond),
			s.MaxStall.Round(time.Microsecond), s.MaxStallCause, s.P99Stall.Round(time.Microsecond), s.StallsOver, s.StallApplies, targetMaxStall,
			float64(s.SnapshotBytes)/(1<<20), s.StreamTime.Round(time.Millisecond), s.RestoreTime.Round(time.Millisecond))
		if final {
			fmt.Fprintf(progress, "  while the stream was made: %d applies, longest %v, %d over %v\n", s.StreamApplies, s.StreamMax.Round(time.Microsecond), s.StreamOver, targetMaxStall)
		}
		return nil
	}
	poll := func() error {
		if pending == nil {
			return nil
		}
		select {
		case p := <-pending:
			return finish(p, false)
		default:
			return nil
		}
	}
	// measure records a step and starts its snapshot as raft does: Snapshot() on the FSM
	// goroutine (this one), Persist on another while applying goes on.
	var stallsBefore int64
	measure := func() error {
		// Memory first: the previous step's snapshot may still persist (as on a node),
		// and its restore into a second FSM below is the benchmark's, not the node's.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss, err := processRSS()
		if err != nil {
			fmt.Fprintln(progress, "  (no RSS:", err, ")")
		}
		s := Step{Lifecycles: applied, Entries: index, HeapInUse: ms.HeapInuse, RSS: rss, ApplyTime: stepApply, ApplyCPU: stepCPU}
		s.WriteStalls = int(stalls.n.Load() - stallsBefore)
		stallsBefore = stalls.n.Load()
		cs := calm.stop()
		s.CalmApplies, s.CalmMax, s.CalmOver = cs.N, cs.Max, cs.Over
		calm.start()
		if pending != nil {
			if err := finish(<-pending, false); err != nil {
				return err
			}
		}
		prev := uint64(rep.SetupEntries)
		if len(rep.Steps) > 0 {
			prev = rep.Steps[len(rep.Steps)-1].Entries
		}
		s.StepEntries = int(index - prev)
		if stepApply > 0 {
			s.ApplyPerSec = float64(s.StepEntries) / stepApply.Seconds()
		}
		stepApply = 0
		stepCPU = 0
		fmt.Fprintf(progress, "%d lifecycles: heap %.1f MiB, RSS %.1f MiB, apply %.0f entries/s, %d write stalls, without a snapshot longest apply %v (%d of %d over %v); snapshotting\n",
			applied, float64(s.HeapInUse)/(1<<20), float64(rss)/(1<<20), s.ApplyPerSec, s.WriteStalls, s.CalmMax.Round(time.Microsecond), s.CalmOver, s.CalmApplies, targetMaxStall)
		rep.Steps = append(rep.Steps, s)
		snapStep = len(rep.Steps) - 1

		stall.start()
		t := time.Now()
		snap, err := f.Snapshot()
		d := time.Since(t)
		rep.Steps[snapStep].SnapshotCall = d
		stall.observe("Snapshot()", d)
		if err != nil {
			stall.stop()
			return fmt.Errorf("snapshot at %d lifecycles: %w", applied, err)
		}
		sink, err := store.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 0, nil)
		if err != nil {
			stall.stop()
			return fmt.Errorf("snapshot sink: %w", err)
		}
		ch := make(chan persisted, 1)
		pending = ch
		go func() {
			t := time.Now()
			err := snap.Persist(sink)
			snap.Release()
			p := persisted{d: time.Since(t), err: err}
			if err == nil {
				p.meta = metaOf(store, sink.ID())
				if p.meta == nil {
					p.err = fmt.Errorf("snapshot %s not in the store", sink.ID())
				}
			}
			ch <- p
		}()
		return nil
	}

	calm.start()
	for applied < cfg.N {
		n := min(cfg.Batch/2, cfg.N-applied, cfg.Step-applied%cfg.Step)
		if err := applyLifecycles(n); err != nil {
			return nil, err
		}
		applied += n
		if err := poll(); err != nil {
			return nil, err
		}
		if applied%1000 < n {
			if h := heapInUse(); h > cfg.MaxHeap {
				rep.StoppedEarly = fmt.Sprintf("stopped at %d lifecycles: Go heap in use %.0f MiB exceeds -max-heap %.0f MiB",
					applied, float64(h)/(1<<20), float64(cfg.MaxHeap)/(1<<20))
				fmt.Fprintln(progress, rep.StoppedEarly)
				break
			}
		}
		if applied%cfg.Step == 0 || applied == cfg.N {
			if err := measure(); err != nil {
				return nil, err
			}
		}
	}
	if rep.StoppedEarly != "" {
		if pending != nil {
			if err := finish(<-pending, false); err != nil {
				return nil, err
			}
		}
	} else {
		// Keep applying while the final snapshot persists and its stream is made, as a
		// live node would.
		for pending != nil {
			if err := applyLifecycles(cfg.Batch / 2); err != nil {
				return nil, err
			}
			rep.Extra += cfg.Batch / 2
			select {
			case p := <-pending:
				if err := finish(p, true); err != nil {
					return nil, err
				}
			default:
			}
		}
	}
	rep.Targets = judge(rep.Steps, rep.CPUs)
	rep.Wall = time.Since(rep.Started).Round(time.Millisecond).String()
	return rep, nil
}

// metaOf finds the snapshot id in store.
func metaOf(store raft.SnapshotStore, id string) *raft.SnapshotMeta {
	list, err := store.List()
	if err != nil {
		return nil
	}
	for _, m := range list {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// printReport writes the figures and the targets as tables.
func printReport(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\nstate benchmark: %s, %s, %d CPUs, %d setup entries, wall %s\n", rep.FSM, rep.GoVersion, rep.CPUs, rep.SetupEntries, rep.Wall)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "lifecycles\tentries\theap MiB\tRSS MiB\tapply entries/s\tcores\tCPU/entry\tcheckpoint MiB\tSnapshot()\tpersist\tmax stall\tp99 stall\tover 50ms\tno snapshot: max\tover 50ms\twrite stalls\tstream MiB\tstream made\tstream: max stall\tover 50ms\trestore\t")
	for _, s := range rep.Steps {
		streamStall := "-\t-"
		if s.StreamApplies > 0 {
			streamStall = fmt.Sprintf("%v\t%d/%d", s.StreamMax.Round(time.Millisecond), s.StreamOver, s.StreamApplies)
		}
		perEntry, cores := s.cpuPerEntry()
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%.0f\t%.2f\t%v\t%.1f\t%v\t%v\t%v\t%v\t%d/%d\t%v\t%d/%d\t%d\t%.1f\t%v\t%s\t%v\t\n", s.Lifecycles, s.Entries,
			float64(s.HeapInUse)/(1<<20), float64(s.RSS)/(1<<20), s.ApplyPerSec, cores, perEntry.Round(time.Microsecond), float64(s.CheckpointB)/(1<<20),
			s.SnapshotCall.Round(time.Millisecond), s.PersistTime.Round(time.Millisecond), s.MaxStall.Round(time.Millisecond),
			s.P99Stall.Round(time.Millisecond), s.StallsOver, s.StallApplies, s.CalmMax.Round(time.Millisecond), s.CalmOver, s.CalmApplies,
			s.WriteStalls, float64(s.SnapshotBytes)/(1<<20), s.StreamTime.Round(time.Millisecond), streamStall, s.RestoreTime.Round(time.Millisecond))
	}
	tw.Flush()
	if rep.StoppedEarly != "" {
		fmt.Fprintln(w, "STOPPED EARLY:", rep.StoppedEarly)
	}
	fmt.Fprintln(w, "\nissue 11 targets:")
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
