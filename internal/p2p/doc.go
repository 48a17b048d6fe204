// Package p2p owns the node's go-libp2p host and the three custos protocols that run over
// it:
//
//   - /custos/raft/1: a hashicorp/raft StreamLayer (see [Host.RaftStreamLayer]); raft's
//     NetworkTransport runs on top of it and raft server addresses are peer id strings;
//   - /custos/tss/1: ordered, length-prefixed ceremony frames on one long-lived stream per
//     peer ([Host.SendFrame], [Host.SetFrameHandler]);
//   - /custos/rpc/1: request/response calls by method name ([Host.HandleRPC], [Host.Call]),
//     also used for the built-in liveness ping ([Host.Ping]).
//
// The host has one persistent Ed25519 identity, listens on TCP (QUIC optional), secures
// TCP with Noise only and multiplexes with yamux only. There is no relay, NAT traversal,
// hole punching, mDNS, DHT or AutoNAT: peers are exactly the cluster members, dialled at
// exactly the addresses configured for them.
//
// Authorisation is by peer id. A connection gater admits only current members (inbound and
// outbound, after the security handshake), and because a connection refused by the remote
// gater can still look connected on the dialer's side, every inbound stream of every
// protocol is checked again against the member set and reset otherwise. The sender of a
// frame or call is always the authenticated remote peer of the stream.
//
// The package must never interpret payloads: they are opaque bytes. It knows nothing of
// tss-lib, raft's FSM, HTTP, users or keys, never logs payloads, and never logs or returns
// the node's private key except through the explicit marshalling helpers.
package p2p
