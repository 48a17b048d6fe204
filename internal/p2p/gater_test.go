package p2p

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// countingEcho registers an "echo" RPC on h and counts the calls it serves.
func countingEcho(h *Host) *atomic.Int64 {
	var n atomic.Int64
	h.HandleRPC("echo", func(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
		n.Add(1)
		return req, nil
	})
	return &n
}

func TestGaterRefusesNonMember(t *testing.T) {
	a, b, c := newTestHost(t), newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	// c knows a (so it dials a), a does not know c.
	if err := c.SetMembers([]Member{memberOf("a", a), memberOf("c", c)}); err != nil {
		t.Fatal(err)
	}
	var sink frameSink
	a.SetFrameHandler(sink.handle)
	calls := countingEcho(a)

	ctx := ctxTimeout(t, 5*time.Second)
	_ = c.SendFrame(ctx, a.ID(), []byte("let me in")) // may look sent: a never reads it
	if _, err := c.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", []byte("hi")); err == nil {
		t.Fatal("non-member call succeeded")
	}
	if _, err := c.Ping(ctxTimeout(t, 2*time.Second), a.ID()); err == nil {
		t.Fatal("non-member ping succeeded")
	}
	// Members still work, and a's handlers never ran for c.
	if err := b.SendFrame(ctx, a.ID(), []byte("member")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "member frame", func() bool { return sink.countFrom(b.ID()) == 1 })
	// Frames reach a's handler only over a connection a accepted, and it refused c's.
	waitFor(t, 5*time.Second, "a to refuse c", func() bool { return a.Stats().ConnsRefused > 0 })
	if n := sink.countFrom(c.ID()); n != 0 {
		t.Fatalf("handler saw %d frames from a non-member", n)
	}
	if calls.Load() != 0 {
		t.Fatalf("rpc handler ran %d times for a non-member", calls.Load())
	}
	if a.Stats().ConnsRefused == 0 {
		t.Fatal("gater refusal not counted")
	}
	// a itself never dials a non-member.
	if _, err := a.Call(ctx, c.ID(), "echo", nil); !errors.Is(err, ErrNotMember) {
		t.Fatalf("call to non-member: err = %v", err)
	}
}

// The second line of defence: a connection that is already open when its peer stops
// being a member (here the set is swapped underneath, without closing connections as
// SetMembers does) must not get a single stream or frame through.
func TestStreamCheckRefusesNonMember(t *testing.T) {
	a, c := newTestHost(t), newTestHost(t)
	mesh(t, a, c)
	var sink frameSink
	a.SetFrameHandler(sink.handle)
	calls := countingEcho(a)
	layer, err := a.RaftStreamLayer()
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	ctx := ctxTimeout(t, 5*time.Second)

	if err := c.SendFrame(ctx, a.ID(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "first frame", func() bool { return sink.count() == 1 })
	if _, err := c.Call(ctx, a.ID(), "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}

	// Drop c from a's set only; the connection stays open.
	byPeer, byNode, err := buildMembers([]Member{memberOf("a", a)})
	if err != nil {
		t.Fatal(err)
	}
	a.members.replace(byPeer, byNode)
	if !a.Connected(c.ID()) {
		t.Fatal("test needs the connection to stay open")
	}

	// Same long-lived tss stream: the per-frame check resets it.
	if err := c.SendFrame(ctx, a.ID(), []byte("two")); err != nil {
		t.Fatal(err)
	}
	// New rpc stream: refused on open.
	if _, err := c.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", []byte("x")); err == nil {
		t.Fatal("call from a removed member succeeded")
	}
	// New raft stream: refused on open, never accepted.
	accepted := make(chan struct{})
	go func() {
		if conn, err := layer.Accept(); err == nil {
			conn.Close()
			close(accepted)
		}
	}()
	cl, err := c.RaftStreamLayer()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if conn, err := cl.Dial(ServerAddressOf(a.ID()), time.Second); err == nil {
		_, _ = conn.Write([]byte{0})
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("raft stream from a removed member answered")
		}
		conn.Close()
	}

	waitFor(t, 5*time.Second, "three refusals", func() bool { return a.Stats().StreamsRefused >= 3 })
	select {
	case <-accepted:
		t.Fatal("raft layer accepted a stream from a removed member")
	case <-time.After(200 * time.Millisecond):
	}
	if sink.count() != 1 || calls.Load() != 1 {
		t.Fatalf("handlers ran after removal: %d frames, %d calls", sink.count(), calls.Load())
	}
}

func TestSetMembersAdmitsNewPeer(t *testing.T) {
	a, b, c := newTestHost(t), newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	if err := c.SetMembers([]Member{memberOf("a", a), memberOf("c", c)}); err != nil {
		t.Fatal(err)
	}
	calls := countingEcho(a)
	if _, err := c.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", nil); err == nil {
		t.Fatal("call before admission succeeded")
	}

	if err := a.SetMembers([]Member{memberOf("a", a), memberOf("b", b), memberOf("c", c)}); err != nil {
		t.Fatal(err)
	}
	if id, ok := a.NodeIDOf(c.ID()); !ok || id != "c" {
		t.Fatalf("NodeIDOf(c) = %q, %v", id, ok)
	}
	if p, ok := a.PeerIDOf("c"); !ok || p != c.ID() {
		t.Fatalf("PeerIDOf(c) = %s, %v", p, ok)
	}
	waitFor(t, 5*time.Second, "admitted call", func() bool {
		resp, err := c.Call(ctxTimeout(t, time.Second), a.ID(), "echo", []byte("in"))
		return err == nil && string(resp) == "in"
	})
	// a now dials c at its configured address too.
	waitFor(t, 5*time.Second, "a to c", func() bool {
		_, err := a.Ping(ctxTimeout(t, time.Second), c.ID())
		return err == nil
	})

	// Removing c again closes the connection and refuses it.
	before := calls.Load()
	if err := a.SetMembers([]Member{memberOf("a", a), memberOf("b", b)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.NodeIDOf(c.ID()); ok {
		t.Fatal("removed member still mapped")
	}
	waitFor(t, 5*time.Second, "disconnect of removed member", func() bool { return !a.Connected(c.ID()) })
	if _, err := c.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", nil); err == nil {
		t.Fatal("call after removal succeeded")
	}
	if calls.Load() != before {
		t.Fatal("handler ran after removal")
	}
}

func TestSetMembersKeepsOldSetOnError(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	err := a.SetMembers([]Member{memberOf("a", a), {NodeID: "a", PeerID: b.ID()}})
	if err == nil {
		t.Fatal("duplicate node id accepted")
	}
	if !a.IsMember(b.ID()) || len(a.Members()) != 2 {
		t.Fatal("failed SetMembers changed the set")
	}
}

// TestSetMembersKeepsConnectionsOfMembersThatStay: replacing the member set (as the
// node does whenever the replicated member list changes) keeps the very connections to
// members that stay, even with new dial addresses, admits the new member, and closes and
// refuses the removed one.
func TestSetMembersKeepsConnectionsOfMembersThatStay(t *testing.T) {
	a, b, c, d := newTestHost(t), newTestHost(t), newTestHost(t), newTestHost(t)
	ms := mesh(t, a, b, c)
	connsTo := func(p peer.ID) []network.Conn { return a.h.Network().ConnsToPeer(p) }
	before := connsTo(b.ID())
	if len(before) == 0 {
		t.Fatal("a has no connection to b")
	}
	echo := countingEcho(a)

	// b stays (listed with one more address), c leaves, d joins.
	mb := ms[1]
	mb.Addrs = append(mb.Addrs, ma.StringCast("/ip4/127.0.0.1/tcp/9"))
	dm := memberOf("d", d)
	if err := a.SetMembers([]Member{ms[0], mb, dm}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetMembers([]Member{ms[0], dm}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the removed member disconnected", func() bool { return !a.Connected(c.ID()) })
	after := connsTo(b.ID())
	if len(after) == 0 || !slices.Contains(after, before[0]) || before[0].IsClosed() {
		t.Fatalf("the connection to b was replaced: before %v, after %v", before, after)
	}
	if _, err := b.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", []byte("b")); err != nil {
		t.Fatalf("call from a member that stayed: %v", err)
	}
	waitFor(t, 5*time.Second, "the new member admitted", func() bool {
		resp, err := d.Call(ctxTimeout(t, time.Second), a.ID(), "echo", []byte("d"))
		return err == nil && string(resp) == "d"
	})
	n := echo.Load()
	if _, err := c.Call(ctxTimeout(t, 2*time.Second), a.ID(), "echo", nil); err == nil {
		t.Fatal("call from the removed member succeeded")
	}
	if echo.Load() != n {
		t.Fatal("handler ran for the removed member")
	}
	if a.IsMember(c.ID()) || !a.IsMember(d.ID()) || !a.IsMember(b.ID()) {
		t.Fatalf("member set %v", a.Members())
	}
}
