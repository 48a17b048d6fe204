// Package e2e holds custos's multi-process end-to-end tests: real custosd binaries on
// loopback ports, real HTTP, libp2p, raft and Pebble, driven through the Go SDKs and the
// custos CLI. Every process a test starts is stopped by its cleanup.
package e2e
