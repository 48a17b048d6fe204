//go:build !custos_testhooks

package node

import (
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/ceremony"
	"github.com/custos/custos/internal/state"
)

// beforeStamp is nil in every real build. Test builds (tag custos_testhooks) return a
// compromised coordinator, see misbehave_on.go.
func (n *Node) beforeStamp() func(*state.Submit) { return nil }

// afterCommit is nil in every real build (see misbehave_on.go).
func (n *Node) afterCommit() func(*state.SubmitBody, state.Result) { return nil }

// runnerReporter is how the ceremony runner reports: raft itself in every real build.
func (n *Node) runnerReporter() ceremony.Reporter { return n.raft }

// raftFSM is the state machine raft drives: the FSM itself in every real build.
func (n *Node) raftFSM() raft.FSM { return n.fsm }
