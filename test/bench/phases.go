//go:build linux

package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/custos/custos/test/cluster"
)

// Every node records the timings of each sign request's path in one Prometheus
// histogram family, always on, served on its GET /metrics:
//
//	custos_phase_seconds{event, phase, role}
//
// Its series:
//
//   - event "sign_request", on the node the request entered: phase auth (from the
//     request's arrival to the handler: body read, JWT, RFC 9421 signature, rate limit),
//     commit (the request entry committed through raft, forwarded to the leader from a
//     follower, and applied on this node) and wait (from then until the request settled
//     here);
//   - event "ceremony", on each committee member: phase sched_lag (from the schedule's
//     stamp to this node applying it; stamps have millisecond resolution), prep (session
//     marker and re-verification), load (share read and decoded), mpc (the tss-lib
//     ceremony over libp2p) and report (the result's commit);
//   - event "proposal:<entry type>" ("proposal:submit", "proposal:node.report" …), for
//     every proposal the node made: phase commit (until the leader answered) and
//     apply_wait (until this node had applied the entry too).
//
// Role is leader or follower: whether the node was the raft leader when it observed.
//
// With -phases the bench scrapes every node's /metrics at the start and at the end of
// each repetition of a cell (the end after phaseSettle, so that the stragglers of the
// cell's last operations land in its own window), subtracts the two snapshots series by
// series (bucket counts, count and sum), adds the differences over the nodes and the
// repetitions, and reports per event, role and phase the number of observations, the
// median and the 90th percentile estimated from the bucket counts by linear
// interpolation inside the bucket (what Prometheus's histogram_quantile does; with the
// nodes' buckets, bounds a factor of about 1.4 apart, an estimate), and the exact mean
// (sum / count).
const (
	phaseMetric = "custos_phase_seconds"
	// phaseSettle is the pause between a cell's last operation and the scrape that ends
	// its window.
	phaseSettle = 200 * time.Millisecond
	// phaseScrapeTimeout bounds one node's /metrics scrape.
	phaseScrapeTimeout = 10 * time.Second
)

// Label names and values of custos_phase_seconds.
const (
	labelEvent          = "event"
	labelPhase          = "phase"
	labelRole           = "role"
	eventSignRequest    = "sign_request"
	eventCeremony       = "ceremony"
	eventProposalPrefix = "proposal:"
)

// phaseOrder is the order of the phases in the report: the order they happen in.
var phaseOrder = map[string]int{
	"auth": 0, "commit": 1, "wait": 2, // sign_request; commit is also a proposal's first
	"sched_lag": 0, "prep": 1, "load": 2, "mpc": 3, "report": 4, // ceremony
	"apply_wait": 2, // proposal
}

// phaseKey names one series of custos_phase_seconds.
type phaseKey struct{ event, role, phase string }

// bucket is one cumulative histogram bucket: the observations ≤ le.
type bucket struct {
	le    float64
	count float64
}

// histogram is one series: its cumulative buckets in ascending order of le, the last
// one +Inf, and its count and sum (seconds).
type histogram struct {
	buckets []bucket
	count   float64
	sum     float64
}

// phaseSnapshot is one node's custos_phase_seconds at one moment.
type phaseSnapshot map[phaseKey]histogram

// phaseWindow is one repetition of a cell: every node's snapshot at its start and at its
// end (index = node; nil where that scrape failed).
type phaseWindow struct{ before, after []phaseSnapshot }

// phaseStat is one phase of one event on one role, over a cell's repetitions.
type phaseStat struct {
	Event  string  `json:"event"`
	Role   string  `json:"role"` // leader or follower
	Phase  string  `json:"phase"`
	N      int     `json:"n"`
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	MeanMs float64 `json:"mean_ms"`
	// Resets counts the (node, repetition) pairs in which the series went backwards (the
	// node restarted): their end snapshot is taken as the whole increase.
	Resets int `json:"resets,omitempty"`
}

// scrapePhases takes every node's snapshot, the nodes at once; a node whose scrape fails
// has a nil snapshot and its error is in the joined error.
func scrapePhases(ctx context.Context, c *cluster.Cluster) ([]phaseSnapshot, error) {
	out := make([]phaseSnapshot, c.N())
	errs := make([]error, c.N())
	var wg sync.WaitGroup
	for i := range c.N() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, phaseScrapeTimeout)
			defer cancel()
			body, err := c.Get(ctx, i, "/metrics")
			if err != nil {
				errs[i] = fmt.Errorf("phases: %w", err)
				return
			}
			if out[i], err = parsePhases(bytes.NewReader(body)); err != nil {
				errs[i] = fmt.Errorf("phases: %s /metrics: %w", c.NodeID(i), err)
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// parsePhases reads custos_phase_seconds out of a Prometheus text exposition; the
// snapshot is empty, not nil, when the family is absent.
func parsePhases(r io.Reader) (phaseSnapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	snap := phaseSnapshot{}
	fam, ok := fams[phaseMetric]
	if !ok {
		return snap, nil
	}
	if fam.GetType() != dto.MetricType_HISTOGRAM {
		return nil, fmt.Errorf("%s is a %s, not a histogram", phaseMetric, fam.GetType())
	}
	for _, m := range fam.GetMetric() {
		var k phaseKey
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case labelEvent:
				k.event = l.GetValue()
			case labelPhase:
				k.phase = l.GetValue()
			case labelRole:
				k.role = l.GetValue()
			}
		}
		if k.event == "" || k.phase == "" || k.role == "" {
			return nil, fmt.Errorf("%s series without event, phase or role: %v", phaseMetric, m.GetLabel())
		}
		if _, dup := snap[k]; dup {
			return nil, fmt.Errorf("%s series %v twice", phaseMetric, k)
		}
		h, err := fromProto(m.GetHistogram())
		if err != nil {
			return nil, fmt.Errorf("%s %v: %w", phaseMetric, k, err)
		}
		snap[k] = h
	}
	return snap, nil
}

// fromProto turns a parsed histogram into a histogram, checking that its bounds ascend
// and adding the +Inf bucket (the count) when the exposition left it out.
func fromProto(ph *dto.Histogram) (histogram, error) {
	if ph == nil {
		return histogram{}, errors.New("no histogram")
	}
	h := histogram{count: float64(ph.GetSampleCount()), sum: ph.GetSampleSum()}
	if f := ph.GetSampleCountFloat(); f != 0 {
		h.count = f
	}
	for _, b := range ph.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if f := b.GetCumulativeCountFloat(); f != 0 {
			c = f
		}
		le := b.GetUpperBound()
		if n := len(h.buckets); math.IsNaN(le) || n > 0 && le <= h.buckets[n-1].le {
			return histogram{}, fmt.Errorf("bucket bounds not ascending at le=%g", le)
		}
		h.buckets = append(h.buckets, bucket{le: le, count: c})
	}
	if n := len(h.buckets); n == 0 || !math.IsInf(h.buckets[n-1].le, +1) {
		h.buckets = append(h.buckets, bucket{le: math.Inf(+1), count: h.count})
	}
	return h, nil
}

// sameBounds reports whether a and b have the same bucket bounds.
func sameBounds(a, b histogram) bool {
	return slices.EqualFunc(a.buckets, b.buckets, func(x, y bucket) bool { return x.le == y.le })
}

// since returns what h (a later snapshot of a series) adds to before (an earlier one,
// the zero histogram when the series did not exist yet), and whether the series went
// backwards in between: then the node restarted (its counters started again from zero)
// and h itself is the increase, as Prometheus's increase() counts a reset.
func (h histogram) since(before histogram) (histogram, bool) {
	if before.buckets == nil {
		return h.clone(), false
	}
	reset := !sameBounds(h, before) || h.count < before.count || h.sum < before.sum
	for i := range h.buckets {
		if reset {
			break
		}
		reset = h.buckets[i].count < before.buckets[i].count
	}
	if reset {
		return h.clone(), true
	}
	d := histogram{count: h.count - before.count, sum: h.sum - before.sum, buckets: make([]bucket, len(h.buckets))}
	for i, b := range h.buckets {
		d.buckets[i] = bucket{le: b.le, count: b.count - before.buckets[i].count}
	}
	return d, false
}

func (h histogram) clone() histogram {
	h.buckets = slices.Clone(h.buckets)
	return h
}

// add adds d to h (h may be the zero histogram); their bounds must agree.
func (h *histogram) add(d histogram) error {
	if h.buckets == nil {
		*h = d.clone()
		return nil
	}
	if !sameBounds(*h, d) {
		return errors.New("bucket bounds differ between nodes or snapshots")
	}
	h.count += d.count
	h.sum += d.sum
	for i := range h.buckets {
		h.buckets[i].count += d.buckets[i].count
	}
	return nil
}

// phaseAcc adds up the increases of every series over nodes and windows.
type phaseAcc struct {
	hist   map[phaseKey]*histogram
	resets map[phaseKey]int
}

// collectPhases adds up, series by series, what every node's histograms gained in each
// window and summarises the result. Nodes with a failed scrape in a window are left out
// of that window; bounds that disagree drop the series' later increases and are
// reported in the error, next to the statistics of everything else.
func collectPhases(windows []phaseWindow) ([]phaseStat, error) {
	acc := phaseAcc{hist: map[phaseKey]*histogram{}, resets: map[phaseKey]int{}}
	var errs []error
	for _, w := range windows {
		for i := range min(len(w.before), len(w.after)) {
			before, after := w.before[i], w.after[i]
			if before == nil || after == nil {
				continue
			}
			for k, h := range after {
				d, reset := h.since(before[k])
				if reset {
					acc.resets[k]++
				}
				sum := acc.hist[k]
				if sum == nil {
					sum = &histogram{}
					acc.hist[k] = sum
				}
				if err := sum.add(d); err != nil {
					errs = append(errs, fmt.Errorf("%s %v: %w", phaseMetric, k, err))
				}
			}
		}
	}
	return acc.summarise(), errors.Join(errs...)
}

// summarise turns the accumulated increases into statistics, in milliseconds, leaving
// out series that gained nothing.
func (a phaseAcc) summarise() []phaseStat {
	out := make([]phaseStat, 0, len(a.hist))
	for k, h := range a.hist {
		if h.count <= 0 {
			continue
		}
		out = append(out, phaseStat{
			Event: k.event, Role: k.role, Phase: k.phase, N: int(math.Round(h.count)),
			P50ms:  msOf(bucketQuantile(0.5, h.buckets)),
			P90ms:  msOf(bucketQuantile(0.9, h.buckets)),
			MeanMs: msOf(h.sum / h.count),
			Resets: a.resets[k],
		})
	}
	slices.SortFunc(out, func(a, b phaseStat) int {
		return cmp.Or(
			cmp.Compare(eventRank(a.Event), eventRank(b.Event)),
			strings.Compare(a.Event, b.Event),
			strings.Compare(a.Role, b.Role),
			cmp.Compare(phaseRank(a.Phase), phaseRank(b.Phase)),
			strings.Compare(a.Phase, b.Phase),
		)
	})
	return out
}

// eventRank orders events along a request's path: sign_request, ceremony, proposals,
// anything else.
func eventRank(e string) int {
	switch {
	case e == eventSignRequest:
		return 0
	case e == eventCeremony:
		return 1
	case strings.HasPrefix(e, eventProposalPrefix):
		return 2
	}
	return 3
}

func phaseRank(p string) int {
	if r, ok := phaseOrder[p]; ok {
		return r
	}
	return len(phaseOrder)
}

// bucketQuantile estimates the q-quantile (0 ≤ q ≤ 1) of the observations counted by
// cumulative buckets (ascending bounds, the last +Inf) the way Prometheus's
// histogram_quantile does: find the bucket holding the rank q × total and interpolate
// linearly between its lower and upper bound (the first bucket's lower bound is 0 if its
// upper bound is positive; a rank in the +Inf bucket yields the highest finite bound).
// It is NaN for no observations.
func bucketQuantile(q float64, buckets []bucket) float64 {
	n := len(buckets)
	if n < 2 || !math.IsInf(buckets[n-1].le, +1) {
		return math.NaN()
	}
	// Counts that decrease (float error, or a series added up from odd snapshots) are
	// raised to their predecessor, as histogram_quantile's ensureMonotonic does.
	bs := slices.Clone(buckets)
	for i := 1; i < n; i++ {
		bs[i].count = max(bs[i].count, bs[i-1].count)
	}
	total := bs[n-1].count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	b := sort.Search(n-1, func(i int) bool { return bs[i].count >= rank })
	switch {
	case b == n-1:
		return bs[n-2].le
	case b == 0 && bs[0].le <= 0:
		return bs[0].le
	}
	start, end, count := 0.0, bs[b].le, bs[b].count
	if b > 0 {
		start = bs[b-1].le
		count -= bs[b-1].count
		rank -= bs[b-1].count
	}
	return start + (end-start)*(rank/count)
}

// msOf converts seconds to milliseconds rounded to 0.01, and a NaN or infinite estimate
// (no observations in the buckets) to 0, which JSON can carry.
func msOf(s float64) float64 {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return 0
	}
	return round2(1000 * s)
}

// printPhases writes a cell's phase breakdown.
func printPhases(w io.Writer, title string, ps []phaseStat) {
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "\nphases of %s (cluster side, from the nodes' %s histograms; p50/p90 interpolated in buckets; ms):\n", title, phaseMetric)
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  event\trole\tphase\tn\tp50\tp90\tmean\t")
	for _, p := range ps {
		reset := ""
		if p.Resets > 0 {
			reset = fmt.Sprintf("(%d counter resets)", p.Resets)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%s\n", p.Event, p.Role, p.Phase, p.N, p.P50ms, p.P90ms, p.MeanMs, reset)
	}
	tw.Flush()
}
