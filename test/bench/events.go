//go:build linux

package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/cluster"
)

// The event-stream cell (issue: "Events add no visible cost to sign latency (ratio change
// within noise, say the figures); the stream keeps up with the cluster's maximum sign rate
// with 50 connected clients"):
//
//   - baseline: Ed25519 signs through the cluster (the bench's Ed25519 key, a random node
//     each) with eventsConc workers for -events-duration, no stream open;
//   - cluster: the same with -events-clients streams of GET /v1/events open (SDK Events),
//     spread over the nodes, half as the admin (every event), half as the signing user
//     (its own requests' events), opened after the log's current head and checked to be
//     live (every stream has seen a marker sign's request.signed) before the clock starts.
//
// Every sign's completion time (when the signed answer reached the bench) is kept by
// request id; each stream notes when each request.signed event reached it. After the run
// the streams are given up to eventsDrainTimeout to deliver the last events; the lag of an
// event on a stream is its arrival minus the sign's completion (negative when the stream
// was faster than the signing call's answer), and a stream that never delivered one of the
// run's signs' request.signed events counts it missing. The two runs alternate in order
// from one repetition to the next, like the throughput cells.
//
// There is no Ed25519 throughput cell to reuse (those sign ECDSA, a fixed number of
// operations), so the baseline is always run, of the same duration and concurrency.

const (
	// eventsReadyTimeout bounds the wait for every stream to see the marker sign.
	eventsReadyTimeout = 30 * time.Second
	// eventsDrainTimeout bounds the wait, after the last sign, for the streams to deliver
	// the run's last events.
	eventsDrainTimeout = 15 * time.Second
	// eventsWindows is how many equal windows each run's rate is also counted in (a
	// within-run view of the rate's noise).
	eventsWindows = 5
	// maxEventsClients bounds -events-clients.
	maxEventsClients = 1000
)

func eventsCellName(o *options) string { return fmt.Sprintf("events_%d_streams", o.eventsClients) }

// eventsConc is the concurrency of the cell: the throughput cells' targetConc when it is
// one of -conc, else the highest of -conc (the RSS cell's rule).
func eventsConc(o *options) int {
	if slices.Contains(o.conc, targetConc) {
		return targetConc
	}
	return slices.Max(o.conc)
}

// eventsRep is one repetition's stream figures.
type eventsRep struct {
	Streams      int `json:"streams"`
	AdminStreams int `json:"admin_streams"`
	UserStreams  int `json:"user_streams"`
	// Signed is how many signs of the run completed, i.e. the request.signed events every
	// stream should deliver; Received how many of those the streams delivered in all;
	// Missing = Streams*Signed - Received.
	Signed          int `json:"signed"`
	Received        int `json:"received"`
	Missing         int `json:"missing"`
	StreamsComplete int `json:"streams_complete"`
	// Lags over every (stream, event): arrival on the stream - the signing call's
	// completion in the bench.
	LagP50ms float64 `json:"lag_p50_ms"`
	LagP95ms float64 `json:"lag_p95_ms"`
	LagP99ms float64 `json:"lag_p99_ms"`
	LagMaxms float64 `json:"lag_max_ms"`
	LagMinms float64 `json:"lag_min_ms"`
	// Early is how many events reached their stream before the signing call returned.
	Early int `json:"early"`
	// WorstStreamP95ms is the highest per-stream p95 lag.
	WorstStreamP95ms float64 `json:"worst_stream_p95_ms"`
	// DrainMs is how long after the last sign completed the last event arrived.
	DrainMs      float64 `json:"drain_ms"`
	EventsTotal  int     `json:"events_total"` // every event the streams delivered, of any type
	Reconnects   int     `json:"reconnects"`
	StreamErrors int     `json:"stream_errors"`
	// BaselineWindows and StreamsWindows are each run's rate (/s) in eventsWindows equal
	// windows of its wall time.
	BaselineWindows []float64 `json:"baseline_windows_per_s"`
	StreamsWindows  []float64 `json:"streams_windows_per_s"`
}

// eventsReport is the cell's stream figures over the repetitions: medians of the
// repetitions' lag percentiles, the maximum of their maxima, sums of the counts.
type eventsReport struct {
	Clients      int     `json:"clients"`
	AdminStreams int     `json:"admin_streams"`
	UserStreams  int     `json:"user_streams"`
	DurationS    float64 `json:"duration_s"`
	Concurrency  int     `json:"concurrency"`
	Signed       int     `json:"signed"`
	Missing      int     `json:"missing"`
	KeptUp       bool    `json:"kept_up"` // no event missing on any stream, no stream error
	LagP50ms     float64 `json:"lag_p50_ms"`
	LagP95ms     float64 `json:"lag_p95_ms"`
	LagP99ms     float64 `json:"lag_p99_ms"`
	LagMaxms     float64 `json:"lag_max_ms"`
	// BaselineNoise is the median over repetitions of the baseline run's window rates'
	// (max - min) / mean: how much the rate moves within a run without streams.
	BaselineNoise float64     `json:"baseline_window_spread"`
	Reps          []eventsRep `json:"reps"`
}

// eventStreamRec is what one stream received.
type eventStreamRec struct {
	node  int
	admin bool

	mu         sync.Mutex
	arrivals   map[string]time.Time // request id of each request.signed → arrival
	events     int
	reconnects int
	err        error
}

func (s *eventStreamRec) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.arrivals[id]
	return ok
}

func (s *eventStreamRec) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// completions is the request id → completion time of the run's signs.
type completions struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (c *completions) put(id string, t time.Time) {
	c.mu.Lock()
	c.m[id] = t
	c.mu.Unlock()
}

// eventsSide runs the cell on the bench's cluster.
type eventsSide struct {
	o    *options
	c    *cluster.Cluster
	cs   *clusterSide
	conc int
	log  *slog.Logger
}

// sign signs a random message with the bench's Ed25519 key through node entry and waits
// until it is signed; it returns the request id, the time from the call to the signed
// answer and when that answer came. The signature is verified after the clock stops.
func (e *eventsSide) sign(ctx context.Context, entry int) (string, time.Duration, time.Time, error) {
	msg := randomMessage(e.o.msgSize)
	cl := e.cs.u.Clients[entry]
	start := time.Now()
	r, err := cl.Sign(ctx, e.cs.edKey.KeyID, msg, "", "")
	if err != nil {
		return "", 0, time.Time{}, err
	}
	if r.Status != client.StatusSigned {
		if r, err = cl.WaitRequest(ctx, r.RequestID, pollInterval); err != nil {
			return "", 0, time.Time{}, err
		}
	}
	end := time.Now()
	if r.Status != client.StatusSigned || r.Signature == nil {
		return "", 0, time.Time{}, requestFailure(r)
	}
	raw, err := hex.DecodeString(r.Signature.Signature)
	if err != nil || !ed25519.Verify(e.cs.edPub, msg, raw) {
		return "", 0, time.Time{}, errors.New("cluster Ed25519 signature does not verify")
	}
	return r.RequestID, end.Sub(start), end, nil
}

// durationRun runs f with conc workers, each starting its next operation as soon as its
// last ends, until d has passed since the start; it returns the latencies, the wall time
// from the start to the last end, and each operation's end as an offset from the start.
func durationRun(ctx context.Context, conc int, d time.Duration, f op, log *slog.Logger) (runResult, []time.Duration) {
	var (
		mu   sync.Mutex
		r    runResult
		ends []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d && ctx.Err() == nil {
				took, err := f(ctx)
				end := time.Since(start)
				mu.Lock()
				if err != nil {
					r.errors++
					if r.errors <= maxLoggedErrors {
						log.Warn("operation failed", "cell", "events", "concurrency", conc, "err", err)
					}
				} else {
					r.lat = append(r.lat, took)
					ends = append(ends, end)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.wall = time.Since(start)
	return r, ends
}

// windowRates counts the operations ending in each of eventsWindows equal windows of wall
// and returns their rates (/s).
func windowRates(ends []time.Duration, wall time.Duration) []float64 {
	if wall <= 0 {
		return nil
	}
	counts := make([]int, eventsWindows)
	w := wall / eventsWindows
	for _, e := range ends {
		counts[min(eventsWindows-1, int(e/w))]++
	}
	out := make([]float64, eventsWindows)
	for i, n := range counts {
		out[i] = round2(float64(n) / w.Seconds())
	}
	return out
}

// spread is (max - min) / mean of xs; 0 for none.
func spread(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	if sum == 0 {
		return 0
	}
	return round3((slices.Max(xs) - slices.Min(xs)) / (sum / float64(len(xs))))
}

// eventHead is the seq of the newest event in the log (0 when none): the admin's pages
// followed to the end.
func eventHead(ctx context.Context, a *admin.Admin) (uint64, error) {
	var head uint64
	for range 100000 {
		page, err := a.EventPage(ctx, head, 1000)
		if err != nil {
			return 0, fmt.Errorf("event log head: %w", err)
		}
		if n := len(page.Events); n > 0 {
			head = max(head, page.Events[n-1].Seq)
		}
		if page.Next == "" {
			return head, nil
		}
		next, err := strconv.ParseUint(page.Next, 10, 64)
		if err != nil || next <= head && len(page.Events) == 0 {
			return 0, fmt.Errorf("event log head: page's next %q", page.Next)
		}
		head = max(head, next)
	}
	return 0, errors.New("event log head: too many pages")
}

// openStreams opens n streams after seq head: stream i on node (i/2) mod N, the even ones
// as the admin, the odd ones as the user. They run until ctx ends; wait waits for them.
func (e *eventsSide) openStreams(ctx context.Context, n int, head uint64) (streams []*eventStreamRec, wait func(), err error) {
	var wg sync.WaitGroup
	for i := range n {
		st := &eventStreamRec{node: (i / 2) % e.c.N(), admin: i%2 == 0, arrivals: map[string]time.Time{}}
		onReconnect := client.OnReconnect(func(err error, wait time.Duration) {
			st.mu.Lock()
			st.reconnects++
			st.mu.Unlock()
			e.log.Warn("event stream reconnecting", "stream", i, "node", e.c.NodeID(st.node), "err", err, "wait", wait)
		})
		var seq iter.Seq2[*client.Event, error]
		if st.admin {
			a, err := e.c.AdminFor(st.node)
			if err != nil {
				return nil, wg.Wait, err
			}
			seq = a.Events(ctx, head, onReconnect)
		} else {
			seq = e.cs.u.Clients[st.node].Events(ctx, head, onReconnect)
		}
		streams = append(streams, st)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev, err := range seq {
				now := time.Now()
				st.mu.Lock()
				if err != nil {
					st.err = err
					st.mu.Unlock()
					e.log.Warn("event stream failed", "stream", i, "node", e.c.NodeID(st.node), "admin", st.admin, "err", err)
					return
				}
				st.events++
				if ev.Type == client.EventRequestSigned && ev.Data.RequestID != "" {
					if _, dup := st.arrivals[ev.Data.RequestID]; !dup {
						st.arrivals[ev.Data.RequestID] = now
					}
				}
				st.mu.Unlock()
			}
		}()
	}
	return streams, wg.Wait, nil
}

// waitSeen waits until every stream has a request.signed arrival for each of ids, a
// stream fails, or timeout passes; it reports whether all were seen.
func waitSeen(ctx context.Context, streams []*eventStreamRec, ids []string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, st := range streams {
			if st.failed() != nil {
				return false
			}
			st.mu.Lock()
			for _, id := range ids {
				if _, ok := st.arrivals[id]; !ok {
					all = false
					break
				}
			}
			st.mu.Unlock()
			if !all {
				break
			}
		}
		if all {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// baselineRun is the signs without streams.
func (e *eventsSide) baselineRun(ctx context.Context) (runResult, []time.Duration) {
	f := func(ctx context.Context) (time.Duration, error) {
		_, took, _, err := e.sign(ctx, e.cs.randomEntry())
		return took, err
	}
	return durationRun(ctx, e.conc, e.o.eventsDuration, f, e.log)
}

// streamsRun is the signs with the streams open, and the streams' figures.
func (e *eventsSide) streamsRun(ctx context.Context) (runResult, []time.Duration, eventsRep, error) {
	var er eventsRep
	head, err := eventHead(ctx, e.c.Admin())
	if err != nil {
		return runResult{}, nil, er, err
	}
	sctx, cancel := context.WithCancel(ctx)
	streams, wait, err := e.openStreams(sctx, e.o.eventsClients, head)
	defer func() { cancel(); wait() }()
	if err != nil {
		return runResult{}, nil, er, err
	}
	// Every stream live and caught up: each has seen a marker sign's request.signed.
	marker, _, _, err := e.sign(ctx, e.cs.randomEntry())
	if err != nil {
		return runResult{}, nil, er, fmt.Errorf("marker sign: %w", err)
	}
	if !waitSeen(ctx, streams, []string{marker}, eventsReadyTimeout) {
		ready := 0
		for _, st := range streams {
			if st.has(marker) {
				ready++
			}
		}
		return runResult{}, nil, er, fmt.Errorf("only %d of %d event streams delivered the marker sign's request.signed within %v", ready, len(streams), eventsReadyTimeout)
	}
	e.log.Info("event streams live", "streams", len(streams), "after_seq", head)

	comp := &completions{m: map[string]time.Time{}}
	f := func(ctx context.Context) (time.Duration, error) {
		id, took, end, err := e.sign(ctx, e.cs.randomEntry())
		if err == nil {
			comp.put(id, end)
		}
		return took, err
	}
	run, ends := durationRun(ctx, e.conc, e.o.eventsDuration, f, e.log)
	comp.mu.Lock()
	ids := make([]string, 0, len(comp.m))
	var last time.Time
	for id, t := range comp.m {
		ids = append(ids, id)
		if t.After(last) {
			last = t
		}
	}
	comp.mu.Unlock()
	waitSeen(ctx, streams, ids, eventsDrainTimeout)
	cancel()
	wait()

	er.Streams, er.Signed = len(streams), len(ids)
	var all []time.Duration
	var lastArrival time.Time
	for _, st := range streams {
		if st.admin {
			er.AdminStreams++
		} else {
			er.UserStreams++
		}
		er.EventsTotal += st.events
		er.Reconnects += st.reconnects
		if st.err != nil {
			er.StreamErrors++
		}
		var lags []time.Duration
		for _, id := range ids {
			at, ok := st.arrivals[id]
			if !ok {
				er.Missing++
				continue
			}
			lag := at.Sub(comp.m[id])
			if lag < 0 {
				er.Early++
			}
			if at.After(lastArrival) {
				lastArrival = at
			}
			lags = append(lags, lag)
		}
		er.Received += len(lags)
		if len(lags) == len(ids) {
			er.StreamsComplete++
		}
		er.WorstStreamP95ms = math.Max(er.WorstStreamP95ms, ms(percentile(lags, 95)))
		all = append(all, lags...)
	}
	if len(all) > 0 {
		er.LagP50ms, er.LagP95ms, er.LagP99ms = ms(percentile(all, 50)), ms(percentile(all, 95)), ms(percentile(all, 99))
		er.LagMaxms, er.LagMinms = ms(slices.Max(all)), ms(slices.Min(all))
		er.DrainMs = ms(lastArrival.Sub(last))
	}
	return run, ends, er, nil
}

// runEventsCell runs the cell -reps times and adds it to the report.
func runEventsCell(ctx context.Context, o *options, c *cluster.Cluster, cs *clusterSide, rep *report, log *slog.Logger) error {
	e := &eventsSide{o: o, c: c, cs: cs, conc: eventsConc(o), log: log}
	name := eventsCellName(o)
	var bs, ss []summary
	out := &eventsReport{Clients: o.eventsClients, DurationS: o.eventsDuration.Seconds(), Concurrency: e.conc, KeptUp: true}
	var noise, p50, p95, p99 []float64
	for r := range o.reps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Info("cell", "rep", r+1, "of", o.reps, "cell", name, "duration", o.eventsDuration, "concurrency", e.conc, "streams", o.eventsClients)
		var (
			bRun, sRun   runResult
			bEnds, sEnds []time.Duration
			er           eventsRep
			err          error
		)
		if r%2 == 0 {
			bRun, bEnds = e.baselineRun(ctx)
			sRun, sEnds, er, err = e.streamsRun(ctx)
		} else {
			sRun, sEnds, er, err = e.streamsRun(ctx)
			if err == nil {
				bRun, bEnds = e.baselineRun(ctx)
			}
		}
		if err != nil {
			return err
		}
		er.BaselineWindows, er.StreamsWindows = windowRates(bEnds, bRun.wall), windowRates(sEnds, sRun.wall)
		b, s := bRun.summary(), sRun.summary()
		log.Info("cell done", "cell", name, "rep", r+1,
			"no_streams_per_s", round2(b.Throughput), "streams_per_s", round2(s.Throughput),
			"no_streams_p50_ms", b.P50ms, "streams_p50_ms", s.P50ms,
			"lag_p50_ms", er.LagP50ms, "lag_p95_ms", er.LagP95ms, "lag_max_ms", er.LagMaxms,
			"missing", er.Missing, "errors", b.Errors+s.Errors)
		bs, ss = append(bs, b), append(ss, s)
		out.Reps = append(out.Reps, er)
		out.AdminStreams, out.UserStreams = er.AdminStreams, er.UserStreams
		out.Signed += er.Signed
		out.Missing += er.Missing
		out.KeptUp = out.KeptUp && er.Missing == 0 && er.StreamErrors == 0
		out.LagMaxms = math.Max(out.LagMaxms, er.LagMaxms)
		p50, p95, p99 = append(p50, er.LagP50ms), append(p95, er.LagP95ms), append(p99, er.LagP99ms)
		noise = append(noise, spread(er.BaselineWindows))
	}
	out.LagP50ms, out.LagP95ms, out.LagP99ms = round2(median(p50)), round2(median(p95)), round2(median(p99))
	out.BaselineNoise = round3(median(noise))
	d := cellDef{
		name: name, title: fmt.Sprintf("Ed25519 sign c=%d, %d event streams", e.conc, o.eventsClients), kind: kindThroughput, conc: e.conc,
		baseOp: fmt.Sprintf("Ed25519 signs through the cluster, %d workers for %v, no event stream open", e.conc, o.eventsDuration),
		cluOp: fmt.Sprintf("the same with %d GET /v1/events streams open (%d as the admin, %d as the signing user, over %d nodes)",
			o.eventsClients, out.AdminStreams, out.UserStreams, c.N()),
	}
	rep.addCell(d, aggregate(bs), aggregate(ss))
	cr := &rep.Cells[len(rep.Cells)-1]
	var n []float64 // duration-bound: the with-streams run's signs (median of the reps)
	for _, s := range ss {
		n = append(n, float64(s.Samples))
	}
	cr.SamplesPerRep = int(median(n))
	cr.Events = out
	rep.Targets = append(rep.Targets, targetState{Name: name + ".missing_events", Actual: float64(out.Missing), Op: "<=", Value: 0, Met: out.KeptUp})
	return nil
}

// print writes the cell's stream line.
func (r *eventsReport) print(w io.Writer, title string, ratio float64) {
	fmt.Fprintf(w, "%s: sign rate ratio with/without streams %.3f (baseline's rate moves by %.1f%% across %d windows of its run); "+
		"event lag (arrival on the stream - the signing call's return) p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms over %d streams (%d admin, %d user); "+
		"%d signs, %d events missing, every stream kept up: %s\n",
		title, ratio, 100*r.BaselineNoise, eventsWindows, r.LagP50ms, r.LagP95ms, r.LagP99ms, r.LagMaxms, r.Clients, r.AdminStreams, r.UserStreams,
		r.Signed, r.Missing, yesNo(r.KeptUp))
}
