package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Raft membership: the leader's operations that change raft's configuration (add a
// nonvoter, promote it or add a voter, remove a server), the configuration as this node
// knows it, and the applied-index RPC by which the leader tells a new member caught up.
//
// Each change is made against the configuration index it read (raft's prevIndex), so that
// two concurrent changes never interleave: the second is refused with
// ErrConfigurationChanged and its caller reads the configuration again. Changes are
// idempotent where a retry must be harmless: adding a server that is already there with
// the same peer id and suffrage, or removing one that is not there, succeeds at once.
//
// A server that was removed and keeps running does not disturb the cluster: raft v1.8
// runs pre-vote (NetworkTransport implements it and custos leaves it on), and every member
// refuses a pre-vote or vote request from a server outside its latest configuration
// before it looks at the request's term (raft.go requestVote/requestPreVote), so the
// removed server's elections never raise the cluster's term; once the replicated member
// list drops it (internal/state, node.syncMembers), the members' p2p gaters refuse its
// connections altogether. The removed server itself sees no leader: it either knows it is
// out of the configuration ("not part of stable configuration, aborting election") or
// campaigns alone without effect, and NotReady says it is not in the configuration.

const (
	rpcApplied = "applied"

	// CaughtUpSlack is how far a member's applied index may trail this leader's for the
	// member to count as caught up (CaughtUp): promote a nonvoter only within it, so that
	// a new voter does not stall commits while it replays a backlog.
	CaughtUpSlack = 64

	// maxAppliedRequest bounds the applied RPC's request (it carries nothing).
	maxAppliedRequest = 64
	// maxAppliedReply bounds the applied RPC's answer as the caller reads it: a node id
	// (p2p.MaxNodeIDSize) and a number in JSON.
	maxAppliedReply = 512
	// defaultMembershipTimeout bounds a membership operation whose ctx has no deadline.
	defaultMembershipTimeout = 30 * time.Second
	// serversTimeout bounds Servers.
	serversTimeout = 5 * time.Second
)

// Membership errors. Every error of the operations below that has one of these causes
// wraps it (errors.Is).
var (
	// ErrNotLeader: this node is not the raft leader (or lost leadership during the
	// change); retry on the leader.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrConfigurationChanged: the raft configuration changed between reading it and
	// the change (another change ran concurrently); read it again and retry.
	ErrConfigurationChanged = errors.New("raft configuration changed concurrently")
	// ErrServerConflict: the node id is in the configuration with another peer id, or the
	// peer id under another node id; remove the old server first.
	ErrServerConflict = errors.New("raft server conflicts with the configuration")
	// ErrRemoveSelf: the leader was asked to remove itself; hand leadership over first
	// (TransferLeadership) and ask the new leader.
	ErrRemoveSelf = errors.New("the leader cannot remove itself: transfer leadership first")
	// ErrUnknownServer: PeerApplied for a node that is neither in the raft configuration
	// nor a p2p member.
	ErrUnknownServer = errors.New("unknown raft server")
)

// Server is one server of the raft configuration.
type Server struct {
	// ID is the node id (raft's server id).
	ID string
	// PeerID is the libp2p peer id (raft's server address).
	PeerID string
	// Voter is false for a nonvoter (it receives the log but does not vote or count
	// towards commits).
	Voter bool
}

// Servers returns the latest raft configuration this node knows (on the leader, the one
// it replicates, possibly not yet committed), sorted by id; none on a joining node that
// was not added yet. It waits for raft's main loop, at most serversTimeout.
func (n *Node) Servers() ([]Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), serversTimeout)
	defer cancel()
	cfg, _, err := n.configuration(ctx)
	if err != nil {
		return nil, err
	}
	return toServers(cfg), nil
}

func toServers(cfg raft.Configuration) []Server {
	out := make([]Server, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		out = append(out, Server{ID: string(s.ID), PeerID: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	slices.SortFunc(out, func(a, b Server) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// configuration reads raft's latest configuration and its index, bounded by ctx.
func (n *Node) configuration(ctx context.Context) (raft.Configuration, uint64, error) {
	if n.raft == nil {
		return raft.Configuration{}, 0, fmt.Errorf("raft configuration: %w", raft.ErrRaftShutdown)
	}
	f := n.raft.GetConfiguration()
	if err := waitFuture(ctx, f); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("raft configuration: %w", err)
	}
	return f.Configuration(), f.Index(), nil
}

// AddNonvoter adds a server as a nonvoter: it receives the log (from a snapshot when the
// leader's log was compacted) but neither votes nor counts towards commits. Already a
// nonvoter with this peer id: nothing to do. Already a voter with this peer id: nothing
// to do either (AddNonvoter never demotes). It returns once the change committed.
func (n *Node) AddNonvoter(ctx context.Context, id, peerID string) error {
	return n.change(ctx, "add nonvoter", id, peerID, func(cur raft.Configuration, idx uint64, timeout time.Duration) (raft.IndexFuture, error) {
		if _, ok, err := findServer(cur, id, peerID); err != nil || ok {
			return nil, err // present with the same peer id (voter or nonvoter): done
		}
		return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(peerID), idx, timeout), nil
	})
}

// AddVoter makes a server a voter: a nonvoter is promoted, a server not in the
// configuration is added as a voter directly (promote a caught-up nonvoter instead: a
// new voter that is far behind stalls commits while it catches up). Already a voter
// with this peer id: nothing to do. It returns once the change committed.
func (n *Node) AddVoter(ctx context.Context, id, peerID string) error {
	return n.change(ctx, "add voter", id, peerID, func(cur raft.Configuration, idx uint64, timeout time.Duration) (raft.IndexFuture, error) {
		s, ok, err := findServer(cur, id, peerID)
		if err != nil {
			return nil, err
		}
		if ok && s.Suffrage == raft.Voter {
			return nil, nil
		}
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(peerID), idx, timeout), nil
	})
}

// RemoveServer removes a server (voter or nonvoter) from the configuration; one that is
// not there is success. The leader does not remove itself (ErrRemoveSelf). It returns
// once the change committed; the removed server stops receiving the log.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.change(ctx, "remove server", id, "", func(cur raft.Configuration, idx uint64, timeout time.Duration) (raft.IndexFuture, error) {
		if !slices.ContainsFunc(cur.Servers, func(s raft.Server) bool { return s.ID == raft.ServerID(id) }) {
			return nil, nil
		}
		if id == n.cfg.NodeID {
			return nil, ErrRemoveSelf
		}
		return n.raft.RemoveServer(raft.ServerID(id), idx, timeout), nil
	})
}

// TransferLeadership hands raft leadership to another voter (raft's choice: the most
// up to date) and returns once it did, bounded by ctx.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if err := n.checkLeader(); err != nil {
		return err
	}
	if err := waitFuture(ctx, n.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership: %w", mapMembershipErr(err))
	}
	return nil
}

// change runs one configuration change on the leader: read the configuration, let op
// decide (nil future: nothing to do), and wait for the change to commit.
func (n *Node) change(ctx context.Context, what, id, peerID string, op func(cur raft.Configuration, idx uint64, timeout time.Duration) (raft.IndexFuture, error)) error {
	if id == "" {
		return fmt.Errorf("%s: empty node id", what)
	}
	if peerID != "" {
		if _, err := peer.Decode(peerID); err != nil {
			return fmt.Errorf("%s %s: peer id %q: %w", what, id, peerID, err)
		}
	} else if what != "remove server" {
		return fmt.Errorf("%s %s: empty peer id", what, id)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultMembershipTimeout)
		defer cancel()
	}
	if err := n.checkLeader(); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	cur, idx, err := n.configuration(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, mapMembershipErr(err))
	}
	dl, _ := ctx.Deadline()
	f, err := op(cur, idx, max(time.Until(dl), time.Millisecond))
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	if f == nil {
		return nil
	}
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, mapMembershipErr(err))
	}
	n.log.Info("raft configuration changed", "change", what, "server", id, "peer_id", peerID, "index", f.Index())
	return nil
}

// findServer looks id up in cfg: present with peerID (ok), absent (!ok), or an error when
// id has another peer id or peerID belongs to another id.
func findServer(cfg raft.Configuration, id, peerID string) (raft.Server, bool, error) {
	for _, s := range cfg.Servers {
		switch {
		case s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(peerID):
			return s, true, nil
		case s.ID == raft.ServerID(id):
			return s, false, fmt.Errorf("%w: %s is in the configuration with peer id %s, not %s: remove it first", ErrServerConflict, id, s.Address, peerID)
		case s.Address == raft.ServerAddress(peerID):
			return s, false, fmt.Errorf("%w: peer id %s is in the configuration as %s: remove it first", ErrServerConflict, peerID, s.ID)
		}
	}
	return raft.Server{}, false, nil
}

// checkLeader refuses when this node does not lead.
func (n *Node) checkLeader() error {
	if n.raft == nil || n.raft.State() != raft.Leader {
		if l := n.Leader(); l != "" {
			return fmt.Errorf("%w (the leader is %s)", ErrNotLeader, l)
		}
		return fmt.Errorf("%w (no leader known)", ErrNotLeader)
	}
	return nil
}

// mapMembershipErr makes raft's errors testable with the package's sentinels.
func mapMembershipErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case err != nil && strings.Contains(err.Error(), "configuration changed since"):
		// raft's nextConfiguration: prevIndex is not the latest configuration's index.
		return fmt.Errorf("%w: %v", ErrConfigurationChanged, err)
	}
	return err
}

// waitFuture waits for a raft future, or for ctx. When ctx ends first the operation may
// still complete later: the error says so.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w (the operation may still complete)", ctx.Err())
	}
}

// appliedReply is the applied RPC's answer.
type appliedReply struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
}

// handleApplied serves the applied RPC: this node's FSM applied index.
func (n *Node) handleApplied(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	if len(req) > maxAppliedRequest {
		return nil, fmt.Errorf("applied request of %d bytes, limit %d", len(req), maxAppliedRequest)
	}
	return json.Marshal(appliedReply{Node: n.cfg.NodeID, Applied: n.fsm.AppliedIndex()})
}

// AppliedIndex is the last raft index this node's FSM applied.
func (n *Node) AppliedIndex() uint64 { return n.fsm.AppliedIndex() }

// PeerApplied asks member id how far its FSM has applied, over the rpc protocol: the
// answer comes from the authenticated libp2p peer that the raft configuration (or, for a
// node not in it yet, the p2p member set) names for id. This node itself answers at once.
func (n *Node) PeerApplied(ctx context.Context, id string) (uint64, error) {
	if id == n.cfg.NodeID {
		return n.AppliedIndex(), nil
	}
	pid, err := n.peerOf(ctx, id)
	if err != nil {
		return 0, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	out, err := n.host.Call(ctx, pid, rpcApplied, nil)
	if err != nil {
		return 0, fmt.Errorf("applied index of %s: %w", id, err)
	}
	if len(out) > maxAppliedReply {
		return 0, fmt.Errorf("applied index of %s: answer of %d bytes, limit %d", id, len(out), maxAppliedReply)
	}
	var r appliedReply
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("applied index of %s: %w", id, err)
	}
	if r.Node != id {
		return 0, fmt.Errorf("applied index of %s: peer %s answered as %q", id, pid, r.Node)
	}
	return r.Applied, nil
}

// CaughtUp reports whether member id applied within CaughtUpSlack entries of this node
// (the leader), and its applied index.
func (n *Node) CaughtUp(ctx context.Context, id string) (bool, uint64, error) {
	own := n.AppliedIndex()
	applied, err := n.PeerApplied(ctx, id)
	if err != nil {
		return false, 0, err
	}
	return applied+CaughtUpSlack >= own, applied, nil
}

// peerOf is member id's peer id: from the raft configuration, else from the p2p
// member set.
func (n *Node) peerOf(ctx context.Context, id string) (peer.ID, error) {
	cfg, _, err := n.configuration(ctx)
	if err == nil {
		for _, s := range cfg.Servers {
			if s.ID == raft.ServerID(id) {
				pid, err := peer.Decode(string(s.Address))
				if err != nil {
					return "", fmt.Errorf("raft server %s: address %q: %w", id, s.Address, err)
				}
				return pid, nil
			}
		}
	}
	if pid, ok := n.host.PeerIDOf(id); ok {
		return pid, nil
	}
	return "", fmt.Errorf("%w: %s", ErrUnknownServer, id)
}
