package vouch

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/statedb"
)

// These tests mount a compromised leader's attacks on a follower's vouching through the
// real FSM (its Pebble database, Restore, Apply of signed reports) and real identity keys.

// testLog applies entries to one FSM as raft would.
type testLog struct {
	t     *testing.T
	f     *state.FSM
	index uint64
	stamp int64
}

func (l *testLog) apply(typ string, payload any) state.Result {
	l.t.Helper()
	l.index++
	l.stamp++
	b, err := state.Encode(typ, l.stamp, payload)
	if err != nil {
		l.t.Fatal(err)
	}
	res, ok := l.f.Apply(&raft.Log{Index: l.index, Type: raft.LogCommand, Data: b}).(state.Result)
	if !ok {
		l.t.Fatal("no result")
	}
	return res
}

// signedReport is node's report, signed with sk.
func signedReport(t *testing.T, node string, sk crypto.PrivKey, kind string, payload any) *state.Report {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := authn.SignNode(sk, authn.DomainReport, state.ReportMessage(kind, body))
	if err != nil {
		t.Fatal(err)
	}
	return &state.Report{Node: node, Kind: kind, Body: body, Sig: sig}
}

func (l *testLog) report(node string, sk crypto.PrivKey, kind string, payload any) state.Result {
	l.t.Helper()
	return l.apply(state.TypeReport, signedReport(l.t, node, sk, kind, payload))
}

func identity(t *testing.T) (crypto.PrivKey, string) {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pid.String()
}

func openFSM(t *testing.T, onEvent func(state.Event)) *state.FSM {
	t.Helper()
	f, err := state.Open(state.Config{Dir: t.TempDir(), OnEvent: onEvent, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// cluster is n1 (the compromised leader), n2 (honest), n3 (the victim), k = 2, and the
// attacker's own key.
type cluster struct {
	sk1, sk2, skX    crypto.PrivKey
	pid1, pid2, pid3 string
	pidX             string
	init             *state.ClusterInit
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{}
	c.sk1, c.pid1 = identity(t)
	c.sk2, c.pid2 = identity(t)
	_, c.pid3 = identity(t)
	c.skX, c.pidX = identity(t)
	c.init = &state.ClusterInit{Name: "test", Threshold: 2, Strict: true,
		Members: []state.Member{{ID: "n1", PeerID: c.pid1}, {ID: "n2", PeerID: c.pid2}, {ID: "n3", PeerID: c.pid3}}}
	return c
}

// snapshot is the honest cluster's state after ClusterInit and a few entries, as a
// stream, with forge (nil: none) applied to its meta record; and the log's position.
func (c *cluster) snapshot(t *testing.T, forge func(m map[string]any)) ([]byte, *testLog) {
	honest := &testLog{t: t, f: openFSM(t, nil), stamp: time.Now().UnixMilli()}
	if r := honest.apply(state.TypeClusterInit, c.init); !r.OK() {
		t.Fatal(r)
	}
	var buf bytes.Buffer
	if _, err := honest.f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	if forge == nil {
		return buf.Bytes(), honest
	}
	recs, err := statedb.ReadRecords(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	metaKey := statedb.AppendTable(nil, "meta")
	for i := range recs {
		if bytes.Equal(recs[i].Key, metaKey) {
			var m map[string]any
			if err := json.Unmarshal(recs[i].Value, &m); err != nil {
				t.Fatal(err)
			}
			forge(m)
			if recs[i].Value, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, recs); err != nil {
		t.Fatal(err)
	}
	return forged.Bytes(), honest
}

// victim is n3 restoring snap as raft would (FSM.Restore with the vouch hooks). With
// trusted, it held the cluster's real state before (its members are the anchor); without,
// an empty one, and its configuration names the members.
func (c *cluster) victim(t *testing.T, snap []byte, at *testLog, trusted bool) (*Vouch, *testLog, chan state.Event) {
	events := make(chan state.Event, 256)
	f := openFSM(t, func(e state.Event) { events <- e })
	l := &testLog{t: t, f: f}
	cfg := Config{NodeID: "n3", State: f, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry()}
	if trusted {
		if r := l.apply(state.TypeClusterInit, c.init); !r.OK() {
			t.Fatal(r)
		}
	} else {
		cfg.Members, cfg.Threshold = c.init.Members, c.init.Threshold
	}
	vo := New(cfg)
	f.OnRestoreStart(vo.OnRestoreStart)
	f.OnRestore(vo.OnRestore)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if vo.Blocked() == "" {
		t.Fatal("a restored snapshot the node did not take is not waiting to be vouched for")
	}
	l.index, l.stamp = at.index, at.stamp
	return vo, l, events
}

// checkpoint has n1 ask for a checkpoint and returns its index and the victim's own
// hash there.
func checkpoint(t *testing.T, l *testLog, sk1 crypto.PrivKey, events chan state.Event) (uint64, string) {
	t.Helper()
	if r := l.report("n1", sk1, state.TypeCheckpointRequest, &state.CheckpointRequest{Node: "n1"}); !r.OK() {
		t.Fatal(r)
	}
	idx := l.index
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Kind == state.EventCheckpoint && e.Index == idx {
				return idx, e.Hash
			}
		case <-deadline:
			t.Fatal("no checkpoint hash")
		}
	}
}

// vote applies a signed vote and hands its event to vouching, as the node does.
func vote(t *testing.T, vo *Vouch, l *testLog, events chan state.Event, rp *state.Report) {
	t.Helper()
	l.apply(state.TypeReport, rp)
	for {
		select {
		case e := <-events:
			if e.Kind == state.EventCheckpointVote {
				vo.recordVote(e.Vote)
				vo.judgeCheckpoint(e.Index)
				return
			}
		default:
			return // refused by the FSM: no vote event
		}
	}
}

// TestForgedSnapshotCannotVouchForItself: a compromised leader (n1, with k = 2) sends the
// victim a snapshot whose membership it forged, then votes for the victim's state itself
// and has a second vote signed with a key it holds. The victim counts votes only from the
// members it trusted before the restore (or configured), with their real keys, and k no
// lower than theirs: none of the forgeries vouches. The honest snapshot with the honest
// members' votes does.
func TestForgedSnapshotCannotVouchForItself(t *testing.T) {
	tests := []struct {
		name    string
		forge   func(c *cluster, m map[string]any)
		honest  bool // n2 votes with its own key (else the attacker signs as n2)
		vouched bool
	}{
		{"honest snapshot, honest votes", nil, true, true},
		{"honest snapshot, forged second vote", nil, false, false},
		{"member re-keyed to the attacker", func(c *cluster, m map[string]any) {
			m["members"].([]any)[1].(map[string]any)["peer_id"] = c.pidX
		}, false, false},
		{"threshold lowered to 1", func(c *cluster, m map[string]any) { m["threshold"] = 1 }, false, false},
		{"attacker added as member n4", func(c *cluster, m map[string]any) {
			m["members"] = append(m["members"].([]any), map[string]any{"id": "n4", "peer_id": c.pidX, "p2p_addrs": []any{}, "api": ""})
		}, false, false},
	}
	for _, tt := range tests {
		for _, trusted := range []bool{true, false} {
			name := tt.name + map[bool]string{true: ", members from the state before", false: ", members from the configuration"}[trusted]
			t.Run(name, func(t *testing.T) {
				c := newCluster(t)
				var forge func(map[string]any)
				if tt.forge != nil {
					forge = func(m map[string]any) { tt.forge(c, m) }
				}
				snap, at := c.snapshot(t, forge)
				vo, l, events := c.victim(t, snap, at, trusted)
				idx, own := checkpoint(t, l, c.sk1, events)
				vote(t, vo, l, events, signedReport(t, "n1", c.sk1, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n1", Index: idx, StateHash: own}))
				second := signedReport(t, "n2", c.skX, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n2", Index: idx, StateHash: own})
				if tt.honest {
					second = signedReport(t, "n2", c.sk2, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n2", Index: idx, StateHash: own})
				}
				vote(t, vo, l, events, second)
				vote(t, vo, l, events, signedReport(t, "n4", c.skX, state.TypeCheckpoint, &state.StateCheckpoint{Node: "n4", Index: idx, StateHash: own}))
				if got := vo.Blocked() == ""; got != tt.vouched {
					t.Fatalf("vouched %v, want %v (blocked %q)", got, tt.vouched, vo.Blocked())
				}
			})
		}
	}
}

// TestSnapshotWithoutAppliedIndexRefused: a stream that leaves out the applied-index
// record would restore as a state at index 0, which vouching took for "nothing restored":
// the FSM refuses it, and the state it had stays.
func TestSnapshotWithoutAppliedIndexRefused(t *testing.T) {
	c := newCluster(t)
	snap, _ := c.snapshot(t, nil)
	recs, err := statedb.ReadRecords(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	var kept []statedb.Record
	for _, r := range recs {
		if !statedb.AppliedKey(r.Key) {
			kept = append(kept, r)
		}
	}
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, kept); err != nil {
		t.Fatal(err)
	}
	f := openFSM(t, nil)
	vo := New(Config{NodeID: "n3", State: f, Store: &memStore{m: map[string][]byte{}}, Registerer: prometheus.NewRegistry()})
	f.OnRestoreStart(vo.OnRestoreStart)
	f.OnRestore(vo.OnRestore)
	err = f.Restore(io.NopCloser(bytes.NewReader(forged.Bytes())))
	if err == nil || !strings.Contains(err.Error(), "no applied index") {
		t.Fatalf("restore of a stream without an applied index: %v", err)
	}
	if name, _, _ := f.Cluster(); name != "" {
		t.Fatalf("the refused snapshot's state was switched in (cluster %q)", name)
	}
	// Whatever reaches OnRestore with index 0 still waits to be vouched for.
	vo.OnRestore(0, [32]byte{9})
	if vo.Blocked() == "" {
		t.Fatal("a restore at index 0 needs no vouching")
	}
}
