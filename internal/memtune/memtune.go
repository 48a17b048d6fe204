// Package memtune sets the Go collector's headroom of a custosd process so that memory
// which is not garbage does not cost twice its size.
//
// custosd is built without cgo, so Pebble allocates its block caches and memtables on the
// Go heap (a cgo build put them in C malloc arenas, which kept what Pebble freed and grew
// a node's resident memory without bound). Those buffers are bounded by their options
// and released by Pebble on its own schedule, yet the collector's default target
// (GOGC=100: collect when the heap reaches twice what the last collection kept) lets
// the heap grow by their size again before each collection. A node whose live heap is
// 25 MiB, 18 of it Pebble's, then held about 55 MiB of heap instead of the 32 a cgo build
// would: its resident memory followed every MiB its caches filled by two (make soak).
//
// The Tuner sets GOGC so that the headroom is what GOGC=100 gives the rest of the live
// heap: percent = 100 × (live − Pebble's) / live, never below MinPercent (a floor that
// bounds how often the collector runs when little besides Pebble is live) and never
// above 100. An operator who sets GOGC in the environment keeps it: the Tuner is then
// not run.
package memtune

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// MinPercent is the lowest GOGC the Tuner sets: the collector then runs each time the
	// heap grows by a quarter of what is live. Its marking cost is what is live outside
	// Pebble's buffers (they hold no pointers and are not scanned), so the floor bounds
	// the number of collections, not their size.
	MinPercent = 25
	// MaxPercent is Go's default, kept when Pebble holds nothing.
	MaxPercent = 100
	// hysteresis: a new percent is set only when it differs by at least this much from
	// the one in force (setting it takes the heap lock and recomputes the collector's
	// pacing, which allocations wait behind).
	hysteresis = 5
)

// Percent is the GOGC that gives the live heap outside held (Pebble's buffers) the
// headroom GOGC=100 would, within [MinPercent, MaxPercent]. live is what the last
// collection kept; held may exceed it briefly (a memtable freed after the collection).
func Percent(live, held uint64) int {
	if live == 0 || held == 0 {
		return MaxPercent
	}
	other := live - min(held, live)
	p := int(other * 100 / live)
	return max(MinPercent, min(MaxPercent, p))
}

// Tuner adjusts GOGC every Interval from the live heap and Held.
type Tuner struct {
	// Held reports the bytes of the Go heap that are bounded buffers, not garbage to be
	// (Pebble's block caches and memtables).
	Held func() int64
	// Interval between adjustments (0: 10 s).
	Interval time.Duration
	Logger   *slog.Logger
	// set applies a percent and returns the previous one (debug.SetGCPercent; replaced
	// in tests).
	set func(int) int
}

// Run adjusts GOGC until ctx ends, then restores the percent in force when it began.
func (t *Tuner) Run(ctx context.Context) {
	set := t.set
	if set == nil {
		set = debug.SetGCPercent
	}
	every := t.Interval
	if every <= 0 {
		every = 10 * time.Second
	}
	log := t.Logger
	if log == nil {
		log = slog.Default()
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	initial := set(MaxPercent)
	cur := MaxPercent
	defer set(initial)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			log.Warn("memory tuning stopped: the runtime does not report the live heap")
			return
		}
		live, held := sample[0].Value.Uint64(), t.Held()
		p := Percent(live, uint64(max(held, 0)))
		if p == cur || (abs(p-cur) < hysteresis && p != MinPercent && p != MaxPercent) {
			continue
		}
		set(p)
		log.Debug("collector headroom adjusted", "gogc", p, "previous", cur, "live_heap_bytes", live, "pebble_bytes", held)
		cur = p
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
