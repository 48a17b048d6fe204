package ceremony

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// TestShareMustMatchTheKey: a node never uses a share whose public key differs from the
// key's public key in its own state (a substituted key, a corrupted or swapped share); it
// refuses, counts it and logs it.
func TestShareMustMatchTheKey(t *testing.T) {
	n := newTestRunner(t, &fakeState{}, nil)
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
	if err := n.shareMismatch.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Fatalf("custos_share_mismatch_total = %v, want 3", got)
	}
}

// TestSessionMarkersPruned: markers of sessions too old to be acted on are deleted;
// recent ones, and ones that cannot be read, are kept.
func TestSessionMarkersPruned(t *testing.T) {
	ks, err := keystore.Open(t.TempDir(), bytes.Repeat([]byte{7}, keystore.MasterKeySize), keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	n := newTestRunner(t, &fakeState{}, ks)
	now := time.Now()
	markers := map[string]string{
		"session-old":     strconv.FormatInt(now.Add(-sessionMarkerRetention-time.Minute).UnixMilli(), 10),
		"session-recent":  strconv.FormatInt(now.Add(-time.Minute).UnixMilli(), 10),
		"session-garbled": "not a stamp",
		"identity-like":   strconv.FormatInt(now.Add(-24*time.Hour).UnixMilli(), 10),
	}
	for k, v := range markers {
		if err := ks.PutMeta(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	n.pruneSessionMarkers()
	for k, keep := range map[string]bool{"session-old": false, "session-recent": true, "session-garbled": true, "identity-like": true} {
		if _, err := ks.GetMeta(k); (err == nil) != keep {
			t.Errorf("%s: kept %v, want %v", k, err == nil, keep)
		}
	}
}
