//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos/custos/protocol/baseline"
	"github.com/custos/custos/test/cluster"
)

// The wide-area bound.
//
// A sign request through the cluster crosses the network only at these points, each one
// one-way delay L (every byte between two nodes crosses a latency proxy; the SDK talks
// to its entry node on loopback, undelayed):
//
//	submit   f  the entry node forwards the signed request to the raft leader (f = 1 when
//	            the entry node is a follower, 0 when it is the leader)
//	         1  the leader appends the entry, with the committee and session nonce it
//	            chose, to the followers
//	         1  a majority acknowledges: the entry commits on the leader, whose party
//	            starts at once (the leader always sits on the committee)
//	         1  the other committee parties are followers: they apply the entry, and start
//	            their party, only when the leader's next AppendEntries brings the new
//	            commit index (the leader appends a raft barrier right after each commit,
//	            internal/raftnode spreadCommit, so that one leaves at once)
//	tss      R  tss-lib's message rounds on the critical path: a party sends round r+1
//	            only once it holds every round-r message (ECDSA GG18 signing: 9 rounds;
//	            EdDSA signing: 3)
//	echo     e  custos's broadcast consistency: a party finishes only when, for every
//	            broadcast, it also holds the echo of its hash from every other party; the
//	            echo of the last round's broadcast adds one delay — with 2 parties there
//	            is nobody to echo (e = 0), with 3 or more e = 1
//	result   1  the leader proposes its verified signature: append to the followers
//	         1  acknowledgement: the result commits on the leader
//	         f  the entry node, if a follower, learns the commit with the next
//	            AppendEntries and only then answers the SDK
//
// bound = (R + e + 5 + 2f) × L + C, where C is the in-process compute time of the same
// ceremony (the baseline's p50). Not in the bound: the fsyncs of the raft log (the
// leader's before it replicates, the followers' before they acknowledge, and both again
// for the barrier that carries the commit index), HTTP, authentication and the FSM on
// loopback, and CPU contention between the nodes.

// term is one line of the bound.
type term struct {
	Name string  `json:"name"`
	Hops int     `json:"one_way_delays"`
	Ms   float64 `json:"ms"`
	Why  string  `json:"why"`
}

// wanTerms returns the network terms of the bound for a committee of the given size,
// tss-lib's round count and whether the entry node is a follower.
func wanTerms(rounds, committee int, viaFollower bool, l time.Duration) []term {
	f := 0
	if viaFollower {
		f = 1
	}
	e := 0
	if committee >= 3 {
		e = 1
	}
	lm := float64(l) / float64(time.Millisecond)
	t := []term{
		{Name: "submit: forward to the leader", Hops: f, Why: "entry node is a follower (0 when it is the leader)"},
		{Name: "submit: append to followers", Hops: 1, Why: "leader replicates the scheduled entry"},
		{Name: "submit: majority ack", Hops: 1, Why: "entry commits on the leader; the leader's party starts"},
		{Name: "submit: commit reaches the other parties", Hops: 1, Why: "followers in the committee apply (start) on the next AppendEntries"},
		{Name: "tss-lib message rounds", Hops: rounds, Why: "a party sends round r+1 only once it holds every round-r message"},
		{Name: "custos echo of the last broadcast", Hops: e, Why: "broadcast consistency; no echoer with 2 parties"},
		{Name: "result: append to followers", Hops: 1, Why: "leader proposes its verified signature"},
		{Name: "result: majority ack", Hops: 1, Why: "result commits on the leader"},
		{Name: "result: commit reaches the entry node", Hops: f, Why: "a follower entry node answers once it applied the result"},
	}
	for i := range t {
		t[i].Ms = round2(float64(t[i].Hops) * lm)
	}
	return t
}

// wanCell is one measured row of the wide-area run.
type wanCell struct {
	Name      string  `json:"name"`
	Entry     string  `json:"entry"` // "follower" or "leader"
	EntryNode string  `json:"entry_node"`
	Samples   int     `json:"samples"`
	Errors    int     `json:"errors"`
	P50ms     float64 `json:"p50_ms"`
	P95ms     float64 `json:"p95_ms"`
	Terms     []term  `json:"terms"`
	Hops      int     `json:"one_way_delays"`
	ComputeMs float64 `json:"compute_ms"`
	BoundMs   float64 `json:"bound_ms"`
	// P50OverBound is p50 / bound; WithinBound is p50 <= bound; ExcessMs is p50 - bound.
	P50OverBound float64 `json:"p50_over_bound"`
	WithinBound  bool    `json:"p50_within_bound"`
	ExcessMs     float64 `json:"excess_ms"`
	// LoopbackOverheadMs is cluster p50 - baseline p50 of the same cell on loopback (no
	// delay), when the loopback run ran: the part of the excess that is not the network.
	LoopbackOverheadMs *float64 `json:"loopback_overhead_ms,omitempty"`
}

// wanReport is the wide-area section of the results.
type wanReport struct {
	OneWayDelayMs float64             `json:"one_way_delay_ms"`
	Nodes         int                 `json:"nodes"`
	Threshold     int                 `json:"threshold"`
	Formula       string              `json:"formula"`
	Leader        string              `json:"leader"`
	LeaderAfter   string              `json:"leader_after"`
	ProxyCheck    string              `json:"proxy_check"`
	ConnsBefore   []cluster.NodeConns `json:"connections_before"`
	ConnsAfter    []cluster.NodeConns `json:"connections_after"`
	ProxyAccepted []int64             `json:"proxy_accepted_connections"`
	Cells         []wanCell           `json:"cells"`
	Notes         []string            `json:"notes"`
}

const wanFormula = "bound = (R tss-lib rounds + e echo + 5 raft one-way delays + 2f forward/notify) × L + C in-process compute; f = 1 via a follower, 0 via the leader; e = 1 for committees of 3 or more"

func runWAN(ctx context.Context, o *options, bin string, base *baseline.Baseline, rep *report, log *slog.Logger) error {
	log.Info("starting wide-area cluster behind latency proxies", "nodes", o.nodes, "k", o.k, "one_way_delay", o.wan.String())
	c, err := cluster.New(ctx, cluster.Options{Nodes: o.nodes, Threshold: o.k, Binary: bin, KeepDir: o.keep, Extra: clusterExtra(o),
		Proxied: true, OneWayDelay: o.wan, Logger: log, ReadyTimeout: 3 * time.Minute})
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			log.Info("wide-area cluster directory kept", "dir", c.Dir())
		}
		if err := c.Close(); err != nil {
			log.Warn("closing the cluster", "err", err)
		}
	}()
	w := &wanReport{OneWayDelayMs: round2(float64(o.wan) / float64(time.Millisecond)), Nodes: o.nodes, Threshold: o.k, Formula: wanFormula,
		Notes: []string{
			"every node listens on its own port but every member address in every configuration is a latency proxy (QUIC off), one proxy per target node: each direction of each link is delayed by L",
			"not in the bound: raft-log fsyncs (leader before replicating, followers before acknowledging, and again for the barrier the leader appends after each commit so that followers learn it at once), loopback HTTP, authentication, FSM work and CPU contention between the nodes",
			"the proxies terminate TCP: they delay bytes (every protocol message), not the kernel's handshakes and acknowledgements",
			"C is added in full although some compute overlaps the delays (parties start one delay apart and compute while messages are in flight): for compute-heavy ceremonies (ECDSA) the bound is loose",
		}}
	rep.WAN = w
	cs, err := newClusterSide(ctx, c, o.k)
	if err != nil {
		return err
	}
	// Every pair of nodes has talked (raft, keygen): all connections must be proxied.
	conns, verr := c.VerifyProxied()
	w.ConnsBefore = conns
	if verr != nil {
		w.ProxyCheck = verr.Error()
		return verr
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	follower := (leader + 1) % c.N()
	w.Leader = c.NodeID(leader)

	compute, err := baselineCompute(ctx, o, base, rep, log)
	if err != nil {
		return err
	}
	type curveDef struct {
		name   string
		rounds int
		sign   func(ctx context.Context, entry int) (time.Duration, error)
	}
	curves := []curveDef{
		{"ecdsa_sign", 9, func(ctx context.Context, entry int) (time.Duration, error) {
			return cs.signECDSA(ctx, entry, randomDigest())
		}},
		{"ed25519_sign", 3, func(ctx context.Context, entry int) (time.Duration, error) {
			return cs.signEdDSA(ctx, entry, randomMessage(o.msgSize))
		}},
	}
	for _, cd := range curves {
		for _, via := range []struct {
			name  string
			entry int
		}{{"follower", follower}, {"leader", leader}} {
			log.Info("wide-area cell", "cell", cd.name, "via", via.name, "samples", o.samples)
			var r runResult
			for range o.samples {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				took, err := cd.sign(ctx, via.entry)
				if err != nil {
					r.errors++
					if r.errors <= maxLoggedErrors {
						log.Warn("wide-area sign failed", "cell", cd.name, "err", err)
					}
					continue
				}
				r.lat = append(r.lat, took)
			}
			s := r.summary()
			terms := wanTerms(cd.rounds, o.k, via.name == "follower", o.wan)
			cell := wanCell{Name: cd.name, Entry: via.name, EntryNode: c.NodeID(via.entry), Samples: s.Samples, Errors: s.Errors,
				P50ms: s.P50ms, P95ms: s.P95ms, Terms: terms, ComputeMs: compute[cd.name]}
			for _, t := range terms {
				cell.Hops += t.Hops
			}
			cell.BoundMs = round2(float64(cell.Hops)*w.OneWayDelayMs + cell.ComputeMs)
			cell.P50OverBound = ratio(cell.P50ms, cell.BoundMs)
			cell.WithinBound = s.Samples > 0 && cell.P50ms <= cell.BoundMs
			cell.ExcessMs = round2(cell.P50ms - cell.BoundMs)
			for _, lc := range rep.Cells {
				if lc.Name == cd.name {
					v := round2(lc.Cluster.P50ms - lc.Baseline.P50ms)
					cell.LoopbackOverheadMs = &v
				}
			}
			w.Cells = append(w.Cells, cell)
		}
	}
	if l, err := c.Leader(ctx); err == nil {
		w.LeaderAfter = c.NodeID(l)
		if l != leader {
			w.Notes = append(w.Notes, "the raft leader changed during the run: some samples ran with other entry roles than labelled")
		}
	}
	conns, verr = c.VerifyProxied()
	w.ConnsAfter = conns
	for _, p := range c.Proxies() {
		w.ProxyAccepted = append(w.ProxyAccepted, p.Accepted())
	}
	if verr != nil {
		w.ProxyCheck = verr.Error()
		return verr
	}
	w.ProxyCheck = "ok: every established peer connection of every node crosses a latency proxy"
	return nil
}

// baselineCompute returns the in-process p50 of each sign cell: from the loopback run's
// cells when they ran, otherwise measured now.
func baselineCompute(ctx context.Context, o *options, base *baseline.Baseline, rep *report, log *slog.Logger) (map[string]float64, error) {
	out := map[string]float64{}
	for _, c := range rep.Cells {
		if c.Name == "ecdsa_sign" || c.Name == "ed25519_sign" {
			out[c.Name] = c.Baseline.P50ms
		}
	}
	measure := map[string]op{
		"ecdsa_sign":   func(ctx context.Context) (time.Duration, error) { return base.SignECDSA(ctx, randomDigest()) },
		"ed25519_sign": func(ctx context.Context) (time.Duration, error) { return base.SignEdDSA(ctx, randomMessage(o.msgSize)) },
	}
	for _, name := range []string{"ecdsa_sign", "ed25519_sign"} {
		if _, ok := out[name]; ok {
			continue
		}
		log.Info("in-process compute for the bound", "cell", name, "samples", o.samples)
		var r runResult
		for range o.samples {
			took, err := measure[name](ctx)
			if err != nil {
				return nil, fmt.Errorf("baseline %s: %w", name, err)
			}
			r.lat = append(r.lat, took)
		}
		out[name] = r.summary().P50ms
	}
	return out, nil
}

// print writes the wide-area section of the table, with every term of the bound.
func (w *wanReport) print(out io.Writer) {
	fmt.Fprintf(out, "\nwide-area run: %d nodes, k=%d, one-way delay L = %.0f ms on every link (TCP latency proxies, QUIC off); leader %s\n",
		w.Nodes, w.Threshold, w.OneWayDelayMs, w.Leader)
	fmt.Fprintf(out, "proxy check: %s\n", w.ProxyCheck)
	fmt.Fprintf(out, "%s\n", w.Formula)
	for _, c := range w.Cells {
		fmt.Fprintf(out, "\n%s via the %s (%s): p50 %.1f ms, p95 %.1f ms over %d samples (%d errors)\n", c.Name, c.Entry, c.EntryNode, c.P50ms, c.P95ms, c.Samples, c.Errors)
		tw := tabwriter.NewWriter(out, 2, 0, 2, ' ', 0)
		for _, t := range c.Terms {
			fmt.Fprintf(tw, "  %s\t%d × L\t= %.0f ms\t%s\n", t.Name, t.Hops, t.Ms, t.Why)
		}
		fmt.Fprintf(tw, "  in-process compute C\t\t= %.1f ms\tbaseline p50 of the same ceremony\n", c.ComputeMs)
		tw.Flush()
		fmt.Fprintf(out, "  bound = %d × %.0f ms + %.1f ms = %.1f ms; p50/bound = %.3f (p50 - bound = %+.1f ms); p50 within bound: %s\n",
			c.Hops, w.OneWayDelayMs, c.ComputeMs, c.BoundMs, c.P50OverBound, c.ExcessMs, yesNo(c.WithinBound))
		if c.LoopbackOverheadMs != nil {
			fmt.Fprintf(out, "  for comparison, the same cell on loopback: cluster p50 - baseline p50 = %+.1f ms\n", *c.LoopbackOverheadMs)
		}
	}
	for _, n := range w.Notes {
		fmt.Fprintf(out, "wan note: %s\n", strings.TrimSpace(n))
	}
}
