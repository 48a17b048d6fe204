package freeport

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePortsBelowTheEphemeralRange(t *testing.T) {
	ports, err := Pick(8)
	if err != nil {
		t.Fatal(err)
	}
	low := ephemeralLow()
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p < 20000 || p >= low {
			t.Fatalf("port %d (ephemeral range starts at %d), all %v", p, low, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
