package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// raftAcceptTimeout bounds how long an inbound raft stream waits for Accept before it is
// dropped (raft's accept loop normally takes it at once).
const raftAcceptTimeout = 10 * time.Second

// ErrRaftLayerOpen is returned by RaftStreamLayer while another layer is still open.
var ErrRaftLayerOpen = errors.New("p2p: a raft stream layer is already open")

// StreamLayer is hashicorp/raft's StreamLayer over /custos/raft/1: raft server addresses
// are peer id strings, each raft connection is one libp2p stream (deadlines work as on a
// net.Conn). Use it as
//
//	layer, err := host.RaftStreamLayer()
//	transport := raft.NewNetworkTransport(layer, 3, 10*time.Second, logOutput)
//
// and give raft ServerAddress(peerID.String()) for every server. Closing the transport
// closes the layer; connections already handed out stay raft's to close.
type StreamLayer struct {
	h         *Host
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// RaftStreamLayer opens the host's raft stream layer. Only one can be open at a time
// (ErrRaftLayerOpen otherwise); after it is closed a new one may be opened, for instance to
// restart raft in the same process. While none is open, inbound raft streams are reset and
// counted in Stats.StreamsDropped.
func (h *Host) RaftStreamLayer() (*StreamLayer, error) {
	if h.isClosed() {
		return nil, ErrClosed
	}
	h.raftMu.Lock()
	defer h.raftMu.Unlock()
	if h.raftLayer != nil {
		return nil, ErrRaftLayerOpen
	}
	l := &StreamLayer{h: h, conns: make(chan net.Conn), closed: make(chan struct{})}
	h.raftLayer = l
	return l, nil
}

// Dial opens a raft connection to the member whose peer id string is address. timeout
// bounds dialling and stream opening (the host's dial timeout when 0).
func (l *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, fmt.Errorf("p2p: raft dial: %w", net.ErrClosed)
	default:
	}
	p, err := peer.Decode(string(address))
	if err != nil {
		return nil, fmt.Errorf("p2p: raft dial: address %q is not a peer id: %w", address, err)
	}
	if timeout <= 0 {
		timeout = l.h.dialTimeout
	}
	ctx, cancel := context.WithTimeout(l.h.ctx, timeout)
	defer cancel()
	s, err := l.h.newStream(ctx, p, ProtocolRaft)
	if err != nil {
		return nil, fmt.Errorf("p2p: raft dial: %w", err)
	}
	return &streamConn{Stream: s}, nil
}

// Accept waits for the next inbound raft connection from a member.
func (l *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("p2p: raft accept: %w", net.ErrClosed)
	}
}

// Close stops Accept and Dial and detaches the layer from the host. Idempotent.
func (l *StreamLayer) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.h.raftMu.Lock()
		if l.h.raftLayer == l {
			l.h.raftLayer = nil
		}
		l.h.raftMu.Unlock()
	})
	return nil
}

// Addr returns this host's address as raft sees it: its peer id.
func (l *StreamLayer) Addr() net.Addr { return PeerAddr(l.h.self) }

// handleRaft hands an inbound raft stream to the open layer.
func (h *Host) handleRaft(s network.Stream) {
	if !h.track() {
		_ = s.Reset()
		return
	}
	defer h.wg.Done()
	if !h.admit(s) {
		return
	}
	h.raftMu.Lock()
	l := h.raftLayer
	h.raftMu.Unlock()
	if l == nil {
		h.stats.streamsDropped.Add(1)
		_ = s.Reset()
		return
	}
	t := time.NewTimer(raftAcceptTimeout)
	defer t.Stop()
	select {
	case l.conns <- &streamConn{Stream: s}:
	case <-l.closed:
		h.stats.streamsDropped.Add(1)
		_ = s.Reset()
	case <-t.C:
		h.stats.streamsDropped.Add(1)
		_ = s.Reset()
		h.log.Warn("dropped raft stream: not accepted in time", "peer_id", s.Conn().RemotePeer().String())
	}
}

// ServerAddressOf is the raft server address of peer p (its peer id string).
func ServerAddressOf(p peer.ID) raft.ServerAddress { return raft.ServerAddress(p.String()) }

// PeerAddr is a peer id used as a net.Addr (network "libp2p").
type PeerAddr peer.ID

// Network implements net.Addr.
func (a PeerAddr) Network() string { return "libp2p" }

// String implements net.Addr: the peer id in its usual text form.
func (a PeerAddr) String() string { return peer.ID(a).String() }

// streamConn adapts a libp2p stream to net.Conn. Read, Write, Close and the deadline
// methods are the stream's own.
type streamConn struct {
	network.Stream
}

var _ net.Conn = (*streamConn)(nil)

// LocalAddr returns this host's peer id.
func (c *streamConn) LocalAddr() net.Addr { return PeerAddr(c.Conn().LocalPeer()) }

// RemoteAddr returns the remote peer id.
func (c *streamConn) RemoteAddr() net.Addr { return PeerAddr(c.Conn().RemotePeer()) }
