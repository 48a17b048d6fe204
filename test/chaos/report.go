//go:build linux

package chaos

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Window is the load's outcome over a span of time.
type Window struct {
	Requests     int     `json:"requests"`
	Succeeded    int     `json:"succeeded"`
	Availability float64 `json:"availability"`
	P50ms        float64 `json:"p50_ms"`
	P95ms        float64 `json:"p95_ms"`
	lat          []time.Duration
}

func (w *Window) add(r *Record) {
	w.Requests++
	if r.Outcome == OutcomeOK {
		w.Succeeded++
		w.lat = append(w.lat, r.End.Sub(r.Start))
	}
}

func (w *Window) finish() {
	if w.Requests > 0 {
		w.Availability = float64(w.Succeeded) / float64(w.Requests)
	}
	slices.Sort(w.lat)
	q := func(p float64) float64 {
		if len(w.lat) == 0 {
			return 0
		}
		return float64(w.lat[min(len(w.lat)-1, int(p*float64(len(w.lat))))].Microseconds()) / 1000
	}
	w.P50ms, w.P95ms = q(0.50), q(0.95)
}

// FaultSummary is one fault and the load's outcome while it lasted.
type FaultSummary struct {
	FaultRecord
	Load Window `json:"load"`
}

// Report is a run's summary.
type Report struct {
	Seed        uint64  `json:"seed"`
	LoadSeconds float64 `json:"load_seconds"`
	// Requests counts logical requests of the signing user (retries inside one);
	// Refused the read-only user's requests, all of which must be refused.
	Requests     int `json:"requests"`
	Acknowledged int `json:"acknowledged"`
	Succeeded    int `json:"succeeded"`
	Refused      int `json:"refused_by_design"`
	// MinorityProbes counts the requests sent to cut-off nodes (all must fail with 503).
	MinorityProbes int            `json:"minority_probes"`
	FailedByCode   map[string]int `json:"failed_by_code"`
	Keygens        int            `json:"keygens"`
	// Resolved counts requests without an answer that were sent again after the run.
	Resolved     int            `json:"resolved_after_run"`
	Awaited      int            `json:"awaited_after_run"`
	NoFault      Window         `json:"no_fault"`
	DuringFaults Window         `json:"during_faults"`
	Recovery     Window         `json:"recovery"`
	Faults       []FaultSummary `json:"faults"`
	Invariants   []Invariant    `json:"invariants"`
	Failures     []string       `json:"failures"`
}

// OK reports whether every invariant held.
func (r *Report) OK() bool { return len(r.Failures) == 0 }

func (h *harness) summarise(recs []*Record) *Report {
	rep := &Report{FailedByCode: map[string]int{}, Resolved: h.resolved, Awaited: h.awaited}
	faults := h.faultsCopy()
	for _, f := range faults {
		rep.Faults = append(rep.Faults, FaultSummary{FaultRecord: f})
	}
	for _, r := range recs {
		if r.Op == OpRefused {
			rep.Refused++
			continue
		}
		if r.Op == OpProbeMinority {
			rep.MinorityProbes++
			continue
		}
		rep.Requests++
		if r.Op == OpKeygen {
			rep.Keygens++
		}
		if r.Ack {
			rep.Acknowledged++
		}
		if r.Outcome == OutcomeOK {
			rep.Succeeded++
		} else {
			rep.FailedByCode[r.Outcome+":"+r.Code]++
		}
		// A request that overlaps a fault (from its start to every node ready again)
		// counts for that fault: started during it, or in flight when it began; one that
		// starts after the heal, before the cluster is whole again, is recovery.
		where := &rep.NoFault
		for i, f := range faults {
			switch {
			case !r.Start.After(f.End) && !r.End.Before(f.Start):
				where = &rep.DuringFaults
				rep.Faults[i].Load.add(r)
			case r.Start.After(f.End) && !r.Start.After(f.Ready) && where == &rep.NoFault:
				where = &rep.Recovery
			}
		}
		where.add(r)
	}
	rep.NoFault.finish()
	rep.DuringFaults.finish()
	rep.Recovery.finish()
	for i := range rep.Faults {
		rep.Faults[i].Load.finish()
	}
	return rep
}

// String is the human summary.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos: seed %d, load %.0f s\n", r.Seed, r.LoadSeconds)
	fmt.Fprintf(&b, "requests %d (keygens %d), acknowledged %d, succeeded %d; read-only user's requests %d (all must be refused); probes of cut-off nodes %d (all must be 503); resent after the run %d, awaited after the run %d\n",
		r.Requests, r.Keygens, r.Acknowledged, r.Succeeded, r.Refused, r.MinorityProbes, r.Resolved, r.Awaited)
	if len(r.FailedByCode) > 0 {
		b.WriteString("failed by code:")
		for _, k := range slices.Sorted(maps.Keys(r.FailedByCode)) {
			fmt.Fprintf(&b, " %s=%d", k, r.FailedByCode[k])
		}
		b.WriteString("\n")
	}
	win := func(name string, w Window) {
		fmt.Fprintf(&b, "%-14s %5d requests  %5.1f%% succeeded  p50 %7.0f ms  p95 %7.0f ms\n", name, w.Requests, 100*w.Availability, w.P50ms, w.P95ms)
	}
	win("no fault", r.NoFault)
	win("during faults", r.DuringFaults)
	win("recovery", r.Recovery)
	for _, f := range r.Faults {
		node := f.Node
		if node == "" {
			node = "all links"
		}
		fmt.Fprintf(&b, "  fault %-20s %-9s %4.0f s, ready %4.1f s after heal: %4d requests %5.1f%% ok p50 %6.0f ms p95 %6.0f ms %s\n",
			f.Kind, node, f.End.Sub(f.Start).Seconds(), f.Ready.Sub(f.End).Seconds(), f.Load.Requests, 100*f.Load.Availability, f.Load.P50ms, f.Load.P95ms, f.Note)
	}
	for _, inv := range r.Invariants {
		mark := "PASS"
		if !inv.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s  %s — %s\n", mark, inv.Name, inv.Detail)
		for _, e := range inv.Errors {
			fmt.Fprintf(&b, "        %s\n", e)
		}
	}
	return b.String()
}
