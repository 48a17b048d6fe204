// Package state owns custos's replicated state: the raft FSM, its typed commands and the
// model they act on (members, users, access keys and their use logs, keys, requests,
// nonces, idempotency keys and the hash-chained audit log). It authorises every API call
// against that model: users by their permissions, access keys by their grant ∩ their
// grantor's current permissions, limited to their key ids.
//
// Apply is a pure function of the log. It never reads the clock, the network, the disk or
// randomness: times come from the stamp the leader writes into every entry, identifiers and
// nonces that need randomness are chosen by the proposer and carried in the entry. The
// package must never verify anything that depends on a node's local configuration other
// than what every member shares (the injected signature verifier is a pure function), and
// never holds a share, a private key or an admin token (only their hashes).
package state
