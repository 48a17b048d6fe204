// Package vouch is a node's trust in its own replicated state. The log vouches for itself
// (every entry carries the signature that authorises it), but a snapshot installed by the
// leader is the leader's word for a whole state: after restoring one it did not take, a
// node joins no ceremony and is not ready until k other members signed a checkpoint with
// its own state hash at a later index; a node whose hash differs from what k others signed
// stops signing for good (until an operator resynchronises it). It signs and reports this
// node's checkpoints and asks for one when it waits to be vouched for.
//
// It must never decide what the state is (the FSM does) nor take one member's word. Nor
// may it take the restored state's word for who the members are: the votes that vouch
// for a restored state are verified here against the members (and k) of the last state
// this node trusted, kept from before the restore (or, with none, its configuration).
package vouch

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/authn"
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
	// Members and Threshold are this node's configured cluster (cluster.members with
	// their peer ids, cluster.threshold): whom it trusts to vouch for a restored
	// snapshot when it held no trusted state of its own to take the members from (a new
	// node, a resynchronised one).
	Members   []state.Member
	Threshold int
}

// Vouch is this node's trust in its own state.
type Vouch struct {
	self  string
	log   *slog.Logger
	fsm   State
	store Store
	ch    chan state.Event
	v     vouching
	// configured is Config's members and threshold.
	configured anchor

	stateUnverified prometheus.Gauge
	stateDiverged   prometheus.Gauge

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares vouching; Start runs its loop.
func New(cfg Config) *Vouch {
	v := &Vouch{self: cfg.NodeID, log: cfg.Logger, fsm: cfg.State, store: cfg.Store, ch: make(chan state.Event, 64),
		configured:      anchor{Threshold: cfg.Threshold, Members: slices.Clone(cfg.Members)},
		stateUnverified: prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_state_unverified", Help: "1 while this node's state, restored from a snapshot it did not take, waits for k members' signed checkpoints."}),
		stateDiverged:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_state_diverged", Help: "1 when this node's state differs from what k other members signed: it signs nothing."}),
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	cfg.Registerer.MustRegister(v.stateUnverified, v.stateDiverged)
	v.loadUnverified()
	v.loadDiverged()
	return v
}

// divergedKey is the keystore record of the checkpoint index at which this node's state
// was found to differ from a quorum's, and why ("INDEX\nWHY"; absent, or empty once
// cleared), so that a restart does not make it sign again from the same state: the state
// database is what diverged, and a restart keeps it.
const divergedKey = "state-diverged"

// loadDiverged reads the record at start: a state that diverged stays so until k other
// members sign this node's own state hash at a later checkpoint (judgeCheckpoint: what
// ends a divergence that was not the state's, such as members hashing differently
// during an upgrade) or the operator resynchronises the node (its state database moved
// aside: found empty here, which clears the record). A record that cannot be read counts
// as none: divergence is found again at the next checkpoint.
func (n *Vouch) loadDiverged() {
	b, err := n.store.GetMeta(divergedKey)
	applied := n.fsm.AppliedIndex()
	switch {
	case errors.Is(err, keystore.ErrNotFound) || len(b) == 0:
		return
	case err != nil:
		n.log.Warn("could not read whether this node's state diverged from the other members'", "err", err)
		return
	case applied == 0:
		n.setDivergedLocked(0, "")
		return
	}
	at, why, ok := strings.Cut(string(b), "\n")
	idx, err := strconv.ParseUint(at, 10, 64)
	if !ok || err != nil {
		idx, why = applied, string(b) // damaged: only a checkpoint after this state lifts it
	}
	n.v.diverged, n.v.divergedAt = why, idx
	n.stateDiverged.Set(1)
	n.log.Error("STATE DIVERGED from a quorum of members before this node stopped: refusing to sign until k other members sign its state at a later checkpoint, or it is resynchronised", "index", idx)
}

// setDivergedLocked records (why "": clears) that this node's state differs from what k
// others signed at checkpoint index. The caller holds n.v.mu (or, in New, nothing else
// can see the Vouch yet).
func (n *Vouch) setDivergedLocked(index uint64, why string) {
	n.v.diverged, n.v.divergedAt = why, index
	rec := []byte(nil)
	if why != "" {
		rec = []byte(strconv.FormatUint(index, 10) + "\n" + why)
		n.stateDiverged.Set(1)
	} else {
		n.stateDiverged.Set(0)
	}
	if err := n.store.PutMeta(divergedKey, rec); err != nil {
		n.log.Warn("could not record whether this node's state diverged: a restart may let it sign until the next checkpoint finds it again", "err", err)
	}
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
	n.v.anchor = n.loadAnchor()
	n.v.hint = n.staleConfigHintLocked()
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

// anchorKey is the keystore record of the members (and k) trusted to vouch for the
// restored state awaiting vouching (an anchor, JSON).
const anchorKey = "vouch-anchor"

// anchor is whom this node trusts to vouch for a restored state: the members, by id and
// peer id (identity key), and k of the last state it trusted.
type anchor struct {
	Threshold int            `json:"threshold"`
	Members   []state.Member `json:"members"`
	// Configured says the members are this node's configuration's (it held no trusted
	// state): only as current as the operator kept cluster.members.
	Configured bool `json:"configured,omitempty"`
}

// ids lists the anchor's members as "id=peer id", sorted.
func (a *anchor) ids() []string {
	out := make([]string, 0, len(a.Members))
	for _, m := range a.Members {
		out = append(out, m.ID+"="+m.PeerID)
	}
	slices.Sort(out)
	return out
}

// member returns the trusted member with id, or nil.
func (a *anchor) member(id string) *state.Member {
	for i := range a.Members {
		if a.Members[i].ID == id {
			return &a.Members[i]
		}
	}
	return nil
}

// loadAnchor reads the recorded anchor; a missing or damaged record (a restore by an
// earlier binary) falls back to the configured members.
func (n *Vouch) loadAnchor() *anchor {
	var a anchor
	b, err := n.store.GetMeta(anchorKey)
	if err == nil && json.Unmarshal(b, &a) == nil && a.Threshold >= 1 && len(a.Members) > 0 {
		return &a
	}
	c := n.configured
	c.Configured = true
	return &c
}

// trustedAnchor is whom to trust for a restore starting now: the members and k of the
// current state when this node trusts it (it is not waiting to be vouched for, nor
// diverged) and it has a cluster, else the anchor already kept, else the configuration.
// The caller holds n.v.mu.
func (n *Vouch) trustedAnchorLocked() *anchor {
	if n.v.unverified == 0 && n.v.diverged == "" {
		if name, k, members := n.fsm.Cluster(); name != "" && k >= 1 && len(members) > 0 {
			return &anchor{Threshold: k, Members: members}
		}
	}
	if n.v.anchor != nil {
		return n.v.anchor
	}
	c := n.configured
	c.Configured = true
	return &c
}

// staleConfigHint says, when the anchor is the configuration's and the restored state
// names other members, what the operator should check: a configuration not updated after
// a membership change leaves the node never vouched for (the new members' votes do not
// count) and trusts a removed member's key; or the leader forged the member list. "" when
// they agree or the anchor is a trusted state's. The caller holds n.v.mu.
func (n *Vouch) staleConfigHintLocked() string {
	a := n.v.anchor
	if a == nil || !a.Configured {
		return ""
	}
	_, _, members := n.fsm.Cluster()
	restored := (&anchor{Members: members}).ids()
	configured := a.ids()
	if slices.Equal(restored, configured) {
		return ""
	}
	return fmt.Sprintf("; the restored state's members (%s) are not the ones this node's configuration names (%s), whose votes alone it counts: if the cluster's members changed, set cluster.members to the current ones (custos admin members list, on a healthy node) and restart this node; if they did not, the leader that sent the snapshot forged them",
		strings.Join(restored, ", "), strings.Join(configured, ", "))
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
	// diverged says how this node's state differs from a quorum's ("" while it does not),
	// found at checkpoint divergedAt.
	diverged   string
	divergedAt uint64
	// anchor is whom this node trusts to vouch for the restored state (set while
	// unverified != 0): never the restored state's own members, which are the leader's
	// word.
	anchor *anchor
	// hint is staleConfigHintLocked's, said with the reason while unverified.
	hint string
	// votes are the checkpoint votes at indices after unverified whose signatures
	// verified against anchor (by index, then member; at most
	// state.MaxCheckpointIndices indices).
	votes map[uint64]map[string]string
}

// blocked says why this node must not act on its state, or "".
func (v *vouching) blocked() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.diverged != "":
		return v.diverged
	case v.unverified != 0:
		return fmt.Sprintf("state restored from a snapshot at index %d is not yet vouched for by the signed checkpoints of %s%s", v.unverified, "k other members", v.hint)
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
	n.v.mu.Lock()
	a := n.trustedAnchorLocked()
	n.v.mu.Unlock()
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("record whom to trust for the restored state: %w", err)
	}
	if err := n.store.PutMeta(anchorKey, b); err != nil {
		return fmt.Errorf("record whom to trust for the restored state: %w", err)
	}
	if err := n.store.PutMeta(unverifiedKey, []byte(restorePending)); err != nil {
		return fmt.Errorf("record that a snapshot is being restored: %w", err)
	}
	n.v.mu.Lock()
	n.v.unverified = max(n.v.unverified, n.fsm.AppliedIndex(), 1)
	n.v.anchor = a
	n.v.votes = nil
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
		n.v.anchor, n.v.votes, n.v.hint = nil, nil, ""
		n.v.mu.Unlock()
		n.stateUnverified.Set(0)
		return
	}
	n.v.mu.Lock()
	// The index is the snapshot's word: never below where this node was before the
	// restore (OnRestoreStart), so that no vote for an index this node's own, earlier
	// state reached (an honest member's old vote, replayed; a hash the background hasher
	// computed of the old state) can vouch for the new one; and never 0, which would read
	// as "nothing to vouch for" (the FSM refuses such a snapshot).
	n.setUnverifiedLocked(max(index, n.v.unverified, 1))
	if n.v.anchor == nil {
		n.v.anchor = n.trustedAnchorLocked()
	}
	n.v.hint = n.staleConfigHintLocked()
	n.v.votes = nil
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
			// A node must not vote for a state it does not trust (restored and not yet
			// vouched for, or diverged): votes are counted by member, whoever cast them,
			// so the vote of an honest node fed a forged snapshot would join the
			// compromised leader's — k votes for the forged state, vouching for it on
			// another node fed the same, or making an honest node that trusts its own
			// state look diverged. Its vote comes once it trusts its state again.
			if why := n.Blocked(); why != "" {
				n.log.Info("not voting on a state checkpoint: this node does not trust its state", "index", e.Index, "why", why)
			} else {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if _, err := r.Report(cctx, state.TypeCheckpoint, &state.StateCheckpoint{Node: n.self, Index: e.Index, StateHash: e.Hash}); err != nil {
					n.log.Warn("could not report a state checkpoint", "index", e.Index, "err", err)
				}
				cancel()
			}
			// The others' votes may have come before this node's own hash was ready
			// (judged then without it); its own vote, the next event of this index, no
			// longer comes while it does not trust its state.
			n.judgeCheckpoint(e.Index)
		case state.EventCheckpointVote:
			n.recordVote(e.Vote)
			n.judgeCheckpoint(e.Index)
		}
		n.maybeRequestCheckpoint(ctx, r)
	}
}

// recordVote keeps a member's signed checkpoint vote while a restored state waits to be
// vouched for, once its signature verified against the anchor's member of that id: the
// FSM checked it against the members the restored state lists, which are the leader's
// word (a forged state may re-key a member, add one or lower k). Votes at or before the
// restored index, of non-members or not verifying are dropped.
func (n *Vouch) recordVote(rp *state.Report) {
	if rp == nil || rp.Kind != state.TypeCheckpoint {
		return
	}
	var c state.StateCheckpoint
	if err := json.Unmarshal(rp.Body, &c); err != nil || c.Node != rp.Node {
		return
	}
	n.v.mu.Lock()
	a, after := n.v.anchor, n.v.unverified
	n.v.mu.Unlock()
	if after == 0 || a == nil || c.Index <= after {
		return
	}
	m := a.member(rp.Node)
	if m == nil {
		n.log.Warn("a checkpoint vote from a node this node does not trust to vouch for its restored state", "node", rp.Node, "index", c.Index)
		return
	}
	if err := authn.VerifyNode(m.PeerID, authn.DomainReport, state.ReportMessage(rp.Kind, rp.Body), rp.Sig); err != nil {
		n.log.Warn("a checkpoint vote whose signature does not verify against the member this node trusts: not counted", "node", rp.Node, "index", c.Index, "err", err)
		return
	}
	n.v.mu.Lock()
	defer n.v.mu.Unlock()
	if n.v.unverified != after || n.v.anchor != a {
		return // a restore started meanwhile
	}
	if n.v.votes == nil {
		n.v.votes = map[uint64]map[string]string{}
	}
	votes := n.v.votes[c.Index]
	if votes == nil {
		votes = map[string]string{}
		n.v.votes[c.Index] = votes
		for len(n.v.votes) > state.MaxCheckpointIndices {
			delete(n.v.votes, slices.Min(slices.Collect(maps.Keys(n.v.votes))))
		}
	}
	if _, dup := votes[c.Node]; !dup {
		votes[c.Node] = c.StateHash
	}
}

// judgeCheckpoint compares this node's state with the votes at a checkpoint index: the
// state's votes when it trusts its state, else those recordVote verified against the
// anchor, with k the larger of the anchor's and the state's.
func (n *Vouch) judgeCheckpoint(index uint64) {
	view := n.fsm.CheckpointAt(index)
	_, k, _ := n.fsm.Cluster()
	n.v.mu.Lock()
	defer n.v.mu.Unlock()
	votes := view.Votes
	if n.v.unverified != 0 {
		votes = maps.Clone(n.v.votes[index])
		if n.v.anchor == nil {
			return
		}
		k = max(k, n.v.anchor.Threshold)
	}
	vouched, diverged := checkpointVerdict(view.Own, votes, n.self, k)
	switch {
	case diverged && n.v.diverged == "":
		n.setDivergedLocked(index, fmt.Sprintf("this node's state at index %d differs from the state at least %d other members signed: it signs nothing; stop it, move its raft and state directories aside, check that cluster.members in its configuration lists the current members (custos admin members list, on a healthy node) and restart it to resynchronise, and investigate the leader that sent its last snapshot", index, k))
		n.log.Error("STATE DIVERGED from a quorum of members: refusing to sign", "index", index)
	case vouched && n.v.diverged != "" && index > n.v.divergedAt:
		// k others signed this node's own state hash after the divergence: with at most
		// k-1 members compromised, an honest one among them holds this very state.
		n.log.Warn("this node's state agrees again with what k other members signed: signing again", "diverged_at", n.v.divergedAt, "checkpoint_index", index)
		n.setDivergedLocked(0, "")
	case vouched && n.v.unverified != 0 && index > n.v.unverified:
		n.log.Info("restored state vouched for by the members' signed checkpoints", "snapshot_index", n.v.unverified, "checkpoint_index", index)
		n.setUnverifiedLocked(0)
		n.v.anchor, n.v.votes, n.v.hint = nil, nil, ""
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
