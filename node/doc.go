// Package node is one custos node: it wires the configuration, the keystore, the libp2p
// host, raft and the replicated state, the MPC engine, the pre-parameter pool and the HTTP
// API together, and runs the leader's scheduler and each member's ceremony runner.
//
// A node never signs on another node's word: before its party joins a ceremony it re-reads
// the request from its own replicated state and re-verifies the caller's signed request
// (DESIGN.md invariant 2). It never logs or serves a share, a private key or a token.
package node
