// Package httpapi is custos's HTTP API (API.md): the routes and their handlers, the
// early refusal of requests whose credentials do not verify (body size, credential
// headers, then internal/authn, the same verifier every FSM runs again at the entry's
// stamp), the per-caller rate limit, the answers (JSON objects and RFC 9457 problems with
// custos's stable codes), the wait for a request to settle, and the open endpoints
// (/healthz, /readyz, /metrics, and with api.debug /debug/state and pprof). It serves
// over a Proposer, which commits a client's signed request through raft, and the read
// methods of this node's state.
//
// It must never decide anything the FSM decides: nonces, user and access-key status,
// permissions, policy, objects and field values are judged inside Apply, from what the
// caller signed; a handler commits the request exactly as received and answers with the
// FSM's verdict and its state. It holds no secret (no share, no private key, no admin
// token: the node signs what it proposes), and it never talks to raft or libp2p
// directly: the node adapts them behind Proposer and the small functions of Config.
package httpapi
