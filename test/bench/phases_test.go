//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// expo writes a custos_phase_seconds exposition, as client_golang formats it, of the
// given series; each has cumulative counts for the bounds 0.001, 0.01, 0.1 and 1 s and
// then +Inf, and a sum (s).
func expo(series ...expoSeries) string {
	var b strings.Builder
	b.WriteString("# HELP custos_phase_seconds Time of each phase of a sign request's path.\n")
	b.WriteString("# TYPE custos_phase_seconds histogram\n")
	for _, s := range series {
		labels := fmt.Sprintf(`event=%q,phase=%q,role=%q`, s.event, s.phase, s.role)
		for i, le := range []string{"0.001", "0.01", "0.1", "1", "+Inf"} {
			fmt.Fprintf(&b, "custos_phase_seconds_bucket{%s,le=%q} %d\n", labels, le, s.cum[i])
		}
		fmt.Fprintf(&b, "custos_phase_seconds_sum{%s} %g\n", labels, s.sum)
		fmt.Fprintf(&b, "custos_phase_seconds_count{%s} %d\n", labels, s.cum[4])
	}
	return b.String()
}

type expoSeries struct {
	event, phase, role string
	cum                [5]int
	sum                float64
}

// otherMetrics is what else a node's /metrics carries; the parser must skip it.
const otherMetrics = `# HELP custos_requests_total Requests.
# TYPE custos_requests_total counter
custos_requests_total{route="sign"} 12
# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
`

func mustParse(t *testing.T, text string) phaseSnapshot {
	t.Helper()
	s, err := parsePhases(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsePhases: %v", err)
	}
	return s
}

func TestCollectPhases(t *testing.T) {
	auth := func(cum [5]int, sum float64) expoSeries {
		return expoSeries{eventSignRequest, "auth", "leader", cum, sum}
	}
	mpc := func(role string, cum [5]int, sum float64) expoSeries {
		return expoSeries{eventCeremony, "mpc", role, cum, sum}
	}
	tests := []struct {
		name string
		// before and after are the expositions of the nodes (index = node) of each window.
		before, after [][]string
		want          []phaseStat
	}{
		{
			name:   "one node, one window: the deltas, interpolated",
			before: [][]string{{otherMetrics + expo(auth([5]int{1, 1, 1, 1, 1}, 0.0005))}},
			// +10 observations: 4 in (0.001, 0.01], 6 in (0.01, 0.1]; sum +0.2 s.
			after: [][]string{{otherMetrics + expo(auth([5]int{1, 5, 11, 11, 11}, 0.2005))}},
			// p50: rank 5, bucket (0.01, 0.1] holds ranks 5..10: 0.01 + 0.09 × 1/6 = 25 ms.
			// p90: rank 9: 0.01 + 0.09 × 5/6 = 85 ms. mean 0.2 / 10 = 20 ms.
			want: []phaseStat{{Event: eventSignRequest, Role: "leader", Phase: "auth", N: 10, P50ms: 25, P90ms: 85, MeanMs: 20}},
		},
		{
			name:   "series absent before counts from zero",
			before: [][]string{{otherMetrics}},
			// 2 observations in (0, 0.001]: p50 rank 1 → 0.5 ms, p90 rank 1.8 → 0.9 ms.
			after: [][]string{{expo(auth([5]int{2, 2, 2, 2, 2}, 0.001))}},
			want:  []phaseStat{{Event: eventSignRequest, Role: "leader", Phase: "auth", N: 2, P50ms: 0.5, P90ms: 0.9, MeanMs: 0.5}},
		},
		{
			name: "nodes and windows add up; unchanged series are left out",
			before: [][]string{
				{expo(mpc("leader", [5]int{0, 0, 0, 0, 0}, 0), auth([5]int{3, 3, 3, 3, 3}, 0.001)), expo(mpc("follower", [5]int{0, 0, 1, 1, 1}, 0.05))},
				{expo(mpc("leader", [5]int{0, 0, 0, 2, 2}, 0.8), auth([5]int{3, 3, 3, 3, 3}, 0.001)), expo(mpc("follower", [5]int{0, 0, 1, 3, 3}, 0.85))},
			},
			after: [][]string{
				{expo(mpc("leader", [5]int{0, 0, 0, 2, 2}, 0.8), auth([5]int{3, 3, 3, 3, 3}, 0.001)), expo(mpc("follower", [5]int{0, 0, 1, 3, 3}, 0.85))},
				{expo(mpc("leader", [5]int{0, 0, 0, 4, 4}, 1.6), auth([5]int{3, 3, 3, 3, 3}, 0.001)), expo(mpc("follower", [5]int{0, 0, 1, 5, 5}, 1.65))},
			},
			// Leader: 4 in (0.1, 1]: p50 rank 2 → 0.1 + 0.9 × 2/4 = 550 ms, p90 rank 3.6 →
			// 0.1 + 0.9 × 0.9 = 910 ms, mean 1.6 / 4. Follower the same, after the leader.
			want: []phaseStat{
				{Event: eventCeremony, Role: "follower", Phase: "mpc", N: 4, P50ms: 550, P90ms: 910, MeanMs: 400},
				{Event: eventCeremony, Role: "leader", Phase: "mpc", N: 4, P50ms: 550, P90ms: 910, MeanMs: 400},
			},
		},
		{
			name: "a counter reset takes the end snapshot as the increase",
			// The node restarted: its counts went down, so everything after is new.
			before: [][]string{{expo(auth([5]int{0, 50, 50, 50, 50}, 0.3))}},
			after:  [][]string{{expo(auth([5]int{0, 0, 4, 4, 4}, 0.12))}},
			// p50 rank 2 → 0.01 + 0.09 × 2/4 = 55 ms; p90 rank 3.6 → 0.01 + 0.09 × 0.9 = 91 ms.
			want: []phaseStat{{Event: eventSignRequest, Role: "leader", Phase: "auth", N: 4, P50ms: 55, P90ms: 91, MeanMs: 30, Resets: 1}},
		},
		{
			name:   "a rank in the +Inf bucket is the highest finite bound",
			before: [][]string{{expo(auth([5]int{0, 0, 0, 0, 0}, 0))}},
			after:  [][]string{{expo(auth([5]int{0, 0, 0, 1, 10}, 45))}},
			want:   []phaseStat{{Event: eventSignRequest, Role: "leader", Phase: "auth", N: 10, P50ms: 1000, P90ms: 1000, MeanMs: 4500}},
		},
		{
			name: "a node whose scrape failed is left out of that window",
			before: [][]string{
				{expo(auth([5]int{0, 0, 0, 0, 0}, 0)), ""},
			},
			after: [][]string{
				{expo(auth([5]int{0, 1, 1, 1, 1}, 0.005)), expo(auth([5]int{0, 9, 9, 9, 9}, 0.05))},
			},
			want: []phaseStat{{Event: eventSignRequest, Role: "leader", Phase: "auth", N: 1, P50ms: 5.5, P90ms: 9.1, MeanMs: 5}},
		},
		{
			name: "order: sign_request, ceremony, proposals; phases in path order",
			before: [][]string{{expo(
				expoSeries{"proposal:submit", "apply_wait", "leader", [5]int{}, 0},
			)}},
			after: [][]string{{expo(
				expoSeries{"proposal:submit", "apply_wait", "leader", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{"proposal:submit", "commit", "leader", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{"proposal:node.report", "commit", "follower", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{eventCeremony, "report", "leader", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{eventCeremony, "sched_lag", "leader", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{eventSignRequest, "wait", "follower", [5]int{1, 1, 1, 1, 1}, 0.001},
				expoSeries{eventSignRequest, "auth", "follower", [5]int{1, 1, 1, 1, 1}, 0.001},
			)}},
			want: []phaseStat{
				{Event: eventSignRequest, Role: "follower", Phase: "auth"},
				{Event: eventSignRequest, Role: "follower", Phase: "wait"},
				{Event: eventCeremony, Role: "leader", Phase: "sched_lag"},
				{Event: eventCeremony, Role: "leader", Phase: "report"},
				{Event: "proposal:node.report", Role: "follower", Phase: "commit"},
				{Event: "proposal:submit", Role: "leader", Phase: "commit"},
				{Event: "proposal:submit", Role: "leader", Phase: "apply_wait"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var windows []phaseWindow
			for w := range tc.before {
				var pw phaseWindow
				for _, text := range tc.before[w] {
					var s phaseSnapshot
					if text != "" {
						s = mustParse(t, text)
					}
					pw.before = append(pw.before, s)
				}
				for _, text := range tc.after[w] {
					pw.after = append(pw.after, mustParse(t, text))
				}
				windows = append(windows, pw)
			}
			got, err := collectPhases(windows)
			if err != nil {
				t.Fatalf("collectPhases: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d stats %+v, want %d %+v", len(got), got, len(tc.want), tc.want)
			}
			orderOnly := strings.HasPrefix(tc.name, "order")
			for i, w := range tc.want {
				g := got[i]
				if orderOnly {
					g = phaseStat{Event: g.Event, Role: g.Role, Phase: g.Phase}
				}
				if g != w {
					t.Errorf("stat %d: got %+v, want %+v", i, g, w)
				}
			}
			if _, err := json.Marshal(got); err != nil {
				t.Fatalf("JSON: %v", err)
			}
		})
	}
}

func TestCollectPhasesBoundsDisagree(t *testing.T) {
	a := "# TYPE custos_phase_seconds histogram\n" +
		`custos_phase_seconds_bucket{event="ceremony",phase="mpc",role="leader",le="0.5"} 1` + "\n" +
		`custos_phase_seconds_bucket{event="ceremony",phase="mpc",role="leader",le="+Inf"} 1` + "\n" +
		`custos_phase_seconds_sum{event="ceremony",phase="mpc",role="leader"} 0.25` + "\n" +
		`custos_phase_seconds_count{event="ceremony",phase="mpc",role="leader"} 1` + "\n"
	b := expo(expoSeries{eventCeremony, "mpc", "leader", [5]int{0, 0, 0, 1, 1}, 0.25})
	w := phaseWindow{before: []phaseSnapshot{{}, {}}, after: []phaseSnapshot{mustParse(t, a), mustParse(t, b)}}
	got, err := collectPhases([]phaseWindow{w})
	if err == nil || !strings.Contains(err.Error(), "bounds differ") {
		t.Fatalf("error %v, want bounds differ", err)
	}
	if len(got) != 1 || got[0].N != 1 {
		t.Fatalf("the first node's series should still be reported: %+v", got)
	}
}

func TestParsePhasesRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"not a histogram": "# TYPE custos_phase_seconds gauge\ncustos_phase_seconds{event=\"a\",phase=\"b\",role=\"leader\"} 1\n",
		"missing label": "# TYPE custos_phase_seconds histogram\n" +
			`custos_phase_seconds_bucket{event="ceremony",role="leader",le="+Inf"} 1` + "\n" +
			`custos_phase_seconds_count{event="ceremony",role="leader"} 1` + "\n",
		"garbage": "custos_phase_seconds_bucket{event=\n",
	} {
		if _, err := parsePhases(strings.NewReader(text)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	s, err := parsePhases(strings.NewReader(otherMetrics))
	if err != nil || s == nil || len(s) != 0 {
		t.Fatalf("absent family: %v, %v; want an empty snapshot", s, err)
	}
}

func TestBucketQuantile(t *testing.T) {
	inf := math.Inf(+1)
	tests := []struct {
		name    string
		q       float64
		buckets []bucket
		want    float64
	}{
		{"first bucket from 0", 0.5, []bucket{{1, 4}, {2, 4}, {inf, 4}}, 0.5},
		{"between bounds", 0.75, []bucket{{1, 2}, {2, 4}, {inf, 4}}, 1.5},
		{"rank on a bound", 0.5, []bucket{{1, 2}, {2, 4}, {inf, 4}}, 1},
		{"empty buckets skipped", 0.5, []bucket{{1, 0}, {2, 0}, {4, 2}, {inf, 2}}, 3},
		{"+Inf bucket", 0.9, []bucket{{1, 1}, {2, 2}, {inf, 10}}, 2},
		{"non-positive first bound", 0.1, []bucket{{0, 5}, {1, 10}, {inf, 10}}, 0},
		{"decreasing counts made monotonic", 0.75, []bucket{{1, 2}, {2, 1}, {3, 4}, {inf, 4}}, 2.5},
		{"no observations", 0.5, []bucket{{1, 0}, {inf, 0}}, math.NaN()},
		{"only +Inf", 0.5, []bucket{{inf, 3}}, math.NaN()},
	}
	for _, tc := range tests {
		got := bucketQuantile(tc.q, tc.buckets)
		if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPhasesFromRegistry checks the parser against the text client_golang serves for a
// histogram with the nodes' buckets, and the estimate against the observations.
func TestPhasesFromRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    phaseMetric,
		Help:    "Time of each phase of a sign request's path.",
		Buckets: prometheus.ExponentialBucketsRange(0.00005, 30, 40),
	}, []string{labelEvent, labelPhase, labelRole})
	reg.MustRegister(h)
	scrape := func() phaseSnapshot {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			if err := enc.Encode(f); err != nil {
				t.Fatal(err)
			}
		}
		return mustParse(t, buf.String())
	}
	// Observed before the window: must not count.
	h.WithLabelValues(eventCeremony, "mpc", "leader").Observe(25)
	before := scrape()
	// 100 observations, 1 ms … 100 ms.
	for i := 1; i <= 100; i++ {
		h.WithLabelValues(eventCeremony, "mpc", "leader").Observe(float64(i) / 1000)
	}
	h.WithLabelValues("proposal:submit", "commit", "follower").Observe(0.002)
	after := scrape()
	got, err := collectPhases([]phaseWindow{{before: []phaseSnapshot{before}, after: []phaseSnapshot{after}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Event != eventCeremony || got[1].Event != "proposal:submit" {
		t.Fatalf("got %+v", got)
	}
	mpc := got[0]
	if mpc.N != 100 || mpc.MeanMs != 50.5 {
		t.Fatalf("mpc n %d mean %v, want 100 and 50.5 ms", mpc.N, mpc.MeanMs)
	}
	// Bounds are a factor of about 1.41 apart: the estimate is within that of the truth.
	for _, c := range []struct{ got, want float64 }{{mpc.P50ms, 50}, {mpc.P90ms, 90}} {
		if c.got < c.want/1.42 || c.got > c.want*1.42 {
			t.Errorf("estimate %v ms, want about %v ms", c.got, c.want)
		}
	}
	if p := got[1]; p.N != 1 || p.MeanMs != 2 || p.P50ms <= 0 || p.P50ms > 2.9 {
		t.Errorf("proposal: %+v", p)
	}
}
