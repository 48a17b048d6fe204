//go:build linux

package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy limits. A direction holds at most proxyQueueChunks chunks of at most
// proxyChunkSize bytes (16 MiB) before the proxy stops reading from the sender, which
// then sees ordinary TCP back-pressure.
const (
	proxyChunkSize   = 16 << 10
	proxyQueueChunks = 1024
	// maxUpstreamAddrs bounds how many upstream local addresses a proxy remembers.
	maxUpstreamAddrs = 1 << 16
	// MaxProxyDelay is the largest one-way delay a LatencyProxy accepts.
	MaxProxyDelay = 10 * time.Second
)

// LatencyProxy is a TCP proxy that simulates a wide-area link: it accepts connections on
// its own loopback address, dials Target for each, and copies bytes both ways, holding
// every chunk for the one-way delay before writing it on. Each direction is a
// timestamped queue (a reader stamps a chunk with now+delay, a writer sends it when due),
// so order is kept and the delay is not paid once per write: a stream's throughput is
// not reduced, only shifted in time. The proxy terminates TCP on both sides, so the
// delay applies to the bytes (and so to every protocol message), not to the kernel's
// handshakes and acknowledgements.
type LatencyProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64
	// jitter adds a uniformly random extra delay in [0, jitter) per chunk (order kept);
	// bandwidth caps each direction at that many bytes per second (0: no cap); blocked
	// holds a direction's bytes (a partition: nothing is lost, it is delivered on heal
	// unless the connection is reset or times out first).
	jitter    atomic.Int64
	bandwidth atomic.Int64
	blocked   [2]gate

	accepted atomic.Int64

	mu       sync.Mutex
	closed   bool
	done     chan struct{} // closed by Close
	conns    map[net.Conn]struct{}
	upstream map[string]struct{} // local addresses of the proxy's dials to target
	wg       sync.WaitGroup
}

// NewLatencyProxy listens on listen (for example "127.0.0.1:0") and forwards every
// connection to target, delaying each direction by delay.
func NewLatencyProxy(listen, target string, delay time.Duration) (*LatencyProxy, error) {
	if delay < 0 || delay > MaxProxyDelay {
		return nil, fmt.Errorf("cluster: proxy delay %v outside 0..%v", delay, MaxProxyDelay)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("cluster: proxy listen %s: %w", listen, err)
	}
	p := &LatencyProxy{ln: ln, target: target, done: make(chan struct{}), conns: map[net.Conn]struct{}{}, upstream: map[string]struct{}{}}
	p.delay.Store(int64(delay))
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address the proxy listens on (host:port).
func (p *LatencyProxy) Addr() string { return p.ln.Addr().String() }

// Port is the port the proxy listens on.
func (p *LatencyProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Target is where the proxy forwards to.
func (p *LatencyProxy) Target() string { return p.target }

// Delay is the current one-way delay.
func (p *LatencyProxy) Delay() time.Duration { return time.Duration(p.delay.Load()) }

// SetDelay changes the one-way delay of chunks read from now on (chunks already queued
// keep their due time, so order is never broken).
func (p *LatencyProxy) SetDelay(d time.Duration) error {
	if d < 0 || d > MaxProxyDelay {
		return fmt.Errorf("cluster: proxy delay %v outside 0..%v", d, MaxProxyDelay)
	}
	p.delay.Store(int64(d))
	return nil
}

// Direction is one direction of a proxied link.
type Direction int

// The two directions: Forward carries the bytes of the side that dialled the proxy to the
// target, Reverse the target's bytes back.
const (
	Forward Direction = iota
	Reverse
)

// SetJitter makes every chunk wait an extra uniformly random [0, j) on top of the delay
// (order is kept: a chunk is never sent before the one read before it).
func (p *LatencyProxy) SetJitter(j time.Duration) error {
	if j < 0 || j > MaxProxyDelay {
		return fmt.Errorf("cluster: proxy jitter %v outside 0..%v", j, MaxProxyDelay)
	}
	p.jitter.Store(int64(j))
	return nil
}

// SetBandwidth caps each direction at bytesPerSecond (0 removes the cap).
func (p *LatencyProxy) SetBandwidth(bytesPerSecond int64) error {
	if bytesPerSecond < 0 {
		return fmt.Errorf("cluster: proxy bandwidth %d is negative", bytesPerSecond)
	}
	p.bandwidth.Store(bytesPerSecond)
	return nil
}

// Block holds (true) or releases (false) every byte travelling in direction d, on open
// connections and new ones: a one-way partition of the link. Held bytes queue up to the
// proxy's limit, then the sender sees TCP back-pressure.
func (p *LatencyProxy) Block(d Direction, on bool) { p.blocked[d&1].set(on) }

// Blocked reports whether direction d is held.
func (p *LatencyProxy) Blocked(d Direction) bool {
	_, held := p.blocked[d&1].state()
	return held
}

// gate holds one direction: while held, open is a channel that Block(d, false) closes.
type gate struct {
	mu   sync.Mutex
	held bool
	open chan struct{}
}

func (g *gate) set(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case on && !g.held:
		g.held, g.open = true, make(chan struct{})
	case !on && g.held:
		g.held = false
		close(g.open)
	}
}

func (g *gate) state() (<-chan struct{}, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open, g.held
}

// waitOpen returns once direction d is not held, or the proxy is closed.
func (p *LatencyProxy) waitOpen(d Direction) {
	for {
		open, held := p.blocked[d&1].state()
		if !held {
			return
		}
		select {
		case <-open:
		case <-p.done:
			return
		}
	}
}

// Reset aborts every open proxied connection on both sides with a TCP reset (RST), as a
// middlebox or a rebooted NAT would; new connections are accepted as before.
func (p *LatencyProxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		n++
	}
	return n / 2
}

// Accepted is how many connections the proxy has accepted so far.
func (p *LatencyProxy) Accepted() int64 { return p.accepted.Load() }

// UpstreamAddrs returns the local addresses (host:port) of every connection the proxy
// has dialled to its target (open or already closed, up to 65536 of them): the remote
// address the target sees for a proxied connection.
func (p *LatencyProxy) UpstreamAddrs() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]bool, len(p.upstream))
	for a := range p.upstream {
		out[a] = true
	}
	return out
}

// Close stops accepting, closes every proxied connection and waits for the copiers.
// Idempotent.
func (p *LatencyProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("cluster: close proxy: %w", err)
	}
	return nil
}

// track registers open connections; it refuses them once the proxy is closed.
func (p *LatencyProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *LatencyProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *LatencyProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (too many files): back off briefly.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.handle(in)
	}
}

func (p *LatencyProxy) handle(in net.Conn) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	p.mu.Lock()
	if len(p.upstream) < maxUpstreamAddrs {
		p.upstream[out.LocalAddr().String()] = struct{}{}
	}
	p.mu.Unlock()
	if !p.track(in, out) {
		_ = in.Close()
		_ = out.Close()
		return
	}
	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.pipe(out, in, Forward) }()
	go func() { defer dirs.Done(); p.pipe(in, out, Reverse) }()
	dirs.Wait()
	_ = in.Close()
	_ = out.Close()
	p.untrack(in, out)
}

// chunk is bytes read from one side, to be written to the other at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst through a timestamped queue. When src ends, dst's write side is
// closed once the queue is drained; when writing fails, both connections are closed so
// that the other direction ends too.
func (p *LatencyProxy) pipe(dst, src net.Conn, dir Direction) {
	q := make(chan chunk, proxyQueueChunks)
	go func() {
		defer close(q)
		buf := make([]byte, proxyChunkSize)
		var last time.Time
		for {
			n, err := src.Read(buf)
			if n > 0 {
				due := time.Now().Add(p.Delay())
				if j := p.jitter.Load(); j > 0 {
					due = due.Add(time.Duration(rand.Int64N(j)))
				}
				if due.Before(last) {
					due = last
				}
				last = due
				q <- chunk{b: append([]byte(nil), buf[:n]...), due: due}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	failed := false
	for c := range q {
		if failed {
			continue // drain so that the reader never blocks
		}
		p.waitOpen(dir)
		if d := time.Until(c.due); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		if bw := p.bandwidth.Load(); bw > 0 {
			// The chunk takes len/bw on the wire before it is all there.
			time.Sleep(time.Duration(int64(len(c.b)) * int64(time.Second) / bw))
		}
		if _, err := dst.Write(c.b); err != nil {
			failed = true
			_ = dst.Close()
			_ = src.Close()
		}
	}
	if failed {
		return
	}
	if tc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
