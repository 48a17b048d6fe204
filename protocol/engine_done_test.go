package protocol

import (
	"testing"
	"time"
)

// TestClosedSessionsAreBounded: finished session ids are remembered for
// ClosedSessionTTL and at most MaxClosedSessions of them, oldest forgotten first.
func TestClosedSessionsAreBounded(t *testing.T) {
	e := NewEngine(EngineConfig{MaxClosedSessions: 3, ClosedSessionTTL: time.Minute})
	defer e.Close()
	now := time.Unix(1_000_000, 0)
	e.now = func() time.Time { return now }
	id := func(b byte) SessionID { return SessionID{b} }
	remembered := func() (out []byte) {
		for b := byte(1); b <= 9; b++ {
			if _, ok := e.done[id(b)]; ok {
				out = append(out, b)
			}
		}
		return out
	}
	steps := []struct {
		name    string
		advance time.Duration
		mark    byte
		want    []byte
	}{
		{"first", 0, 1, []byte{1}},
		{"second", 10 * time.Second, 2, []byte{1, 2}},
		{"third", 10 * time.Second, 3, []byte{1, 2, 3}},
		{"count bound: the oldest goes", 10 * time.Second, 4, []byte{2, 3, 4}},
		{"marked again: nothing changes", 0, 4, []byte{2, 3, 4}},
		{"time bound: 2 and 3 are over a minute old", 55 * time.Second, 5, []byte{4, 5}},
		{"all old", 2 * time.Minute, 6, []byte{6}},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		e.mu.Lock()
		e.markDoneLocked(id(st.mark))
		got := remembered()
		n := len(e.doneOrder)
		e.mu.Unlock()
		if string(got) != string(st.want) || n != len(st.want) {
			t.Fatalf("%s: remembered %v (queue %d), want %v", st.name, got, n, st.want)
		}
	}
}
