// Package btc parses and signs Bitcoin PSBTs for custos: it plans a signing (which
// inputs, which sighashes, what the transaction pays) from a PSBT every node parses
// itself, attaches verified threshold signatures and finalizes, and broadcasts over a
// node's JSON-RPC. It never holds a private key and knows nothing of HTTP handlers, raft
// or users.
//
// PlanPSBT and Finalize are pure, deterministic functions of their arguments (no clock,
// randomness or I/O), so the replicated state machine may call them inside raft Apply.
// PSBTs (BIP 174, version 0) are read, signed, finalized and written with btcd's psbt
// package, scripts and sighashes are btcd's txscript, and BIP 32 public derivation is
// btcutil's hdkeychain (rather than tss-lib through the protocol package), so the
// verdicts depend only on this package and pinned btcd modules. A panic in the PSBT
// parser on hostile bytes is recovered into a refusal. Only RPC does I/O.
package btc
