//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/custos/custos/test/cluster"
)

// With -phases the nodes log, at debug level, the timings of each sign request's path
// (node/handlers.go, node/runner.go, node/raft.go):
//
//   - "sign timing", on the node the request entered: auth_us (from the request's arrival
//     to the handler: body read, JWT, RFC 9421 signature, rate limit), commit_us (the
//     request entry committed through raft, forwarded to the leader from a follower, and
//     applied on this node) and wait_us (from then until the request settled here);
//   - "ceremony timing", on each committee member: sched_lag_ms (from the schedule's
//     stamp to this node applying it; stamps have millisecond resolution), prep_us
//     (session marker and re-verification), load_us (share read and decoded), mpc_us
//     (the tss-lib ceremony over libp2p) and report_us (the result's commit);
//   - "proposal applied", for every proposal: commit_us (until the leader answered) and
//     apply_wait_us (until this node had applied the entry too).
//
// Each line says whether the node was the leader. The bench reads the node logs of the
// windows in which a cell's cluster operations ran and reports, per event, role and
// field, the median and the 90th percentile.
const (
	msgSignTiming     = "sign timing"
	msgCeremonyTiming = "ceremony timing"
	msgProposal       = "proposal applied"
	// maxLogLine bounds one node log line read by the phase parser.
	maxLogLine = 1 << 20
)

// window is the time span of one cell's cluster operations.
type window struct{ from, to time.Time }

// phaseStat is one timed field of one event, over the requests of a cell.
type phaseStat struct {
	Event string  `json:"event"`
	Role  string  `json:"role"` // leader or follower, plus the proposal type for proposals
	Field string  `json:"field"`
	N     int     `json:"n"`
	P50ms float64 `json:"p50_ms"`
	P90ms float64 `json:"p90_ms"`
}

// collectPhases reads every node's log and summarises the timing lines that fall in
// one of the windows.
func collectPhases(c *cluster.Cluster, windows []window) ([]phaseStat, error) {
	vals := map[[3]string][]float64{}
	for i := range c.N() {
		f, err := os.Open(c.LogPath(i))
		if err != nil {
			return nil, fmt.Errorf("node log: %w", err)
		}
		err = scanPhases(f, windows, vals)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("node log %s: %w", c.LogPath(i), err)
		}
	}
	return summarisePhases(vals), nil
}

// scanPhases adds the timing fields of r's lines inside windows to vals, keyed by event,
// role and field, in milliseconds.
func scanPhases(r io.Reader, windows []window, vals map[[3]string][]float64) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), "timing") && !strings.Contains(string(line), msgProposal) {
			continue
		}
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		if msg != msgSignTiming && msg != msgCeremonyTiming && msg != msgProposal {
			continue
		}
		ts, _ := m["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !inWindows(at, windows) {
			continue
		}
		role := "follower"
		if l, _ := m["leader"].(bool); l {
			role = "leader"
		}
		if typ, ok := m["type"].(string); ok {
			role = typ + " on " + role
		}
		for k, v := range m {
			f, ok := v.(float64)
			if !ok {
				continue
			}
			switch {
			case strings.HasSuffix(k, "_us"):
				f /= 1000
			case strings.HasSuffix(k, "_ms"):
			default:
				continue
			}
			key := [3]string{msg, role, k}
			vals[key] = append(vals[key], f)
		}
	}
	return sc.Err()
}

func inWindows(t time.Time, ws []window) bool {
	for _, w := range ws {
		if !t.Before(w.from) && !t.After(w.to) {
			return true
		}
	}
	return false
}

func summarisePhases(vals map[[3]string][]float64) []phaseStat {
	out := make([]phaseStat, 0, len(vals))
	for k, v := range vals {
		slices.Sort(v)
		out = append(out, phaseStat{Event: k[0], Role: k[1], Field: k[2], N: len(v), P50ms: round2(nearestRank(v, 50)), P90ms: round2(nearestRank(v, 90))})
	}
	order := map[string]int{msgSignTiming: 0, msgCeremonyTiming: 1, msgProposal: 2}
	slices.SortFunc(out, func(a, b phaseStat) int {
		if d := order[a.Event] - order[b.Event]; d != 0 {
			return d
		}
		if d := strings.Compare(a.Role, b.Role); d != 0 {
			return d
		}
		return strings.Compare(a.Field, b.Field)
	})
	return out
}

// nearestRank is the p-th percentile of sorted v by nearest rank.
func nearestRank(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	i := (p*len(v)+99)/100 - 1
	return v[max(0, min(i, len(v)-1))]
}

// printPhases writes a cell's phase breakdown.
func printPhases(w io.Writer, title string, ps []phaseStat) {
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "\nphases of %s (cluster side, from the node logs; ms):\n", title)
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  event\trole\tfield\tn\tp50\tp90")
	for _, p := range ps {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%.2f\t%.2f\n", p.Event, p.Role, p.Field, p.N, p.P50ms, p.P90ms)
	}
	tw.Flush()
}
