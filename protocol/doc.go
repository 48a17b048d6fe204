// Package protocol runs custos's MPC ceremonies: tss-lib v2.0.2 ECDSA (GG18,
// secp256k1) and EdDSA (Ed25519) key generation and signing, behind a small,
// transport-agnostic Engine, and keeps the ECDSA pre-parameter pool.
//
// Its API carries no tss-lib type. Engine.Keygen returns a Share and
// Engine.Sign takes one and returns a Signature; a Share is opaque and
// versioned (MarshalBinary, ParseShare — which also reads the unversioned
// JSON that earlier nodes stored), and so are ECDSA pre-parameters
// (PreParams: GeneratePreParams, MarshalBinary, ParsePreParams). The Pool
// keeps a node's stock of pre-parameters in a PoolStore the node provides
// (its encrypted keystore), fills it in the background one set at a time,
// and hands every keygen a fresh set.
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
// range-proof degeneracy and exponent sizes), structural checks of shares and
// pre-parameters before tss-lib sees them, and the final verification of
// every signature before it is returned.
//
// It must never know about HTTP, raft, users or where bytes are stored (the
// pool sees only its PoolStore interface); never log or print a share, a
// pre-parameter, a signature or a payload (Share and PreParams print
// redacted, and parse errors never quote their input); never call tss-lib's
// proof switches (SetNoProofMod, SetNoProofFac); never use one set of
// pre-parameters for two keys (except the pool's explicit, insecure fixture
// mode for tests and the dev cluster); never generate safe primes inside a
// ceremony (the Engine takes pre-parameters from its caller; only the Pool
// generates them); and never let a goroutine outlive the ceremony, or the
// Pool, that started it. The sender of a message is always the authenticated
// peer reported by the transport, never a field in the bytes.
//
// Derivation paths are parsed by internal/state (ParsePath), whose verdicts
// are replicated; Sign takes the parsed []uint32. Resharing is out of scope
// for now.
package protocol
