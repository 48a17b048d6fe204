package state

import (
	"bytes"
	"encoding/hex"
	"maps"
	"slices"
	"sync"

	"github.com/custos/custos/internal/statedb"
)

// Signed state checkpoints (DESIGN.md, trust model): at deterministic indices — every
// CheckpointEvery entries, and at a checkpoint request any member may make — every node
// hashes its state and reports (index, hash) in a report signed with its identity key.
// The reports are kept in the state, so every node sees the same votes. A node compares
// its own hash with what at least k other members signed: a node that restored a snapshot
// from the leader acts on it only once k others vouch for its state, and a node whose
// state differs from k others' stops signing.

// CheckpointEvery is the least number of entries between two periodic checkpoints. Each
// checkpoint hashes the whole state (but the audit) in the background, so the spacing
// grows with the state: at least one entry for every two object records
// (checkpointDue), which keeps the hashing per applied entry constant however large the
// state grows (a day of 10 signatures a second, 860 000 requests kept: one checkpoint
// every 430 000 entries, six hours at that rate). A node that needs one sooner (it
// restored a snapshot and waits to be vouched for) requests it (MinCheckpointGap).
const CheckpointEvery = 16384

// checkpointDue reports whether the entry at index is a periodic checkpoint, given the
// count of object records the state holds then.
func (m *meta) checkpointDue(index uint64, objects int64) bool {
	return index >= m.LastCheckpoint+max(CheckpointEvery, uint64(max(objects, 0))/2)
}

// MaxCheckpointIndices bounds the checkpoint indices whose votes the state keeps.
const MaxCheckpointIndices = 8

// Report kinds of checkpoints.
const (
	// TypeCheckpoint is a node's state hash at a checkpoint index (StateCheckpoint).
	TypeCheckpoint = "checkpoint"
	// TypeCheckpointRequest asks every node to checkpoint at this entry's index
	// (CheckpointRequest), e.g. by a node that restored a snapshot and wants it vouched for.
	TypeCheckpointRequest = "checkpoint.request"
)

// StateCheckpoint is a node's hash of the replicated state right after the entry at Index.
type StateCheckpoint struct {
	Node      string `json:"node"`
	Index     uint64 `json:"index"`
	StateHash string `json:"state_hash"`
}

// CheckpointRequest asks for a checkpoint at the index of the entry that carries it.
type CheckpointRequest struct {
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
}

// openCheckpoint makes index a checkpoint index: votes for it are accepted from now on,
// and the oldest index past the bound is forgotten.
func (m *meta) openCheckpoint(index uint64) {
	if m.Checkpoints == nil {
		m.Checkpoints = map[uint64]map[string]string{}
	}
	if _, ok := m.Checkpoints[index]; ok {
		return
	}
	m.Checkpoints[index] = map[string]string{}
	m.LastCheckpoint = max(m.LastCheckpoint, index)
	for len(m.Checkpoints) > MaxCheckpointIndices {
		delete(m.Checkpoints, slices.Min(slices.Collect(maps.Keys(m.Checkpoints))))
	}
}

// checkpointVote records a member's signed checkpoint.
func (a *applier) checkpointVote(c *StateCheckpoint) Result {
	if c.Index > a.index {
		return refuse("request.malformed", "a checkpoint cannot vouch for a later index")
	}
	votes, ok := a.m.Checkpoints[c.Index]
	if !ok {
		return refuse("request.conflict", "no checkpoint at that index (or too old)")
	}
	if _, err := hex.DecodeString(c.StateHash); err != nil || len(c.StateHash) != 64 {
		return refuse("request.malformed", "state_hash must be 64 hex characters")
	}
	if _, dup := votes[c.Node]; dup {
		return Result{Existing: true}
	}
	votes[c.Node] = c.StateHash
	*a.events = append(*a.events, Event{Kind: EventCheckpointVote, Stamp: a.stamp, Index: c.Index, Vote: a.curReport})
	return Result{}
}

// MinCheckpointGap is how many entries must separate a requested checkpoint from the
// last one: checkpoints cost every node a hash of its whole state, so a member cannot
// make the cluster do it at every entry.
const MinCheckpointGap = 64

// checkpointRequest makes the entry's own index a checkpoint index, unless one was taken
// within MinCheckpointGap entries, or one still waits for k members' votes: then that
// one serves. One at a time, because each costs every node a hash of its whole state
// and the state keeps MaxCheckpointIndices only: a member asking at every entry it could
// get into the log would otherwise push the index the cluster is hashing out of the
// state before its votes arrive, and a restored node would never be vouched for. The
// restored node asks again (every 10 s, internal/vouch) until an index after its
// snapshot has its votes.
func (a *applier) checkpointRequest() Result {
	for idx, votes := range a.m.Checkpoints {
		if idx+MinCheckpointGap > a.index || len(votes) < a.m.Threshold {
			return Result{Existing: true}
		}
	}
	a.checkpointHere = true
	return Result{}
}

// The state hash is a function of the state's content only: the SHA-256 of every record
// of the state database in key order (statedb.View.ContentHash) except the applied-index
// record (per node) and the audit log, which the meta record's audit head covers: every
// node builds its own chain in Apply, and a restored snapshot's chain is verified link by
// link (restoreAudit). Two nodes with the same hash hold the same state, however each got
// there (log or snapshot). It is computed over a consistent view, off the Apply path.

// checkpointOf computes a view's checkpoint.
func checkpointOf(v *statedb.View) (Checkpoint, error) {
	idx, _, err := v.AppliedIndex()
	if err != nil {
		return Checkpoint{}, err
	}
	c := Checkpoint{Index: idx, AuditHead: GenesisHash}
	if err := catchFault(func() {
		if m, ok := load[meta](v, key(tMeta)); ok {
			c.AuditSeq, c.AuditHead = m.AuditSeq, m.AuditHead
		}
	}); err != nil {
		return c, err
	}
	audit := key(tAudit)
	sum, err := v.ContentHash(func(k []byte) bool { return statedb.AppliedKey(k) || bytes.HasPrefix(k, audit) })
	if err != nil {
		return c, err
	}
	c.StateHash = hex.EncodeToString(sum[:])
	return c, nil
}

// hasher computes this node's checkpoint hashes in the background: Apply commits the
// checkpoint index's batch, takes an O(1) view of it and goes on; the hasher hashes the
// view, records the hash as the node's own and emits EventCheckpoint (the node signs and
// reports it). At most MaxCheckpointIndices views wait; past that the oldest is dropped
// (the node does not vote at that index; votes are evidence, not a quorum the log waits
// for).
type hasher struct {
	f    *FSM
	wake chan struct{}
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	pending []pendingHash // oldest first
	busy    bool
}

type pendingHash struct {
	index uint64
	view  *statedb.View
}

func startHasher(f *FSM) *hasher {
	h := &hasher{f: f, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	h.wg.Add(1)
	go h.loop()
	return h
}

// enqueue takes a view of the state just committed at index.
func (h *hasher) enqueue(index uint64) {
	v, err := h.f.db.View()
	if err != nil {
		h.f.log.Error("state: checkpoint view", "index", index, "err", err)
		return
	}
	h.mu.Lock()
	h.pending = append(h.pending, pendingHash{index, v})
	var dropped []pendingHash
	if over := len(h.pending) - MaxCheckpointIndices; over > 0 {
		dropped = slices.Clone(h.pending[:over])
		h.pending = slices.Delete(h.pending, 0, over)
	}
	h.mu.Unlock()
	for _, p := range dropped {
		h.f.log.Warn("state: checkpoint hash skipped, hashing is behind", "index", p.index)
		_ = p.view.Close()
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hasher) loop() {
	defer h.wg.Done()
	for {
		h.mu.Lock()
		if len(h.pending) == 0 {
			h.busy = false
			h.mu.Unlock()
			select {
			case <-h.wake:
				continue
			case <-h.quit:
				return
			}
		}
		p := h.pending[0]
		h.pending = h.pending[1:]
		h.busy = true
		h.mu.Unlock()
		c, err := checkpointOf(p.view)
		_, stamp, _ := p.view.AppliedIndex()
		_ = p.view.Close()
		if err != nil {
			h.f.log.Error("state: checkpoint hash", "index", p.index, "err", err)
			continue
		}
		h.f.recordOwn(p.index, c.StateHash)
		h.f.emit(Event{Kind: EventCheckpoint, Stamp: stamp, Index: p.index, Hash: c.StateHash})
		select {
		case <-h.quit:
			return
		default:
		}
	}
}

// idle reports whether no hash is pending or running.
func (h *hasher) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pending) == 0 && !h.busy
}

func (h *hasher) stop() {
	close(h.quit)
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pending {
		_ = p.view.Close()
	}
	h.pending = nil
}

// maxOwnCheckpoints bounds the node's own checkpoint hashes kept in memory.
const maxOwnCheckpoints = 16

// recordOwn keeps this node's hash at a checkpoint index.
func (f *FSM) recordOwn(index uint64, hash string) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	if f.own == nil {
		f.own = map[uint64]string{}
	}
	f.own[index] = hash
	for len(f.own) > maxOwnCheckpoints {
		delete(f.own, slices.Min(slices.Collect(maps.Keys(f.own))))
	}
}

// CheckpointView is what a node knows of one checkpoint index: its own hash (empty when
// it did not compute one, e.g. it restored a snapshot taken after it) and the members'
// signed votes.
type CheckpointView struct {
	Index uint64
	Own   string
	Votes map[string]string
}

// CheckpointAt returns the view of one checkpoint index.
func (f *FSM) CheckpointAt(index uint64) CheckpointView {
	f.ownMu.Lock()
	own := f.own[index]
	f.ownMu.Unlock()
	return CheckpointView{Index: index, Own: own, Votes: maps.Clone(f.meta().Checkpoints[index])}
}
