// Package vouch is a node's trust in its own replicated state. The log vouches for itself
// (every entry carries the signature that authorises it), but a snapshot installed by the
// leader is the leader's word for a whole state: after restoring one it did not take, a
// node joins no ceremony and is not ready until k other members signed a checkpoint with
// its own state hash at a later index; a node whose hash differs from what k others signed
// stops signing for good (until an operator resynchronises it). It signs and reports this
// node's checkpoints and asks for one when it waits to be vouched for.
//
// It must never decide what the state is (the FSM does) nor take one member's word.
package vouch

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// State is what vouching reads of the replicated state (*state.FSM).
type State interface {
	CheckpointAt(index uint64) state.CheckpointView
	Cluster() (name string, threshold int, members []state.Member)
	AppliedIndex() uint64
}

// Store keeps the record of this node's own snapshots and of a restored one awaiting
// vouching (the keystore's meta records).
type Store interface {
	GetMeta(name string) ([]byte, error)
	PutMeta(name string, value []byte) error
}

// Reporter signs and proposes this node's reports (raftnode.Node).
type Reporter interface {
	Report(ctx context.Context, kind string, payload any) (state.Result, error)
}

// Config is what vouching needs.
type Config struct {
	NodeID     string
	Logger     *slog.Logger
	State      State
	Store      Store
	Registerer prometheus.Registerer
}

// Vouch is this node's trust in its own state.
type Vouch struct {
	self  string
	log   *slog.Logger
	fsm   State
	store Store
	ch    chan state.Event
	v     vouching

	stateUnverified prometheus.Gauge
	stateDiverged   prometheus.Gauge

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares vouching; Start runs its loop.
func New(cfg Config) *Vouch {
	v := &Vouch{self: cfg.NodeID, log: cfg.Logger, fsm: cfg.State, store: cfg.Store, ch: make(chan state.Event, 64),
		stateUnverified: prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_state_unverified", Help: "1 while this node's state, restored from a snapshot it did not take, waits for k members' signed checkpoints."}),
		stateDiverged:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_state_diverged", Help: "1 when this node's state differs from what k other members signed: it signs nothing."}),
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	cfg.Registerer.MustRegister(v.stateUnverified, v.stateDiverged)
	v.loadUnverified()
	return v
}

// unverifiedKey is the keystore record of the index of a restored snapshot not yet
// vouched for ("0" once vouched for; restorePending from before a restore replaces the
// state until it is done), so that a restart keeps the node waiting: a restart does not
// make the leader's word for a state any better.
const (
	unverifiedKey  = "unverified-restore"
	restorePending = "pending"
)

// loadUnverified reads the record at start. A restore that was under way when the node
// stopped (it may have switched the state in), or a record that cannot be read, leaves
// the state as it now is waiting to be vouched for; an empty state database (a new
// node, or one resynchronised with its state moved aside) holds nothing restored.
func (n *Vouch) loadUnverified() {
	applied := n.fsm.AppliedIndex()
	b, err := n.store.GetMeta(unverifiedKey)
	var idx uint64
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return
	case err != nil:
		n.log.Error("could not read whether this node's restored state waits to be vouched for: it waits", "err", err)
		idx = max(applied, 1)
	case applied == 0:
		if string(b) != "0" {
			n.setUnverifiedLocked(0)
		}
		return
	default:
		if idx, err = strconv.ParseUint(string(b), 10, 64); err != nil {
			idx = max(applied, 1) // restorePending, or a damaged record
		}
	}
	if idx == 0 {
		return
	}
	n.v.unverified = idx
	n.stateUnverified.Set(1)
	n.log.Warn("the snapshot this node restored before it stopped is not yet vouched for: joining no ceremony until k other members vouch for the state", "index", idx)
}

// setUnverifiedLocked records (0: clears) the restored snapshot awaiting vouching. The
// caller holds n.v.mu (or, in New, nothing else can see the Vouch yet).
func (n *Vouch) setUnverifiedLocked(index uint64) {
	n.v.unverified = index
	if err := n.store.PutMeta(unverifiedKey, []byte(strconv.FormatUint(index, 10))); err != nil {
		n.log.Warn("could not record whether this node's restored state waits to be vouched for", "err", err)
	}
}

// Start runs the checkpoint loop, reporting through r, until Stop.
func (n *Vouch) Start(ctx context.Context, r Reporter) {
	ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.loop(ctx, r)
	}()
}

// Stop ends the loop and waits for it.
func (n *Vouch) Stop() {
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
}

// Notify hands the loop a checkpoint event of the FSM (EventCheckpoint,
// EventCheckpointVote); it never blocks and reports false when the queue is full.
func (n *Vouch) Notify(e state.Event) bool {
	select {
	case n.ch <- e:
		return true
	default:
		return false
	}
}

// Blocked says why this node must not act on its state, or "".
func (n *Vouch) Blocked() string { return n.v.blocked() }

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

// OnSnapshot remembers a snapshot this node produced (called by the FSM, inside
// raft's snapshot). A snapshot taken while the node's own state is in doubt is not
// remembered.
func (n *Vouch) OnSnapshot(index uint64, sum [32]byte) {
	if n.v.blocked() != "" {
		return
	}
	var list []ownSnapshot
	if b, err := n.store.GetMeta(ownSnapshotsKey); err == nil {
		_ = json.Unmarshal(b, &list)
	}
	list = append(list, ownSnapshot{Index: index, Sum: hex.EncodeToString(sum[:])})
	if len(list) > 4 {
		list = list[len(list)-4:]
	}
	b, _ := json.Marshal(list)
	if err := n.store.PutMeta(ownSnapshotsKey, b); err != nil {
		n.log.Warn("could not remember this node's snapshot (a restart will have it vouched for again)", "err", err)
	}
}

// OnRestoreStart runs before the FSM's restore replaces its state: the node waits to be
// vouched for from then on, durably, so that stopping between the switch and OnRestore
// leaves it waiting too. An error (the record cannot be written) refuses the restore.
func (n *Vouch) OnRestoreStart() error {
	if err := n.store.PutMeta(unverifiedKey, []byte(restorePending)); err != nil {
		return fmt.Errorf("record that a snapshot is being restored: %w", err)
	}
	n.v.mu.Lock()
	n.v.unverified = max(n.v.unverified, n.fsm.AppliedIndex(), 1)
	n.v.mu.Unlock()
	n.stateUnverified.Set(1)
	return nil
}

// OnRestore runs when the FSM restored a snapshot (at start, or installed by the leader).
func (n *Vouch) OnRestore(index uint64, sum [32]byte) {
	var list []ownSnapshot
	b, err := n.store.GetMeta(ownSnapshotsKey)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		n.log.Warn("could not read this node's snapshot record", "err", err)
	}
	_ = json.Unmarshal(b, &list)
	if slices.Contains(list, ownSnapshot{Index: index, Sum: hex.EncodeToString(sum[:])}) {
		// This node's own snapshot, taken while its state was vouched for: the whole
		// state is one it trusted.
		n.v.mu.Lock()
		n.setUnverifiedLocked(0)
		n.v.mu.Unlock()
		n.stateUnverified.Set(0)
		return
	}
	n.v.mu.Lock()
	n.setUnverifiedLocked(index)
	n.v.requested = time.Time{}
	n.v.mu.Unlock()
	n.stateUnverified.Set(1)
	n.log.Warn("restored a snapshot this node did not take: joining no ceremony until k other members vouch for the state", "index", index)
	n.kickCheckpoint()
}

// kickCheckpoint wakes the checkpoint loop.
func (n *Vouch) kickCheckpoint() {
	select {
	case n.ch <- state.Event{Kind: "request"}:
	default:
	}
}

// loop signs and reports this node's checkpoints, compares the votes, and asks
// for a checkpoint while a restored snapshot waits to be vouched for. Events come from
// the FSM through Notify.
func (n *Vouch) loop(ctx context.Context, r Reporter) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		var e state.Event
		select {
		case <-ctx.Done():
			return
		case e = <-n.ch:
		case <-t.C:
		}
		switch e.Kind {
		case state.EventCheckpoint:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if _, err := r.Report(cctx, state.TypeCheckpoint, &state.StateCheckpoint{Node: n.self, Index: e.Index, StateHash: e.Hash}); err != nil {
				n.log.Warn("could not report a state checkpoint", "index", e.Index, "err", err)
			}
			cancel()
		case state.EventCheckpointVote:
			n.judgeCheckpoint(e.Index)
		}
		n.maybeRequestCheckpoint(ctx, r)
	}
}

// judgeCheckpoint compares this node's state with the votes at a checkpoint index.
func (n *Vouch) judgeCheckpoint(index uint64) {
	view := n.fsm.CheckpointAt(index)
	_, k, _ := n.fsm.Cluster()
	vouched, diverged := checkpointVerdict(view.Own, view.Votes, n.self, k)
	n.v.mu.Lock()
	defer n.v.mu.Unlock()
	switch {
	case diverged && n.v.diverged == "":
		n.v.diverged = fmt.Sprintf("this node's state at index %d differs from the state at least %d other members signed: it signs nothing; stop it, move its raft and state directories aside and restart it to resynchronise, and investigate the leader that sent its last snapshot", index, k)
		n.stateDiverged.Set(1)
		n.log.Error("STATE DIVERGED from a quorum of members: refusing to sign", "index", index)
	case vouched && n.v.unverified != 0 && index > n.v.unverified:
		n.log.Info("restored state vouched for by the members' signed checkpoints", "snapshot_index", n.v.unverified, "checkpoint_index", index)
		n.setUnverifiedLocked(0)
		n.stateUnverified.Set(0)
	}
}

// maybeRequestCheckpoint asks the cluster for a checkpoint while a restored snapshot
// waits to be vouched for (at most every 10 s).
func (n *Vouch) maybeRequestCheckpoint(ctx context.Context, r Reporter) {
	n.v.mu.Lock()
	due := n.v.unverified != 0 && n.v.diverged == "" && time.Since(n.v.requested) > 10*time.Second
	if due {
		n.v.requested = time.Now()
	}
	n.v.mu.Unlock()
	if !due {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := r.Report(cctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: n.self, Reason: "restored snapshot"}); err != nil {
		n.log.Warn("could not request a checkpoint", "err", err)
	}
}
