// Package keystore owns a node's encrypted Pebble database: MPC key shares,
// ECDSA pre-parameter sets, the node's libp2p identity and small named
// metadata records. Values are opaque bytes; the package knows nothing of
// HTTP, raft, users or tss-lib types, and it must never log, return in an
// error, or otherwise expose a value, a data key or the master key.
//
// # Envelope encryption
//
// Every stored value is sealed with AES-256-GCM under a fresh random 12-byte
// nonce. The associated data is the format version byte followed by the
// record's own Pebble key, so a record copied or moved to another key fails
// authentication.
//
//   - Each MPC key id has its own random 32-byte data key, stored at
//     "dk/<keyid>" wrapped (AES-256-GCM) by the node's master key. PutShare
//     draws a fresh data key every time it writes a share, so replacing a
//     share (for example after a reshare) also retires the old data key.
//   - Records that are not per MPC key use one random 32-byte node data key,
//     stored at "ndk" wrapped by the master key. From it, HKDF-SHA256
//     derives one AES-256 key per purpose ("custos/keystore/v1/preparams",
//     "custos/keystore/v1/meta"), so pre-parameters and metadata never share
//     a GCM key.
//   - A check record "chk" (a fixed plaintext sealed by the master key) is
//     written when the store is created. Open verifies it before anything
//     else, so a wrong master key fails with ErrWrongMasterKey.
//   - DeleteShare removes the data key and the share in one synced batch
//     (crypto-erase). RotateMasterKey re-wraps every data key, the node data
//     key and the check record in one atomic synced batch without touching
//     share ciphertexts.
//
// An LSM keeps overwritten and deleted values until a compaction drops them,
// and a recycled WAL file keeps old records past its new write offset. So
// after DeleteShare, a PutShare that replaces a share, TakePreParams and
// RotateMasterKey, the store compacts the affected key ranges, and Pebble is
// configured never to recycle WAL files: the old ciphertexts and old wrapped
// keys leave the live files (Pebble unlinks obsolete files asynchronously,
// within milliseconds). Unlinked blocks are not overwritten on the device;
// destroy an old master key after rotating away from it.
//
// A wrong master key or any tampered record is an error (ErrWrongMasterKey or
// ErrCorrupt), never garbage.
//
// # Pebble key layout
//
//	chk            master-key check record
//	ndk            node data key, wrapped by the master key
//	ppseq          next pre-parameter sequence number (sealed, 8 bytes)
//	dk/<keyid>     data key of one MPC key, wrapped by the master key
//	s/<keyid>      key share, sealed by its data key
//	pp/<seq>       pre-parameter set; <seq> is 16 lower-case hex digits
//	m/<name>       metadata record (for example "identity")
//
// Stored value: version (1 byte, currently 1) ‖ nonce (12 bytes) ‖
// AES-256-GCM ciphertext and tag.
//
// # Names and sizes
//
// Key ids and metadata names are 1–128 bytes of A–Z, a–z, 0–9 and the
// punctuation "-_.:@+~" (no '/', no spaces, no control bytes). Values are at
// most MaxValueSize bytes; shares and pre-parameters must not be empty.
//
// # Failures
//
// Pebble treats a failed WAL write or sync as fatal. The store turns that
// into an error (wrapping ErrStoreFailed) for the call that hit it and
// refuses every later call, reads included; the process should close the
// store and restart. A record whose write failed is, after restart, either
// absent or whole. Some failures still stop the process, as Pebble intends:
// fatal errors in Pebble's background goroutines, and a failure to close the
// old WAL while rotating to a new one (Pebble panics there directly).
package keystore
