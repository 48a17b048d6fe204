//go:build linux

package chaos

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestChaosShort is the scenario `make test` runs: a 3-node cluster under a steady load of
// signs on both curves and a keygen, through a leader crash, a partitioned leader, a frozen
// follower and failing keystore writes, then every invariant. `make chaos` runs the long
// schedule (cmd/chaos).
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos scenario: several minutes of real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	// Progress logs on request (CHAOS_VERBOSE=1); the summary is always logged.
	lvl := slog.LevelWarn
	if os.Getenv("CHAOS_VERBOSE") != "" {
		lvl = slog.LevelInfo
	}
	rep, err := Run(ctx, Config{
		Faults:   ShortSchedule(),
		Hold:     16 * time.Second,
		Settle:   4 * time.Second,
		Warmup:   10 * time.Second,
		Cooldown: 8 * time.Second,
		Keygens:  1,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if rep.Requests < 50 {
		t.Errorf("only %d requests ran: the load did not load", rep.Requests)
	}
	if len(rep.Faults) != len(ShortSchedule()) {
		t.Errorf("%d faults injected, want %d", len(rep.Faults), len(ShortSchedule()))
	}
	for _, f := range rep.Failures {
		t.Error(f)
	}
}
