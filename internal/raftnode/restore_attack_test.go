package raftnode

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
)

// TestLeaderSnapshotRefusedAtRestart mounts a compromised leader's attack on a
// follower's start. raft (installSnapshot) writes a leader's snapshot into this node's
// store and closes it before FSM.Restore runs; if the node stops in between (or, before
// refusalGuard, whatever Restore said), the file stays, at the index and term the leader
// chose. At the next start restoreIfBehind restores the newest snapshot, where the JSON
// format is accepted for the upgrade of an earlier binary's data directory. Such a
// snapshot must not be adopted: with no applied index it is refused (it would read as an
// empty state that needs no vouching), and on a node whose state database is not empty
// it is not even decoded (it is decoded in memory, whatever its size); bytes of no format
// are refused too. Nor may it stop the node from starting: it is set aside, and the node
// starts from its state database and its log — unless the log no longer follows the
// snapshots left, which the refusal then says.
func TestLeaderSnapshotRefusedAtRestart(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		applied  bool   // the node's state database holds entries
		logFirst uint64 // the raft log's first index (0: empty)
		refusal  string
		stops    string // the start fails naming this ("": it goes on)
	}{
		{name: "JSON, no applied index, empty state", body: `{"version":2,"name":"evil","threshold":1,"members":[{"id":"n1","peer_id":"attacker"}],"strict":true,"last_stamp":1,"applied":0}`, refusal: "no applied index"},
		{name: "JSON, applied index, state not empty", body: `{"version":2,"name":"evil","threshold":1,"members":[{"id":"n1","peer_id":"attacker"}],"strict":true,"last_stamp":1,"applied":5}`, applied: true, logFirst: 1, refusal: "state database is not empty"},
		{name: "bytes of no format", body: "\x01not a snapshot", applied: true, logFirst: 1, refusal: "restore"},
		{name: "the log compacted past the state", body: "\x01not a snapshot", applied: true, logFirst: 50, refusal: "restore", stops: "move both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged strings.Builder
			log := slog.New(slog.NewTextHandler(&logged, nil))
			f, err := state.Open(state.Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tt.applied {
				b, err := state.Encode(state.TypeClusterInit, 1, &state.ClusterInit{Name: "real", Threshold: 2, Strict: true,
					Members: []state.Member{{ID: "n1", PeerID: "p1"}, {ID: "n2", PeerID: "p2"}}})
				if err != nil {
					t.Fatal(err)
				}
				if res, _ := f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: b}).(state.Result); !res.OK() {
					t.Fatalf("cluster init: %+v", res)
				}
			}
			logs := raft.NewInmemStore()
			if tt.logFirst != 0 {
				for i := tt.logFirst; i <= 60; i++ {
					if err := logs.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
						t.Fatal(err)
					}
				}
			}
			dir := t.TempDir()
			snaps, err := newSnapshotStore(dir, 2, f, hclog.NewNullLogger(), log)
			if err != nil {
				t.Fatal(err)
			}
			// What raft's installSnapshot does with the leader's InstallSnapshot request,
			// the node stopping before it restores it.
			sink, err := snaps.Create(raft.SnapshotVersionMax, 1<<40, 1<<40, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sink.Write([]byte(tt.body)); err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			// The restart: what open() does before NewRaft.
			err = restoreIfBehind(snaps, logs, f, f.AppliedIndex(), log)
			if !strings.Contains(logged.String(), tt.refusal) {
				t.Fatalf("restore at start logged %q, want a refusal naming %q", logged.String(), tt.refusal)
			}
			if tt.stops != "" {
				if err == nil || !strings.Contains(err.Error(), tt.stops) || !strings.Contains(err.Error(), "set aside") {
					t.Fatalf("restore at start: %v, want a refusal naming %q and the snapshot set aside", err, tt.stops)
				}
			} else if err != nil {
				t.Fatalf("the leader's snapshot stopped the start: %v", err)
			}
			if name, _, _ := f.Cluster(); name == "evil" {
				t.Fatal("the leader's snapshot was adopted at restart")
			}
			if list, _ := snaps.List(); len(list) != 0 {
				t.Fatalf("the refused snapshot is still in the store: %+v", list[0])
			}
			if _, err := os.Stat(filepath.Join(dir, refusedDir, "state.bin")); err != nil {
				t.Fatalf("the refused snapshot was not kept for the operator: %v", err)
			}
		})
	}
}

// garbageSnapshots is a compromised leader's FSM: its snapshots are bytes of no format.
type garbageSnapshots struct{ *state.FSM }

func (garbageSnapshots) Snapshot() (raft.FSMSnapshot, error) { return garbageSnapshot{}, nil }

type garbageSnapshot struct{}

func (garbageSnapshot) Persist(s raft.SnapshotSink) error {
	if _, err := s.Write([]byte("\x01not a snapshot")); err != nil {
		_ = s.Cancel()
		return err
	}
	return s.Close()
}

func (garbageSnapshot) Release() {}

// TestLeaderSnapshotRefusedLive mounts the attack of TestLeaderSnapshotRefusedAtRestart
// on real raft members over libp2p: a compromised leader compacts its log and sends a
// joining member a snapshot that is no snapshot. The member's FSM refuses it, and it
// must not stay in the member's store (newest, at the term and index the leader chose),
// where the member would send it on as a leader and restore it at every start: the member
// sets it aside, and starts again.
func TestLeaderSnapshotRefusedLive(t *testing.T) {
	ms := startMembersJoin(t, 2, 1)
	leader, joiner := ms[0], ms[1]
	leader.node.raftFSM = garbageSnapshots{leader.fsm}
	// Small log segments, so that compacting the log drops entries (raft.go, open);
	// snapshots only when the test takes one.
	leader.node.cfg.InsecureTesting.RaftTrailingLogs = 8
	leader.node.cfg.InsecureTesting.RaftSnapshotThreshold = 1 << 30
	startAll(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if waitLeader(ctx, t, ms[:1]) != leader {
		t.Fatal("the bootstrapping member does not lead")
	}
	init := &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Members: []state.Member{
		{ID: leader.id, PeerID: leader.host.ID().String()}, {ID: joiner.id, PeerID: joiner.host.ID().String()}}}
	if res, err := leader.node.Propose(ctx, state.TypeClusterInit, init); err != nil || !res.OK() {
		t.Fatalf("first entry: %v %+v", err, res)
	}
	// More than a log segment of entries, then a snapshot: the log is compacted past
	// the joining member's start, so the leader sends it the snapshot.
	reason := strings.Repeat("r", 2048)
	for range 80 {
		if _, err := leader.node.Report(ctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: leader.id, Reason: reason}); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("leader's snapshot: %v", err)
	}
	if first, _ := leader.node.wal.FirstIndex(); first <= 1 {
		t.Fatalf("the leader's log was not compacted (first index %d)", first)
	}
	if err := leader.node.AddNonvoter(ctx, joiner.id, joiner.host.ID().String()); err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(joiner.node.cfg.DataDir, "raft", refusedDir)
	eventually(ctx, t, "the joining member to refuse the snapshot and set it aside", func() bool {
		_, err := os.Stat(aside)
		return err == nil
	})
	if name, _, _ := joiner.fsm.Cluster(); name != "" {
		t.Fatalf("the joining member adopted the leader's snapshot: cluster %q", name)
	}
	if err := joiner.node.Stop(); err != nil {
		t.Fatal(err)
	}
	// The leader sends it again and again: the member may have stopped between storing
	// one and refusing it, which the restart sets aside (TestLeaderSnapshotRefusedAtRestart).
	if list, _ := joiner.node.snaps.List(); len(list) > 1 {
		t.Fatalf("refused snapshots stay in the store: %d", len(list))
	}
	restarted, err := New(Config{Config: joiner.node.cfg, Logger: joiner.node.log, Identity: joiner.node.identity, Host: joiner.host,
		FSM: joiner.fsm, Scheduler: noScheduler{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Start(ctx); err != nil {
		t.Fatalf("the member refused the leader's snapshot, then could not start: %v", err)
	}
	if err := restarted.Stop(); err != nil {
		t.Fatal(err)
	}
}
