// Package statedb is the replicated state machine's own Pebble database: the
// on-disk home of everything the raft FSM applies, so that a node's memory does
// not grow with history (DESIGN.md "Replicated state", invariant 7).
//
// It owns one directory (never the keystore's) and offers:
//
//   - atomic per-entry writes: a Batch reads its own writes, and Batch.Commit
//     writes the last applied raft index and its stamp in the same Pebble batch,
//     so the database always holds a prefix of the log that ends exactly at the
//     recorded index (see DB.AppliedIndex);
//   - consistent reads while batches commit: DB.Get, and View (a Pebble
//     snapshot) with range scans, bounded pagination and a content hash for the
//     nodes' signed state checkpoints;
//   - raft snapshots: DB.Checkpoint keeps a copy of the state as a Pebble
//     checkpoint (a memtable flush and hard links, whatever the state's size), and
//     DB.StreamCheckpoint streams one — or DB.Snapshot takes an O(1) consistent
//     view and Snapshot.WriteTo streams that — in a framed, versioned,
//     checksummed format; DB.Restore streams one back into a fresh sibling
//     directory and swaps it in atomically, so a failed restore leaves the old
//     state intact;
//   - order-preserving key encoding (AppendTable, AppendUint64, AppendInt64,
//     AppendString, KeyDecoder) so that callers lay out tables whose keys sort
//     as their tuples do and never fall in another table's range.
//
// What it must never do: it knows nothing of raft, HTTP, users or the FSM's
// types — it stores bytes under keys; it never reads the clock or randomness
// on behalf of the FSM (index and stamp come from the caller, keeping Apply
// deterministic, invariant 3); it never logs keys or values; it holds no
// package-level state. Shares and private keys live in the keystore and must
// never be written here (invariant 1).
//
// Durability: the database keeps no write-ahead log, and commits never touch
// the disk. The raft log is the durable record; because each batch carries its
// applied index, whatever a crash leaves is a consistent prefix of the log (the
// memtables flushed so far), and raft replays the entries after AppliedIndex
// on restart. DB.Sync flushes the memtables, making everything committed so far
// durable: the FSM calls it (or Checkpoint, which flushes too) before raft may
// drop log entries behind a snapshot, so the prefix a crash leaves always meets
// the log raft kept; Close calls it too. Restore syncs the new state before switching to it.
//
// Keys starting with byte 0x00 are reserved for the package's own records (the
// applied index); Batch refuses to write them. Keys built with AppendTable never
// start with 0x00.
package statedb
