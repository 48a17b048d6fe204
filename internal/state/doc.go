// Package state owns custos's replicated state: the raft FSM, its typed commands and the
// model they act on (members, users, access keys and their use logs, keys, requests,
// nonces, idempotency keys, retention settings and the hash-chained audit log). It
// authorises every API call against that model: users by their permissions, access keys
// by their grant ∩ their grantor's current permissions, limited to their key ids.
//
// The model lives on disk, in the FSM's own database (internal/statedb), as tables of
// records (store.go, tables.go): every raft batch commits its writes and its last index
// together, reads come from consistent views, and memory holds only the cluster record
// (meta) and the batch's cache, whatever the history's length. A snapshot is a checkpoint
// of the database, streamed when a follower needs it; the state hash nodes sign in their checkpoints is a hash of its content.
//
// Apply is a pure function of the log and the database it starts from. It never reads the
// clock, the network or randomness, and reads and writes the disk only through its own
// database: times come from the stamp the leader writes into every entry, identifiers and
// nonces that need randomness are chosen by the proposer and carried in the entry. A
// failure of that database inside Apply halts the node rather than apply an entry in
// part. The package must never verify anything that depends on a node's local
// configuration other than what every member shares (the injected signature verifier is
// a pure function), and never holds a share, a private key or an admin token (only their
// hashes).
package state
