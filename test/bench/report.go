//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos/custos/test/cluster"
)

// report is the JSON file, and the source of the table.
type report struct {
	Timestamp     string        `json:"timestamp"`
	DurationS     float64       `json:"duration_s"`
	GoVersion     string        `json:"go_version"`
	OS            string        `json:"os"`
	Arch          string        `json:"arch"`
	NProc         int           `json:"nproc"`
	GOMAXPROCS    int           `json:"gomaxprocs"`
	CPUModel      string        `json:"cpu_model,omitempty"`
	LoadAvgStart  string        `json:"loadavg_start,omitempty"`
	LoadAvgEnd    string        `json:"loadavg_end,omitempty"`
	Nodes         int           `json:"nodes"`
	Threshold     int           `json:"threshold"`
	Samples       int           `json:"samples"`
	KeygenSamples int           `json:"keygen_samples"`
	PSBTSamples   int           `json:"psbt_samples,omitempty"` // 0: the PSBT cell did not run (-psbt=false or -only)
	Only          []string      `json:"only,omitempty"`         // -only: the cell name prefixes that ran
	Reps          int           `json:"reps"`
	Concurrency   []int         `json:"concurrency"`
	Ed25519MsgLen int           `json:"ed25519_message_bytes"`
	Method        []string      `json:"method"`
	Cluster       *clusterInfo  `json:"cluster,omitempty"`
	Cells         []cellReport  `json:"cells,omitempty"`
	RSS           *rssReport    `json:"rss,omitempty"`
	Targets       []targetState `json:"targets,omitempty"`
	WAN           *wanReport    `json:"wan,omitempty"`
	// Profiles are the CPU profiles of -cpuprofile.
	Profiles []profileReport `json:"profiles,omitempty"`
	Notes    []string        `json:"notes,omitempty"`

	// EventsClients and EventsDurS are the event-stream cell's -events-clients and
	// -events-duration; 0 when it did not run (-events=false or -only).
	EventsClients int     `json:"events_clients,omitempty"`
	EventsDurS    float64 `json:"events_duration_s,omitempty"`

	// ReshareSamples is -reshare-samples; 0 when the reshare cell did not run
	// (-reshare=false or -only). MemberKeys and MemberCurve are the member cell's
	// -member-keys and -member-curve (0 and "" when it did not run), Member its result.
	ReshareSamples int           `json:"reshare_samples,omitempty"`
	MemberKeys     int           `json:"member_keys,omitempty"`
	MemberCurve    string        `json:"member_curve,omitempty"`
	Member         *memberReport `json:"member,omitempty"`
}

type clusterInfo struct {
	Nodes     int    `json:"nodes"`
	Threshold int    `json:"threshold"`
	Binary    string `json:"binary"`
}

// target is one of the goals for a cell.
type target struct {
	Metric string  `json:"metric"`
	Op     string  `json:"op"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
}

func (t *target) check(v float64) {
	switch t.Op {
	case "<=":
		t.Met = v > 0 && v <= t.Value
	case ">=":
		t.Met = v >= t.Value
	}
}

// targetState is a flat list entry of every target, for a quick look.
type targetState struct {
	Name   string  `json:"name"`
	Actual float64 `json:"actual"`
	Op     string  `json:"op"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
}

// cellReport is one cell's result.
type cellReport struct {
	Name          string `json:"name"`
	Title         string `json:"title"`
	Kind          string `json:"kind"`
	Concurrency   int    `json:"concurrency"`
	SamplesPerRep int    `json:"samples_per_rep"`
	// BaselineOp and ClusterOp say what each side measures where the two differ in kind
	// (the PSBT cell).
	BaselineOp string `json:"baseline_op,omitempty"`
	ClusterOp  string `json:"cluster_op,omitempty"`
	Baseline   side   `json:"baseline"`
	Cluster    side   `json:"cluster"`
	// Ratios are cluster/baseline of the medians across repetitions.
	RatioP50        float64 `json:"ratio_p50"`
	RatioP95        float64 `json:"ratio_p95"`
	RatioThroughput float64 `json:"ratio_throughput"`
	Target          *target `json:"target,omitempty"`
	// Phases is the cluster side's sign-path breakdown of -phases, from the nodes'
	// custos_phase_seconds histograms.
	Phases []phaseStat `json:"phases,omitempty"`
	// Events is the event-stream cell's stream figures (events.go).
	Events *eventsReport `json:"events,omitempty"`
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

func newReport(o *options) *report {
	r := &report{
		Timestamp: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		NProc: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPUModel: cpuModel(), LoadAvgStart: loadAvg(),
		Nodes: o.nodes, Threshold: o.k, Samples: o.samples, KeygenSamples: o.keygenSamples, Reps: o.reps, Concurrency: o.conc,
		Ed25519MsgLen: o.msgSize, Only: o.only,
	}
	psbtCell := o.psbt && o.selected(psbtCellName) && !o.wanOnly
	if psbtCell {
		r.PSBTSamples = o.psbtSamples
	}
	evCell := o.events && o.selected(eventsCellName(o))
	if evCell {
		r.EventsClients, r.EventsDurS = o.eventsClients, o.eventsDuration.Seconds()
	}
	reshareCell := o.reshare && o.selected(reshareCellName) && !o.wanOnly
	if reshareCell {
		r.ReshareSamples = o.reshareSamples
	}
	memberCell := o.runsMember()
	if memberCell {
		r.MemberKeys, r.MemberCurve = o.memberKeys, o.memberCurve
	}
	r.Method = []string{
		"baseline: tss-lib v2.0.2 parties in this one process; one inbox goroutine per party (Start, then UpdateFromBytes in order), out channels drained by their own goroutines, every message serialised with WireBytes and parsed again; signers = k random parties with BuildLocalSaveDataSubset; keygen with ready fixture pre-parameters",
		"cluster: real custosd processes on loopback (test/cluster, internal/devcluster dev configs, pre-parameter pool warm from fixtures), called through node/client as one user: every request carries the user JWT and an RFC 9421 signature; signs go to a random node; per-caller rate limit off",
		"ECDSA signs a random 32-byte digest; Ed25519 a random message of ed25519_message_bytes; signatures are verified outside the timed part",
		"latency cells: samples one at a time, baseline and cluster alternating sample by sample; throughput cells: conc operations in flight (conc workers), max(samples, 4*conc) operations per run, baseline and cluster runs alternating in order from one repetition to the next",
		"every figure is the median over the repetitions of that repetition's p50 / p95 (nearest rank) / throughput; ratio = cluster / baseline",
		fmt.Sprintf("psbt cell: cluster = SignPSBT of a fresh %d-input regtest PSBT (every input P2WPKH, paying the key's child m/0/i, with synthetic previous transactions spending random outpoints, so no two samples share a txid or sighash), from the call until the request is signed, the finalized PSBT checked with btcd's script engine outside the timed part; baseline = %d in-process ECDSA signs (the ECDSA cells' engine) of different random digests started at once, wall time until the last is done; a latency cell (alternated sample by sample), ratio = cluster / baseline of the p50", psbtInputs, psbtInputs),
		fmt.Sprintf("events cell: Ed25519 signs (the bench's Ed25519 key, a random node each, throughput cells' concurrency: %d) for events_duration_s without any event stream (baseline) and with events_clients GET /v1/events Server-Sent-Event streams open (SDK Events; stream i on node (i/2) mod n, even i as the admin, odd i as the signing user; opened after the log's head and checked live with a marker sign before the clock starts), the two runs alternating in order from one repetition to the next; rate = signs completed / wall time; lag = a request.signed event's arrival on a stream - the return of its signing call in the bench (negative when the stream was first), over every stream and sign; missing = signs whose request.signed a stream had not delivered %v after the run", eventsConc(o), eventsDrainTimeout),
		fmt.Sprintf("reshare cell: cluster = the admin's RefreshKey (POST /v1/admin/keys/{key_id}/refresh, through a random node) of a secp256k1 key made for the cell, the same members and threshold, from the call until the reshare request is active (a 202 polled with WaitRequest every %v), the answer's key checked (same public key and members, a later generation) outside the timed part; baseline = protocol/baseline ReshareECDSA: the n old and n new tss-lib parties of the same n and k in this process (party keys of generation 0 → 1, new parties on fixture pre-parameters), until the last new share; a latency cell (alternated sample by sample, one unmeasured warm-up of each side), ratio = cluster / baseline of the p50", pollInterval),
		fmt.Sprintf("member cell (once, no baseline): a cluster of its own (the shared one's size and threshold, torn down at the end) gets member_keys keys of member_curve (%d keygens at once), then one more node started with cluster.join (test/cluster AddNode) added with the admin's AddMember; the change request is polled every %v (progress on stderr); total = AddMember call → the poll that saw it active, joining = → the first poll in another phase (both up to one poll late), keys/s = keys reshared / the resharing phase; at the end a user's GetKey of every key must list the new node (same public key, no reshare running) and GET /v1/admin/members must list it active", memberCreateConc, memberPoll),
		"rss: VmHWM of every node, reset (clear_refs 5) just before the cluster run of the highest-concurrency cell and read right after it; max over repetitions",
	}
	if o.keygenSamples > 0 && o.keygenSamples < 30 && o.selected("ecdsa_keygen") {
		r.Notes = append(r.Notes, fmt.Sprintf("ECDSA keygen takes seconds per sample on this machine: its cell uses %d samples per side per repetition (-keygen-samples), not 30", o.keygenSamples))
	}
	if o.samples < 30 {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d samples per cell (-samples): below the 30 the method asks for", o.samples))
	}
	if o.phases {
		r.Notes = append(r.Notes, "-phases: each cell's phases are what the nodes' custos_phase_seconds histograms gained between scrapes of GET /metrics at the start and at the end of each repetition, over every node; p50 and p90 are interpolated inside buckets whose bounds are a factor of about 1.4 apart (Prometheus's histogram_quantile), the mean is exact")
	}
	if psbtCell {
		r.Notes = append(r.Notes, fmt.Sprintf("PSBT cell: %d samples per side per repetition (-psbt-samples); its in-process side signs with the baseline's root key (protocol/baseline has no child derivation), the cluster's with the children m/0/0..m/0/%d (tss-lib's key-derivation delta: a scalar and a few point additions per ceremony)", o.psbtSamples, psbtInputs-1))
	}
	if evCell {
		r.Notes = append(r.Notes, fmt.Sprintf("events cell (%s): its baseline is the cluster itself without event streams (there is no Ed25519 throughput cell to reuse: those sign ECDSA, a fixed number of operations), run for the same %v at the same concurrency; its ratio = signs/s with %d streams / without; baseline_window_spread is how much the baseline's rate moves across %d windows of its own run, the yardstick for 'within noise'; the streams' consumers run in the bench process, on the same CPUs as the nodes", eventsCellName(o), o.eventsDuration, o.eventsClients, eventsWindows))
	}
	if reshareCell && o.reshareSamples < 30 {
		r.Notes = append(r.Notes, fmt.Sprintf("reshare cell: a reshare takes seconds per sample: %d samples per side per repetition (-reshare-samples), not 30", o.reshareSamples))
	}
	if memberCell {
		r.Notes = append(r.Notes, fmt.Sprintf("%s runs once (not -reps times) and has no baseline: tss-lib has no membership change to compare with", memberCellName(o)))
	}
	if len(o.only) > 0 {
		r.Notes = append(r.Notes, "-only "+strings.Join(o.only, ",")+": only the cells whose names start with these ran (an entry that is the whole name of "+strings.Join(exactOnlyNames(), ", ")+" selects that cell alone)")
	}
	if o.reps < 3 {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d repetition(s) (-reps): the method asks for the median of 3", o.reps))
	}
	return r
}

func (r *report) addCell(d cellDef, b, c side) {
	cr := cellReport{Name: d.name, Title: d.title, Kind: d.kind, Concurrency: d.conc, SamplesPerRep: d.samples, BaselineOp: d.baseOp, ClusterOp: d.cluOp, Baseline: b, Cluster: c,
		RatioP50: ratio(c.P50ms, b.P50ms), RatioP95: ratio(c.P95ms, b.P95ms), RatioThroughput: ratio(c.Throughput, b.Throughput)}
	if d.target != nil {
		t := *d.target
		v := cr.RatioP50
		if t.Metric == "ratio_throughput" {
			v = cr.RatioThroughput
		}
		t.check(v)
		cr.Target = &t
		r.Targets = append(r.Targets, targetState{Name: d.name + "." + t.Metric, Actual: v, Op: t.Op, Value: t.Value, Met: t.Met})
	}
	r.Cells = append(r.Cells, cr)
}

func (r *report) finish(began time.Time) {
	r.DurationS = round2(time.Since(began).Seconds())
	r.LoadAvgEnd = loadAvg()
	if r.RSS != nil {
		r.Targets = append(r.Targets, targetState{Name: "node_vmhwm_max_bytes", Actual: float64(r.RSS.MaxBytes), Op: "<=", Value: targetRSSBytes, Met: r.RSS.Met})
	}
}

// rssReport is the nodes' peak RSS under the highest-concurrency load.
type rssReport struct {
	Concurrency int         `json:"concurrency"`
	PeakReset   bool        `json:"peak_reset"`
	Nodes       []nodeRSS   `json:"nodes"`
	Reps        [][]nodeRSS `json:"reps"`
	MaxBytes    int64       `json:"max_bytes"`
	TargetBytes int64       `json:"target_bytes"`
	Met         bool        `json:"met"`
}

type nodeRSS struct {
	Node      string `json:"node"`
	VmHWM     int64  `json:"vmhwm_bytes"`
	PeakReset bool   `json:"peak_reset"`
}

// add records one repetition's VmHWM of every node (before holds the pids whose peak
// was reset, 0 where it was not).
func (s *rssReport) add(c *cluster.Cluster, conc int, before []int, log *slog.Logger) *rssReport {
	if s == nil {
		s = &rssReport{Concurrency: conc, PeakReset: true, TargetBytes: targetRSSBytes}
	}
	var rep []nodeRSS
	for i := range c.N() {
		v, err := c.VmHWM(i)
		if err != nil {
			log.Warn("cannot read VmHWM", "node", c.NodeID(i), "err", err)
			continue
		}
		reset := before[i] != 0 && before[i] == c.PID(i)
		s.PeakReset = s.PeakReset && reset
		rep = append(rep, nodeRSS{Node: c.NodeID(i), VmHWM: v, PeakReset: reset})
	}
	s.Reps = append(s.Reps, rep)
	return s
}

func (s *rssReport) finish() *rssReport {
	if s == nil {
		return nil
	}
	peak := map[string]nodeRSS{}
	var order []string
	for _, rep := range s.Reps {
		for _, n := range rep {
			p, seen := peak[n.Node]
			if !seen {
				order = append(order, n.Node)
			}
			if !seen || n.VmHWM > p.VmHWM {
				peak[n.Node] = n
			}
		}
	}
	s.Nodes = nil
	for _, id := range order {
		s.Nodes = append(s.Nodes, peak[id])
		s.MaxBytes = max(s.MaxBytes, peak[id].VmHWM)
	}
	s.Met = s.MaxBytes > 0 && s.MaxBytes <= s.TargetBytes
	return s
}

func mib(b int64) float64 { return round2(float64(b) / (1 << 20)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// printTable writes the human summary.
func (r *report) printTable(w io.Writer) {
	fmt.Fprintf(w, "\ncustos bench — %d nodes, k=%d, %d CPUs (GOMAXPROCS %d), %s, %s\n", r.Nodes, r.Threshold, r.NProc, r.GOMAXPROCS, r.GoVersion, r.Timestamp)
	if r.CPUModel != "" {
		fmt.Fprintf(w, "cpu: %s; load average at start %s, at end %s\n", r.CPUModel, r.LoadAvgStart, r.LoadAvgEnd)
	}
	if len(r.Cells) > 0 {
		fmt.Fprintf(w, "samples per cell and side per repetition: %d (keygen %d); repetitions: %d (figures = median of the repetitions)\n\n", r.Samples, r.KeygenSamples, r.Reps)
		tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "cell\tn\tbaseline p50 ms\tp95 ms\t/s\tcluster p50 ms\tp95 ms\t/s\tratio\ttarget\tmet\terrors\t")
		for _, c := range r.Cells {
			ratioV, tgt, met := c.RatioP50, "", ""
			if c.Kind == kindThroughput {
				ratioV = c.RatioThroughput
			}
			if c.Target != nil {
				tgt = fmt.Sprintf("%s %.2f", c.Target.Op, c.Target.Value)
				met = yesNo(c.Target.Met)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%.2f\t%.3f\t%s\t%s\t%d\t\n", c.Title, c.SamplesPerRep,
				c.Baseline.P50ms, c.Baseline.P95ms, c.Baseline.Throughput, c.Cluster.P50ms, c.Cluster.P95ms, c.Cluster.Throughput,
				ratioV, tgt, met, c.Baseline.Errors+c.Cluster.Errors)
		}
		tw.Flush()
		fmt.Fprintln(w, "ratio = cluster/baseline: of p50 latency for latency cells, of throughput (/s) for throughput cells")
		for _, c := range r.Cells {
			if c.BaselineOp != "" || c.ClusterOp != "" {
				fmt.Fprintf(w, "%s: baseline = %s; cluster = %s\n", c.Title, c.BaselineOp, c.ClusterOp)
			}
		}
	}
	if r.RSS != nil {
		var parts []string
		for _, n := range r.RSS.Nodes {
			parts = append(parts, fmt.Sprintf("%s %.1f MiB", n.Node, mib(n.VmHWM)))
		}
		how := "peak reset just before the load"
		if !r.RSS.PeakReset {
			how = "peak since node start (reset not possible)"
		}
		fmt.Fprintf(w, "node VmHWM under c=%d load (%s): %s; max %.1f MiB, target <= %.0f MiB: %s\n", r.RSS.Concurrency, how,
			strings.Join(parts, ", "), mib(r.RSS.MaxBytes), mib(r.RSS.TargetBytes), yesNo(r.RSS.Met))
	}
	for _, c := range r.Cells {
		if c.Events != nil {
			c.Events.print(w, c.Title, c.RatioThroughput)
		}
	}
	for _, c := range r.Cells {
		printPhases(w, c.Title, c.Phases)
	}
	if r.Member != nil {
		r.Member.print(w)
	}
	printProfiles(w, r.Profiles)
	if r.WAN != nil {
		r.WAN.print(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "total time %.0f s\n", r.DurationS)
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	fs := strings.Fields(string(b))
	if len(fs) < 3 {
		return ""
	}
	return strings.Join(fs[:3], " ")
}
