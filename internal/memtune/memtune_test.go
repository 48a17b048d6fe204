package memtune

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name       string
		live, held uint64
		want       int
	}{
		{"nothing live", 0, 0, MaxPercent},
		{"no Pebble buffers", 30 * mib, 0, MaxPercent},
		{"a quarter Pebble's", 40 * mib, 10 * mib, 75},
		{"half Pebble's", 40 * mib, 20 * mib, 50},
		{"a soak node: 18 of 25 MiB", 25 * mib, 18 * mib, 28},
		{"mostly Pebble's: the floor", 25 * mib, 24 * mib, MinPercent},
		{"held above live (freed after the collection)", 20 * mib, 30 * mib, MinPercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, tc.held); got != tc.want {
				t.Fatalf("Percent(%d, %d) = %d, want %d", tc.live, tc.held, got, tc.want)
			}
		})
	}
}

// TestTunerSetsAndRestores runs the Tuner against the real runtime's live heap with
// Held at its two extremes: everything held sets the floor, then nothing held sets Go's
// default again, and the percent in force before Run is back after it.
func TestTunerSetsAndRestores(t *testing.T) {
	var mu sync.Mutex
	var sets []int
	cur := 100
	var held int64 = 1 << 40
	tu := &Tuner{
		Held:     func() int64 { mu.Lock(); defer mu.Unlock(); return held },
		Interval: 5 * time.Millisecond,
		set: func(p int) int {
			mu.Lock()
			defer mu.Unlock()
			prev := cur
			cur, sets = p, append(sets, p)
			return prev
		},
	}
	runtime.GC() // the live heap is reported from the first collection on
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tu.Run(ctx); close(done) }()
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			c := cur
			mu.Unlock()
			if c == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GOGC %d, want %d", c, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(MinPercent)
	mu.Lock()
	held = 0
	mu.Unlock()
	waitFor(MaxPercent)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if cur != 100 {
		t.Fatalf("GOGC after Run = %d, want the 100 in force before it", cur)
	}
	// The first set records what was in force; then the floor, the default, and the
	// restore at the end.
	want := []int{MaxPercent, MinPercent, MaxPercent, 100}
	if len(sets) != len(want) {
		t.Fatalf("percents set %v, want %v", sets, want)
	}
	for i := range want {
		if sets[i] != want[i] {
			t.Fatalf("percents set %v, want %v", sets, want)
		}
	}
}
