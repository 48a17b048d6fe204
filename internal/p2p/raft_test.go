package p2p

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type testFSM struct {
	mu      sync.Mutex
	applied [][]byte
}

func (f *testFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, slices.Clone(l.Data))
	return len(f.applied)
}

func (f *testFSM) has(data []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.applied {
		if bytes.Equal(d, data) {
			return true
		}
	}
	return false
}

func (f *testFSM) Snapshot() (raft.FSMSnapshot, error) { return testSnapshot{}, nil }
func (f *testFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type testSnapshot struct{}

func (testSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (testSnapshot) Release()                             {}

func TestRaftOverStreamLayer(t *testing.T) {
	hosts := []*Host{newTestHost(t), newTestHost(t), newTestHost(t)}
	members := mesh(t, hosts...)

	var servers []raft.Server
	for _, m := range members {
		servers = append(servers, raft.Server{ID: raft.ServerID(m.NodeID), Address: ServerAddressOf(m.PeerID)})
	}
	var rafts []*raft.Raft
	var fsms []*testFSM
	for i, h := range hosts {
		layer, err := h.RaftStreamLayer()
		if err != nil {
			t.Fatal(err)
		}
		if got := raft.ServerAddress(layer.Addr().String()); got != ServerAddressOf(h.ID()) {
			t.Fatalf("layer address %s, want %s", got, h.ID())
		}
		trans := raft.NewNetworkTransport(layer, 3, 2*time.Second, io.Discard)
		cfg := raft.DefaultConfig()
		cfg.LocalID = raft.ServerID(members[i].NodeID)
		cfg.HeartbeatTimeout = 300 * time.Millisecond
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.LeaderLeaseTimeout = 150 * time.Millisecond
		cfg.CommitTimeout = 20 * time.Millisecond
		cfg.LogOutput = io.Discard
		fsm := &testFSM{}
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Shutdown().Error() })
		if i == 0 {
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
		rafts = append(rafts, r)
		fsms = append(fsms, fsm)
	}

	var leader *raft.Raft
	waitFor(t, 8*time.Second, "a leader", func() bool {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
				return true
			}
		}
		return false
	})
	for i := range 3 {
		entry := []byte(fmt.Sprintf("entry-%d", i))
		if err := leader.Apply(entry, 3*time.Second).Error(); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	waitFor(t, 5*time.Second, "replication to every node", func() bool {
		for _, f := range fsms {
			if !f.has([]byte("entry-2")) {
				return false
			}
		}
		return true
	})
	for i, r := range rafts {
		if err := r.VerifyLeader().Error(); err == nil && r != leader {
			t.Fatalf("node %d also claims leadership", i)
		}
	}
}

func TestStreamLayerLifecycle(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	la, err := a.RaftStreamLayer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RaftStreamLayer(); !errors.Is(err, ErrRaftLayerOpen) {
		t.Fatalf("second layer: err = %v", err)
	}
	lb, err := b.RaftStreamLayer()
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()

	// A connection works both ways and its deadlines work.
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := lb.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := la.Dial(ServerAddressOf(b.ID()), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	var srv net.Conn
	select {
	case srv = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no accept")
	}
	defer srv.Close()
	if srv.RemoteAddr().String() != a.ID().String() || srv.LocalAddr().String() != b.ID().String() {
		t.Fatalf("addrs %s -> %s", srv.RemoteAddr(), srv.LocalAddr())
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	var ne net.Error
	if _, err := c.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: err = %v, want a timeout", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("read deadline not honoured")
	}

	if _, err := la.Dial("not-a-peer-id", time.Second); err == nil {
		t.Fatal("dial to a bad address succeeded")
	}

	// Close ends Accept and frees the slot for a new layer.
	done := make(chan error, 1)
	go func() {
		_, err := la.Accept()
		done <- err
	}()
	_ = la.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if _, err := la.Dial(ServerAddressOf(b.ID()), time.Second); err == nil {
		t.Fatal("Dial on a closed layer succeeded")
	}
	la2, err := a.RaftStreamLayer()
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = la2.Close()
}
