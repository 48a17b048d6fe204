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
