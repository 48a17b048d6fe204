package oracle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
)

// Limits on what the state keeps, so that no caller can grow it without bound.
const (
	MaxNonces        = 1_000_000
	MaxOpenRequests  = 1024
	NonceRetentionMs = 15 * 60 * 1000
	// ProposalRetentionMs is how long a proposal's result is kept for its retries (an
	// entry node retries for at most its API wait, well under this).
	ProposalRetentionMs = 5 * 60 * 1000
	// MaxProposals bounds the remembered proposal results; past it, results are not
	// remembered (a retry then meets the reused nonce, as without proposal ids).
	MaxProposals       = 1_000_000
	RequestRetentionMs = 24 * 60 * 60 * 1000
	pruneEveryMs       = 60 * 1000
	// SignatureWindowS is how far a signature's created time may be from the stamp.
	SignatureWindowS = 300
	// MaxAttempts bounds how often a sign request is scheduled.
	MaxAttempts = 3
	// MaxAccessKeysPerGrantor bounds the access keys a user holds, live or kept after
	// revocation or expiry (the oldest dead one makes room for a new grant).
	MaxAccessKeysPerGrantor = 256
	// MaxAccessLogEntries is how many uses each access key's log keeps (the newest).
	MaxAccessLogEntries = 1000
	// AccessKeyRetentionMs is how long a revoked or expired access key and its log are
	// kept before they are pruned.
	AccessKeyRetentionMs = 30 * 24 * 60 * 60 * 1000
	// SnapshotVersion is the version of the snapshot format (2 added access keys); a
	// snapshot of version 1 is read too.
	SnapshotVersion = 2
)

// Verifier checks a finished threshold signature against a key. It must be a pure
// function: the FSM calls it inside Apply.
type Verifier interface {
	VerifySignature(curve string, publicKey, chainCode []byte, path []uint32, message []byte, sig *Signature) error
}

// Event tells the node that something it may act on was applied. Events never influence
// the state; they are hints, and the node re-reads the state before acting.
type Event struct {
	Kind      string // EventScheduled, EventSettled, EventKeyFailed, EventRetry, EventCheckpoint, EventCheckpointVote
	RequestID string
	KeyID     string
	Stamp     int64
	// Index is the entry's raft index; for checkpoint events, the checkpoint's index.
	Index uint64
	// Hash is this node's state hash at a checkpoint (EventCheckpoint).
	Hash string
}

// Event kinds.
const (
	EventScheduled = "scheduled"
	EventSettled   = "settled"
	EventKeyFailed = "key_failed"
	EventRetry     = "retry"
	// EventCheckpoint: this node computed its state hash at a checkpoint index; it signs
	// and reports it.
	EventCheckpoint = "checkpoint"
	// EventCheckpointVote: a member's signed checkpoint was recorded; compare.
	EventCheckpointVote = "checkpoint_vote"
)

// ProposalResult is a Call's result kept for the retries of its proposal.
type ProposalResult struct {
	Result  Result `json:"result"`
	Expires int64  `json:"expires"`
}

// data is everything the FSM holds; it is what a snapshot serialises.
type data struct {
	Version    int                 `json:"version"`
	Name       string              `json:"name"`
	Threshold  int                 `json:"threshold"`
	Members    []Member            `json:"members"`
	Users      map[uint64]*User    `json:"users"`
	NextUserID uint64              `json:"next_user_id"`
	Keys       map[string]*Key     `json:"keys"`
	Requests   map[string]*Request `json:"requests"`
	// Open indexes the requests that are not final.
	Open   map[string]bool  `json:"open"`
	Nonces map[string]int64 `json:"nonces"` // replay key → expiry (ms)
	// Proposals remembers each Call's result by proposal id for ProposalRetentionMs, so
	// that a retried proposal gets the first result (see Call.ProposalID).
	Proposals map[string]ProposalResult `json:"proposals,omitempty"`
	Sessions  map[string]int64          `json:"sessions"` // session nonce (hex) → stamp used
	Idem      map[string]string         `json:"idem"`     // caller|op|key → request id
	IdemHash  map[string]string         `json:"idem_hash"`
	Audit     []AuditEntry              `json:"audit"`
	// AccessKeys holds every access key by id; AccessByPub indexes them by
	// scheme ":" hex(public key) (the newest key with that public key, the only one that
	// can be live) and AccessByGrantor by grantor (ids sorted).
	AccessKeys      map[string]*AccessKey `json:"access_keys"`
	AccessByPub     map[string]string     `json:"access_by_pub"`
	AccessByGrantor map[uint64][]string   `json:"access_by_grantor"`
	AccessLogs      map[string]*AccessLog `json:"access_logs"`
	// Strict is set once the cluster accepts only signed entries (ClusterInit v2 or
	// Upgrade); legacy entry kinds are refused from then on.
	Strict bool `json:"strict,omitempty"`
	// AdminPublicKey is the admin's Ed25519 public key in key-pair mode (nil in shared-key
	// mode); AdminKeyGenesis the first one, which every node's configuration must name.
	AdminPublicKey  []byte `json:"admin_public_key,omitempty"`
	AdminKeyGenesis []byte `json:"admin_key_genesis,omitempty"`
	// Checkpoints holds, per checkpoint index, each member's signed state hash.
	Checkpoints map[uint64]map[string]string `json:"checkpoints,omitempty"`
	LastStamp   int64                        `json:"last_stamp"`
	LastPrune   int64                        `json:"last_prune"`
	Applied     uint64                       `json:"applied"`
}

func newData() *data {
	return &data{
		Version:   SnapshotVersion,
		Users:     map[uint64]*User{},
		Keys:      map[string]*Key{},
		Requests:  map[string]*Request{},
		Open:      map[string]bool{},
		Nonces:    map[string]int64{},
		Proposals: map[string]ProposalResult{},
		Sessions:  map[string]int64{},
		Idem:      map[string]string{},
		IdemHash:  map[string]string{},

		AccessKeys:      map[string]*AccessKey{},
		AccessByPub:     map[string]string{},
		AccessByGrantor: map[uint64][]string{},
		AccessLogs:      map[string]*AccessLog{},
	}
}

// ensureMaps replaces maps a snapshot left null (or, for version 1, did not have).
func (d *data) ensureMaps() {
	if d.AccessKeys == nil {
		d.AccessKeys = map[string]*AccessKey{}
	}
	if d.AccessByPub == nil {
		d.AccessByPub = map[string]string{}
	}
	if d.AccessByGrantor == nil {
		d.AccessByGrantor = map[uint64][]string{}
	}
	if d.AccessLogs == nil {
		d.AccessLogs = map[string]*AccessLog{}
	}
	for _, m := range []*map[string]string{&d.Idem, &d.IdemHash} {
		if *m == nil {
			*m = map[string]string{}
		}
	}
	if d.Users == nil {
		d.Users = map[uint64]*User{}
	}
	if d.Keys == nil {
		d.Keys = map[string]*Key{}
	}
	if d.Requests == nil {
		d.Requests = map[string]*Request{}
	}
	if d.Open == nil {
		d.Open = map[string]bool{}
	}
	if d.Proposals == nil {
		d.Proposals = map[string]ProposalResult{}
	}
	if d.Nonces == nil {
		d.Nonces = map[string]int64{}
	}
	if d.Sessions == nil {
		d.Sessions = map[string]int64{}
	}
}

// FSM is custos's raft state machine.
type FSM struct {
	mu       sync.RWMutex
	d        *data
	verifier Verifier
	authn    *authn.Verifier
	onEvent  func(Event)
	applied  atomic.Uint64
	// at is the index of the last entry reflected in d; guarded by mu, so a reader
	// holding mu sees state and index together (applied moves just after).
	at uint64
	// halted records an entry this binary cannot apply; the node stops serving.
	halted atomic.Pointer[string]

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every apply

	// own holds this node's state hashes at recent checkpoint indices (guarded by mu;
	// local, never part of the state).
	own map[uint64]string
	// onSnapshot, when set, learns the index and SHA-256 of every snapshot this FSM
	// produces (the node remembers them as its own, trusted on restore).
	onSnapshot func(index uint64, sum [32]byte)
	// onRestore, when set, learns the index and SHA-256 of every snapshot restored.
	onRestore func(index uint64, sum [32]byte)
}

// OnSnapshot sets the function told about every snapshot this FSM produces. Set it
// before the FSM is given to raft.
func (f *FSM) OnSnapshot(fn func(index uint64, sum [32]byte)) { f.onSnapshot = fn }

// OnRestore sets the function told, synchronously, about every snapshot restored, before
// any entry after it applies. Set it before the FSM is given to raft.
func (f *FSM) OnRestore(fn func(index uint64, sum [32]byte)) { f.onRestore = fn }

// NewFSM returns an empty state machine. v checks threshold signatures, an checks
// callers' credentials (both pure functions); onEvent (may be nil) is called
// synchronously from Apply and must not block.
func NewFSM(v Verifier, an *authn.Verifier, onEvent func(Event)) *FSM {
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	return &FSM{d: newData(), verifier: v, authn: an, onEvent: onEvent, notify: make(chan struct{})}
}

// WaitApplied blocks until the entry at index has been applied locally or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.notifyMu.Lock()
		ch := f.notify
		f.notifyMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("state: waiting for index %d: %w", index, ctx.Err())
		}
	}
}

func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.notifyMu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.notifyMu.Unlock()
}

// ErrHalted is returned once the FSM met an entry it cannot apply.
var ErrHalted = errors.New("state: halted on an entry this version cannot apply")

// Halted returns the reason apply halted, or "".
func (f *FSM) Halted() string {
	if p := f.halted.Load(); p != nil {
		return *p
	}
	return ""
}

// AppliedIndex is the raft index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		f.mu.Lock()
		f.at = l.Index
		f.mu.Unlock()
		f.setApplied(l.Index)
		return nil
	}
	if f.Halted() != "" {
		// Once halted, nothing more is applied: state must not move past an entry
		// this binary does not understand.
		return Result{Code: "cluster.unavailable", Detail: "node halted"}
	}
	var env Envelope
	if err := json.Unmarshal(l.Data, &env); err != nil {
		f.halt(fmt.Sprintf("entry %d: undecodable: %v", l.Index, err))
		return Result{Code: "cluster.unavailable", Detail: "undecodable entry"}
	}
	cmd, ok := commands[env.Type]
	if !ok || env.Version < 1 || env.Version > cmd.version {
		f.halt(fmt.Sprintf("entry %d: unknown command %s v%d", l.Index, env.Type, env.Version))
		return Result{Code: "cluster.unavailable", Detail: "unknown command"}
	}
	apply, err := cmd.decode(env.Payload)
	if err != nil {
		// A field or kind this binary does not know (a newer member proposed it), or
		// bytes no binary wrote: never skip it, never half-read it.
		f.halt(fmt.Sprintf("entry %d: %s v%d cannot be decoded by this binary: %v", l.Index, env.Type, env.Version, err))
		return Result{Code: "cluster.unavailable", Detail: "undecodable entry"}
	}
	f.mu.Lock()
	var events []Event
	res, checkpoint := f.applyLocked(&env, apply, l.Index, &events)
	f.at = l.Index
	if checkpoint || l.Index%CheckpointEvery == 0 {
		f.d.openCheckpoint(l.Index)
		h := f.stateHashLocked()
		f.recordOwnLocked(l.Index, h)
		events = append(events, Event{Kind: EventCheckpoint, Stamp: env.Stamp, Index: l.Index, Hash: h})
	}
	f.mu.Unlock()
	f.setApplied(l.Index)
	for _, e := range events {
		if e.Index == 0 {
			e.Index = l.Index
		}
		f.onEvent(e)
	}
	res.Index = l.Index
	return res
}

func (f *FSM) halt(reason string) {
	f.halted.CompareAndSwap(nil, &reason)
}

// applyLocked applies one command entry; checkpoint says the entry asked for a state
// checkpoint at its index.
func (f *FSM) applyLocked(env *Envelope, apply func(*applier) Result, index uint64, events *[]Event) (Result, bool) {
	d := f.d
	if env.Stamp < d.LastStamp {
		return Result{Code: "cluster.unavailable", Detail: "entry stamped before its predecessor; retry"}, false
	}
	d.LastStamp = env.Stamp
	d.prune(env.Stamp)
	a := &applier{d: d, stamp: env.Stamp, index: index, verifier: f.verifier, authn: f.authn, events: events}
	return a.applyEntry(env, apply), a.checkpointHere
}

func (a *applier) applyEntry(env *Envelope, apply func(*applier) Result) Result {
	if a.d.Strict && commands[env.Type].legacy {
		// An unsigned entry kind after the cluster became strict: whoever proposed it
		// wants the FSM to believe a proposer.
		a.audit("cluster", "entry.refused", env.Type, "refused", "auth.signature_invalid")
		return refuse("auth.signature_invalid", "unsigned entry kind "+env.Type+" refused: this cluster accepts only signed entries")
	}
	return apply(a)
}

func badEntry(err error) Result {
	return Result{Code: "request.malformed", Detail: "entry payload: " + err.Error()}
}

// prune drops expired nonces and old finished requests, judged by stamps only.
func (d *data) prune(stamp int64) {
	if stamp-d.LastPrune < pruneEveryMs {
		return
	}
	d.LastPrune = stamp
	for k, exp := range d.Nonces {
		if exp <= stamp {
			delete(d.Nonces, k)
		}
	}
	for k, p := range d.Proposals {
		if p.Expires <= stamp {
			delete(d.Proposals, k)
		}
	}
	for id, r := range d.Requests {
		if Final(r.Status) && stamp-r.UpdatedAt > RequestRetentionMs {
			delete(d.Requests, id)
		}
	}
	for k, id := range d.Idem {
		if _, ok := d.Requests[id]; !ok {
			delete(d.Idem, k)
			delete(d.IdemHash, k)
		}
	}
	for _, ak := range d.AccessKeys {
		if dead := ak.deadSince(); dead != 0 && dead <= stamp && stamp-dead > AccessKeyRetentionMs {
			d.dropAccessKey(ak)
		}
	}
}

// Snapshot implements raft.FSM. The state is serialised under the read lock: it is small
// compared to what raft copies anyway, and a consistent copy is simplest.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	cp := *f.d
	cp.Applied = f.applied.Load()
	b, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	if f.onSnapshot != nil {
		f.onSnapshot(cp.Applied, sha256.Sum256(b))
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	d := newData()
	h := sha256.New()
	tee := io.TeeReader(rc, h)
	dec := json.NewDecoder(tee)
	if err := dec.Decode(d); err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	// The snapshot's hash covers every byte: read what the decoder left.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	if d.Version < 1 || d.Version > SnapshotVersion {
		return fmt.Errorf("state: restore: snapshot version %d, this binary reads 1 to %d", d.Version, SnapshotVersion)
	}
	d.Version = SnapshotVersion
	d.ensureMaps()
	f.mu.Lock()
	f.d = d
	f.at = d.Applied
	f.own = nil
	f.mu.Unlock()
	index := d.Applied
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if f.onRestore != nil {
		f.onRestore(index, sum)
	}
	f.setApplied(d.Applied)
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// Hash is the SHA-256 of the serialised state, for comparing nodes at the same index.
func (f *FSM) Hash() (index uint64, hash string) {
	c := f.Checkpoint()
	return c.Index, c.StateHash
}

// Checkpoint is a node's state summarised for comparing nodes: the index of the last
// applied entry, the hash of the state at exactly that index, and the audit chain's head.
type Checkpoint struct {
	Index     uint64 `json:"applied_index"`
	StateHash string `json:"state_hash"`
	AuditSeq  uint64 `json:"audit_seq"`
	AuditHead string `json:"audit_head"`
}

// Checkpoint returns the state's checkpoint, read under one lock so that the hash, the
// audit head and the index belong together.
func (f *FSM) Checkpoint() Checkpoint {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := Checkpoint{Index: f.at, StateHash: f.stateHashLocked(), AuditHead: GenesisHash}
	if n := len(f.d.Audit); n > 0 {
		c.AuditSeq, c.AuditHead = f.d.Audit[n-1].Seq, f.d.Audit[n-1].Hash
	}
	return c
}

// equalBytes is a small helper for nonce comparisons.
func equalBytes(a, b []byte) bool { return bytes.Equal(a, b) }
