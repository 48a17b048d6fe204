package raftnode

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/state"
)

// entryAt is a custos log entry (a cluster.init, which an initialised FSM refuses but
// whose stamp it takes) stamped at.
func entryAt(t *testing.T, at time.Time) []byte {
	t.Helper()
	data, err := state.Encode(state.TypeClusterInit, at.UnixMilli(), &state.ClusterInit{Name: "x", Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// counted is a counter's value.
func counted(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// The gate stores all of a batch or none of it: none when one command entry is stamped
// more than state.MaxStampSkew ahead of the node's clock. Other entries, entries stamped
// in the past or just within the bound, and bytes that are not an envelope, are stored.
func TestStampGateRefusesEntriesAhead(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	for _, tc := range []struct {
		name   string
		logs   []*raft.Log
		refuse bool
	}{
		{"past", []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: entryAt(t, now.Add(-time.Hour))}}, false},
		{"at the bound", []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: entryAt(t, now.Add(state.MaxStampSkew))}}, false},
		{"just past it", []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: entryAt(t, now.Add(state.MaxStampSkew+time.Millisecond))}}, true},
		{"a week ahead, after a good one", []*raft.Log{
			{Index: 1, Type: raft.LogCommand, Data: entryAt(t, now)},
			{Index: 2, Type: raft.LogCommand, Data: entryAt(t, now.Add(7*24*time.Hour))},
		}, true},
		{"not a command", []*raft.Log{{Index: 1, Type: raft.LogNoop, Data: entryAt(t, now.Add(time.Hour))}}, false},
		{"not an envelope", []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte(`{"s":`)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := raft.NewInmemStore()
			reg := prometheus.NewRegistry()
			g := &stampGate{LogStore: store, now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler), refused: newStampRefusals(reg)}
			err := g.StoreLogs(tc.logs)
			last, _ := store.LastIndex()
			if tc.refuse {
				if err == nil || !strings.Contains(err.Error(), "ahead of this node's clock") {
					t.Fatalf("stored: %v", err)
				}
				if last != 0 {
					t.Fatalf("a refused batch left entries up to %d", last)
				}
				if n := counted(g.refused); n != 1 {
					t.Fatalf("refusals counted %v", n)
				}
				return
			}
			if err != nil || last != uint64(len(tc.logs)) {
				t.Fatalf("not stored: %v (last index %d)", err, last)
			}
		})
	}
	// raft clears a monotonic store's log when it installs a snapshot: the gate says
	// what the store below says.
	if (&stampGate{LogStore: raft.NewInmemStore()}).IsMonotonic() {
		t.Fatal("the gate over an in-memory store says it is monotonic")
	}
	w, err := wal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !(&stampGate{LogStore: w}).IsMonotonic() {
		t.Fatal("the gate over raft-wal says it is not monotonic")
	}
}

// TestForwardStampNeverCommits mounts the attack the gate stops: a leader (compromised,
// or with a clock an hour fast — its own log store takes the entry) appends an entry
// stamped an hour ahead. Committed, it would end every delay and expiry judged by stamps
// on every node at once (a key's deletion delay: its shares erased), and every later
// entry would inherit the stamp. The honest followers do not store it, so it never
// commits and no FSM takes its stamp; once another node leads, the log goes on with
// stamps on the honest clocks.
func TestForwardStampNeverCommits(t *testing.T) {
	ms := startMembers(t, 3)
	offsets := make([]atomic.Int64, len(ms))
	for i, m := range ms {
		m.node.nowFn = func() time.Time { return time.Now().Add(time.Duration(offsets[i].Load())) }
	}
	startAll(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := waitLeader(ctx, t, ms)
	init := &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Events: true}
	for _, m := range ms {
		init.Members = append(init.Members, state.Member{ID: m.id, PeerID: m.host.ID().String()})
	}
	if res, err := leader.node.Propose(ctx, state.TypeClusterInit, init); err != nil || !res.OK() {
		t.Fatalf("first entry: %v %+v", err, res)
	}

	li := -1
	for i, m := range ms {
		if m == leader {
			li = i
		}
	}
	offsets[li].Store(int64(time.Hour))
	f := leader.node.raft.Apply(entryAt(t, time.Now().Add(time.Hour)), time.Second)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the entry stamped an hour ahead committed at index %d", f.Index())
		}
		t.Logf("the leader's entry failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Log("the entry stamped an hour ahead has not committed after 5 s")
	}
	limit := time.Now().Add(state.MaxStampSkew).UnixMilli()
	refusals := 0.0
	for _, m := range ms {
		if s := m.fsm.LastStamp(); s > limit {
			t.Fatalf("%s applied a stamp %v ahead", m.id, time.Until(time.UnixMilli(s)))
		}
		if m != leader {
			refusals += counted(m.node.stampRefusals)
		}
	}
	if refusals == 0 {
		t.Fatal("no follower counted a refusal")
	}

	// The operator stops the member whose entries the others refuse; the others elect a
	// leader, whose log never held the entry, and go on.
	if err := leader.node.Stop(); err != nil {
		t.Fatalf("stop %s: %v", leader.id, err)
	}
	var rest []*member
	for _, m := range ms {
		if m != leader {
			rest = append(rest, m)
		}
	}
	next := waitLeader(ctx, t, rest)
	var res state.Result
	var err error
	eventually(ctx, t, "an entry committed under the next leader", func() bool {
		res, err = next.node.Report(ctx, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: next.id, Reason: "test"})
		return err == nil
	})
	if !res.OK() {
		t.Fatalf("entry under the next leader: %+v", res)
	}
	for _, m := range rest {
		eventually(ctx, t, m.id+" applies it", func() bool { return m.fsm.AppliedIndex() >= res.Index })
		if s := m.fsm.LastStamp(); s > time.Now().Add(state.MaxStampSkew).UnixMilli() {
			t.Fatalf("%s: stamp %v ahead after the next leader's entry", m.id, time.Until(time.UnixMilli(s)))
		}
	}
}
