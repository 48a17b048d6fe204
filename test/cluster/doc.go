// Package cluster runs real multi-process custos clusters on loopback for the system
// tests (test/e2e, test/hostile, test/chaos) and benchmarks (test/bench): it builds
// custosd (plain and with the test-only misbehaviour hooks) and the custos CLI from the
// module being tested (BuildAll), writes every node's configuration with
// internal/devcluster (dev mode, shared admin key or an admin key pair, insecure
// pre-parameter fixtures, per-node settings and environment, HTTPS API), starts, stops,
// kills and freezes the node processes, waits for /readyz, for a leader, for idle nodes,
// moves the raft leadership (ForceRole), creates users with Go SDK clients for every
// node, reads the nodes' peak resident memory from /proc, and can route every
// peer-to-peer link through a TCP latency proxy (LatencyProxy) and prove from the
// kernel's socket table that it does. NewForTest ties a cluster to a test.
//
// Its waits poll a condition with a deadline (Until) or wait for an event; none sleeps
// for a while hoping that something happened meanwhile.
//
// It owns the processes it starts and nothing else: each runs in its own process group,
// dies with the harness (SIGKILL on parent death) and is stopped by Close (SIGTERM, then
// SIGKILL after a grace period). It must never be imported by production code, never
// write a configuration that a production node would accept (devcluster refuses to), and
// never signal a process it did not start.
//
// Everything but this file is Linux-only: it reads /proc.
package cluster
