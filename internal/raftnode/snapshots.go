package raftnode

import (
	"context"
	"time"
)

// Raft takes a snapshot once SnapshotThreshold entries were applied since the last one,
// and then drops the log behind it but TrailingLogs entries. Taking one costs little
// (a checkpoint of the state database: snapstore.go), but a follower that falls behind
// the log kept then needs the whole state streamed to it — made from the checkpoint on
// the leader, sent, restored — and that grows with the state (about 1 GB at 1 M sign
// lifecycles: minutes of a core), while the log entries a snapshot lets raft drop cost
// only disk. So the threshold follows the size of the newest snapshot, keeping a log
// that grows with the state: at most snapshotBytesPerEntry of snapshot per entry,
// between minSnapshotThreshold (small states: raft's log stays short) and
// maxSnapshotThreshold (the log between two snapshots stays bounded, about 400 MB of
// 1.5 KB entries). Restarts do not depend on it: the state database holds everything
// applied, and only the log after it is replayed.
const (
	snapshotBytesPerEntry = 16 << 10
	minSnapshotThreshold  = 4096
	maxSnapshotThreshold  = 1 << 18
	// snapshotPaceEvery is how often the threshold is brought in line with the newest
	// snapshot (raft itself checks every SnapshotInterval, 120 s).
	snapshotPaceEvery = time.Minute
)

// snapshotPacing is how the threshold follows the state: perEntry bytes of snapshot per
// entry, at least floor entries (snapshotBytesPerEntry and minSnapshotThreshold; tests
// use less of both).
type snapshotPacing struct {
	perEntry int64
	floor    uint64
}

// threshold is the snapshot threshold for a state whose snapshot is size bytes.
func (p snapshotPacing) threshold(size int64) uint64 {
	if size <= 0 || p.perEntry <= 0 {
		return p.floor
	}
	return min(max(uint64(size/p.perEntry), p.floor), maxSnapshotThreshold)
}

// snapshotLoop keeps raft's snapshot threshold in line with the state's size until ctx
// ends.
func (n *Node) snapshotLoop(ctx context.Context) {
	n.paceSnapshots()
	t := time.NewTicker(snapshotPaceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.paceSnapshots()
		}
	}
}

// paceSnapshots sets raft's snapshot threshold from the newest snapshot's size (nothing
// before the first snapshot).
func (n *Node) paceSnapshots() {
	list, err := n.snaps.List()
	if err != nil {
		n.log.Warn("raft snapshots: cannot list them to pace the next ones", "err", err)
		return
	}
	if len(list) == 0 {
		return
	}
	want := n.pacing.threshold(list[0].Size)
	rc := n.raft.ReloadableConfig()
	if rc.SnapshotThreshold == want {
		return
	}
	prev := rc.SnapshotThreshold
	rc.SnapshotThreshold = want
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("raft snapshots: cannot change the snapshot threshold", "err", err)
		return
	}
	n.log.Info("raft snapshot threshold follows the state's size", "snapshot_bytes", list[0].Size, "threshold", want, "was", prev)
}
