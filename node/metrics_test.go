package node

import (
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
)

// custos_db_memory_bytes has the four series, from the real state database and keystore,
// and leaves out a database that is closed.
func TestDBMemoryCollector(t *testing.T) {
	n, _ := controlNode(t)
	st, err := state.Open(state.Config{Dir: filepath.Join(n.cfg.DataDir, "state"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newDBMemoryCollector(st, n.ks))
	series := func() []string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var l []string
				for _, p := range m.GetLabel() {
					l = append(l, p.GetName()+"="+p.GetValue())
				}
				out = append(out, mf.GetName()+"{"+strings.Join(l, ",")+"}")
			}
		}
		return out
	}
	want := []string{
		"custos_db_memory_bytes{db=keystore,kind=block_cache}", "custos_db_memory_bytes{db=keystore,kind=memtables}",
		"custos_db_memory_bytes{db=state,kind=block_cache}", "custos_db_memory_bytes{db=state,kind=memtables}",
	}
	if got := series(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", got, want)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if got := series(); strings.Join(got, " ") != strings.Join(want[:2], " ") {
		t.Fatalf("after the state closed: %v, want the keystore's two", got)
	}
}

// The registry exports the live heap (what the last collection kept) beside the Go
// runtime's sawtoothed in-use figure and the process's RSS: make soak reads the three to
// tell memory that grows with history from the collector's headroom.
func TestMetricsExportLiveHeap(t *testing.T) {
	runtime.GC() // so that the runtime has a live heap figure to give
	mfs, err := newMetrics().reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if m := mf.GetMetric(); len(m) == 1 && m[0].GetGauge() != nil {
			got[mf.GetName()] = m[0].GetGauge().GetValue()
		}
	}
	for _, name := range []string{"go_gc_heap_live_bytes", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want a positive gauge", name, got[name])
		}
	}
	if live, inuse := got["go_gc_heap_live_bytes"], got["go_memstats_heap_inuse_bytes"]; live > inuse {
		t.Errorf("live heap %v above the heap in use %v", live, inuse)
	}
}
