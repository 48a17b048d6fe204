// Package raftnode is a node's raft member: it opens raft over the libp2p stream layer
// with a raft-wal log and a snapshot store that keeps the node's snapshots as checkpoints
// of the state database (snapstore.go), stamps and proposes entries on the leader,
// forwards a follower's proposals to the leader (the propose RPC and its gate), signs
// the node's own reports, keeps the leader's clock honest (clock.go), and changes raft's
// membership on the leader's behalf (membership.go: add a nonvoter, tell it caught up,
// promote it, remove a server; a node with cluster.join waits to be added instead of
// bootstrapping).
//
// It owns raft's lifetime and nothing else: it never decides what an entry means (the FSM
// in internal/state does, from the signatures the entry carries), never chooses a
// committee (the scheduler does, through the Scheduler it is given), and never reads a
// share. A forwarded proposal is believed for nothing: the gate only keeps out what a
// member may never propose, the FSM verifies every signature again.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
)

// Host is the part of the libp2p host raft needs: its stream layer, and the RPCs that
// forward proposals, measure clocks and ask a member's applied index.
type Host interface {
	RaftStreamLayer() (*p2p.StreamLayer, error)
	HandleRPC(method string, fn p2p.RPCHandler)
	Call(ctx context.Context, to peer.ID, method string, req []byte) ([]byte, error)
	NodeIDOf(p peer.ID) (string, bool)
	PeerIDOf(nodeID string) (peer.ID, bool)
}

// FSM is the replicated state as raft and the proposer see it.
type FSM interface {
	raft.FSM
	// WaitApplied returns once the entry at index applied on this node.
	WaitApplied(ctx context.Context, index uint64) error
	// LastStamp is the stamp of the last applied entry (stamps never decrease).
	LastStamp() int64
	// AppliedIndex is the last index the state holds (durably, in its own database).
	AppliedIndex() uint64
	// StreamCheckpoint writes the snapshot stream of a checkpoint the FSM kept as a
	// snapshot (state.CheckpointSink), returning its length and the index it holds.
	StreamCheckpoint(dir string, w io.Writer) (int64, uint64, error)
}

// Scheduler fills in, on the leader and at stamping time, what only the leader chooses
// for a client's request (ids, committee, session nonce). The FSM bounds each choice.
type Scheduler interface {
	Schedule(s *state.Submit, origin string)
}

// Config is what a raft member needs.
type Config struct {
	// Config is the node's configuration: node id, data directory, members, the
	// insecure_testing raft settings.
	Config   *config.Config
	Logger   *slog.Logger
	Identity crypto.PrivKey // signs the node's reports and the requests it proposes
	Host     Host
	FSM      FSM
	// RaftFSM is what raft drives; nil means FSM (test builds wrap it).
	RaftFSM   raft.FSM
	Scheduler Scheduler
	// BeforeStamp, when set, sees a client request's entry after the leader scheduled it
	// (test builds' compromised coordinator; nil in every real build).
	BeforeStamp func(*state.Submit)
	// Now is the node's wall clock (shifted in tests); nil means time.Now.
	Now func() time.Time
	// Registerer receives this component's metrics.
	Registerer prometheus.Registerer
	// Phases is custos_phase_seconds{event,phase,role}; nil records nothing.
	Phases *prometheus.HistogramVec
	// OnRefused is called when the propose gate refuses a member's proposal.
	OnRefused func()
}

// Node is this node's raft member.
type Node struct {
	cfg      *config.Config
	log      *slog.Logger
	identity crypto.PrivKey
	host     Host
	fsm      FSM
	raftFSM  raft.FSM
	sched    Scheduler
	before   func(*state.Submit)
	nowFn    func() time.Time
	phases   *prometheus.HistogramVec
	refused  func()
	clock    *clockCheck
	// stampRefusals counts log entries this node would not store (stampgate.go).
	stampRefusals prometheus.Counter

	raft  *raft.Raft
	wal   *wal.WAL
	trans *raft.NetworkTransport
	snaps raft.SnapshotStore
	// fixedSnapshots: the test settings fix the snapshot threshold; otherwise pacing
	// sets it from the state's size (snapshots.go).
	fixedSnapshots bool
	pacing         snapshotPacing

	// stampMu serialises stamping with entering raft, so that stamps never decrease;
	// lastStamp is the last stamp issued here.
	stampMu   sync.Mutex
	lastStamp int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a raft member; Start opens raft.
func New(cfg Config) (*Node, error) {
	if cfg.Config == nil || cfg.Host == nil || cfg.FSM == nil || cfg.Identity == nil || cfg.Scheduler == nil || cfg.Registerer == nil {
		return nil, errors.New("raftnode: Config, Host, FSM, Identity, Scheduler and Registerer are required")
	}
	n := &Node{
		cfg: cfg.Config, log: cfg.Logger, identity: cfg.Identity, host: cfg.Host, fsm: cfg.FSM, raftFSM: cfg.RaftFSM,
		sched: cfg.Scheduler, before: cfg.BeforeStamp, nowFn: cfg.Now, phases: cfg.Phases, refused: cfg.OnRefused,
	}
	if n.log == nil {
		n.log = slog.Default()
	}
	if n.raftFSM == nil {
		n.raftFSM = cfg.FSM
	}
	if n.nowFn == nil {
		n.nowFn = time.Now
	}
	if n.refused == nil {
		n.refused = func() {}
	}
	n.clock = newClockCheck(cfg.Registerer)
	n.stampRefusals = newStampRefusals(cfg.Registerer)
	n.pacing = snapshotPacing{perEntry: snapshotBytesPerEntry, floor: minSnapshotThreshold}
	return n, nil
}

func (n *Node) now() time.Time {
	if n.nowFn == nil {
		return time.Now()
	}
	return n.nowFn()
}

// Start opens raft, installs the propose and clock RPCs, and starts the clock check.
func (n *Node) Start(ctx context.Context) error {
	if err := n.open(); err != nil {
		return err
	}
	n.host.HandleRPC(rpcClock, n.handleClock)
	n.host.HandleRPC(rpcApplied, n.handleApplied)
	n.host.HandleRPC(rpcPropose, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		id, ok := n.host.NodeIDOf(from)
		if !ok {
			return nil, errors.New("unknown peer")
		}
		return n.handlePropose(ctx, id, req)
	})
	ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.clockLoop(ctx)
	}()
	if !n.fixedSnapshots {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.snapshotLoop(ctx)
		}()
	}
	return nil
}

// Stop stops the clock check and shuts raft down; it returns once nothing of this
// member runs.
func (n *Node) Stop() error {
	if n.cancel != nil {
		n.cancel()
	}
	var errs []error
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	n.wg.Wait()
	if n.trans != nil {
		_ = n.trans.Close()
	}
	if n.wal != nil {
		_ = n.wal.Close()
	}
	return errors.Join(errs...)
}

// IsLeader reports whether this node is the raft leader now.
func (n *Node) IsLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// Leader is the current leader's node id, "" when none is known.
func (n *Node) Leader() string {
	if n.raft == nil {
		return ""
	}
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// State is raft's state of this node (Follower, Candidate, Leader, Shutdown).
func (n *Node) State() raft.RaftState {
	if n.raft == nil {
		return raft.Shutdown
	}
	return n.raft.State()
}

// ReasonWaitingToJoin is NotReady's reason on a joining node (cluster.join) that no
// leader has contacted yet: it has no raft configuration until the leader adds it.
const ReasonWaitingToJoin = "waiting to be added to the cluster: ask the admin to POST /v1/admin/members"

// ReasonNotInConfiguration is NotReady's reason on a node that knows no leader and is not
// in the raft configuration it holds (it was removed from the cluster).
const ReasonNotInConfiguration = "this node is not in the cluster's raft configuration (removed from the cluster?)"

// NotReady lists why this member cannot serve: waiting to be added (cluster.join), no
// leader known, not in the configuration, catching up, or a clock found off.
func (n *Node) NotReady() []string {
	var reasons []string
	switch {
	case n.waitingToJoin():
		reasons = append(reasons, ReasonWaitingToJoin)
	case n.Leader() == "":
		reasons = append(reasons, "no raft leader")
		if n.removed() {
			reasons = append(reasons, ReasonNotInConfiguration)
		}
	default:
		if r := n.catchingUp(); r != "" {
			reasons = append(reasons, r)
		}
	}
	return append(reasons, n.clockNotReady()...)
}

// waitingToJoin reports whether this is a joining node (cluster.join) that no leader has
// contacted yet: no leader known and nothing in its raft log (no bootstrap, no entry, no
// snapshot from a leader).
func (n *Node) waitingToJoin() bool {
	return n.cfg.Cluster.Join && n.raft != nil && n.Leader() == "" && n.raft.LastIndex() == 0
}

// removed reports whether this node holds a raft configuration that does not list it.
// Asked only when no leader is known (it waits for raft's main loop, briefly).
func (n *Node) removed() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cfg, _, err := n.configuration(ctx)
	if err != nil || len(cfg.Servers) == 0 {
		return false
	}
	for _, s := range cfg.Servers {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			return false
		}
	}
	return true
}

// catchUpSlack is how far this node's applied index may trail the commit index it knows
// and still be ready: a batch or two in flight under load, not a restart's backlog.
const catchUpSlack = 256

// catchingUp says why this node is behind the cluster, or "". Its state survives a
// restart, so knowing a leader is not enough: until an append from the leader passed
// raft's consistency check (or a snapshot it sent was installed and the log after it
// arrived) the node does not know the commit index, and its state may be far behind.
func (n *Node) catchingUp() string {
	if n.raft == nil {
		return ""
	}
	commit, applied := n.raft.CommitIndex(), n.fsm.AppliedIndex()
	switch {
	case commit == 0:
		return "catching up: waiting for the leader's log"
	case applied+catchUpSlack < commit:
		return fmt.Sprintf("catching up: applied %d of %d committed entries", applied, commit)
	}
	return ""
}

// role is the phase metrics' role label.
func (n *Node) role() string {
	if n.IsLeader() {
		return "leader"
	}
	return "follower"
}

// observe records one phase of event, if phase metrics are on.
func (n *Node) observe(event, phase string, d time.Duration) {
	if n.phases != nil {
		n.phases.WithLabelValues(event, phase, n.role()).Observe(d.Seconds())
	}
}
