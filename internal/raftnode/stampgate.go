package raftnode

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
)

// The followers' check on stamps.
//
// Apply judges every time-bound thing by its entry's stamp: nonce and request retention,
// approval delays and expiries, access-key expiry, the end of a key's deletion delay
// (after which every node erases its share). The leader alone writes the stamp, and
// Apply cannot consult a clock, so one entry stamped a week ahead by a compromised leader
// would, once committed, end every such delay at once on every node — a key scheduled
// for deletion gone for good before its owner could restore it — and every later entry
// would inherit the stamp. An honest leader's clock is kept within clockBound of the
// voters' (clock.go), so its stamps are never far ahead of theirs.
//
// So a node stores no log entry stamped more than state.MaxStampSkew ahead of its own
// clock: raft then counts no acknowledgement from it, and such an entry commits only if
// a majority of the voters (more than one compromised member) store it. The leader's
// replication of it keeps failing, which stalls the log behind it until another node
// leads (a compromised leader can always deny service; this one is logged and counted,
// custos_raft_stamp_refusals_total). Entries stamped in the past (a follower catching
// up) are stored as before; so is anything that is not an envelope, which Apply alone
// judges.
type stampGate struct {
	raft.LogStore
	now     func() time.Time
	log     *slog.Logger
	refused prometheus.Counter
}

// newStampRefusals is the gate's counter, registered once per node.
func newStampRefusals(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_raft_stamp_refusals_total", Help: fmt.Sprintf("Times this node refused to store log entries stamped more than %v ahead of its clock (a leader with a fast clock, or a compromised one).", state.MaxStampSkew)})
	reg.MustRegister(c)
	return c
}

// StoreLog implements raft.LogStore.
func (g *stampGate) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: all of logs, or none of them when one is stamped
// too far ahead.
func (g *stampGate) StoreLogs(logs []*raft.Log) error {
	limit := g.now().Add(state.MaxStampSkew).UnixMilli()
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if stamp, ok := state.EntryStamp(l.Data); ok && stamp > limit {
			g.refused.Inc()
			ahead := time.Duration(stamp-limit)*time.Millisecond + state.MaxStampSkew
			g.log.Error("refusing log entries stamped ahead of this node's clock: the leader's clock runs ahead, or the leader is compromised; the entry cannot commit without a majority of the voters",
				"index", l.Index, "term", l.Term, "ahead", ahead.String(), "limit", state.MaxStampSkew.String())
			return fmt.Errorf("raft log entry %d is stamped %v ahead of this node's clock (limit %v)", l.Index, ahead, state.MaxStampSkew)
		}
	}
	return g.LogStore.StoreLogs(logs)
}

// IsMonotonic implements raft.MonotonicLogStore as the store below does (raft-wal is
// monotonic: raft then clears the log when it installs a snapshot).
func (g *stampGate) IsMonotonic() bool {
	m, ok := g.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
