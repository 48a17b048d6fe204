// Package protocol runs custos's MPC ceremonies: tss-lib v2.0.2 ECDSA (GG18,
// secp256k1) and EdDSA (Ed25519) key generation, signing and resharing,
// behind a small, transport-agnostic Engine, and keeps the ECDSA
// pre-parameter pool.
//
// Its API carries no tss-lib type. Engine.Keygen returns a Share,
// Engine.Sign takes one and returns a Signature, and Engine.Reshare takes
// this node's old share (if it is in the old committee) and returns its new
// one (if it is in the new committee); a Share is opaque and
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
// pre-parameters for two keys (or for two resharings) (except the pool's explicit, insecure fixture
// mode for tests and the dev cluster); never generate safe primes inside a
// ceremony (the Engine takes pre-parameters from its caller; only the Pool
// generates them); and never let a goroutine outlive the ceremony, or the
// Pool, that started it. The sender of a message is always the authenticated
// peer reported by the transport, never a field in the bytes.
//
// Derivation paths are parsed by internal/state (ParsePath), whose verdicts
// are replicated; Sign takes the parsed []uint32.
//
// Resharing and generations. Engine.Reshare (ReshareSpec, ReshareSessionID)
// moves a key from an old committee and threshold to a new one — adding,
// removing or replacing nodes, or, with the same committee and threshold,
// refreshing the shares — keeping its public key. A key's shares sit at
// x-coordinates (tss-lib party keys) of one generation: PartyKeyAt(node,
// g). Keygen makes generation 0, which is PartyKey(node), so every share
// stored before resharing existed is generation 0 as it is; resharing a
// generation-g key makes a later generation (the spec names it: g+1, or
// higher when the node's state gives every attempt its own), whose party
// keys all differ from generation g's. A Share records its generation (Share.Generation; the
// share encoding's version 2 carries it, version 1 and the legacy JSON are
// generation 0), and Sign maps its committee to the party keys of the
// share's generation, so shares of different generations never combine
// (such a signing is refused or fails; it never signs). Distinct
// generations are what make resharing work with tss-lib: a node in both
// committees runs two tss-lib parties in one ceremony, its old party under
// its generation-g key and its new party under its new generation's key
// (tss-lib #128 and the refresh failure behind tss-lib PR #321 come from
// one party id in both committees). The envelope's Role says which of the
// sender's two parties sent a message (checked against the committees and
// the message type); messages between a node's own two parties never leave
// it. Every new party checks that every old party reports the public key
// being reshared (spec.PublicKey, from the replicated state) — tss-lib
// v2.0.2's own check compares the first report with itself — and a new
// share is returned only if it yields that key.
package protocol
