package raftnode

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// restoreFSM records the snapshots restored into it.
type restoreFSM struct {
	raft.FSM
	restored []string
}

func (f *restoreFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	f.restored = append(f.restored, string(b))
	return err
}

// snapshotAt stores a snapshot with body at index.
func snapshotAt(t *testing.T, s raft.SnapshotStore, index uint64, body string) {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartWithStateDatabase: at start, the newest snapshot is restored only into a state
// database behind it, and a database ahead of everything raft holds is refused.
func TestStartWithStateDatabase(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name     string
		snapshot uint64 // 0: none
		lastLog  uint64
		applied  uint64
		restore  bool
		refused  bool
	}{
		{"fresh node", 0, 0, 0, false, false},
		{"database holds the log's prefix", 100, 150, 120, false, false},
		{"database at the snapshot", 100, 150, 100, false, false},
		{"database behind the snapshot (upgrade, lost tail)", 100, 150, 0, true, false},
		{"database ahead of the log", 0, 50, 80, false, true},
		{"database ahead of log and snapshot", 100, 120, 130, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snaps := raft.NewInmemSnapshotStore()
			if tc.snapshot != 0 {
				snapshotAt(t, snaps, tc.snapshot, "snap")
			}
			logs := raft.NewInmemStore()
			if tc.lastLog != 0 {
				if err := logs.StoreLog(&raft.Log{Index: tc.lastLog, Term: 1}); err != nil {
					t.Fatal(err)
				}
			}
			err := checkStateNotAhead(logs, snaps, tc.applied)
			if (err != nil) != tc.refused {
				t.Fatalf("refused: %v, want %v", err, tc.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "move both") {
				t.Fatalf("the refusal does not say what to do: %v", err)
			}
			if tc.refused {
				return
			}
			f := &restoreFSM{}
			if err := restoreIfBehind(snaps, logs, f, tc.applied, log); err != nil {
				t.Fatal(err)
			}
			if got := len(f.restored) == 1; got != tc.restore {
				t.Fatalf("restored %d snapshots, want restore %v", len(f.restored), tc.restore)
			}
		})
	}
}
