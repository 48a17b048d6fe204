package raftnode

import (
	"context"
	"testing"
	"time"

	"github.com/custos/custos/internal/state"
)

func TestSnapshotThresholdFollowsSize(t *testing.T) {
	p := snapshotPacing{perEntry: snapshotBytesPerEntry, floor: minSnapshotThreshold}
	tests := []struct {
		name string
		size int64
		want uint64
	}{
		{"no snapshot size", 0, minSnapshotThreshold},
		{"small state", 20 << 20, minSnapshotThreshold},
		{"64 MiB", 64 << 20, 4096},
		{"256 MiB", 256 << 20, 16384},
		{"1.2 GB (1 M lifecycles)", 1_200_000_000, 1_200_000_000 / snapshotBytesPerEntry},
		{"huge", 1 << 40, maxSnapshotThreshold},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.threshold(tt.size); got != tt.want {
				t.Errorf("threshold(%d) = %d, want %d", tt.size, got, tt.want)
			}
		})
	}
}

// startLeader starts one raft member, set up by before (if not nil) before it starts,
// and waits until it leads.
func startLeader(t *testing.T, before func(*Node)) *member {
	t.Helper()
	m := startMembers(t, 1)[0]
	if before != nil {
		before(m.node)
	}
	if err := m.node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.node.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !m.node.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatal("no leader")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return m
}

// TestSnapshotThresholdIsApplied: a real raft member's snapshot threshold is set from
// its newest snapshot's size (here at one byte per entry, so that a test-sized state
// moves it), and left alone before the first snapshot.
func TestSnapshotThresholdIsApplied(t *testing.T) {
	m := startLeader(t, func(n *Node) { n.pacing = snapshotPacing{perEntry: 1, floor: 16} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m.node.paceSnapshots()
	if got := m.node.raft.ReloadableConfig().SnapshotThreshold; got != minSnapshotThreshold {
		t.Fatalf("threshold before any snapshot %d, want %d", got, minSnapshotThreshold)
	}
	// Any entry will do (this one is refused by the FSM, and still in the log).
	if _, err := m.node.Propose(ctx, state.TypeClusterInit, &state.ClusterInit{Name: "test"}); err != nil {
		t.Fatalf("first entry: %v", err)
	}
	if err := m.node.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	list, err := m.node.snaps.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("snapshots: %v %v", list, err)
	}
	m.node.paceSnapshots()
	want := max(uint64(list[0].Size), 16)
	if got := m.node.raft.ReloadableConfig().SnapshotThreshold; got != want {
		t.Fatalf("threshold after a %d-byte snapshot %d, want %d", list[0].Size, got, want)
	}
}
