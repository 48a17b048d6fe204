// Package auth holds custos's stateless authentication primitives: verifying and issuing
// the admin and user JWTs (Sigpair model, HS256 or EdDSA), parsing, checking and verifying
// RFC 9421 HTTP message signatures with custos's profile (and signing them on the client
// side), RFC 9530 Content-Digest, and the bitcoin-auth X-Auth-Token (BSM and BRC-77 over
// secp256k1).
//
// Everything here is a pure function of its inputs and an explicit "now": the package never
// reads the clock on its own, never touches raft, storage, users, access keys or nonces, and
// never logs. The node performs the stateful checks (user status, revocation, access-key
// grants, each nonce or X-Auth-Token accepted once) with what this package returns.
//
// Every error returned for bad input is an *Error whose Code is one of API.md's stable
// codes (auth.missing, auth.token_invalid, auth.token_expired, auth.wrong_audience,
// auth.signature_invalid, auth.signature_expired); Detail is a short sentence that never
// carries a token, a signature or a key.
package auth
