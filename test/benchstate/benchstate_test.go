package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestStallTracker(t *testing.T) {
	type obs struct {
		what string
		d    time.Duration
	}
	ms := time.Millisecond
	many := make([]obs, 200) // 198 of 1 ms, then 60 ms and 70 ms: p99 is the 60 ms one
	for i := range many {
		many[i] = obs{"Apply", ms}
	}
	many[198], many[199] = obs{"Apply", 60 * ms}, obs{"Apply", 70 * ms}
	for _, tc := range []struct {
		name           string
		before, during []obs
		want           stallStats
	}{
		{"empty window", nil, nil, stallStats{}},
		{"outside the window ignored", []obs{{"Apply", time.Second}}, []obs{{"Apply", ms}}, stallStats{Max: ms, Cause: "Apply", N: 1, P99: ms}},
		{"snapshot call longest", nil, []obs{{"Snapshot()", 80 * ms}, {"Apply", 2 * ms}}, stallStats{Max: 80 * ms, Cause: "Snapshot()", N: 2, P99: 80 * ms, Over: 1}},
		{"apply longest", nil, []obs{{"Snapshot()", ms}, {"Apply", 60 * ms}, {"Apply", 3 * ms}}, stallStats{Max: 60 * ms, Cause: "Apply", N: 3, P99: 60 * ms, Over: 1}},
		{"p99 of many", nil, many, stallStats{Max: 70 * ms, Cause: "Apply", N: 200, P99: 60 * ms, Over: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s stallTracker
			for _, o := range tc.before {
				s.observe(o.what, o.d)
			}
			s.start()
			for _, o := range tc.during {
				s.observe(o.what, o.d)
			}
			got := s.stop()
			s.observe("Apply", time.Hour) // after the window: ignored
			if got != tc.want {
				t.Fatalf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	good := func(l int, heap uint64) Step {
		return Step{Lifecycles: l, HeapInUse: heap, ApplyPerSec: 30000, MaxStall: 10 * time.Millisecond, RestoreTime: time.Second}
	}
	for _, tc := range []struct {
		name  string
		steps []Step
		want  []string // verdicts: heap, rate, stall, restore
	}{
		{"no steps", nil, []string{"not judged", "not judged", "not judged", "not judged"}},
		{"one step: heap not judged", []Step{good(100000, 1<<30)}, []string{"not judged", "met", "met", "met"}},
		{"all met", []Step{good(100000, 100<<20), good(1000000, 160<<20)}, []string{"met", "met", "met", "met"}},
		{"heap grows past 64 MiB from 100 k", []Step{good(50000, 10<<20), good(100000, 100<<20), good(1000000, 170<<20)}, []string{"NOT MET", "met", "met", "met"}},
		{"100 k is the last step: first step is the reference", []Step{good(25000, 10<<20), good(100000, 100<<20)}, []string{"NOT MET", "met", "met", "met"}},
		{"slow step", []Step{good(100000, 1), {Lifecycles: 200000, HeapInUse: 1, ApplyPerSec: 19999, RestoreTime: time.Second}}, []string{"met", "NOT MET", "met", "met"}},
		{"stall over 50 ms", []Step{good(100000, 1), {Lifecycles: 200000, HeapInUse: 1, ApplyPerSec: 20000, MaxStall: 51 * time.Millisecond}}, []string{"met", "met", "NOT MET", "met"}},
		{"slow final restore", []Step{good(100000, 1), {Lifecycles: 200000, HeapInUse: 1, ApplyPerSec: 20000, RestoreTime: time.Minute}}, []string{"met", "met", "met", "NOT MET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judge(tc.steps, 2)
			if len(got) != len(tc.want) {
				t.Fatalf("%d targets", len(got))
			}
			for i, tg := range got {
				if tg.Verdict() != tc.want[i] {
					t.Errorf("%s: %s (%s), want %s", tg.Name, tg.Verdict(), tg.Got, tc.want[i])
				}
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]uint64{"3GiB": 3 << 30, "512MiB": 512 << 20, "1KiB": 1024, "100": 100, "7B": 7} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("%s: %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "GiB", "x", "-1MiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestRunSmoke runs the whole benchmark on a tiny log: every entry must apply (run fails
// on any refusal), every step be measured, snapshotted and restored.
func TestRunSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	const lag = 40
	rep, err := run(ctx, config{N: 200, Step: 100, Batch: 64, MaxHeap: 3 << 30, ResultLag: lag}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("smoke run took %v", d)
	}
	if len(rep.Steps) != 2 || rep.StoppedEarly != "" || rep.Extra < 1 {
		t.Fatalf("steps %d, stopped %q, extra %d", len(rep.Steps), rep.StoppedEarly, rep.Extra)
	}
	for i, s := range rep.Steps {
		// Every submit, and every result but the last lag's: each applied (run fails on
		// a refusal), so results verified against their committed requests.
		if s.Lifecycles != 100*(i+1) || s.Entries != uint64(rep.SetupEntries+2*s.Lifecycles-lag) {
			t.Errorf("step %d: %d lifecycles, %d entries", i, s.Lifecycles, s.Entries)
		}
		if s.HeapInUse == 0 || s.ApplyPerSec <= 0 || s.SnapshotBytes <= 0 || s.RestoreTime <= 0 || s.MaxStall <= 0 || s.MaxStallCause == "" {
			t.Errorf("step %d missing figures: %+v", i, s)
		}
	}
	if len(rep.Targets) != 4 {
		t.Fatalf("%d targets", len(rep.Targets))
	}
}

// TestRunStopsAtMaxHeap checks that the heap guard stops the run with a message and
// still reports what it measured.
func TestRunStopsAtMaxHeap(t *testing.T) {
	rep, err := run(context.Background(), config{N: 5000, Step: 1000, Batch: 64, MaxHeap: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.StoppedEarly, "exceeds -max-heap") {
		t.Fatalf("stopped early: %q", rep.StoppedEarly)
	}
}

// The throughput target says what a step cost the machine and what its cores could do at
// that cost, from the CPU measured over the step's applies.
func TestThroughputCeiling(t *testing.T) {
	slow := Step{Lifecycles: 100000, HeapInUse: 1, StepEntries: 10000, ApplyTime: time.Second, ApplyCPU: 1500 * time.Millisecond, ApplyPerSec: 10000, RestoreTime: time.Second}
	rate := judge([]Step{slow}, 2)[1]
	want := "at that step 150µs of CPU per entry, 1.50 of 2 cores busy: at that cost 2 cores apply at most 13333 entries/s"
	if rate.Name != "apply throughput" || rate.Note != want {
		t.Fatalf("%s: note %q, want %q", rate.Name, rate.Note, want)
	}
	if unmeasured := judge([]Step{{Lifecycles: 100000, ApplyPerSec: 30000}}, 2)[1]; unmeasured.Note != "" {
		t.Fatalf("a step without CPU figures has note %q", unmeasured.Note)
	}
}
