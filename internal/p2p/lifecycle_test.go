package p2p

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestReconnectAfterRestart(t *testing.T) {
	a := newTestHost(t)
	keyB, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b := newTestHost(t, withKey(keyB))
	members := mesh(t, a, b)
	var sink frameSink
	b.SetFrameHandler(sink.handle)
	ctx := ctxTimeout(t, 9*time.Second)
	if err := a.SendFrame(ctx, b.ID(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "first frame", func() bool { return sink.count() == 1 })

	listen := b.ListenAddrs()[0]
	addr := listen.String()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "a to notice", func() bool { return !a.Connected(b.ID()) })
	// While b is down, sends fail (and libp2p records dial backoffs).
	if err := a.SendFrame(ctxTimeout(t, time.Second), b.ID(), []byte("lost")); err == nil {
		t.Log("send while down reported success (written before the close was noticed)")
	}
	// A few reconnect rounds fail: a dials b's address, where nothing answers for b.
	dials := countDials(t, tcpTarget(t, listen))
	waitFor(t, 5*time.Second, "three failed reconnect rounds", func() bool { return dials.n.Load() >= 3 })
	dials.close()

	// Same identity, same port.
	b2 := newTestHost(t, withKey(keyB), withListen(addr))
	if b2.ID() != b.ID() {
		t.Fatal("identity changed")
	}
	if err := b2.SetMembers(members); err != nil {
		t.Fatal(err)
	}
	var sink2 frameSink
	b2.SetFrameHandler(sink2.handle)

	// The reconnect loop brings the connection back by itself…
	waitFor(t, 5*time.Second, "reconnect", func() bool { return a.Connected(b2.ID()) })
	// …and frames flow again on a re-opened stream.
	if err := a.SendFrame(ctx, b2.ID(), []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "frame after restart", func() bool {
		for _, f := range sink2.snapshot() {
			if string(f.frame) == "after" {
				return true
			}
		}
		return false
	})
}

func TestCloseStopsEverything(t *testing.T) {
	// Warm up libp2p's process-wide goroutines before counting.
	w := newTestHost(t)
	_ = w.Close()
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	k, _ := GenerateIdentity()
	a, err := New(Config{Identity: k, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, ReconnectInterval: 50 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := GenerateIdentity()
	b, err := New(Config{Identity: k2, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, ReconnectInterval: 50 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mesh(t, a, b)
	var sink frameSink
	b.SetFrameHandler(sink.handle)
	blocked := make(chan struct{})
	b.HandleRPC("wait", func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		close(blocked)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx := ctxTimeout(t, 5*time.Second)
	if err := a.SendFrame(ctx, b.ID(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	layer, err := b.RaftStreamLayer()
	if err != nil {
		t.Fatal(err)
	}
	callErr := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, b.ID(), "wait", nil)
		callErr <- err
	}()
	<-blocked

	// Closing b ends its handler (its context), its raft layer and its streams.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-callErr; err == nil {
		t.Fatal("call survived the remote close")
	}
	if _, err := layer.Accept(); err == nil {
		t.Fatal("Accept after host Close succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tests := []struct {
		name string
		err  error
	}{
		{"SendFrame", a.SendFrame(ctx, b.ID(), []byte("x"))},
		{"SetMembers", a.SetMembers(nil)},
		{"Ping", func() error { _, err := a.Ping(ctx, b.ID()); return err }()},
		{"RaftStreamLayer", func() error { _, err := a.RaftStreamLayer(); return err }()},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", tt.name, tt.err)
		}
	}
	waitFor(t, 5*time.Second, "goroutines to finish", func() bool { return runtime.NumGoroutine() <= base+2 })
}
