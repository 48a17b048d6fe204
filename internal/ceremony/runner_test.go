package ceremony

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"sync"
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

// TestReconcileOnlyWhenKeysChange: the reconcile loop goes over the keys at its first
// pass (erasing a failed key's share), not again while no key changes (the cluster only
// signs), and again once one does (another key fails).
func TestReconcileOnlyWhenKeysChange(t *testing.T) {
	st := &fakeState{}
	ks := openStore(t)
	st.put(&state.Key{ID: "key_live", Status: state.KeyActive, Members: []string{"n1", "n2", "n3"}}, nil)
	st.put(&state.Key{ID: "key_failed", Status: state.KeyFailed, Members: []string{"n1", "n2", "n3"}}, nil)
	for _, id := range []string{"key_live", "key_failed", "key_failed_later"} {
		if err := ks.PutShare(id, []byte("share of "+id)); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRunner(t, st, ks)
	r.Start()
	scans := func() int {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.scans
	}
	erasedShare := func(id string) bool {
		ok, err := ks.HasShare(id)
		return err == nil && !ok
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s (%d scans)", what, scans())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the failed key's share erased", func() bool { return erasedShare("key_failed") })
	first := scans()
	time.Sleep(5 * time.Second) // two passes of the loop
	if got := scans(); got != first {
		t.Fatalf("the keys were gone over %d more times while none changed", got-first)
	}
	if erasedShare("key_live") {
		t.Fatal("the live key's share was erased")
	}
	st.put(&state.Key{ID: "key_failed_later", Status: state.KeyFailed, Members: []string{"n1", "n2", "n3"}}, nil)
	waitFor("the share of the key that failed later erased", func() bool { return erasedShare("key_failed_later") })
}

// TestSharesKeptWhileStateInDoubt mounts a compromised leader's forged snapshot that calls
// this node's keys failed, deleted or reshared away: while the node's state is in doubt
// (not yet vouched for, diverged, a backup's restore guard) it erases, replaces and drops
// no share — neither on the events nor in the reconcile loop — and does all of it once
// its state is trusted again.
func TestSharesKeptWhileStateInDoubt(t *testing.T) {
	st := &fakeState{}
	ks := openStore(t)
	st.put(&state.Key{ID: "key_deleted", Status: state.KeyDeleted, Members: []string{"n1", "n2", "n3"}}, nil)
	st.put(&state.Key{ID: "key_failed", Status: state.KeyFailed, Members: []string{"n1", "n2", "n3"}}, nil)
	st.put(&state.Key{ID: "key_away", Status: state.KeyActive, Generation: 1, Members: []string{"n2", "n3", "n4"}}, nil)
	stale := pendingShareID("key_deleted", 3)
	for _, id := range []string{"key_deleted", "key_failed", "key_away", stale} {
		if err := ks.PutShare(id, []byte("share of "+id)); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRunner(t, st, ks)
	var mu sync.Mutex
	why := "state restored from a snapshot at index 200 is not yet vouched for"
	r.blocked = func() string {
		mu.Lock()
		defer mu.Unlock()
		return why
	}
	has := func(id string) bool {
		ok, err := ks.HasShare(id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	r.KeyDeleted("key_deleted")
	r.KeyFailed("key_failed")
	r.Reshared("key_away")
	r.ReshareFailed("key_deleted")
	r.Start()
	time.Sleep(5 * time.Second) // two passes of the reconcile loop
	for _, id := range []string{"key_deleted", "key_failed", "key_away", stale} {
		if !has(id) {
			t.Fatalf("the share %s was erased while the node's state was in doubt", id)
		}
	}
	mu.Lock()
	why = ""
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range []string{"key_deleted", "key_failed", "key_away", stale} {
		for has(id) {
			if time.Now().After(deadline) {
				t.Fatalf("the share %s was not erased once the state was trusted", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
