package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/internal/scheduler"
)

// raftMembership is the scheduler's handle on raft membership (scheduler.Raft): the
// node's raft, read when called (the scheduler is built before it).
type raftMembership struct{ n *Node }

func (r raftMembership) node() (*raftnode.Node, error) {
	if r.n.raft == nil {
		return nil, errors.New("raft is not running")
	}
	return r.n.raft, nil
}

func (r raftMembership) AddNonvoter(ctx context.Context, id, peerID string) error {
	rn, err := r.node()
	if err != nil {
		return err
	}
	return rn.AddNonvoter(ctx, id, peerID)
}

func (r raftMembership) AddVoter(ctx context.Context, id, peerID string) error {
	rn, err := r.node()
	if err != nil {
		return err
	}
	return rn.AddVoter(ctx, id, peerID)
}

// RemoveServer removes a server; the leader cannot remove itself, so it hands its
// leadership over first (the new leader's driver then removes it).
func (r raftMembership) RemoveServer(ctx context.Context, id string) error {
	rn, err := r.node()
	if err != nil {
		return err
	}
	if id == r.n.cfg.NodeID {
		if err := rn.TransferLeadership(ctx); err != nil {
			return fmt.Errorf("handing leadership over before leaving raft: %w", err)
		}
		return errors.New("this node leads: it handed its leadership over, and the next leader removes it")
	}
	return rn.RemoveServer(ctx, id)
}

func (r raftMembership) Servers() ([]scheduler.RaftServer, error) {
	rn, err := r.node()
	if err != nil {
		return nil, err
	}
	ss, err := rn.Servers()
	if err != nil {
		return nil, err
	}
	out := make([]scheduler.RaftServer, len(ss))
	for i, s := range ss {
		out[i] = scheduler.RaftServer{ID: s.ID, PeerID: s.PeerID, Voter: s.Voter}
	}
	return out, nil
}

func (r raftMembership) PeerApplied(ctx context.Context, id string) (uint64, error) {
	rn, err := r.node()
	if err != nil {
		return 0, err
	}
	return rn.PeerApplied(ctx, id)
}

func (r raftMembership) AppliedIndex() uint64 {
	if r.n.raft == nil {
		return 0
	}
	return r.n.raft.AppliedIndex()
}
