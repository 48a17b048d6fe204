//go:build linux

package cluster

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer echoes every connection until it closes.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln
}

func newProxy(t *testing.T, target string, d time.Duration) *LatencyProxy {
	t.Helper()
	p, err := NewLatencyProxy("127.0.0.1:0", target, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestProxyDelaysEachDirection: a round trip through the proxy takes two one-way delays.
func TestProxyDelaysEachDirection(t *testing.T) {
	const d = 40 * time.Millisecond
	ln := echoServer(t)
	p := newProxy(t, ln.Addr().String(), d)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	for i := range 3 {
		start := time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		if rtt < 2*d || rtt > 2*d+150*time.Millisecond {
			t.Fatalf("round trip %d took %v, want about %v", i, rtt, 2*d)
		}
	}
	if p.Accepted() != 1 {
		t.Fatalf("accepted %d connections, want 1", p.Accepted())
	}
	up := p.UpstreamAddrs()
	if len(up) != 1 {
		t.Fatalf("upstream addresses %v, want one", up)
	}
}

// TestProxyKeepsOrderAndThroughput: many writes spaced far below the delay arrive in
// order, and the whole stream takes about one delay, not one delay per write.
func TestProxyKeepsOrderAndThroughput(t *testing.T) {
	const d = 50 * time.Millisecond
	ln := echoServer(t)
	p := newProxy(t, ln.Addr().String(), d)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	start := time.Now()
	go func() {
		for off := 0; off < len(data); off += 1000 {
			_, _ = c.Write(data[off:min(off+1000, len(data))])
		}
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatal("bytes reordered or corrupted")
	}
	// ~4200 writes: serialising the delay per write would take minutes.
	if took < 2*d || took > 2*time.Second {
		t.Fatalf("4 MiB echo took %v, want a little over %v", took, 2*d)
	}
}

// TestProxyHalfClose: EOF from the client reaches the server after the data.
func TestProxyHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = c.Write([]byte("bye"))
		got <- b
	}()
	p := newProxy(t, ln.Addr().String(), 10*time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("last words"))
	_ = c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(<-got) != "last words" || string(reply) != "bye" {
		t.Fatalf("server got %q / client got %q", "last words", reply)
	}
}

func TestProxyCloseEndsConnections(t *testing.T) {
	ln := echoServer(t)
	p, err := NewLatencyProxy("127.0.0.1:0", ln.Addr().String(), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(one); err == nil {
		t.Fatal("connection still open after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestProxyRejectsBadDelay(t *testing.T) {
	for _, d := range []time.Duration{-time.Millisecond, MaxProxyDelay + 1} {
		if p, err := NewLatencyProxy("127.0.0.1:0", "127.0.0.1:1", d); err == nil {
			p.Close()
			t.Errorf("delay %v accepted", d)
		}
	}
}

// TestProxyFaults: a blocked direction holds bytes until released (nothing lost), each
// direction independently; jitter keeps order; a bandwidth cap slows a stream; Reset
// aborts open connections and new ones still work.
func TestProxyFaults(t *testing.T) {
	ln := echoServer(t)
	p := newProxy(t, ln.Addr().String(), 0)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string, within time.Duration) error {
		if err := c.SetDeadline(time.Now().Add(within)); err != nil {
			return err
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := roundTrip("before", time.Second); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []Direction{Forward, Reverse} {
		p.Block(dir, true)
		if err := roundTrip("held", 200*time.Millisecond); err == nil {
			t.Fatalf("direction %d blocked, yet the echo came back", dir)
		}
		p.Block(dir, false)
		// The held bytes arrive on release, nothing lost and in order.
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
			t.Fatalf("after release read %q, %v", buf, err)
		}
	}
	if err := p.SetJitter(5 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := roundTrip(fmt.Sprintf("j%02d", i), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	_ = p.SetJitter(0)
	if err := p.SetBandwidth(64 << 10); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := roundTrip(strings.Repeat("x", 32<<10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 32 KiB each way at 64 KiB/s: at least about half a second per direction's copy.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("32 KiB echo under a 64 KiB/s cap took only %v", took)
	}
	_ = p.SetBandwidth(0)
	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset aborted %d connections, want 1", n)
	}
	if err := roundTrip("after reset", time.Second); err == nil {
		t.Fatal("a reset connection still echoes")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c = c2
	if err := roundTrip("new", time.Second); err != nil {
		t.Fatalf("new connection after reset: %v", err)
	}
}
