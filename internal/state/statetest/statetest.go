// Package statetest opens the replicated state machine (internal/state) over a real
// state database in a test's temporary directory, for the unit tests of the packages
// that read it (httpapi, raftnode). It holds no state of its own.
package statetest

import (
	"log/slog"
	"testing"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
)

// Open opens an FSM in t.TempDir(), closed when the test ends.
func Open(t testing.TB, v state.Verifier, an *authn.Verifier, onEvent func(state.Event)) *state.FSM {
	t.Helper()
	f, err := state.Open(state.Config{Dir: t.TempDir(), Verifier: v, Authn: an, OnEvent: onEvent, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}
