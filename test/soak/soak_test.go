//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos/custos/node/client"
)

func TestPhaseOf(t *testing.T) {
	k := &killRecord{KillReport: KillReport{KilledAt: 36, RestartedAt: 46, CaughtUpAt: 52}}
	for _, tc := range []struct {
		from, to float64
		k        *killRecord
		want     string
	}{
		{0, 10, nil, "up"},
		{30, 40, k, "down"},
		{40, 50, k, "down"},
		{50, 60, k, "catch-up"},
		{60, 70, k, "up"},
		{20, 30, k, "up"},
		{50, 60, &killRecord{KillReport: KillReport{KilledAt: 36}}, "down"},                      // not restarted
		{80, 90, &killRecord{KillReport: KillReport{KilledAt: 36, RestartedAt: 46}}, "catch-up"}, // never caught up
	} {
		if got := phaseOf(tc.from, tc.to, tc.k); got != tc.want {
			t.Errorf("phaseOf(%v, %v) = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestMeterResults(t *testing.T) {
	m := newMeter()
	m.record(time.Now(), nil) // warm-up
	m.record(time.Now(), errors.New("x: boom"))
	t0 := m.begin(25 * time.Second)
	for i := range 20 {
		m.record(t0.Add(time.Duration(i)*time.Second), nil) // 10 in window 0, 10 in window 1
	}
	m.record(t0.Add(15*time.Second), errors.New("x: boom"))
	m.record(t0.Add(26*time.Second), nil) // partial window 2 of a 25 s run: late
	wins, warm, late, kinds := m.results()
	if warm != 1 || len(wins) != 3 {
		t.Fatalf("warm-up %d, %d windows", warm, len(wins))
	}
	if late != 1 {
		t.Errorf("late = %d, want 1", late)
	}
	if wins[0].Sigs != 10 || wins[0].Rate != 1 || !wins[0].Full || wins[1].Errors != 1 {
		t.Errorf("windows 0, 1 = %+v, %+v", wins[0], wins[1])
	}
	if wins[2].Full || wins[2].End != 25 || wins[2].Sigs != 0 {
		t.Errorf("window 2 = %+v, want partial 20-25 s without signatures", wins[2])
	}
	if len(kinds) != 1 || kinds[0] != (ErrKind{Message: "boom", Count: 2}) {
		t.Errorf("kinds = %+v", kinds)
	}
}

func TestErrKey(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&client.APIError{Status: http.StatusServiceUnavailable, Code: "cluster.no_quorum"}, "HTTP 503 cluster.no_quorum"},
		{fmt.Errorf("wrapped: %w", &client.APIError{Status: 502}), "HTTP 502"},
		{&reqError{status: "failed", code: "ceremony.timeout", detail: "d"}, "request failed ceremony.timeout"},
		{fmt.Errorf("post: %w", syscall.ECONNREFUSED), "connection refused"},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "timeout"},
		{errBadSignature, "signature does not verify"},
		{errors.New(`Post "http://127.0.0.1:1/x": something odd`), "something odd"},
	} {
		if got := errKey(tc.err); got != tc.want {
			t.Errorf("errKey(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// verdicts returns each target's name and verdict.
func verdicts(ts []Target) map[string]string {
	out := map[string]string{}
	for _, t := range ts {
		out[t.Name] = t.Verdict()
	}
	return out
}

func TestJudge(t *testing.T) {
	win := func(i int, rate float64, phase string) Window {
		return Window{Index: i, Start: float64(i * 10), End: float64(i*10 + 10), Rate: rate, Phase: phase, Full: true}
	}
	rep := &Report{
		RSS: []NodeRSS{
			{Node: "node1", Start: 100 << 20, End: 109 << 20},
			{Node: "node2", Start: 100 << 20, End: 120 << 20},
			{Node: "node3", Start: 0, End: 100 << 20, Restarted: true},
		},
		Windows: []Window{
			win(0, 50, "up"), win(1, 10, "down"), win(2, 45, "catch-up"), win(3, 41, "up"),
			{Index: 4, Start: 40, End: 45, Rate: 1, Phase: "up"}, // partial: not judged
		},
		Kill:  &KillReport{Follower: "node3", RestartedAt: 15, CaughtUpAfter: 5 * time.Second, ReadyAfter: 2 * time.Second},
		Final: []FinalState{{Node: "node1", Applied: 9, StateHash: "ab"}, {Node: "node2", Applied: 9, StateHash: "ab"}, {Node: "node3", Applied: 9, StateHash: "ab"}},
	}
	got := verdicts(judge(rep))
	want := map[string]string{
		"RSS flat node1":          "met",
		"RSS flat node2":          "NOT MET",
		"RSS flat node3":          "not judged",
		"signatures/s steady":     "met", // 41 / 50 = 82 %
		"follower catch-up node3": "met",
		"states equal at the end": "met",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}

	rep.Windows[3].Rate = 39                  // 78 %
	rep.Kill.CaughtUpAfter = 61 * time.Second // too slow
	rep.Final[2].StateHash = "cd"             // diverged
	rep.RSS[0].End = 80 << 20                 // shrank by 20 %
	rep.Final = append(rep.Final[:2:2], FinalState{Node: "node3", Applied: 9, StateHash: "cd"})
	got = verdicts(judge(rep))
	for _, name := range []string{"signatures/s steady", "follower catch-up node3", "states equal at the end", "RSS flat node1"} {
		if got[name] != "NOT MET" {
			t.Errorf("%s: %s, want NOT MET", name, got[name])
		}
	}

	rep.Kill.CaughtUpAfter = -1
	rep.Final[2] = FinalState{Node: "node3", Err: "down"}
	got = verdicts(judge(rep))
	if got["follower catch-up node3"] != "NOT MET" || got["states equal at the end"] != "NOT MET" {
		t.Errorf("never caught up / unreadable: %v", got)
	}
}

// RSS is judged peak to peak over a minute at each end: a sawtooth of collections is
// flat, a trend is not, and a restarted follower is held to the minute before its kill.
func TestJudgeRSSPeaks(t *testing.T) {
	const mb = 1 << 20
	run := func(first, last []uint64, restarted bool) string {
		rep := &Report{RSS: []NodeRSS{{Node: "node1", Start: first[0] * mb, End: last[len(last)-1] * mb}}}
		if restarted {
			rep.RSS[0] = NodeRSS{Node: "node1", Restarted: true, BeforeKill: first[len(first)-1] * mb, End: last[len(last)-1] * mb}
			rep.Kill = &KillReport{Follower: "node1", KilledAt: 60}
		}
		add := func(from float64, rss []uint64) {
			for i, v := range rss {
				s := from + float64(i)*10
				rep.Windows = append(rep.Windows, Window{Start: s, End: s + 10, Full: true, Phase: "up", RSS: []uint64{v * mb}})
			}
		}
		add(0, first)
		add(60, []uint64{90, 90, 90, 90, 90, 90})
		add(120, last)
		return verdicts(judge(rep))["RSS flat node1"]
	}
	for _, tc := range []struct {
		name        string
		first, last []uint64
		restarted   bool
		want        string
	}{
		{"a sawtooth, low at both instants", []uint64{70, 95, 92, 80, 96, 75}, []uint64{90, 97, 78, 94, 88, 71}, false, "met"},
		{"a trend", []uint64{70, 75, 72, 74, 76, 75}, []uint64{90, 97, 92, 94, 98, 99}, false, "NOT MET"},
		{"shrinking by a fifth", []uint64{100, 100, 100, 100, 100, 100}, []uint64{80, 80, 80, 80, 80, 80}, false, "NOT MET"},
		{"restarted, below its peak before the kill", []uint64{90, 100, 95, 99, 97, 92}, []uint64{80, 95, 101, 90, 99, 85}, true, "met"},
		{"restarted, above it", []uint64{90, 100, 95, 99, 97, 92}, []uint64{80, 95, 121, 90, 99, 85}, true, "NOT MET"},
	} {
		if got := run(tc.first, tc.last, tc.restarted); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The RSS targets say how the live heap moved outside Pebble's bounded holders and in
// them, so that a change the holders explain is told from history kept in memory; the
// note never changes a verdict, and is left out without the live figures.
func TestMemoryNote(t *testing.T) {
	const mb = 1 << 20
	start := &Memory{GoHeapInUse: 51 * mb, GoHeapLive: 29 * mb, StateCache: 4 * mb, StateMemTables: 8 * mb, KeystoreCache: 2 * mb, KeystoreMemTable: 5 * mb}
	end := &Memory{GoHeapInUse: 60 * mb, GoHeapLive: 33 * mb, StateCache: 8 * mb, StateMemTables: 8 * mb, KeystoreCache: 3 * mb, KeystoreMemTable: 4 * mb}
	want := "live heap outside Pebble 10.0 → 10.0 MiB; Pebble's caches and memtables (bounded by their options) 19.0 → 23.0 MiB"
	if got := memoryNote(start, end); got != want {
		t.Errorf("note %q, want %q", got, want)
	}
	withParts := func(m *Memory, anon, file uint64) *Memory {
		c := *m
		c.RSSAnon, c.RSSFile = anon*mb, file*mb
		return &c
	}
	wantParts := want + "; RSS anonymous 60.0 → 70.0, file-backed 31.0 → 33.0 MiB"
	if got := memoryNote(withParts(start, 60, 31), withParts(end, 70, 33)); got != wantParts {
		t.Errorf("note %q, want %q", got, wantParts)
	}
	if got := (&Memory{GoHeapLive: 3 * mb, StateCache: 4 * mb}).liveOutsidePebble(); got != 0 {
		t.Errorf("live below Pebble's figures (read at different instants): %d, want 0", got)
	}
	for _, m := range [][2]*Memory{{nil, end}, {start, nil}, {{GoHeapInUse: mb}, end}} {
		if got := memoryNote(m[0], m[1]); got != "" {
			t.Errorf("without both live figures: %q, want none", got)
		}
	}
	rep := &Report{RSS: []NodeRSS{{Node: "node1", Start: 100 * mb, End: 111 * mb, StartMemory: start, EndMemory: end}}}
	for _, tg := range judge(rep) {
		if tg.Name == "RSS flat node1" && (tg.Met || tg.Note != want) {
			t.Errorf("RSS target %+v: want NOT MET (+11 %%) with the note", tg)
		}
	}
	if !strings.Contains(withParts(start, 60, 31).String(), "RSS anonymous 60.0 + file-backed 31.0; heap 51.0 (live 29.0, of it outside Pebble 10.0)") {
		t.Errorf("String() = %q, want the live heap in it", start.String())
	}
}
