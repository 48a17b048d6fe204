package vouch

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
)

// A node resynchronised from an empty state trusts the members its configuration names
// (it has no trusted state to take them from). The real cluster here: n1 was replaced by
// n4 (k = 2), and n1's identity key is the attacker's; n2 is the compromised leader.

// resyncedVictim is n3, resynchronised with configured members, restoring snap.
func resyncedVictim(t *testing.T, members []state.Member, snap []byte, at *testLog) (*Vouch, *testLog, chan state.Event) {
	events := make(chan state.Event, 256)
	f := openFSM(t, func(e state.Event) { events <- e })
	l := &testLog{t: t, f: f}
	vo := New(Config{NodeID: "n3", State: f, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry(), Members: members, Threshold: 2})
	f.OnRestoreStart(vo.OnRestoreStart)
	f.OnRestore(vo.OnRestore)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	l.index, l.stamp = at.index, at.stamp
	return vo, l, events
}

// TestResyncedNodeTrustsItsConfiguration: with cluster.members current, the real members'
// votes vouch for the honest snapshot, and a forged one that lists the removed n1 again
// (with k = 1) is not vouched for by n1's and the leader's votes. With cluster.members not
// updated after the replacement, the node is not vouched for, and says why and what to do.
func TestResyncedNodeTrustsItsConfiguration(t *testing.T) {
	c := newCluster(t)
	current := []state.Member{{ID: "n2", PeerID: c.pid2}, {ID: "n3", PeerID: c.pid3}, {ID: "n4", PeerID: c.pidX}}
	stale := c.init.Members // n1, n2, n3
	c.init = &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Members: current}
	withN1 := func(m map[string]any) {
		m["threshold"] = 1
		m["members"] = append(m["members"].([]any), map[string]any{"id": "n1", "peer_id": c.pid1, "p2p_addrs": []any{}, "api": ""})
	}
	tests := []struct {
		name       string
		configured []state.Member
		forge      func(map[string]any)
		voters     []string // n1 (removed, the attacker's key), n2 (the leader), n4 (honest)
		vouched    bool
		says       string
	}{
		{"current configuration, honest snapshot", current, nil, []string{"n2", "n4"}, true, ""},
		{"current configuration, forged snapshot vouched by a removed member", current, withN1, []string{"n1", "n2"}, false, "not yet vouched"},
		{"configuration not updated, honest snapshot", stale, nil, []string{"n2", "n4"}, false, "set cluster.members to the current ones"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, at := c.snapshot(t, tt.forge)
			vo, l, events := resyncedVictim(t, tt.configured, snap, at)
			if r := l.report("n2", c.sk2, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: "n2"}); !r.OK() {
				t.Fatal(r)
			}
			idx := l.index
			var own string
			for own == "" {
				select {
				case e := <-events:
					if e.Kind == state.EventCheckpoint && e.Index == idx {
						own = e.Hash
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no checkpoint hash")
				}
			}
			keys := map[string]crypto.PrivKey{"n1": c.sk1, "n2": c.sk2, "n4": c.skX}
			for _, v := range tt.voters {
				vote(t, vo, l, events, signedReport(t, v, keys[v], state.TypeCheckpoint, &state.StateCheckpoint{Node: v, Index: idx, StateHash: own}))
			}
			why := vo.Blocked()
			if (why == "") != tt.vouched || !strings.Contains(why, tt.says) {
				t.Fatalf("blocked %q, want vouched %v and a reason naming %q", why, tt.vouched, tt.says)
			}
		})
	}
}
