// Package cluster runs real multi-process custos clusters on loopback for benchmarks and
// system tests: it builds custosd from the module being tested, writes every node's
// configuration with internal/devcluster (dev mode, shared admin key, insecure
// pre-parameter fixtures), starts, stops and kills the node processes, waits for /readyz,
// creates users with Go SDK clients for every node, reads the nodes' peak resident memory
// from /proc, and can route every peer-to-peer link through a TCP latency proxy
// (LatencyProxy) and prove from the kernel's socket table that it does.
//
// It owns the processes it starts and nothing else: each runs in its own process group,
// dies with the harness (SIGKILL on parent death) and is stopped by Close (SIGTERM, then
// SIGKILL after a grace period). It must never be imported by production code, never
// write a configuration that a production node would accept (devcluster refuses to), and
// never signal a process it did not start.
//
// Everything but this file is Linux-only: it reads /proc.
package cluster
