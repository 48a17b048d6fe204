package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
)

const rpcPropose = "propose"

// open starts raft with a raft-wal log and stable store (raft-boltdb/v2 does not build
// with raft v1.8; raft-wal is hashicorp's own, append-only and fsyncs each batch) and
// the snapshot store of snapstore.go, over the libp2p stream layer.
func (n *Node) open() error {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o700); err != nil {
		return fmt.Errorf("raft dir: %w", err)
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: raftLog{n.log}, JSONFormat: true})
	segment := 64 << 20 // raft-wal's default
	if n.cfg.InsecureTesting.RaftTrailingLogs != 0 {
		// Test-only: small segments, so that compacting the log really drops entries (a
		// follower behind them then catches up from a snapshot; raft-wal still serves
		// compacted entries that sit in its current segment).
		segment = 64 << 10
	}
	w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(hl), wal.WithSegmentSize(segment))
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	n.wal = w
	snaps, err := newSnapshotStore(dir, 2, n.fsm, hl, n.log)
	if err != nil {
		return fmt.Errorf("raft snapshots: %w", err)
	}
	n.snaps = snaps
	layer, err := n.host.RaftStreamLayer()
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  hl,
	})
	n.trans = trans

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.Logger = hl
	// Ceremonies saturate the CPU (ECDSA keygen for seconds); timeouts leave room so that
	// a busy node is not mistaken for a dead one.
	rc.HeartbeatTimeout = 2 * time.Second
	rc.ElectionTimeout = 2 * time.Second
	rc.LeaderLeaseTimeout = time.Second
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = minSnapshotThreshold // then as the state grows: snapshots.go
	rc.TrailingLogs = 8192
	rc.BatchApplyCh = true
	// A leader never removes itself (RemoveServer refuses it); should a configuration
	// without this node still commit while it leads, it steps down and keeps running
	// (raft would otherwise shut itself down and leave the node half alive).
	rc.ShutdownOnRemove = false
	if it := n.cfg.InsecureTesting; it.RaftSnapshotThreshold != 0 || it.RaftTrailingLogs != 0 || it.RaftSnapshotInterval.Duration != 0 {
		// Test-only (dev mode): snapshot and compact early.
		rc.SnapshotThreshold = max(it.RaftSnapshotThreshold, 16)
		rc.TrailingLogs = max(it.RaftTrailingLogs, 8)
		if it.RaftSnapshotInterval.Duration > 0 {
			rc.SnapshotInterval = it.RaftSnapshotInterval.Duration
		}
		n.log.Warn("INSECURE: raft snapshots and log compaction set for tests", "threshold", rc.SnapshotThreshold, "trailing", rc.TrailingLogs)
		n.fixedSnapshots = true
	}

	// The state is in its own database, which holds a prefix of the log: raft must not
	// restore its newest snapshot over it at every start, only replay the log after it
	// (the FSM skips what it already holds).
	rc.NoSnapshotRestoreOnStart = true
	if err := checkStateNotAhead(w, snaps, n.fsm.AppliedIndex()); err != nil {
		return err
	}
	if err := restoreIfBehind(snaps, w, n.raftFSM, n.fsm.AppliedIndex(), n.log); err != nil {
		return err
	}
	// Again: a snapshot restoreIfBehind set aside no longer covers the state.
	if err := checkStateNotAhead(w, snaps, n.fsm.AppliedIndex()); err != nil {
		return err
	}
	fsm := n.raftFSM
	if b, ok := fsm.(raft.BatchingFSM); ok {
		fsm = refusalGuard{BatchingFSM: b, snaps: snaps}
	}

	has, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return fmt.Errorf("raft state: %w", err)
	}
	// The log raft appends to goes through the followers' check on stamps (stampgate.go).
	logs := &stampGate{LogStore: w, now: n.now, log: n.log, refused: n.stampRefusals}
	r, err := raft.NewRaft(rc, fsm, logs, w, snaps, trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	n.raft = r
	if !has && n.cfg.Cluster.Join {
		// A joining node has no configuration until the leader adds it (AddNonvoter) and
		// replicates the log or a snapshot to it; without one it never campaigns.
		n.log.Info("joining an existing cluster: waiting for its leader to add this node (cluster.join)", "node_id", n.cfg.NodeID)
	}
	if !has && !n.cfg.Cluster.Join {
		var servers []raft.Server
		for _, m := range n.cfg.Cluster.Members {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.PeerID)})
		}
		// Every node bootstraps with the same configuration; raft accepts that.
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("raft bootstrap: %w", err)
		}
	}
	return nil
}

// checkStateNotAhead refuses a state database that holds entries the raft log and
// snapshots do not (raft fsyncs every entry before it is applied, so this only happens
// when the raft directory was replaced): raft would hand the FSM those indices again for
// other entries, and the FSM would skip them as already applied.
func checkStateNotAhead(logs raft.LogStore, snaps raft.SnapshotStore, applied uint64) error {
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("raft snapshots: %w", err)
	}
	if len(list) > 0 {
		last = max(last, list[0].Index)
	}
	if applied > last && len(list) > 0 {
		// A snapshot's state may hold entries past the index raft took it at (a
		// checkpoint, taken while apply went on): a node that restored one and stopped
		// before the leader sent it those entries again holds them only there.
		if ci, ok := snaps.(contentIndexer); ok {
			if content, err := ci.ContentIndex(list[0].ID); err == nil && applied <= content {
				return nil
			}
		}
	}
	if applied > last {
		return fmt.Errorf("the state database holds entries up to index %d but the raft log and snapshots end at %d: the raft directory was replaced without the state directory; to resynchronise this node from the cluster, move both %s and %s aside", applied, last, "raft/", "state/")
	}
	return nil
}

// contentIndexer is a snapshot store that knows the applied index a snapshot's state
// holds (snapshotStore).
type contentIndexer interface {
	ContentIndex(id string) (uint64, error)
}

// localRestorer is an FSM that reads more formats from its own snapshot store than from a
// leader (state.FSM: the JSON snapshots of earlier binaries).
type localRestorer interface {
	RestoreLocal(rc io.ReadCloser) error
}

// refusalGuard is the FSM raft drives: it tells the snapshot store whether the FSM
// restored the snapshot a leader sent (snapshotStore.restoreRefused).
type refusalGuard struct {
	raft.BatchingFSM
	snaps *snapshotStore
}

func (g refusalGuard) Restore(rc io.ReadCloser) error {
	if err := g.BatchingFSM.Restore(rc); err != nil {
		g.snaps.restoreRefused(err)
		return err
	}
	g.snaps.restored()
	return nil
}

// asideSetter is a snapshot store that can set aside a stream its FSM refused
// (snapshotStore).
type asideSetter interface {
	setAside(id string) (bool, error)
}

// restoreIfBehind restores the newest raft snapshot into the FSM when the state database
// is behind it: a database that does not exist yet (the first start of this binary on a
// data directory an earlier one wrote: its JSON snapshot is converted, then the log after
// it replays) or one that lost its unsynced tail in a power failure after raft had
// compacted the log past it.
//
// A stream the FSM refuses is one a leader sent that this node stopped before refusing
// (or an earlier binary's that cannot be converted): it is set aside, and the next one
// tried, so long as the log still holds what follows the newest snapshot left (raft
// replays it from there). Only a refused checkpoint, this node's own, stops the start.
func restoreIfBehind(snaps raft.SnapshotStore, logs raft.LogStore, fsm raft.FSM, applied uint64, log *slog.Logger) error {
	var refused error // the last snapshot refused and set aside
	for {
		list, err := snaps.List()
		if err != nil {
			return fmt.Errorf("raft snapshots: %w", err)
		}
		if len(list) == 0 || list[0].Index <= applied {
			if refused == nil {
				return nil
			}
			var base uint64
			if len(list) > 0 {
				base = list[0].Index
			}
			if err := logFollows(logs, base); err != nil {
				return fmt.Errorf("%w (a snapshot it could not restore was set aside: %w)", err, refused)
			}
			return nil
		}
		newest := list[0]
		log.Info("state database is behind the newest raft snapshot: restoring it", "applied_index", applied, "snapshot_index", newest.Index, "snapshot_bytes", newest.Size)
		_, rc, err := snaps.Open(newest.ID)
		if err != nil {
			return fmt.Errorf("raft snapshot %s: %w", newest.ID, err)
		}
		restore := fsm.Restore
		if l, ok := fsm.(localRestorer); ok {
			restore = l.RestoreLocal
		}
		err = restore(rc)
		if err == nil {
			return nil
		}
		err = fmt.Errorf("restore raft snapshot %s (index %d): %w", newest.ID, newest.Index, err)
		a, ok := snaps.(asideSetter)
		if !ok {
			return err
		}
		moved, aerr := a.setAside(newest.ID)
		if aerr != nil {
			return errors.Join(err, aerr)
		}
		if !moved {
			return err
		}
		log.Warn("a raft snapshot this node holds was refused: set aside; starting from the state database and the log", "id", newest.ID, "index", newest.Index, "err", err)
		refused = err
	}
}

// logFollows checks that raft, which replays the log from the snapshot at base (0: no
// snapshot), finds its next entry there.
func logFollows(logs raft.LogStore, base uint64) error {
	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	if last != 0 && first > base+1 {
		return fmt.Errorf("the raft log starts at index %d, past the newest snapshot this node can restore (index %d): this node cannot catch up from what it holds; to resynchronise it from the cluster, move both %s and %s aside", first, base, "raft/", "state/")
	}
	return nil
}

// ErrNoQuorum and ErrUnavailable are mapped to the API's cluster codes: an entry that
// failed with ErrNoQuorum may still commit later, one that failed with ErrUnavailable was
// not accepted by a leader. ErrProposalRefused is the leader refusing a forwarded
// proposal a member may not make (never retried).
var (
	ErrProposalRefused = errors.New("proposal refused")
	ErrNoQuorum        = errors.New("no quorum: too few nodes reachable to commit")
	ErrUnavailable     = errors.New("cluster unavailable: no leader")
)

// forwarded is the RPC form of a proposal sent to the leader.
type forwarded struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Origin  string          `json:"origin"`
}

// Propose commits a command through raft, on the leader directly or forwarded to it,
// retrying across leader changes until ctx ends. It returns once the entry has also been
// applied on this node, so reads that follow see it.
func (n *Node) Propose(ctx context.Context, typ string, payload any) (state.Result, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return state.Result{}, fmt.Errorf("encode %s: %w", typ, err)
	}
	fw := forwarded{Type: typ, Payload: raw, Origin: n.cfg.NodeID}
	backoff := 20 * time.Millisecond
	start := time.Now()
	for {
		res, err := n.proposeOnce(ctx, fw)
		if err == nil {
			committed := time.Now()
			if werr := n.fsm.WaitApplied(ctx, res.Index); werr != nil {
				return res, fmt.Errorf("%w: committed but not yet applied here", ErrNoQuorum)
			}
			// The phases of the hot path: the commit as the leader reported it
			// (forwarding included) and the wait until this node applied the entry too.
			n.observe("proposal:"+typ, "commit", committed.Sub(start))
			n.observe("proposal:"+typ, "apply_wait", time.Since(committed))
			return res, nil
		}
		if !retryable(err) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return state.Result{}, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoQuorum)
}

func (n *Node) proposeOnce(ctx context.Context, fw forwarded) (state.Result, error) {
	if n.raft.State() == raft.Leader {
		return n.proposeLocal(ctx, fw)
	}
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return state.Result{}, ErrUnavailable
	}
	pid, err := peer.Decode(string(addr))
	if err != nil {
		return state.Result{}, fmt.Errorf("leader address: %w", err)
	}
	req, _ := json.Marshal(fw)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := n.host.Call(cctx, pid, rpcPropose, req)
	var re *p2p.RemoteError
	if errors.As(err, &re) && strings.HasPrefix(re.Message, ErrProposalRefused.Error()) {
		// The leader's gate refused the proposal itself: retrying cannot help.
		return state.Result{}, fmt.Errorf("%w (%s)", ErrProposalRefused, re.Message)
	}
	if err != nil {
		if ctx.Err() != nil {
			return state.Result{}, fmt.Errorf("%w: %v", ErrNoQuorum, err)
		}
		return state.Result{}, fmt.Errorf("%w: forwarding to the leader: %v", ErrUnavailable, err)
	}
	var res state.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return state.Result{}, fmt.Errorf("leader answer: %w", err)
	}
	return res, nil
}

// handlePropose serves a forwarded proposal on the leader. A member may forward only what
// a member originates: a client's request it received (Submit) and its own reports of
// share stored, ceremony result or failure — each signed by that member, and Origin or
// Node must be the authenticated peer of the stream. Everything else (the cluster's
// first entry, reschedules and fails) is the leader's own and never comes over the wire.
func (n *Node) handlePropose(ctx context.Context, from string, req []byte) ([]byte, error) {
	var fw forwarded
	if err := json.Unmarshal(req, &fw); err != nil {
		return nil, fmt.Errorf("bad proposal: %w", err)
	}
	if err := memberMayPropose(from, fw); err != nil {
		n.refused()
		n.log.Warn("refused a forwarded proposal", "from", from, "type", fw.Type, "err", err)
		return nil, fmt.Errorf("%w: %v", ErrProposalRefused, err)
	}
	if n.raft.State() != raft.Leader {
		return nil, ErrUnavailable
	}
	fw.Origin = from // the authenticated peer, never a field of the payload
	res, err := n.proposeLocal(ctx, fw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// memberMayPropose is the propose RPC's gate: which entry kinds a member may forward,
// and only in its own name (the FSM checks the signatures again).
func memberMayPropose(from string, fw forwarded) error {
	if err := state.ValidateEntry(fw.Type, fw.Payload); err != nil {
		// What this binary could not apply would halt every node: refuse it here.
		return fmt.Errorf("entry this node cannot decode: %w", err)
	}
	switch fw.Type {
	case state.TypeSubmit:
		var s state.Submit
		if err := json.Unmarshal(fw.Payload, &s); err != nil {
			return fmt.Errorf("bad submit: %w", err)
		}
		if s.Origin != from {
			return fmt.Errorf("a member submits requests only in its own name")
		}
		return nil
	case state.TypeReport:
		var r state.Report
		if err := json.Unmarshal(fw.Payload, &r); err != nil {
			return fmt.Errorf("bad report: %w", err)
		}
		if r.Node != from {
			return fmt.Errorf("a member reports only for itself")
		}
		if !slices.Contains(state.MemberReportKinds(), r.Kind) {
			return fmt.Errorf("report kind %q is the leader's own", r.Kind)
		}
		return nil
	}
	return fmt.Errorf("entry kind %q cannot be forwarded by a member", fw.Type)
}

// proposeLocal stamps and applies a command on the leader. Stamps are issued under a
// mutex in the order entries enter raft, so they never decrease.
func (n *Node) proposeLocal(ctx context.Context, fw forwarded) (state.Result, error) {
	if err := n.stampGuard(); err != nil { // clock.go: no stamps from a clock found off
		return state.Result{}, err
	}
	payload := any(fw.Payload)
	if fw.Type == state.TypeSubmit {
		var s state.Submit
		if err := json.Unmarshal(fw.Payload, &s); err != nil {
			return state.Result{}, fmt.Errorf("bad submit: %w", err)
		}
		// What only the leader chooses is the leader's: never a forwarder's.
		s.Schedule, s.Unschedulable = nil, ""
		n.sched.Schedule(&s, fw.Origin)
		if n.before != nil {
			n.before(&s)
		}
		payload = &s
	}
	n.stampMu.Lock()
	stamp := max(n.now().UnixMilli(), n.lastStamp, n.fsm.LastStamp())
	n.lastStamp = stamp
	data, err := state.Encode(fw.Type, stamp, payload)
	if err != nil {
		n.stampMu.Unlock()
		return state.Result{}, err
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	f := n.raft.Apply(data, timeout)
	n.stampMu.Unlock()
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return state.Result{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
			return state.Result{}, fmt.Errorf("%w: %v", ErrNoQuorum, err)
		}
		return state.Result{}, fmt.Errorf("%w: %v", ErrNoQuorum, err)
	}
	res, ok := f.Response().(state.Result)
	if !ok {
		return state.Result{}, fmt.Errorf("%w: entry %d was not applied", ErrUnavailable, f.Index())
	}
	res.Index = f.Index()
	n.spreadCommit()
	return res, nil
}

// SignSubmit signs a client's request as received by this node.
func (n *Node) SignSubmit(b *state.SubmitBody) (*state.Submit, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode submit: %w", err)
	}
	sig, err := authn.SignNode(n.identity, authn.DomainRequest, body)
	if err != nil {
		return nil, err
	}
	return &state.Submit{Origin: n.cfg.NodeID, Body: body, OriginSig: sig}, nil
}

// Report signs and proposes what this node says in its own name (a state.Report of kind
// typ), and returns the FSM's answer.
func (n *Node) Report(ctx context.Context, typ string, payload any) (state.Result, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return state.Result{}, fmt.Errorf("encode %s: %w", typ, err)
	}
	sig, err := authn.SignNode(n.identity, authn.DomainReport, state.ReportMessage(typ, body))
	if err != nil {
		return state.Result{}, err
	}
	return n.Propose(ctx, state.TypeReport, &state.Report{Node: n.cfg.NodeID, Kind: typ, Body: body, Sig: sig})
}

// spreadCommitTimeout bounds how long spreadCommit waits to enqueue its barrier. raft's
// apply queue is buffered: it is full only under a backlog of entries, and those carry
// the commit index to the followers anyway.
const spreadCommitTimeout = time.Millisecond

// spreadCommit makes the followers learn at once that the entry just applied here is
// committed.
// hashicorp/raft tells followers the commit index only in its next AppendEntries, which
// it sends when a new entry is appended or, with none, CommitTimeout (5-10 ms) later: on
// the sign path that delay was paid twice (a follower in the committee waiting to apply
// the schedule, the entry node waiting to apply the result). Appending a barrier, an
// entry raft itself defines and the FSM never sees, sends the commit index right away.
// Every committed proposal appends one: an entry appended before this one committed
// may have left with an older commit index, so a later entry in the log is no proof that
// the followers will hear of this commit soon. Barriers cost little: raft batches them
// with the other entries into one write, and nobody waits for them.
func (n *Node) spreadCommit() {
	// The future is not waited for (its Error would block until the barrier applied);
	// its result channel is buffered, so nothing leaks. A full apply queue (enqueue
	// timeout) means a backlog of entries that carry the commit index anyway.
	_ = n.raft.Barrier(spreadCommitTimeout)
}
