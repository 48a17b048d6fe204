package state

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/statedb"
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
	MaxProposals = 1_000_000
	// RequestRetentionMs and AccessKeyRetentionMs are the default retentions; the admin
	// sets others within [Min…, Max…] (PUT /v1/admin/retention), replicated.
	RequestRetentionMs    = 24 * 60 * 60 * 1000
	MinRequestRetentionMs = 60 * 60 * 1000
	MaxRequestRetentionMs = 366 * 24 * 60 * 60 * 1000
	// Used session nonces are remembered twice as long as finished requests
	// (meta.sessionRetention): past the retention of the request each served (a session
	// id also binds the request id, which cannot be reused while the request is kept, and
	// each node's keystore refuses a session it ran before).
	// pruneEveryMs is how often (in stamp time) Apply prunes, unless the last prune left a
	// backlog.
	pruneEveryMs = 1000
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
	AccessKeyRetentionMs    = 30 * 24 * 60 * 60 * 1000
	MinAccessKeyRetentionMs = 24 * 60 * 60 * 1000
	MaxAccessKeyRetentionMs = 10 * 366 * 24 * 60 * 60 * 1000
	// SnapshotVersion is the newest version of the in-memory JSON snapshot format (2 added
	// access keys) written by earlier binaries; Restore reads versions 1 and 2 and
	// converts them (legacy.go). Snapshots are now statedb streams.
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
	Kind      string // EventScheduled, EventSettled, EventKeyFailed, EventRetry, EventApproval, EventApproved, EventCheckpoint, EventCheckpointVote
	RequestID string
	KeyID     string
	Stamp     int64
	// Index is the entry's raft index; for checkpoint events, the checkpoint's index.
	Index uint64
	// Hash is this node's state hash at a checkpoint (EventCheckpoint).
	Hash string
	// Vote is the member's signed report that was recorded (EventCheckpointVote): a node
	// that cannot trust the members its state lists (it restored a snapshot it did not
	// take) verifies it against members it does trust (internal/vouch).
	Vote *Report
}

// Event kinds.
const (
	EventScheduled = "scheduled"
	EventSettled   = "settled"
	EventKeyFailed = "key_failed"
	// EventKeyDeleted: a key's deletion completed; the node erases its share.
	EventKeyDeleted = "key_deleted"
	// EventReshared: a reshare completed; the new parties put their new shares in place,
	// the parties left out erase theirs. EventReshareFailed: it failed; the new parties
	// drop the shares they stored aside.
	EventReshared      = "reshared"
	EventReshareFailed = "reshare_failed"
	// EventMembers: the member list changed (the node updates its gater and dial
	// addresses; the leader its raft configuration).
	EventMembers = "members"
	EventRetry   = "retry"
	// EventApproval: a request now waits for approval; EventApproved: its approval passed
	// and the leader schedules it once its delay is over.
	EventApproval = "approval"
	EventApproved = "approved"
	// EventBroadcast: a signed transaction's broadcast was recorded.
	EventBroadcast = "broadcast"
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

// FSM is custos's raft state machine. Its state is in its own Pebble database
// (internal/statedb): every raft batch's writes and its last index commit together, so
// the database always holds exactly a prefix of the log, a restart replays only what
// follows it, and memory holds only the cluster record (meta) and per-batch caches.
type FSM struct {
	db       *statedb.DB
	log      *slog.Logger
	verifier Verifier
	authn    *authn.Verifier
	onEvent  func(Event)
	// keys keeps the public keys entries are signed with expanded for verification
	// (members' identities, callers' keys): each batch's memo verifies through it.
	keys *authn.KeyCache

	// applyMu serialises Apply, ApplyBatch and Restore (raft calls them from one
	// goroutine; tests and tools may not).
	applyMu sync.Mutex
	// committed is the meta of the last committed batch (never changed in place).
	committed atomic.Pointer[meta]
	// policies is the active policies of the last committed batch, compiled (immutable;
	// a batch that changes them publishes a new set at commit).
	policies atomic.Pointer[policy.Set]
	applied  atomic.Uint64
	// keysVersion moves whenever a key record changed (a committed batch, a reload): see
	// KeysVersion.
	keysVersion atomic.Uint64
	// halted records an entry this binary cannot apply; the node stops serving.
	halted atomic.Pointer[string]

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every commit

	// ownMu guards own: this node's state hashes at recent checkpoint indices (local,
	// never part of the state), filled by the hasher.
	ownMu sync.Mutex
	own   map[uint64]string
	hash  *hasher

	// emitMu serialises calls of onEvent.
	emitMu sync.Mutex

	// lastMu guards last: the last Checkpoint computed.
	lastMu sync.Mutex
	last   *Checkpoint

	// onSnapshot, when set, learns the index and SHA-256 of every snapshot this FSM
	// produces (the node remembers them as its own, trusted on restore).
	onSnapshot func(index uint64, sum [32]byte)
	// onRestore, when set, learns the index and SHA-256 of every snapshot restored.
	onRestore func(index uint64, sum [32]byte)
	// onRestoreStart, when set, runs before a restore replaces the state; an error
	// refuses the restore.
	onRestoreStart func() error
}

// Config is what Open needs.
type Config struct {
	// Dir is the state database's directory: its own, never the keystore's.
	Dir string
	// Verifier checks threshold signatures and Authn callers' credentials (both pure
	// functions, called inside Apply).
	Verifier Verifier
	Authn    *authn.Verifier
	// OnEvent (may be nil) is called after each commit, and by the checkpoint hasher;
	// never twice at once. It must not block.
	OnEvent func(Event)
	Logger  *slog.Logger
	// CacheSize is the database's block cache in bytes (0: DefaultCacheSize).
	CacheSize int64
}

// DefaultCacheSize is the state database's block cache: the records Apply reads on every
// entry (users, keys, open requests, live nonces, indexes and filters) stay in it,
// whatever the history's size. It is memory Pebble manages itself that fills as the
// database grows and then stays: 64 MiB cost a node 120 MiB more resident memory at 150 k
// sign lifecycles for 14 % more apply throughput (make bench-state), and took a real node
// longer to fill than a soak runs.
const DefaultCacheSize = 16 << 20

// Open opens (or creates) the state in cfg.Dir. Close it when done.
func Open(cfg Config) (*FSM, error) {
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	db, err := statedb.Open(cfg.Dir, statedb.Options{Logger: cfg.Logger, CacheSize: cfg.CacheSize})
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	f := &FSM{db: db, log: cfg.Logger, verifier: cfg.Verifier, authn: cfg.Authn, onEvent: cfg.OnEvent, keys: authn.NewKeyCache(), notify: make(chan struct{})}
	if err := f.reload(); err != nil {
		_ = db.Close()
		return nil, err
	}
	f.hash = startHasher(f)
	return f, nil
}

// reload reads the committed meta and applied index from the database.
func (f *FSM) reload() error {
	idx, _, err := f.db.AppliedIndex()
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	m := newMeta()
	if err := catchFault(func() {
		if got, ok := load[meta](dbKV{f.db}, key(tMeta)); ok {
			m = got
		}
	}); err != nil {
		return err
	}
	if m.Version != stateVersion {
		return fmt.Errorf("state: the database's layout is version %d, this binary reads version %d", m.Version, stateVersion)
	}
	var pols *policy.Set
	if err := catchFault(func() { pols = loadPolicies(dbKV{f.db}) }); err != nil {
		return err
	}
	f.policies.Store(pols)
	f.committed.Store(m)
	f.setApplied(idx)
	f.keysVersion.Add(1)
	return nil
}

// KeysVersion changes whenever a key record may have changed: a committed batch that
// wrote one, a restore, the start. A node's background work that goes over every key
// (the runner's share reconciliation) need do so only when it moved: signing leaves keys
// alone, so that work no longer grows with the number of keys while the cluster signs.
func (f *FSM) KeysVersion() uint64 { return f.keysVersion.Load() }

// Close stops the checkpoint hasher and closes the database (durably).
func (f *FSM) Close() error {
	f.hash.stop()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("state: close: %w", err)
	}
	return nil
}

// Sync makes every committed batch durable.
func (f *FSM) Sync() error { return f.db.Sync() }

// DBMemory reports the state database's block cache and memtables.
func (f *FSM) DBMemory() (statedb.Memory, error) { return f.db.Memory() }

// OnSnapshot sets the function told about every snapshot this FSM produces. Set it
// before the FSM is given to raft.
func (f *FSM) OnSnapshot(fn func(index uint64, sum [32]byte)) { f.onSnapshot = fn }

// OnRestore sets the function told, synchronously, about every snapshot restored, before
// any entry after it applies. Set it before the FSM is given to raft.
func (f *FSM) OnRestore(fn func(index uint64, sum [32]byte)) { f.onRestore = fn }

// OnRestoreStart sets the function called before a restore replaces the state (so that
// what must hold while a restored state is not yet trusted holds from before the switch,
// should the node stop between the switch and OnRestore's call); if it fails, the restore
// is refused and the state left as it was. Set it before the FSM is used.
func (f *FSM) OnRestoreStart(fn func() error) { f.onRestoreStart = fn }

func (f *FSM) meta() *meta { return f.committed.Load() }

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

func (f *FSM) halt(reason string) {
	f.halted.CompareAndSwap(nil, &reason)
}

// emit hands events to onEvent, one caller at a time (Apply and the hasher both emit).
func (f *FSM) emit(events ...Event) {
	f.emitMu.Lock()
	defer f.emitMu.Unlock()
	for _, e := range events {
		f.onEvent(e)
	}
}

// AppliedIndex is the raft index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

var haltedResult = Result{Code: "cluster.unavailable", Detail: "node halted"}

// ApplyBatch implements raft.BatchingFSM: the batch's entries apply in order into one
// database batch, committed with the last index once (and also at every checkpoint
// index, whose state the hasher reads). Entries at or below the database's applied
// index were applied before a restart and are skipped.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	out := make([]any, len(logs))
	memo := authn.NewMemo(f.keys)
	var an *authn.Verifier
	if f.authn != nil {
		an = f.authn.WithMemo(memo)
	}
	var sigs *sigMemo
	if f.verifier != nil {
		sigs = newSigMemo(f.verifier)
	}
	ready, wait := f.prepare(logs, f.applied.Load(), memo, an, sigs)
	defer wait()
	var cur *batchRun
	defer func() {
		if cur != nil {
			cur.discard()
		}
	}()
	for i, l := range logs {
		if l.Index <= f.applied.Load() || (cur != nil && l.Index <= cur.last) {
			continue
		}
		if f.Halted() != "" {
			// Once halted, nothing more is applied: state must not move past an entry
			// this binary does not understand.
			out[i] = haltedResult
			continue
		}
		if cur == nil {
			var err error
			if cur, err = f.beginRun(memo, an, sigs); err != nil {
				f.halt(fmt.Sprintf("entry %d: state database: %v", l.Index, err))
				out[i] = haltedResult
				continue
			}
		}
		if l.Type != raft.LogCommand {
			cur.last = l.Index
			continue
		}
		env, e, reason := ready[i].wait(l)
		if reason != "" {
			// Nothing of this entry was written: what came before it commits.
			if cur.last != 0 {
				f.commitRun(cur)
			} else {
				cur.discard()
			}
			cur = nil
			f.halt(reason)
			out[i] = haltedResult
			continue
		}
		res, checkpoint, err := cur.apply(env, e.apply, l.Index)
		if err != nil {
			// The database failed mid-entry: nothing of this batch is committed; what
			// came before this entry in it applies again after a restart.
			cur.discard()
			cur = nil
			f.halt(fmt.Sprintf("entry %d: %v", l.Index, err))
			out[i] = haltedResult
			continue
		}
		out[i] = res
		if checkpoint || cur.m.checkpointDue(l.Index, cur.m.Objects+cur.t.objects) {
			cur.m.openCheckpoint(l.Index)
			if !f.commitRun(cur) {
				cur = nil
				continue
			}
			cur = nil
			f.hash.enqueue(l.Index)
		}
	}
	if cur != nil && cur.last != 0 {
		f.commitRun(cur)
		cur = nil
	}
	return out
}

// batchRun is a database batch being filled by consecutive entries.
type batchRun struct {
	f      *FSM
	b      *statedb.Batch
	t      *tx
	m      *meta
	pols   *policy.Set
	last   uint64 // the last index applied into it (0: none)
	events []Event
	// memo holds the batch's signatures verified ahead (ahead.go); authn is the FSM's
	// verifier through it, verifier its threshold-signature verifier through sigMemo.
	memo     *authn.Memo
	authn    *authn.Verifier
	verifier Verifier
}

func (f *FSM) beginRun(memo *authn.Memo, an *authn.Verifier, sigs *sigMemo) (*batchRun, error) {
	b, err := f.db.NewBatch()
	if err != nil {
		return nil, err
	}
	r := &batchRun{f: f, b: b, t: newTx(b), m: f.meta().clone(), pols: f.policies.Load(), memo: memo, authn: an, verifier: f.verifier}
	if sigs != nil {
		r.verifier = sigs
	}
	return r, nil
}

func (r *batchRun) discard() { _ = r.b.Close() }

// decodeEntry decodes a command entry, or says why this binary cannot apply it.
func decodeEntry(l *raft.Log) (*Envelope, entry, string) {
	var env Envelope
	if err := json.Unmarshal(l.Data, &env); err != nil {
		return nil, entry{}, fmt.Sprintf("entry %d: undecodable: %v", l.Index, err)
	}
	cmd, known := commands[env.Type]
	if !known || env.Version < 1 || env.Version > cmd.version {
		return nil, entry{}, fmt.Sprintf("entry %d: unknown command %s v%d", l.Index, env.Type, env.Version)
	}
	e, err := cmd.decode(env.Payload)
	if err != nil {
		// A field or kind this binary does not know (a newer member proposed it), or
		// bytes no binary wrote: never skip it, never half-read it.
		return nil, entry{}, fmt.Sprintf("entry %d: %s v%d cannot be decoded by this binary: %v", l.Index, env.Type, env.Version, err)
	}
	return &env, e, ""
}

// apply applies one decoded entry into the run.
func (r *batchRun) apply(env *Envelope, apply func(*applier) Result, index uint64) (res Result, checkpoint bool, err error) {
	if err := catchFault(func() {
		res, checkpoint = r.applyEntry(env, apply, index)
	}); err != nil {
		return Result{}, false, err
	}
	r.last = index
	res.Index = index
	return res, checkpoint, nil
}

// applyEntry applies one decoded entry; checkpoint says it asked for a state checkpoint
// at its index.
func (r *batchRun) applyEntry(env *Envelope, apply func(*applier) Result, index uint64) (Result, bool) {
	m := r.m
	if env.Stamp < m.LastStamp {
		return Result{Code: "cluster.unavailable", Detail: "entry stamped before its predecessor; retry"}, false
	}
	m.LastStamp = env.Stamp
	events := len(r.events)
	a := &applier{t: r.t, m: m, pols: &r.pols, stamp: env.Stamp, index: index, verifier: r.verifier, authn: r.authn, memo: r.memo, events: &r.events}
	if env.Stamp-m.LastPrune >= pruneEveryMs || m.PruneBehind {
		m.LastPrune = env.Stamp
		m.PruneBehind = a.prune()
	}
	a.expireApprovals()
	a.completeDeletions()
	res := a.applyEntry(env, apply)
	for i := events; i < len(r.events); i++ {
		if r.events[i].Index == 0 {
			r.events[i].Index = index
		}
	}
	return res, a.checkpointHere
}

// commitRun writes the run's objects and meta and commits them with its last index, then
// publishes the new meta and index and hands out the run's events. It reports false
// (and halts) when the commit failed.
func (f *FSM) commitRun(r *batchRun) bool {
	if err := catchFault(func() {
		r.t.flush()
		r.m.Objects += r.t.objects
		r.t.objects = 0
		r.t.setRaw(key(tMeta), mustJSON(r.m))
	}); err != nil {
		r.discard()
		f.halt(fmt.Sprintf("entry %d: %v", r.last, err))
		return false
	}
	if err := r.b.Commit(r.last, r.m.LastStamp); err != nil {
		f.halt(fmt.Sprintf("entry %d: state database commit: %v", r.last, err))
		return false
	}
	f.policies.Store(r.pols)
	f.committed.Store(r.m)
	f.setApplied(r.last)
	if r.t.keysChanged {
		f.keysVersion.Add(1)
	}
	f.emit(r.events...)
	return true
}

func (a *applier) applyEntry(env *Envelope, apply func(*applier) Result) Result {
	if a.m.Strict && commands[env.Type].legacy {
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

// catchFault runs fn and returns the database fault it raised, if any.
func catchFault(fn func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			df, ok := p.(dbFault)
			if !ok {
				panic(p)
			}
			err = df.err
		}
	}()
	fn()
	return nil
}

// dbKV reads the committed state directly (single reads that need no view).
type dbKV struct{ db *statedb.DB }

func (d dbKV) Get(k []byte) ([]byte, error) { return d.db.Get(k) }

func (d dbKV) Scan(lower, upper []byte, fn func(key, value []byte) error) error {
	v, err := d.db.View()
	if err != nil {
		return err
	}
	defer v.Close()
	return v.Scan(lower, upper, fn)
}

// read runs fn over a consistent view of the committed state and the committed meta.
// A database failure while reading halts nothing: fn sees the records read so far and
// the error is logged (reads serve the API; Apply is where faults halt).
func (f *FSM) read(fn func(r readKV, m *meta)) {
	v, err := f.db.View()
	if err != nil {
		f.log.Error("state: read", "err", err)
		fn(emptyKV{}, f.meta())
		return
	}
	defer v.Close()
	m := f.meta()
	if err := catchFault(func() { fn(v, m) }); err != nil {
		f.log.Error("state: read", "err", err)
	}
}

// emptyKV reads as an empty state.
type emptyKV struct{}

func (emptyKV) Get([]byte) ([]byte, error) { return nil, statedb.ErrNotFound }

func (emptyKV) Scan([]byte, []byte, func(key, value []byte) error) error { return nil }

// Snapshot implements raft.FSM: an O(1) consistent view of the database, streamed by
// Persist while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	// A halted FSM's state stops at the entry it could not apply while raft goes on
	// counting entries applied: a snapshot now would be labelled past what it holds, and a
	// node restoring it (or this one, restarted) would skip the entries between.
	if why := f.Halted(); why != "" {
		return nil, fmt.Errorf("state: no snapshot of a halted state machine (%s)", why)
	}
	s, err := f.db.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	idx, _, err := s.View().AppliedIndex()
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	return &fsmSnapshot{f: f, s: s, index: idx}, nil
}

type fsmSnapshot struct {
	f     *FSM
	s     *statedb.Snapshot
	index uint64
}

// CheckpointSink is a raft snapshot sink that keeps the snapshot as a checkpoint of the
// state database (raftnode's snapshot store) rather than as a stream written into it.
type CheckpointSink interface {
	raft.SnapshotSink
	// Checkpoint calls take with a directory that does not exist yet, for take to write
	// the checkpoint into, and keeps what take wrote as the snapshot; take returns the
	// applied index the checkpoint holds, at or after the snapshot's own.
	Checkpoint(take func(dir string) (uint64, error)) error
}

// Persist keeps the snapshot: as a checkpoint of the database when the sink can hold
// one (a flush and hard links, whatever the state's size: statedb.Checkpoint), otherwise
// streamed into the sink, telling onSnapshot its SHA-256.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if cs, ok := sink.(CheckpointSink); ok {
		return s.persistCheckpoint(cs)
	}
	h := sha256.New()
	if _, err := s.s.WriteTo(newPacedWriter(io.MultiWriter(sink, h))); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	// The database keeps no write-ahead log (statedb's doc): once this snapshot is in
	// raft's store, raft may drop the log before it and, at the next start, replays
	// only what follows it (NoSnapshotRestoreOnStart). Make the state durable at least
	// to the snapshot's index first, so a crash never leaves it behind the snapshot
	// with the entries between gone (raftnode's restoreIfBehind would then have to
	// restore the whole snapshot).
	if err := s.f.db.Sync(); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	if s.f.onSnapshot != nil {
		var sum [32]byte
		h.Sum(sum[:0])
		s.f.onSnapshot(s.index, sum)
	}
	return nil
}

// persistCheckpoint keeps the snapshot as a checkpoint. The checkpoint holds the state
// at its own applied index, which may be past the snapshot's (Apply goes on while it is
// taken): raft hands the entries between to a node that restores it again, and the FSM
// skips them as applied. It tells onSnapshot nothing: no stream was written, so there is
// no SHA-256 a later restore could match (a node that restores its own checkpoint, its
// state database lost, has it vouched for like any other snapshot).
func (s *fsmSnapshot) persistCheckpoint(sink CheckpointSink) error {
	err := sink.Checkpoint(func(dir string) (uint64, error) {
		idx, err := s.f.db.Checkpoint(dir)
		if err == nil && idx < s.index {
			err = fmt.Errorf("the checkpoint holds index %d, before the snapshot's %d", idx, s.index)
		}
		return idx, err
	})
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("state: persist snapshot: %w", err)
	}
	return nil
}

func (s *fsmSnapshot) Release() { _ = s.s.Close() }

// WriteState writes the state as it now is (a consistent view) in the snapshot stream
// format, for reading it outside raft — a halted FSM's too, which Snapshot refuses: its
// state is then the one before the entry it could not apply.
func (f *FSM) WriteState(w io.Writer) (int64, error) {
	s, err := f.db.Snapshot()
	if err != nil {
		return 0, fmt.Errorf("state: %w", err)
	}
	defer s.Close()
	n, err := s.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("state: %w", err)
	}
	return n, nil
}

// StreamCheckpoint writes the snapshot stream of a checkpoint that Persist kept (for a
// follower that needs the snapshot, or a restore), paced like Persist's stream, and
// returns its length and the applied index it carries.
func (f *FSM) StreamCheckpoint(dir string, w io.Writer) (int64, uint64, error) {
	n, idx, err := f.db.StreamCheckpoint(dir, newPacedWriter(w))
	if err != nil {
		return n, idx, fmt.Errorf("state: stream checkpoint: %w", err)
	}
	return n, idx, nil
}

// pacedWriter gives way to Apply while a snapshot streams: after each pacedChunk
// bytes it sleeps as long as producing them took, so the stream (reading and
// decompressing the whole state, hashing it, writing it out) holds a core at most half
// the time. On two cores an unpaced stream slowed every Apply batch for the whole of a
// snapshot (make bench-state, 1 M lifecycles: 64-entry batches p99 ≈ 50 ms while a
// snapshot streamed, longest 316 ms; paced, at 300 k: p99 16–21 ms, longest 26 ms);
// the price is a snapshot that takes about twice as long, which raft does not wait
// for (Persist runs beside Apply).
type pacedWriter struct {
	w     io.Writer
	n     int       // bytes since the last pause
	since time.Time // end of the last pause
	// now and sleep are the clock (tests replace them).
	now   func() time.Time
	sleep func(time.Duration)
}

// pacedChunk is the bytes between pauses: small enough that a pause comes every few
// milliseconds, so no Apply waits long behind the stream.
const pacedChunk = 256 << 10

func newPacedWriter(w io.Writer) *pacedWriter {
	return &pacedWriter{w: w, since: time.Now(), now: time.Now, sleep: time.Sleep}
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += n
	if p.n >= pacedChunk {
		p.sleep(p.now().Sub(p.since))
		p.n, p.since = 0, p.now()
	}
	return n, err
}

// Restore implements raft.FSM: the stream replaces the whole state (atomically: a
// failed restore keeps the old one). raft calls it with a snapshot the leader sent,
// which must be in this binary's format (every member runs it: see README, upgrading).
func (f *FSM) Restore(rc io.ReadCloser) error { return f.restore(rc, false) }

// RestoreLocal is Restore for a snapshot this node's own raft store holds, at start: it
// also converts the JSON snapshots earlier binaries wrote (legacy.go), so that their data
// directories upgrade in place. (A leader's snapshot in that format is refused: it would
// be decoded in memory, whatever its size.)
func (f *FSM) RestoreLocal(rc io.ReadCloser) error { return f.restore(rc, true) }

func (f *FSM) restore(rc io.ReadCloser, legacy bool) error {
	defer rc.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.onRestoreStart != nil {
		if err := f.onRestoreStart(); err != nil {
			return fmt.Errorf("state: restore refused: %w", err)
		}
	}
	h := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(rc, h), 64<<10)
	first, err := br.Peek(1)
	if err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	switch {
	case first[0] == '{' && !legacy:
		return errors.New("state: restore: the snapshot is in the format of an earlier binary (JSON): upgrade every member to this binary")
	case first[0] == '{' && f.applied.Load() != 0:
		// Only the first start of this binary on an earlier one's data directory (no
		// state database yet) has a JSON snapshot of its own to convert. Past that, a
		// JSON snapshot in the store can only be one a leader sent, which raft keeps on
		// disk even though Restore refused it: it is not decoded (in memory) at start.
		return errors.New("state: restore: the snapshot is in the format of an earlier binary (JSON) and this node's state database is not empty: a leader sent it (this binary refuses it); move this node's raft and state directories aside and restart it to resynchronise")
	case first[0] == '{':
		err = f.restoreLegacy(br)
	default:
		err = f.db.RestoreChecked(br, verifyRestored)
	}
	if err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	// The snapshot's hash covers every byte: read what the reader left.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	if err := f.reload(); err != nil {
		return err
	}
	f.ownMu.Lock()
	f.own = nil
	f.ownMu.Unlock()
	f.lastMu.Lock()
	f.last = nil
	f.lastMu.Unlock()
	var sum [32]byte
	h.Sum(sum[:0])
	if f.onRestore != nil {
		f.onRestore(f.applied.Load(), sum)
	}
	return nil
}

// Hash is this node's state hash at its applied index, for comparing nodes.
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

// Checkpoint returns the state's checkpoint, computed over one consistent view (a scan
// of the state but its audit log; see checkpointOf). The last one is remembered: while
// nothing is applied, asking again (operators and harnesses poll /debug/state) costs
// nothing.
func (f *FSM) Checkpoint() Checkpoint {
	f.lastMu.Lock()
	defer f.lastMu.Unlock()
	if f.last != nil && f.last.Index == f.applied.Load() {
		return *f.last
	}
	v, err := f.db.View()
	if err != nil {
		return Checkpoint{Index: f.applied.Load()}
	}
	defer v.Close()
	c, err := checkpointOf(v)
	if err != nil {
		f.log.Error("state: checkpoint", "err", err)
		return c
	}
	f.last = &c
	return c
}

// equalBytes is a small helper for nonce comparisons.
func equalBytes(a, b []byte) bool { return bytes.Equal(a, b) }
