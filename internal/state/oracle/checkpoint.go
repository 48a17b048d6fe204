package oracle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
)

// Signed state checkpoints (DESIGN.md, trust model): at deterministic indices — every
// CheckpointEvery entries, and at a checkpoint request any member may make — every node
// hashes its state and reports (index, hash) in a report signed with its identity key.
// The reports are kept in the state, so every node sees the same votes. A node compares
// its own hash with what at least k other members signed: a node that restored a snapshot
// from the leader acts on it only once k others vouch for its state, and a node whose
// state differs from k others' stops signing.

// CheckpointEvery is how often (in raft indexes) every node checkpoints its state.
const CheckpointEvery = 1024

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
func (d *data) openCheckpoint(index uint64) {
	if d.Checkpoints == nil {
		d.Checkpoints = map[uint64]map[string]string{}
	}
	if _, ok := d.Checkpoints[index]; ok {
		return
	}
	d.Checkpoints[index] = map[string]string{}
	for len(d.Checkpoints) > MaxCheckpointIndices {
		delete(d.Checkpoints, slices.Min(slices.Collect(maps.Keys(d.Checkpoints))))
	}
}

// checkpointVote records a member's signed checkpoint.
func (a *applier) checkpointVote(c *StateCheckpoint) Result {
	if c.Index > a.index {
		return refuse("request.malformed", "a checkpoint cannot vouch for a later index")
	}
	votes, ok := a.d.Checkpoints[c.Index]
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
	a.emitCheckpoint(EventCheckpointVote, c.Index, "")
	return Result{}
}

// MinCheckpointGap is how many entries must separate a requested checkpoint from the
// last one: checkpoints cost every node a hash of its whole state, so a member cannot
// make the cluster do it at every entry.
const MinCheckpointGap = 64

// checkpointRequest makes the entry's own index a checkpoint index, unless one was taken
// within MinCheckpointGap entries (then that one serves).
func (a *applier) checkpointRequest() Result {
	for idx := range a.d.Checkpoints {
		if idx+MinCheckpointGap > a.index {
			return Result{Existing: true}
		}
	}
	a.checkpointHere = true
	return Result{}
}

func (a *applier) emitCheckpoint(kind string, index uint64, hash string) {
	*a.events = append(*a.events, Event{Kind: kind, Stamp: a.stamp, Index: index, Hash: hash})
}

// stateHashLocked is the SHA-256 (hex) of the serialised state, Applied excluded. The
// caller holds f.mu.
func (f *FSM) stateHashLocked() string {
	cp := *f.d
	cp.Applied = 0
	b, _ := json.Marshal(&cp)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maxOwnCheckpoints bounds the node's own checkpoint hashes kept in memory.
const maxOwnCheckpoints = 16

// recordOwnLocked keeps this node's hash at a checkpoint index. The caller holds f.mu.
func (f *FSM) recordOwnLocked(index uint64, hash string) {
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

// Checkpoint returns the view of one checkpoint index.
func (f *FSM) CheckpointAt(index uint64) CheckpointView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return CheckpointView{Index: index, Own: f.own[index], Votes: maps.Clone(f.d.Checkpoints[index])}
}
