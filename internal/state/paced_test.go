package state

import (
	"bytes"
	"testing"
	"time"
)

// TestPacedWriterHalvesTheDuty: a snapshot stream pauses after every pacedChunk bytes
// for as long as producing them took, and passes every byte on in order.
func TestPacedWriterHalvesTheDuty(t *testing.T) {
	for _, tc := range []struct {
		name       string
		write      int           // bytes per Write
		cost       time.Duration // time each Write takes
		total      int
		wantPauses int
	}{
		{"small writes", 4 << 10, time.Millisecond, 1 << 20, 4},
		{"one chunk a write", pacedChunk, 3 * time.Millisecond, 3 * pacedChunk, 3},
		{"less than a chunk", 1 << 10, time.Millisecond, pacedChunk - 1, 0},
		{"large writes", 3 * pacedChunk, 5 * time.Millisecond, 6 * pacedChunk, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := time.Unix(0, 0)
			var out bytes.Buffer
			var pauses []time.Duration
			p := &pacedWriter{w: &out, since: clock, now: func() time.Time { return clock },
				sleep: func(d time.Duration) { pauses = append(pauses, d); clock = clock.Add(d) }}
			var in []byte
			for len(in) < tc.total {
				b := bytes.Repeat([]byte{byte(len(in))}, min(tc.write, tc.total-len(in)))
				in = append(in, b...)
				clock = clock.Add(tc.cost) // the stream's own work for these bytes
				if n, err := p.Write(b); n != len(b) || err != nil {
					t.Fatalf("write: %d, %v", n, err)
				}
			}
			if !bytes.Equal(out.Bytes(), in) {
				t.Fatal("bytes changed on the way")
			}
			if len(pauses) != tc.wantPauses {
				t.Fatalf("%d pauses, want %d", len(pauses), tc.wantPauses)
			}
			work := time.Duration(len(in)/tc.write) * tc.cost
			var slept time.Duration
			for _, d := range pauses {
				slept += d
			}
			if slept > work || (tc.wantPauses > 0 && slept < work/2) {
				t.Fatalf("slept %v for %v of work", slept, work)
			}
		})
	}
}
