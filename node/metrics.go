package node

import (
	"context"
	"regexp"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// metrics are the node's Prometheus registry (its own, no globals) and the collectors
// the node itself updates; each component registers its own in the same registry.
type metrics struct {
	reg      *prometheus.Registry
	dropped  *prometheus.CounterVec
	phases   *prometheus.HistogramVec
	poolSize prometheus.Gauge
	// poolGenerated and inlinePreParams count the pool's work (its hooks).
	poolGenerated   prometheus.Counter
	inlinePreParams prometheus.Counter
	raftState       *prometheus.GaugeVec
	peers           prometheus.Gauge
	applied         prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg:     prometheus.NewRegistry(),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "custos_p2p_dropped_messages_total", Help: "Ceremony messages dropped, by reason."}, []string{"reason"}),
		// The phases of a request's path, where its time goes: on the entry node
		// (event sign_request: auth, commit, wait), on each committee member (event
		// ceremony: sched_lag, prep, load, mpc, report) and for every proposal
		// (event proposal:<entry type>: commit, apply_wait); role is leader or follower.
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "custos_phase_seconds", Help: "Durations of the phases of a request's path on this node, by event, phase and this node's raft role.",
			Buckets: prometheus.ExponentialBucketsRange(0.00005, 30, 40)}, []string{"event", "phase", "role"}),
		poolSize:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_preparams_pool_size", Help: "ECDSA pre-parameter sets ready."}),
		poolGenerated:   prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_preparams_generated_total", Help: "Pre-parameter sets generated in the background."}),
		inlinePreParams: prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_preparams_inline_total", Help: "Keygens that had to generate pre-parameters inline."}),
		raftState:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "custos_raft_state", Help: "1 for this node's current raft state."}, []string{"state"}),
		peers:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_p2p_peers", Help: "Connected cluster peers."}),
		applied:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_raft_applied_index", Help: "Last applied raft index."}),
	}
	// Go runtime (go_goroutines, memory) and process (process_open_fds, RSS) figures, for
	// leak and load monitoring. go_gc_heap_live_bytes is the heap the last collection
	// kept: unlike go_memstats_heap_inuse_bytes, which saws up to twice it between
	// collections (GOGC=100), it shows a node's memory growing, or not, with history.
	m.reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.dropped, m.phases, m.poolSize, m.poolGenerated, m.inlinePreParams, m.raftState, m.peers, m.applied)
	return m
}

func (n *Node) metricsLoop(ctx context.Context) {
	every(ctx, 2*time.Second, func() bool {
		cur := n.raft.State()
		for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
			v := 0.0
			if s == cur {
				v = 1
			}
			n.met.raftState.WithLabelValues(s.String()).Set(v)
		}
		n.met.peers.Set(float64(len(n.host.Peers())))
		n.met.applied.Set(float64(n.fsm.AppliedIndex()))
		n.met.poolSize.Set(float64(n.pool.Size()))
		return true
	})
}

// dbMemoryCollector exports what the node's two Pebble databases hold in their block
// caches and memtables, both bounded by their options, as custos_db_memory_bytes{db,kind}:
// with go_memstats (which counts them too in custosd's pure-Go build) they show where the
// process's resident memory is, and that it levels off as history grows. Each database's
// figures are read once per scrape.
type dbMemoryCollector struct {
	st   *state.FSM
	ks   *keystore.Store
	desc *prometheus.Desc
}

func newDBMemoryCollector(st *state.FSM, ks *keystore.Store) *dbMemoryCollector {
	return &dbMemoryCollector{st: st, ks: ks, desc: prometheus.NewDesc("custos_db_memory_bytes",
		"Memory a Pebble database holds in its block cache and memtables (on the Go heap in the pure-Go build), by database (state, keystore) and kind (block_cache, memtables).",
		[]string{"db", "kind"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *dbMemoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector; a database that cannot answer (closed,
// failed) is left out of the scrape.
func (c *dbMemoryCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(db string, cache, mem int64) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cache), db, "block_cache")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(mem), db, "memtables")
	}
	if m, err := c.st.DBMemory(); err == nil {
		emit("state", m.BlockCache, m.MemTables)
	}
	if cache, mem, err := c.ks.Memory(); err == nil {
		emit("keystore", cache, mem)
	}
}

// PebbleMemory is what the node's two Pebble databases hold in block caches and
// memtables: bounded buffers on the Go heap in custosd's pure-Go build, which the
// process's collector tuning (internal/memtune) keeps from counting as garbage to be.
// A database that cannot answer counts as 0.
func (n *Node) PebbleMemory() int64 {
	var total int64
	if m, err := n.fsm.DBMemory(); err == nil {
		total += m.BlockCache + m.MemTables
	}
	if cache, mem, err := n.ks.Memory(); err == nil {
		total += cache + mem
	}
	return total
}

// p2pCollector exports the p2p host's own counters (p2p.Stats) at scrape time: what the
// transport refused or cut before a frame ever reached the ceremony engine.
type p2pCollector struct {
	host                                         *p2p.Host
	connsRefused, streamsRefused, streamsDropped *prometheus.Desc
	oversizeIn, framesDropped                    *prometheus.Desc
}

func newP2PCollector(h *p2p.Host) *p2pCollector {
	return &p2pCollector{
		host:           h,
		connsRefused:   prometheus.NewDesc("custos_p2p_connections_refused_total", "Connections the gater refused because the peer is not a cluster member.", nil, nil),
		streamsRefused: prometheus.NewDesc("custos_p2p_streams_refused_total", "Inbound streams reset because the peer is not (or no longer) a member.", nil, nil),
		streamsDropped: prometheus.NewDesc("custos_p2p_streams_dropped_total", "Inbound streams reset for another reason: truncated or stalled frames, malformed RPC requests, raft streams while raft is down.", nil, nil),
		oversizeIn:     prometheus.NewDesc("custos_p2p_frames_oversize_total", "Inbound ceremony frames announced above the frame size limit (stream reset).", nil, nil),
		framesDropped:  prometheus.NewDesc("custos_p2p_frames_unhandled_total", "Ceremony frames received while no handler was installed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *p2pCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connsRefused
	ch <- c.streamsRefused
	ch <- c.streamsDropped
	ch <- c.oversizeIn
	ch <- c.framesDropped
}

// Collect implements prometheus.Collector.
func (c *p2pCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.host.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		v uint64
	}{{c.connsRefused, s.ConnsRefused}, {c.streamsRefused, s.StreamsRefused}, {c.streamsDropped, s.StreamsDropped}, {c.oversizeIn, s.FramesOversizeIn}, {c.framesDropped, s.FramesDropped}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}
