// Package protocol runs custos's MPC ceremonies: tss-lib v2.0.2 ECDSA (GG18,
// secp256k1) and EdDSA (Ed25519) key generation and signing, behind a small,
// transport-agnostic Engine.
//
// It owns everything tss-lib leaves to its caller: session ids, the wire
// envelope of ceremony messages, routing of incoming messages to the right
// party (holding, bounded and briefly, the ones that arrive before their
// session starts), the per-party goroutine discipline (Start returns before
// any message is delivered, one inbox goroutine feeds the party in order,
// out/end channels drained by their own goroutines), duplicate and
// equivocation detection, broadcast consistency (echoes of the hash of every
// broadcast), panic containment, blame (CeremonyError with node ids), checks
// that landed in tss-lib after v2.0.2 (VSS commitment length, modproof gcd,
// range-proof degeneracy and exponent sizes), and the final verification of
// every signature before it is returned.
//
// It must never know about HTTP, raft, users or storage; never log a share,
// a pre-parameter, a signature or a payload; never call tss-lib's proof
// switches (SetNoProofMod, SetNoProofFac); never generate safe primes (the
// caller supplies pre-parameters); and never let a goroutine outlive the
// ceremony that started it. The sender of a message is always the
// authenticated peer reported by the transport, never a field in the bytes.
//
// Resharing is out of scope for now.
package protocol
