// Package baseline holds tss-lib v2.0.2 parties run bare in one process, every message
// serialised and parsed: the reference the cluster's benchmarks compare with; no custos
// code on the path; never used by a node.
//
// A Baseline holds one ECDSA (secp256k1, GG18) and one EdDSA (Ed25519) key of n parties,
// made in-process with the pre-parameter fixtures (one distinct set per party, never
// generated here). Its timed methods run one ceremony each and return the ceremony's
// wall time; results are checked after the clock stops. Parties are driven the way
// custos drives a party, minus the network: one inbox goroutine per party calls Start
// and then UpdateFromBytes for every message in order, each party's out channel is
// drained by its own goroutine that serialises every message with WireBytes and routes
// it, and the end channels are buffered. The only custos code it calls is
// protocol.PartyKey (and PartyKeyAt for resharing), which names the parties so that
// shares sit at the x-coordinates a cluster uses.
//
// Only test/bench uses it; nothing under node/ or cmd/custosd may import it.
package baseline
