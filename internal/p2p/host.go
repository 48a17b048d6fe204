package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// Protocol ids of the three custos protocols.
const (
	// ProtocolRaft carries hashicorp/raft's NetworkTransport connections.
	ProtocolRaft protocol.ID = "/custos/raft/1"
	// ProtocolTSS carries ceremony frames.
	ProtocolTSS protocol.ID = "/custos/tss/1"
	// ProtocolRPC carries request/response calls.
	ProtocolRPC protocol.ID = "/custos/rpc/1"
)

// Defaults for the zero values in Config.
const (
	// DefaultDialTimeout bounds one dial to a member.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReconnectInterval is how often members that are not connected are redialled.
	DefaultReconnectInterval = 2 * time.Second
	// DefaultRPCTimeout bounds a Call whose context has no deadline, and a handler whose
	// caller sent no deadline.
	DefaultRPCTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds writing one frame when the context has no deadline.
	DefaultWriteTimeout = 30 * time.Second
	// MaxListenAddrs is the largest number of listen addresses accepted.
	MaxListenAddrs = 16
)

// frameBodyTimeout bounds receiving the body of a frame (or an RPC message) once its
// header has arrived, so that a peer cannot park a half-sent message forever.
const frameBodyTimeout = 60 * time.Second

// Config configures New.
type Config struct {
	// Identity is the node's persistent Ed25519 key (GenerateIdentity / UnmarshalIdentity).
	// Required.
	Identity crypto.PrivKey
	// ListenAddrs are multiaddr strings such as /ip4/0.0.0.0/tcp/7801 or, with EnableQUIC,
	// /ip4/0.0.0.0/udp/7801/quic-v1. Port 0 picks a free port (see Host.ListenAddrs).
	// Required.
	ListenAddrs []string
	// EnableQUIC adds the QUIC transport (which always uses its own TLS 1.3 handshake;
	// Noise applies to TCP). Off by default.
	EnableQUIC bool
	// Members is the initial (bootstrap) member set; SetMembers replaces it later.
	Members []Member
	// DialTimeout bounds one dial; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// ReconnectInterval is how often members that are not connected are redialled in the
	// background; 0 means DefaultReconnectInterval, a negative value disables the loop.
	ReconnectInterval time.Duration
	// RPCTimeout bounds calls without a context deadline and handlers whose caller sent
	// none; 0 means DefaultRPCTimeout.
	RPCTimeout time.Duration
	// Logger receives the package's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Host is the node's libp2p host with the custos protocols mounted on it. It is safe for
// concurrent use. Close releases everything.
type Host struct {
	h    host.Host
	self peer.ID
	log  *slog.Logger

	dialTimeout       time.Duration
	reconnectInterval time.Duration
	rpcTimeout        time.Duration

	members *memberSet
	setMu   sync.Mutex // serialises SetMembers' peerstore updates
	stats   counters

	ctx    context.Context
	cancel context.CancelFunc
	lifeMu sync.Mutex
	closed bool
	wg     sync.WaitGroup

	frameHandler atomic.Pointer[FrameHandler]
	outMu        sync.Mutex
	out          map[peer.ID]*outStream

	rpcMu       sync.RWMutex
	rpcHandlers map[string]RPCHandler

	raftMu    sync.Mutex
	raftLayer *StreamLayer

	dialMu  sync.Mutex
	dialing map[peer.ID]bool
}

// New starts a host listening on cfg.ListenAddrs with cfg.Members admitted, mounts the
// three protocols and starts the reconnect loop. Call Close to stop it.
func New(cfg Config) (*Host, error) {
	if err := checkIdentity(cfg.Identity); err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	listen, err := parseListenAddrs(cfg.ListenAddrs, cfg.EnableQUIC)
	if err != nil {
		return nil, err
	}
	byPeer, byNode, err := buildMembers(cfg.Members)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	h := &Host{
		self:              self,
		log:               logger.With("component", "p2p"),
		dialTimeout:       orDefault(cfg.DialTimeout, DefaultDialTimeout),
		reconnectInterval: orDefault(cfg.ReconnectInterval, DefaultReconnectInterval),
		rpcTimeout:        orDefault(cfg.RPCTimeout, DefaultRPCTimeout),
		members:           newMemberSet(),
		out:               map[peer.ID]*outStream{},
		rpcHandlers:       map[string]RPCHandler{},
		dialing:           map[peer.ID]bool{},
	}
	h.members.replace(byPeer, byNode)

	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionGater(&gater{self: self, members: h.members, refused: &h.stats.connsRefused}),
		// Members are few and all wanted: never trim connections.
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		// AutoNAT v1 always exists; a forced reachability makes it static (no probing,
		// no service). No NAT port mapping, hole punching, autorelay, mDNS or DHT is
		// enabled.
		libp2p.ForceReachabilityPrivate(),
		// Identify still stores the addresses a peer advertises in the peerstore, but the
		// gater's InterceptAddrDial refuses every address that is not configured for the
		// member, so dials go exactly where SetMembers says (a test proxy, a NAT mapping).
		// Learning our own observed addresses is useless here: switch it off.
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
		// A member that is down for a while must not get its address black-holed.
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
		libp2p.WithDialTimeout(h.dialTimeout),
		libp2p.UserAgent("custos"),
	}
	if cfg.EnableQUIC {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	// The resource manager is libp2p's default (autoscaled limits, e.g. 64 inbound and 128
	// outbound streams per protocol per peer): ample for raft's connection pool, one tss
	// stream and concurrent rpc calls per member.
	lh, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: start libp2p host: %w", err)
	}
	h.h = lh
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.syncPeerstore(nil, byPeer)

	lh.SetStreamHandler(ProtocolTSS, h.handleTSS)
	lh.SetStreamHandler(ProtocolRPC, h.handleRPC)
	lh.SetStreamHandler(ProtocolRaft, h.handleRaft)
	h.rpcHandlers[pingMethod] = h.servePing

	if h.reconnectInterval > 0 {
		h.wg.Add(1)
		go h.reconnectLoop()
	}
	h.log.Info("p2p host started", "peer_id", self.String(), "listen", fmt.Sprint(h.ListenAddrs()), "quic", cfg.EnableQUIC)
	return h, nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// parseListenAddrs parses and checks listen addresses: TCP, or QUIC v1 when enabled.
func parseListenAddrs(addrs []string, quicOn bool) ([]ma.Multiaddr, error) {
	if len(addrs) == 0 {
		return nil, errors.New("p2p: at least one listen address is required")
	}
	if len(addrs) > MaxListenAddrs {
		return nil, fmt.Errorf("p2p: %d listen addresses, at most %d", len(addrs), MaxListenAddrs)
	}
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: listen address %q: %w", s, err)
		}
		switch listenKind(a) {
		case "tcp":
		case "quic":
			if !quicOn {
				return nil, fmt.Errorf("p2p: listen address %q is QUIC but QUIC is disabled (enable it or listen on /tcp)", s)
			}
		default:
			return nil, fmt.Errorf("p2p: listen address %q: only /ip4|ip6/<ip>/tcp/<port> and /ip4|ip6/<ip>/udp/<port>/quic-v1 are supported", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// listenKind classifies a listen address: "tcp", "quic" or "" (unsupported).
func listenKind(a ma.Multiaddr) string {
	if len(a) < 2 {
		return ""
	}
	switch a[0].Code() {
	case ma.P_IP4, ma.P_IP6:
	default:
		return ""
	}
	switch {
	case len(a) == 2 && a[1].Code() == ma.P_TCP:
		return "tcp"
	case len(a) == 3 && a[1].Code() == ma.P_UDP && a[2].Code() == ma.P_QUIC_V1:
		return "quic"
	}
	return ""
}

// ID returns this host's peer id.
func (h *Host) ID() peer.ID { return h.self }

// ListenAddrs returns the addresses the host actually listens on (port 0 resolved to the
// real port; an unspecified IP such as 0.0.0.0 stays unspecified).
func (h *Host) ListenAddrs() []ma.Multiaddr {
	return slices.Clone(h.h.Network().ListenAddresses())
}

// SetMembers replaces the member set: from now on only these peers are admitted, their
// addresses are put in the peerstore with a permanent TTL (and become the only addresses
// they are dialled at), and connections to peers that left the set are closed. The list may
// include this host itself (its addresses are ignored). An invalid list (duplicate node or
// peer id, more than MaxMembers, bad addresses) is refused and the old set stays.
func (h *Host) SetMembers(members []Member) error {
	byPeer, byNode, err := buildMembers(members)
	if err != nil {
		return err
	}
	if h.isClosed() {
		return ErrClosed
	}
	h.setMu.Lock()
	defer h.setMu.Unlock()
	old := h.members.replace(byPeer, byNode)
	h.syncPeerstore(old, byPeer)
	return nil
}

// syncPeerstore brings the peerstore and connections in line with a new member set.
func (h *Host) syncPeerstore(old, cur map[peer.ID]Member) {
	ps := h.h.Peerstore()
	for p, m := range old {
		if p == h.self {
			continue
		}
		n, still := cur[p]
		if !still {
			ps.ClearAddrs(p)
			h.dropOutbound(p)
			if err := h.h.Network().ClosePeer(p); err != nil {
				h.log.Debug("close connections to removed member", "peer_id", p.String(), "err", err)
			}
			h.log.Info("member removed", "node_id", m.NodeID, "peer_id", p.String())
			continue
		}
		var gone []ma.Multiaddr
		for _, a := range m.Addrs {
			if !ma.Contains(n.Addrs, a) {
				gone = append(gone, a)
			}
		}
		if len(gone) > 0 {
			ps.SetAddrs(p, gone, 0)
		}
	}
	for p, m := range cur {
		if p == h.self {
			continue
		}
		if len(m.Addrs) > 0 {
			ps.SetAddrs(p, m.Addrs, peerstore.PermanentAddrTTL)
		}
		if _, was := old[p]; !was && old != nil {
			h.log.Info("member added", "node_id", m.NodeID, "peer_id", p.String())
		}
	}
}

// Members returns a copy of the current member set, sorted by NodeID.
func (h *Host) Members() []Member { return h.members.list() }

// IsMember reports whether p is in the current member set.
func (h *Host) IsMember(p peer.ID) bool { return h.members.isMember(p) }

// NodeIDOf maps a member's peer id to its node id.
func (h *Host) NodeIDOf(p peer.ID) (string, bool) {
	m, ok := h.members.get(p)
	return m.NodeID, ok
}

// PeerIDOf maps a member's node id to its peer id.
func (h *Host) PeerIDOf(nodeID string) (peer.ID, bool) { return h.members.peerOf(nodeID) }

// Connected reports whether a connection to p is open. This is liveness, not
// authorisation: for a moment after the remote gater refused us it can still be true.
func (h *Host) Connected(p peer.ID) bool {
	return h.h.Network().Connectedness(p) == network.Connected
}

// Peers returns the peers with an open connection, sorted.
func (h *Host) Peers() []peer.ID {
	var out []peer.ID
	for _, p := range h.h.Network().Peers() {
		if h.Connected(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Stats returns a snapshot of the counters.
func (h *Host) Stats() Stats { return h.stats.snapshot() }

// Close stops the reconnect loop, closes the open raft StreamLayer, every connection and
// the listeners, and waits for the package's goroutines, including frame handlers and RPC
// handlers still running (a handler that never returns blocks Close). Idempotent.
func (h *Host) Close() error {
	h.lifeMu.Lock()
	if h.closed {
		h.lifeMu.Unlock()
		return nil
	}
	h.closed = true
	h.lifeMu.Unlock()

	h.cancel()
	h.raftMu.Lock()
	layer := h.raftLayer
	h.raftMu.Unlock()
	if layer != nil {
		_ = layer.Close()
	}
	// Closing the libp2p host resets every stream, which ends blocked writes and the
	// stream handlers' reads.
	err := h.h.Close()
	h.wg.Wait()
	h.outMu.Lock()
	clear(h.out)
	h.outMu.Unlock()
	h.log.Info("p2p host closed")
	if err != nil {
		return fmt.Errorf("p2p: close libp2p host: %w", err)
	}
	return nil
}

func (h *Host) isClosed() bool {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	return h.closed
}

// track registers a goroutine with Close's wait group; false once the host is closed.
func (h *Host) track() bool {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// admit checks the remote peer of an inbound stream against the member set and resets the
// stream when it is not a member. The gater should already have refused such a peer; this
// is the second line.
func (h *Host) admit(s network.Stream) bool {
	p := s.Conn().RemotePeer()
	if p != h.self && h.members.isMember(p) {
		return true
	}
	h.stats.streamsRefused.Add(1)
	_ = s.ResetWithError(network.StreamGated)
	h.log.Warn("refused stream from non-member", "peer_id", p.String(), "protocol", string(s.Protocol()))
	return false
}

// newStream opens a stream to member p, dialling it at its configured addresses if needed.
// Dials bypass libp2p's per-address dial backoff: the reconnect loop paces them, and a
// member coming back must be reachable at once, not minutes later.
func (h *Host) newStream(ctx context.Context, p peer.ID, proto protocol.ID) (network.Stream, error) {
	if err := h.checkPeer(p); err != nil {
		return nil, err
	}
	if !h.Connected(p) {
		ctx = network.WithForceDirectDial(ctx, "custos member")
		ctx = network.WithDialPeerTimeout(ctx, h.dialTimeout)
	}
	s, err := h.h.NewStream(ctx, p, proto)
	if err != nil {
		if h.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("p2p: open %s stream to %s: %w", proto, p, err)
	}
	return s, nil
}

// checkPeer refuses targets that are this host, not members, or when closed.
func (h *Host) checkPeer(p peer.ID) error {
	if h.isClosed() {
		return ErrClosed
	}
	if p == h.self {
		return ErrSelf
	}
	if !h.members.isMember(p) {
		return fmt.Errorf("%w: %s", ErrNotMember, p)
	}
	return nil
}

// reconnectLoop redials members that are not connected every reconnectInterval.
func (h *Host) reconnectLoop() {
	defer h.wg.Done()
	t := time.NewTicker(h.reconnectInterval)
	defer t.Stop()
	for {
		h.reconnectOnce()
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Host) reconnectOnce() {
	for _, m := range h.members.list() {
		p := m.PeerID
		if p == h.self || len(m.Addrs) == 0 || h.Connected(p) {
			continue
		}
		h.dialMu.Lock()
		busy := h.dialing[p]
		if !busy {
			h.dialing[p] = true
		}
		h.dialMu.Unlock()
		if busy {
			continue
		}
		if !h.track() {
			h.endDial(p)
			return
		}
		go func() {
			defer h.wg.Done()
			defer h.endDial(p)
			if err := h.connect(h.ctx, p); err != nil {
				h.log.Debug("reconnect to member failed", "node_id", m.NodeID, "peer_id", p.String(), "err", err)
				return
			}
			h.log.Debug("connected to member", "node_id", m.NodeID, "peer_id", p.String())
		}()
	}
}

func (h *Host) endDial(p peer.ID) {
	h.dialMu.Lock()
	delete(h.dialing, p)
	h.dialMu.Unlock()
}

// connect dials member p (if not connected) within the dial timeout.
func (h *Host) connect(ctx context.Context, p peer.ID) error {
	if err := h.checkPeer(p); err != nil {
		return err
	}
	if h.Connected(p) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.dialTimeout)
	defer cancel()
	ctx = network.WithForceDirectDial(ctx, "custos member")
	if err := h.h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		return fmt.Errorf("p2p: dial %s: %w", p, err)
	}
	return nil
}
