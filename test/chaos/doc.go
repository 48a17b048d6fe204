// Package chaos is custos's fault-injection harness. It starts real custosd processes
// (test/cluster) with every node-to-node link behind a TCP fault proxy the harness
// controls, drives a steady load of authenticated sign requests on both curves and a few
// keygens through the Go SDK against random nodes (with idempotency keys and client-side
// retries, as a wallet backend would), and runs a fault schedule meanwhile: kill -9 and
// restart (the leader too, mid-keygen and mid-signing), partitions of one node and of the
// leader (both ways and one way), slow and jittery links, connection resets, failing
// keystore writes on one node, a node frozen with SIGSTOP, under per-node clock skew.
//
// It records every request and its outcome, then checks DESIGN.md's promises: every
// acknowledged signature verifies, no idempotency key produced two signatures, nothing
// refused was signed, a minority partition signed nothing and answered 503, every active
// key has a share on every node and signs, no keygen is half done, every node ends with the
// same state hash and audit head at the same index, and no process leaked goroutines or
// file descriptors or crashed. Run returns a Report; Report.Failures lists what broke.
//
// It must never be imported by production code. It only signals processes the cluster
// harness started.
//
// Everything is Linux-only: the cluster harness reads /proc.
package chaos
