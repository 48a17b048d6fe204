package main

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	testcluster "github.com/custos/custos/test/cluster"
	"github.com/custos/custos/test/report"
)

// processRSS is this process's resident set size.
func processRSS() (uint64, error) {
	v, err := testcluster.ReadVmRSS(os.Getpid())
	return uint64(v), err
}

// processCPU is the CPU time (user and system) this process has used so far, 0 if the
// system will not say.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerEntry is the CPU time one entry of s cost the process in all, and the cores
// its applies kept busy (0, 0 when not measured).
func (s Step) cpuPerEntry() (perEntry time.Duration, cores float64) {
	if s.ApplyCPU <= 0 || s.ApplyTime <= 0 || s.StepEntries <= 0 {
		return 0, 0
	}
	return s.ApplyCPU / time.Duration(s.StepEntries), float64(s.ApplyCPU) / float64(s.ApplyTime)
}

// stallTracker keeps the blockings of the FSM goroutine while a snapshot is in
// progress, the way raft sees them: raft's FSM goroutine runs FSM.Snapshot itself (so
// the whole call blocks every Apply behind it) and then Persist runs on another
// goroutine while Apply continues (so each Apply during Persist counts on its own).
// It is safe for concurrent use.
type stallTracker struct {
	mu     sync.Mutex
	active bool
	max    time.Duration
	what   string
	all    []time.Duration
}

// stallStats is one window's blockings.
type stallStats struct {
	Max   time.Duration // the longest
	Cause string        // what the longest was
	N     int           // how many
	P99   time.Duration // 99th percentile
	Over  int           // how many exceeded targetMaxStall
}

// start opens a window; observations outside a window are ignored.
func (s *stallTracker) start() {
	s.mu.Lock()
	s.active, s.max, s.what, s.all = true, 0, "", s.all[:0]
	s.mu.Unlock()
}

// observe records one blocking of the FSM goroutine of duration d, by what, and
// reports whether a window was open to record it.
func (s *stallTracker) observe(what string, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active {
		return false
	}
	s.all = append(s.all, d)
	if d > s.max {
		s.max, s.what = d, what
	}
	return true
}

// stop closes the window and returns its blockings.
func (s *stallTracker) stop() stallStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active = false
	st := stallStats{Max: s.max, Cause: s.what, N: len(s.all)}
	if st.N == 0 {
		return st
	}
	sorted := slices.Clone(s.all)
	slices.Sort(sorted)
	st.P99 = sorted[(len(sorted)*99)/100]
	if st.N < 100 {
		st.P99 = sorted[len(sorted)-1]
	}
	for _, d := range sorted {
		if d > targetMaxStall {
			st.Over++
		}
	}
	return st
}

// Target is one of issue 11's targets judged against the figures.
type Target = report.Target

// Issue 11's targets.
const (
	targetHeapGrowth    = 64 << 20 // bytes, end vs 100 k
	targetApplyRate     = 20000    // entries/s
	targetMaxStall      = 50 * time.Millisecond
	targetRestore       = 60 * time.Second
	targetHeapReference = 100000 // lifecycles at which the heap reference is taken
	targetLifecycles    = 1000000
)

// judge compares the steps with issue 11's targets.
func judge(steps []Step, cpus int) []Target {
	var out []Target
	mib := func(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	scale := ""
	if len(steps) > 0 && steps[len(steps)-1].Lifecycles < targetLifecycles {
		scale = fmt.Sprintf("measured at %d lifecycles; the target is at %d", steps[len(steps)-1].Lifecycles, targetLifecycles)
	}

	heap := Target{Name: "heap growth", Want: fmt.Sprintf("end within %s of heap at %d lifecycles", mib(targetHeapGrowth), targetHeapReference)}
	if len(steps) >= 2 {
		ref := steps[0]
		for _, s := range steps[:len(steps)-1] {
			if s.Lifecycles == targetHeapReference {
				ref = s
			}
		}
		last := steps[len(steps)-1]
		if ref.Lifecycles != targetHeapReference {
			heap.Want = fmt.Sprintf("end within %s of heap at the first step (%d lifecycles; the issue says %d)", mib(targetHeapGrowth), ref.Lifecycles, targetHeapReference)
		}
		growth := int64(last.HeapInUse) - int64(ref.HeapInUse)
		heap.Got = fmt.Sprintf("%+.1f MiB (%s at %d → %s at %d)", float64(growth)/(1<<20), mib(ref.HeapInUse), ref.Lifecycles, mib(last.HeapInUse), last.Lifecycles)
		heap.Judged, heap.Met, heap.Note = true, growth <= targetHeapGrowth, scale
	} else {
		heap.Got, heap.Note = "-", "needs at least two steps"
	}
	out = append(out, heap)

	rate := Target{Name: "apply throughput", Want: fmt.Sprintf(">= %d entries/s at every step", targetApplyRate)}
	if len(steps) > 0 {
		worst := steps[0]
		for _, s := range steps {
			if s.ApplyPerSec < worst.ApplyPerSec {
				worst = s
			}
		}
		rate.Got = fmt.Sprintf("worst %.0f entries/s (step ending at %d)", worst.ApplyPerSec, worst.Lifecycles)
		rate.Judged, rate.Met = true, worst.ApplyPerSec >= targetApplyRate
		if perEntry, cores := worst.cpuPerEntry(); perEntry > 0 && cpus > 0 {
			// What the step cost the machine in all, and so what its cores could do at
			// that cost: the measured rate against the ceiling says whether Apply waited
			// (on one goroutine) or the machine was full.
			rate.Note = fmt.Sprintf("at that step %v of CPU per entry, %.2f of %d cores busy: at that cost %d cores apply at most %.0f entries/s",
				perEntry.Round(time.Microsecond), cores, cpus, cpus, float64(cpus)*float64(time.Second)/float64(perEntry))
		}
	}
	out = append(out, rate)

	stall := Target{Name: "apply stall during snapshot", Want: fmt.Sprintf("<= %v", targetMaxStall)}
	if len(steps) > 0 {
		worst := steps[0]
		for _, s := range steps {
			if s.MaxStall > worst.MaxStall {
				worst = s
			}
		}
		over, applies := 0, 0
		for _, s := range steps {
			over, applies = over+s.StallsOver, applies+s.StallApplies
		}
		stall.Got = fmt.Sprintf("%v (%s, at %d); %d of %d applies during snapshots over %v", worst.MaxStall.Round(time.Microsecond), worst.MaxStallCause, worst.Lifecycles, over, applies, targetMaxStall)
		stall.Judged, stall.Met = true, worst.MaxStall <= targetMaxStall
	}
	out = append(out, stall)

	restore := Target{Name: "restore of the final state", Want: fmt.Sprintf("< %v", targetRestore)}
	if len(steps) > 0 {
		last := steps[len(steps)-1]
		restore.Got = fmt.Sprintf("%v at %d lifecycles", last.RestoreTime.Round(time.Millisecond), last.Lifecycles)
		restore.Judged, restore.Met, restore.Note = true, last.RestoreTime < targetRestore, scale
	}
	out = append(out, restore)
	return out
}
