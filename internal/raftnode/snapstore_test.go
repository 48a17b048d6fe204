package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/state/statetest"
	"github.com/custos/custos/internal/statedb"
)

// fakeStreamer streams a checkpoint as the contents of its file "body" (the test's
// checkpoints are a directory with one file), counting the streams made.
type fakeStreamer struct {
	made   int
	during func() // runs while a stream is made
}

func (f *fakeStreamer) StreamCheckpoint(dir string, w io.Writer) (int64, uint64, error) {
	f.made++
	if f.during != nil {
		f.during()
	}
	b, err := os.ReadFile(filepath.Join(dir, "body"))
	if err != nil {
		return 0, 0, err
	}
	var idx uint64
	if _, err := fmt.Sscanf(string(b), "state at %d", &idx); err != nil {
		return 0, 0, err
	}
	n, err := w.Write(b)
	return int64(n), idx, err
}

func openStore(t *testing.T, dir string, st CheckpointStreamer) *snapshotStore {
	t.Helper()
	s, err := newSnapshotStore(dir, 2, st, hclog.NewNullLogger(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkpointAt takes a snapshot at index kept as a checkpoint whose state is at content.
func checkpointAt(t *testing.T, s *snapshotStore, index, content uint64) string {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, ok := sink.(state.CheckpointSink)
	if !ok {
		t.Fatal("the store's sink cannot hold a checkpoint")
	}
	err = cs.Checkpoint(func(dir string) (uint64, error) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return 0, err
		}
		return content, os.WriteFile(filepath.Join(dir, "body"), fmt.Appendf(nil, "state at %d", content), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

// wantListed fails unless the store lists snapshots at exactly these indexes, in order.
func wantListed(t *testing.T, s raft.SnapshotStore, want string) {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, m := range list {
		got = append(got, m.Index)
	}
	if fmt.Sprint(got) != want {
		t.Fatalf("listed %v, want %s", got, want)
	}
}

// readSnapshot opens snapshot id and reads it whole.
func readSnapshot(t *testing.T, s raft.SnapshotStore, id string) (*raft.SnapshotMeta, string) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return meta, string(b)
}

// TestSnapshotStoreKinds: the snapshots this node takes are checkpoints, whose stream is
// made once, when first opened; streams written into a sink stay streams; both kinds
// are listed newest first and only the newest two are kept; a cancelled snapshot or an
// interrupted one leaves nothing.
func TestSnapshotStoreKinds(t *testing.T) {
	dir := t.TempDir()
	fs := &fakeStreamer{}
	s := openStore(t, dir, fs)

	id10 := checkpointAt(t, s, 10, 12)
	wantListed(t, s, "[10]")
	if ci, err := s.ContentIndex(id10); err != nil || ci != 12 {
		t.Fatalf("content index %d, %v; want 12", ci, err)
	}
	if fs.made != 0 {
		t.Fatal("a stream was made before anyone opened the snapshot")
	}
	for range 2 {
		meta, b := readSnapshot(t, s, id10)
		if b != "state at 12" || meta.Size != int64(len(b)) || meta.Index != 10 || meta.ID != id10 {
			t.Fatalf("opened %q, meta %+v", b, meta)
		}
	}
	if fs.made != 1 {
		t.Fatalf("stream made %d times for two opens, want once", fs.made)
	}

	// A stream (as a leader's snapshot is received) at 20.
	sink, err := s.Create(raft.SnapshotVersionMax, 20, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("leader's stream")); err != nil {
		t.Fatal(err)
	}
	if err := sink.(state.CheckpointSink).Checkpoint(func(string) (uint64, error) { return 0, nil }); err == nil {
		t.Fatal("a sink written to became a checkpoint")
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	id20 := sink.ID()
	wantListed(t, s, "[20 10]")
	if _, b := readSnapshot(t, s, id20); b != "leader's stream" {
		t.Fatalf("opened %q", b)
	}

	// A third snapshot reaps the oldest; a cancelled one leaves nothing.
	checkpointAt(t, s, 30, 30)
	wantListed(t, s, "[30 20]")
	if _, err := os.Stat(filepath.Join(dir, checkpointsDir, id10)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reaped checkpoint is still there: %v", err)
	}
	sink, err = s.Create(raft.SnapshotVersionMax, 40, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = sink.(state.CheckpointSink).Checkpoint(func(dir string) (uint64, error) { return 0, os.Mkdir(dir, 0o700) })
	if _, err := sink.Write([]byte("x")); err == nil {
		t.Fatal("a checkpoint was written to")
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	wantListed(t, s, "[30 20]")
	ents, _ := os.ReadDir(filepath.Join(dir, checkpointsDir))
	if len(ents) != 1 {
		t.Fatalf("checkpoints dir holds %d entries, want the one checkpoint", len(ents))
	}
	sink, _ = s.Create(raft.SnapshotVersionMax, 50, 1, raft.Configuration{}, 1, nil)
	if err := sink.(state.CheckpointSink).Checkpoint(func(string) (uint64, error) { return 0, errors.New("disk full") }); err == nil {
		t.Fatal("a failed checkpoint was kept")
	}
	_ = sink.Cancel()

	// Leftovers of an interrupted checkpoint and stream go at the next open; a file that
	// is not ours is left alone and does not stop the store opening.
	_ = os.WriteFile(filepath.Join(dir, checkpointsDir, "README"), []byte("x"), 0o600)
	_ = os.Mkdir(filepath.Join(dir, checkpointsDir, "9-99-1.tmp"), 0o700)
	id30 := fmt.Sprint(ents[0].Name())
	_ = os.WriteFile(filepath.Join(dir, checkpointsDir, id30, checkpointFile+tmpSuffix), []byte("half"), 0o600)
	s = openStore(t, dir, fs)
	ents, _ = os.ReadDir(filepath.Join(dir, checkpointsDir))
	if len(ents) != 2 {
		t.Fatalf("after reopening, checkpoints dir holds %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dir, checkpointsDir, id30, checkpointFile+tmpSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a half-made stream survived reopening")
	}
	wantListed(t, s, "[30 20]")
	// A checkpoint whose metadata names another snapshot is not listed.
	other := filepath.Join(dir, checkpointsDir, "1-5-1")
	_ = os.Mkdir(other, 0o700)
	_ = os.WriteFile(filepath.Join(other, checkpointMeta), []byte(`{"ID":"","Index":5,"Term":9}`), 0o600)
	wantListed(t, s, "[30 20]")
	for _, bad := range []string{"../x", id30 + tmpSuffix, ".", "..", "", "1-2", "1-2-3-4", "a-b-c"} {
		if _, _, err := s.Open(bad); err == nil {
			t.Errorf("opened %q", bad)
		}
	}
}

// TestSnapshotStoreKeepsCheckpointBeingStreamed: a checkpoint whose stream is being made
// when newer snapshots would reap it stays until that stream is done.
func TestSnapshotStoreKeepsCheckpointBeingStreamed(t *testing.T) {
	fs := &fakeStreamer{}
	s := openStore(t, t.TempDir(), fs)
	id := checkpointAt(t, s, 10, 10)
	fs.during = func() {
		fs.during = nil
		checkpointAt(t, s, 20, 20)
		checkpointAt(t, s, 30, 30)
	}
	if _, b := readSnapshot(t, s, id); b != "state at 10" {
		t.Fatalf("opened %q", b)
	}
	checkpointAt(t, s, 40, 40)
	wantListed(t, s, "[40 30]")
	if _, _, err := s.Open(id); err == nil {
		t.Fatal("the old checkpoint was not reaped once its stream was made")
	}
}

// TestStateAheadOfSnapshotLabel: a node that restored a leader's snapshot whose state is
// past the index raft took it at, and stopped before the entries between came again,
// starts; a state past that too is refused.
func TestStateAheadOfSnapshotLabel(t *testing.T) {
	s := openStore(t, t.TempDir(), &fakeStreamer{})
	sink, err := s.Create(raft.SnapshotVersionMax, 100, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := statedb.WriteRecords(sink, []statedb.Record{statedb.AppliedRecord(130, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	logs := raft.NewInmemStore()
	for _, tc := range []struct {
		applied uint64
		refused bool
	}{{100, false}, {130, false}, {131, true}} {
		err := checkStateNotAhead(logs, s, tc.applied)
		if (err != nil) != tc.refused {
			t.Errorf("applied %d: refused %v, want %v", tc.applied, err, tc.refused)
		}
	}
}

// TestMemberSnapshotIsACheckpoint: a real member's snapshot is kept as a checkpoint of
// its state database, and the stream made from it restores another FSM to the same
// state.
func TestMemberSnapshotIsACheckpoint(t *testing.T) {
	m := startLeader(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.node.Propose(ctx, state.TypeClusterInit, &state.ClusterInit{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := m.node.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	list, err := m.node.snaps.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("snapshots: %v %v", list, err)
	}
	if _, err := os.Stat(filepath.Join(m.node.cfg.DataDir, "raft", checkpointsDir, list[0].ID, checkpointDB)); err != nil {
		t.Fatalf("the snapshot is not a checkpoint: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.node.cfg.DataDir, "raft", "snapshots")); len(ents) != 0 {
		t.Fatalf("raft's file store holds %d entries", len(ents))
	}
	meta, body := readSnapshot(t, m.node.snaps, list[0].ID)
	if int64(len(body)) != meta.Size {
		t.Fatalf("read %d of %d bytes", len(body), meta.Size)
	}
	idx, want := m.fsm.Hash()
	an, err := authn.New(authn.Config{Audience: "test", HMACKey: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	fresh := statetest.Open(t, noSignatures{}, an, nil)
	if err := fresh.Restore(io.NopCloser(strings.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	if gi, got := fresh.Hash(); gi != idx || got != want {
		t.Fatalf("restored %d/%s, member at %d/%s", gi, got, idx, want)
	}
	if !strings.HasPrefix(body, "CUSTOSDB") {
		t.Fatal("the stream is not a statedb stream")
	}
}

// TestLeaderTermDoesNotOutrankNewerSnapshots mounts a compromised leader that sends a
// snapshot at a small index with a huge term: ordered by term first (raft's file
// store), it would stay this node's newest snapshot for good — taken by raft at every
// start, sent on as leader — while reaping pushed out the node's own newer checkpoints.
func TestLeaderTermDoesNotOutrankNewerSnapshots(t *testing.T) {
	s := openStore(t, t.TempDir(), &fakeStreamer{})
	sink, err := s.Create(raft.SnapshotVersionMax, 50, 1<<40, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("state at 50")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	checkpointAt(t, s, 100, 100)
	checkpointAt(t, s, 200, 200)
	wantListed(t, s, "[200 100]")
}
