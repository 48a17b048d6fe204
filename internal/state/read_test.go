package state

import (
	"math"
	"testing"
)

// TestReadsPastTheEnd: cursors at the largest value read nothing (they must not wrap
// around to the start).
func TestReadsPastTheEnd(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	h.activeKey(alice, CurveEd25519)
	for name, n := range map[string]int{
		"users": len(h.f.Users(math.MaxUint64, 10)),
		"audit": func() int { e, _ := h.f.Audit(math.MaxUint64, 10); return len(e) }(),
		"log":   func() int { e, _ := h.f.AccessLog("ak_x", math.MaxUint64, 10); return len(e) }(),
	} {
		if n != 0 {
			t.Errorf("%s after the largest cursor: %d entries", name, n)
		}
	}
	if n := len(h.f.Users(0, 10)); n != 1 {
		t.Fatalf("users: %d", n)
	}
	if e, more := h.f.Audit(0, 1); len(e) != 1 || !more {
		t.Fatalf("audit page: %d entries, more %v", len(e), more)
	}
	keys := h.f.KeysOf(alice, "", 10)
	if len(keys) != 1 || len(h.f.KeysOf(alice, keys[0].ID, 10)) != 0 || len(h.f.KeysOf(alice, keys[0].ID[:len(keys[0].ID)-1], 10)) != 1 {
		t.Fatalf("keys pagination: %d", len(keys))
	}
}
