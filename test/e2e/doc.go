// Package e2e holds custos's multi-process end-to-end tests: real custosd binaries on
// loopback ports, real HTTP, libp2p, raft and Pebble, driven through the Go SDKs and the
// custos CLI. Every process a test starts is stopped by its cleanup.
//
// The tests that take longest call t.Parallel: each runs its own cluster on random free
// ports and temporary directories, and the suite spends most of its time waiting on
// raft, ceremonies, timeouts and processes (about a third of two cores when the tests ran
// one at a time), so they overlap, two at a time (go test's -parallel default on two
// cores). A test that changes something process-wide (t.Setenv, the working directory)
// must not be one of them.
package e2e
