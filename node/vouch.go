package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// vouching is this node's trust in its own replicated state (DESIGN.md: a snapshot from
// the leader is adopted only when signed state checkpoints of at least k members vouch for
// it; a node whose state differs from a quorum's stops signing). The log vouches for
// itself — every entry carries the signature that authorises it — but a snapshot is the
// leader's word for a whole state. So after restoring a snapshot it did not take itself,
// a node joins no ceremony and is not ready until k other members have signed a
// checkpoint with the same state hash as its own, at an index after the snapshot; and a
// node whose hash differs from what k others signed stops for good (until an operator
// resynchronises it).
type vouching struct {
	mu sync.Mutex
	// unverified is the index of a restored snapshot not yet vouched for (0: none).
	unverified uint64
	// requested is when this node last asked for a checkpoint.
	requested time.Time
	// diverged says how this node's state differs from a quorum's ("" while it does not).
	diverged string
}

// blocked says why this node must not act on its state, or "".
func (v *vouching) blocked() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.diverged != "":
		return v.diverged
	case v.unverified != 0:
		return fmt.Sprintf("state restored from a snapshot at index %d is not yet vouched for by the signed checkpoints of %s", v.unverified, "k other members")
	}
	return ""
}

// checkpointVerdict compares this node's state hash at a checkpoint with the members'
// signed votes: vouched when at least k members other than self signed the same hash,
// diverged when at least k others signed one other hash. With at most k−1 members
// compromised, neither can be faked: both need an honest member's vote.
func checkpointVerdict(own string, votes map[string]string, self string, k int) (vouched, diverged bool) {
	if own == "" || k < 1 {
		return false, false
	}
	count := map[string]int{}
	for node, h := range votes {
		if node != self {
			count[h]++
		}
	}
	if count[own] >= k {
		return true, false
	}
	for h, c := range count {
		if h != own && c >= k {
			return false, true
		}
	}
	return false, false
}

// ownSnapshotsKey is the keystore record of the snapshots this node took itself while its
// state was vouched for: restoring one of those needs no vouching.
const ownSnapshotsKey = "own-snapshots"

type ownSnapshot struct {
	Index uint64 `json:"index"`
	Sum   string `json:"sum"`
}

// onSnapshot remembers a snapshot this node produced (called by the FSM, inside
// raft's snapshot). A snapshot taken while the node's own state is in doubt is not
// remembered.
func (n *Node) onSnapshot(index uint64, sum [32]byte) {
	if n.vouch.blocked() != "" {
		return
	}
	var list []ownSnapshot
	if b, err := n.ks.GetMeta(ownSnapshotsKey); err == nil {
		_ = json.Unmarshal(b, &list)
	}
	list = append(list, ownSnapshot{Index: index, Sum: hex.EncodeToString(sum[:])})
	if len(list) > 4 {
		list = list[len(list)-4:]
	}
	b, _ := json.Marshal(list)
	if err := n.ks.PutMeta(ownSnapshotsKey, b); err != nil {
		n.log.Warn("could not remember this node's snapshot (a restart will have it vouched for again)", "err", err)
	}
}

// onRestore runs when the FSM restored a snapshot (at start, or installed by the leader).
func (n *Node) onRestore(index uint64, sum [32]byte) {
	var list []ownSnapshot
	b, err := n.ks.GetMeta(ownSnapshotsKey)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		n.log.Warn("could not read this node's snapshot record", "err", err)
	}
	_ = json.Unmarshal(b, &list)
	if slices.Contains(list, ownSnapshot{Index: index, Sum: hex.EncodeToString(sum[:])}) {
		return // this node's own snapshot
	}
	n.vouch.mu.Lock()
	n.vouch.unverified = index
	n.vouch.requested = time.Time{}
	n.vouch.mu.Unlock()
	n.met.stateUnverified.Set(1)
	n.log.Warn("restored a snapshot this node did not take: joining no ceremony until k other members vouch for the state", "index", index)
	n.kickCheckpoint()
}

// kickCheckpoint wakes the checkpoint loop.
func (n *Node) kickCheckpoint() {
	select {
	case n.checkpoints <- state.Event{Kind: "request"}:
	default:
	}
}

// checkpointLoop signs and reports this node's checkpoints, compares the votes, and asks
// for a checkpoint while a restored snapshot waits to be vouched for. Events come from
// the FSM through dispatchEvents.
func (n *Node) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		var e state.Event
		select {
		case <-ctx.Done():
			return
		case e = <-n.checkpoints:
		case <-t.C:
		}
		switch e.Kind {
		case state.EventCheckpoint:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if _, err := n.report(cctx, state.TypeCheckpoint, &state.StateCheckpoint{Node: n.cfg.NodeID, Index: e.Index, StateHash: e.Hash}); err != nil {
				n.log.Warn("could not report a state checkpoint", "index", e.Index, "err", err)
			}
			cancel()
		case state.EventCheckpointVote:
			n.judgeCheckpoint(e.Index)
		}
		n.maybeRequestCheckpoint(ctx)
	}
}

// judgeCheckpoint compares this node's state with the votes at a checkpoint index.
func (n *Node) judgeCheckpoint(index uint64) {
	view := n.fsm.CheckpointAt(index)
	_, k, _ := n.fsm.Cluster()
	vouched, diverged := checkpointVerdict(view.Own, view.Votes, n.cfg.NodeID, k)
	n.vouch.mu.Lock()
	defer n.vouch.mu.Unlock()
	switch {
	case diverged && n.vouch.diverged == "":
		n.vouch.diverged = fmt.Sprintf("this node's state at index %d differs from the state at least %d other members signed: it signs nothing; stop it, move its raft directory aside and restart it to resynchronise, and investigate the leader that sent its last snapshot", index, k)
		n.met.stateDiverged.Set(1)
		n.log.Error("STATE DIVERGED from a quorum of members: refusing to sign", "index", index)
	case vouched && n.vouch.unverified != 0 && index > n.vouch.unverified:
		n.log.Info("restored state vouched for by the members' signed checkpoints", "snapshot_index", n.vouch.unverified, "checkpoint_index", index)
		n.vouch.unverified = 0
		n.met.stateUnverified.Set(0)
	}
}

// maybeRequestCheckpoint asks the cluster for a checkpoint while a restored snapshot
// waits to be vouched for (at most every 10 s).
func (n *Node) maybeRequestCheckpoint(ctx context.Context) {
	n.vouch.mu.Lock()
	due := n.vouch.unverified != 0 && n.vouch.diverged == "" && time.Since(n.vouch.requested) > 10*time.Second
	if due {
		n.vouch.requested = time.Now()
	}
	n.vouch.mu.Unlock()
	if !due {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := n.report(cctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: n.cfg.NodeID, Reason: "restored snapshot"}); err != nil {
		n.log.Warn("could not request a checkpoint", "err", err)
	}
}
