// Package node is one custos node, and only wires it: New opens the keystore and the
// credential verifier; Start builds the components — the libp2p host, the ceremony engine
// (protocol), the FSM (internal/state), vouching (internal/vouch), the leader's scheduler
// (internal/scheduler), the raft member (internal/raftnode), the pre-parameter pool
// (protocol), the ceremony runner (internal/ceremony) and the HTTP API (internal/httpapi)
// — in that order, hands each FSM event to the component it concerns, and composes the
// node's readiness; Stop stops them in reverse order and waits for every goroutine.
//
// It decides nothing itself: authentication and policy are the FSM's, the committee the
// scheduler's, a share's use the runner's. It never logs or serves a share, a private key
// or a token.
package node
