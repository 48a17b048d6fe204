package node

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/state"
)

// TestShareMustMatchTheKey: a node never uses a share whose public key differs from the
// key's public key in its own state (a substituted key, a corrupted or swapped share); it
// refuses, counts it and logs it.
func TestShareMustMatchTheKey(t *testing.T) {
	n := &Node{met: newMetrics(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	k := &state.Key{ID: "key_1", PublicKey: []byte{2, 1, 2, 3}}
	if err := n.checkSharePublicKey(k, []byte{2, 1, 2, 3}); err != nil {
		t.Fatalf("matching share refused: %v", err)
	}
	for _, pub := range [][]byte{{2, 1, 2, 4}, nil, {3, 1, 2, 3}} {
		if err := n.checkSharePublicKey(k, pub); !errors.Is(err, errShareMismatch) {
			t.Fatalf("share %x: %v", pub, err)
		}
	}
	var m dto.Metric
	if err := n.met.shareMismatch.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Fatalf("custos_share_mismatch_total = %v, want 3", got)
	}
}

func TestCheckpointVerdict(t *testing.T) {
	votes := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name              string
		own               string
		votes             map[string]string
		k                 int
		vouched, diverged bool
	}{
		{"k others agree", "A", votes("n1", "A", "n2", "A", "n3", "A"), 2, true, false},
		{"own vote does not count", "A", votes("n3", "A", "n1", "A"), 2, false, false},
		{"one compromised member agrees with a forged state", "F", votes("n1", "F", "n2", "A", "n3", "F"), 2, false, false},
		{"k others signed another state", "F", votes("n1", "A", "n2", "A", "n3", "F"), 2, false, true},
		{"k-1 others cannot make a node diverge", "A", votes("n1", "B", "n2", "A"), 2, false, false},
		{"no own hash", "", votes("n1", "A", "n2", "A"), 2, false, false},
		{"5 nodes, two colluding", "F", votes("n1", "F", "n2", "F", "n4", "A", "n5", "A"), 3, false, false},
		{"5 nodes, three honest", "A", votes("n1", "F", "n2", "A", "n4", "A", "n5", "A"), 3, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, d := checkpointVerdict(tt.own, tt.votes, "n3", tt.k)
			if v != tt.vouched || d != tt.diverged {
				t.Fatalf("vouched %v diverged %v, want %v %v", v, d, tt.vouched, tt.diverged)
			}
		})
	}
}
