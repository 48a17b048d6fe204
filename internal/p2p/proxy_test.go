package p2p

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// dialCounter stands in at the address of a member that is down: it accepts and closes
// every connection at once, counting them, so that a test sees its reconnect rounds dial
// (and fail) instead of sleeping for a few of them.
type dialCounter struct {
	ln net.Listener
	n  atomic.Int64
	wg sync.WaitGroup
}

func countDials(t *testing.T, listen string) *dialCounter {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	d := &dialCounter{ln: ln}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(d.close)
	return d
}

// close frees the address (idempotent).
func (d *dialCounter) close() {
	_ = d.ln.Close()
	d.wg.Wait()
}

// tcpProxy forwards every connection accepted on its listener to target.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, listen, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *tcpProxy) multiaddr(t *testing.T) ma.Multiaddr {
	t.Helper()
	a := p.ln.Addr().(*net.TCPAddr)
	m, err := ma.NewMultiaddr("/ip4/" + a.IP.String() + "/tcp/" + strconv.Itoa(a.Port))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tcpTarget(t *testing.T, m ma.Multiaddr) string {
	t.Helper()
	ip, err := m.ValueForProtocol(ma.P_IP4)
	if err != nil {
		t.Fatal(err)
	}
	port, err := m.ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	return ip + ":" + port
}

// A member is dialled only at its configured address (here a proxy), never at the
// address it advertises through identify.
func TestDialsOnlyConfiguredAddresses(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	direct := b.ListenAddrs()[0]
	proxy := startProxy(t, "127.0.0.1:0", tcpTarget(t, direct))
	viaProxy := proxy.multiaddr(t)

	if err := a.SetMembers([]Member{memberOf("a", a), {NodeID: "b", PeerID: b.ID(), Addrs: []ma.Multiaddr{viaProxy}}}); err != nil {
		t.Fatal(err)
	}
	// b never dials a, so every connection between them is a's, through the proxy.
	if err := b.SetMembers([]Member{{NodeID: "a", PeerID: a.ID()}, memberOf("b", b)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "connection through the proxy", func() bool { return a.Connected(b.ID()) })
	for _, c := range a.h.Network().ConnsToPeer(b.ID()) {
		if !c.RemoteMultiaddr().Equal(viaProxy) {
			t.Fatalf("connected at %s, want the proxy %s", c.RemoteMultiaddr(), viaProxy)
		}
	}
	if _, err := a.Ping(ctxTimeout(t, 2*time.Second), b.ID()); err != nil {
		t.Fatal(err)
	}
	t.Logf("peerstore addresses of b on a: %v (direct %s)", a.h.Peerstore().Addrs(b.ID()), direct)

	// Proxy down: a must not fall back to b's advertised address.
	listen := proxy.ln.Addr().String()
	proxy.close()
	waitFor(t, 5*time.Second, "disconnect", func() bool { return !a.Connected(b.ID()) })
	if _, err := a.Ping(ctxTimeout(t, time.Second), b.ID()); err == nil {
		t.Fatal("ping succeeded with the proxy down")
	}
	// Several reconnect rounds dial the proxy's address (and fail there).
	dials := countDials(t, listen)
	waitFor(t, 5*time.Second, "three reconnect rounds", func() bool { return dials.n.Load() >= 3 })
	if a.Connected(b.ID()) {
		t.Fatalf("reconnected around the proxy: %v", a.h.Network().ConnsToPeer(b.ID())[0].RemoteMultiaddr())
	}

	// Proxy back on the same port: the reconnect loop finds b again.
	dials.close()
	startProxy(t, listen, tcpTarget(t, direct))
	waitFor(t, 5*time.Second, "reconnect through the proxy", func() bool { return a.Connected(b.ID()) })
}
