//go:build !custos_testhooks

package node

import (
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/state"
)

// misbehaveHook is a no-op in every real build. Test builds (tag custos_testhooks) replace
// it with a compromised coordinator, see misbehave_on.go.
func (n *Node) misbehaveHook(*state.Submit) {}

// misbehaveAfterCommit is a no-op in every real build (see misbehave_on.go).
func (n *Node) misbehaveAfterCommit(*state.SubmitBody, state.Result) {}

// raftFSM is the state machine raft drives: the FSM itself in every real build.
func (n *Node) raftFSM() raft.FSM { return n.fsm }
