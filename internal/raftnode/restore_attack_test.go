package raftnode

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/state"
)

// TestLeaderJSONSnapshotNotAdoptedAtRestart mounts a compromised leader's attack on a
// follower's start. raft (installSnapshot) writes a leader's snapshot into this node's
// store and closes it before FSM.Restore runs; Restore refuses the JSON format of earlier
// binaries, but the file stays, at the index and term the leader chose. At the next
// start restoreIfBehind restores the newest snapshot, where the JSON format is accepted
// for the upgrade of an earlier binary's data directory. Such a snapshot must not be
// adopted: with no applied index it is refused (it would read as an empty state that
// needs no vouching), and on a node whose state database is not empty it is not even
// decoded (it is decoded in memory, whatever its size).
func TestLeaderJSONSnapshotNotAdoptedAtRestart(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		applied bool // the node's state database holds entries
		refusal string
	}{
		{"no applied index, empty state", `{"version":2,"name":"evil","threshold":1,"members":[{"id":"n1","peer_id":"attacker"}],"strict":true,"last_stamp":1,"applied":0}`, false, "no applied index"},
		{"applied index, state not empty", `{"version":2,"name":"evil","threshold":1,"members":[{"id":"n1","peer_id":"attacker"}],"strict":true,"last_stamp":1,"applied":5}`, true, "state database is not empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := slog.New(slog.DiscardHandler)
			f, err := state.Open(state.Config{Dir: t.TempDir(), Logger: log})
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
			snaps, err := newSnapshotStore(t.TempDir(), 2, f, hclog.NewNullLogger(), log)
			if err != nil {
				t.Fatal(err)
			}
			// What raft's installSnapshot does with the leader's InstallSnapshot request.
			sink, err := snaps.Create(raft.SnapshotVersionMax, 1<<40, 1<<40, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sink.Write([]byte(tt.json)); err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			_, rc, err := snaps.Open(sink.ID())
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Restore(rc); err == nil {
				t.Fatal("a leader's JSON snapshot restored live")
			}
			// The restart: what open() does before NewRaft.
			err = restoreIfBehind(snaps, f, f.AppliedIndex(), log)
			if err == nil || !strings.Contains(err.Error(), tt.refusal) {
				t.Fatalf("restore at start: %v, want a refusal naming %q", err, tt.refusal)
			}
			if name, _, _ := f.Cluster(); name == "evil" {
				t.Fatal("the leader's JSON snapshot was adopted at restart")
			}
		})
	}
}
