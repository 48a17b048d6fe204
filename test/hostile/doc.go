// Package hostile holds end-to-end tests of a custos cluster against a member that holds a
// valid identity but behaves maliciously, and against peers that are not members at all.
//
// The tests start real custosd processes (test/cluster: real Pebble, raft and libp2p on
// loopback), create keys while every node is honest, then stop one node and put in its
// place a hand-driven libp2p peer that uses that node's own identity (read from its
// keystore with the dev master key the cluster wrote). That peer speaks /custos/tss/1 byte
// by byte: garbage, malformed envelopes, oversize and truncated frames, messages for
// unknown, finished and foreign sessions, replays, out-of-order and wrongly flagged
// messages, and it sabotages every ceremony it is scheduled into. The honest nodes must
// drop and count all of it, blame it, reschedule around it, keep signing correctly and
// never panic. A fresh random identity must not get any custos protocol stream opened.
//
// The package owns no production code: it only has this file and tests. It must never be
// imported, never signal a process it did not start (test/cluster owns the processes)
// and never log shares, keys or signatures.
package hostile
