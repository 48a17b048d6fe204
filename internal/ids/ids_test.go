package ids

import (
	"encoding/hex"
	"testing"
	"time"
)

func TestIDs(t *testing.T) {
	base := time.UnixMilli(1_764_000_000_000)
	tests := []struct {
		name   string
		t      time.Time
		prefix string // the id's first 12 hex characters
	}{
		{"now-ish", base, "019ab697e800"},
		{"one millisecond later", base.Add(time.Millisecond), "019ab697e801"},
		{"before 1970", time.UnixMilli(-5), "000000000000"},
		{"epoch", time.UnixMilli(0), "000000000000"},
		{"far future", time.UnixMilli(1 << 50), "ffffffffffff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := At(tc.t)
			if len(id) != Len {
				t.Fatalf("At(%v) = %q: %d characters, want %d", tc.t, id, len(id), Len)
			}
			if _, err := hex.DecodeString(id); err != nil {
				t.Fatalf("At(%v) = %q: not hex: %v", tc.t, id, err)
			}
			if id[:12] != tc.prefix {
				t.Errorf("At(%v) = %q, want it to start with %s", tc.t, id, tc.prefix)
			}
		})
	}
}

// TestIDsSortByTimeAndDiffer: ids made later sort after, and ids made in the same
// millisecond differ (their random part).
func TestIDsSortByTimeAndDiffer(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		id := At(time.UnixMilli(1_764_000_000_000 + int64(i/10)))
		if seen[id] {
			t.Fatalf("id %s made twice", id)
		}
		seen[id] = true
		if i%10 == 0 && id <= prev {
			t.Fatalf("id %s made after %s sorts before it", id, prev)
		}
		prev = max(prev, id)
	}
	if New() <= At(time.UnixMilli(1_764_000_000_000)) {
		t.Error("New() sorts before an id of 2025")
	}
}
