//go:build linux

package hostile

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/keystore"
	"github.com/custos/custos/node"
	"github.com/custos/custos/protocol"
)

// Wire constants of /custos/tss/1 and of the ceremony envelope, restated here on purpose:
// the hostile peer writes bytes, it does not use the honest encoder.
const (
	frameHeaderSize    = 4
	envelopeHeaderSize = 1 + 32 + 1 + 1 + 4
	// maxCapturedFrames bounds what the peer records of the honest nodes' traffic.
	maxCapturedFrames = 4096
)

// behaviour is what the hostile peer does in a real ceremony it is scheduled into.
type behaviour string

const (
	// actGarbage answers with a well-framed envelope whose tss payload is random bytes.
	actGarbage behaviour = "garbage"
	// actReflect sends every message the honest party sends it straight back, as its own:
	// the honest party's content claimed by another sender.
	actReflect behaviour = "reflect"
	// actCrossReplay re-sends messages captured in an earlier ceremony under this
	// session's id (a replay across sessions).
	actCrossReplay behaviour = "cross-replay"
	// actOutOfOrder sends, first and twice, a last-round message whose embedded tss-lib
	// sender is the honest party, then nothing.
	actOutOfOrder behaviour = "out-of-order"
	// actWrongFlag re-sends the honest party's first message with the broadcast flag
	// flipped.
	actWrongFlag behaviour = "wrong-flag"
	// actSilent never answers.
	actSilent behaviour = "silent"
	// actAbort says it gave up (MsgAbort) without a reason of substance.
	actAbort behaviour = "abort"
)

// invitation is a ceremony the hostile peer found itself in: an honest party sent it a
// message for a session it had not seen.
type invitation struct {
	Session protocol.SessionID
	From    string // the honest node that sent the first message
	Kind    string // "ecdsa" or "eddsa", from the tss-lib type of that message
	Act     behaviour
	At      time.Time
}

// captured is one frame an honest node sent the hostile peer.
type captured struct {
	from  string
	frame []byte
	msg   *protocol.Message
	typ   string // tss-lib type, "" when not a tss message
}

// hostilePeer is a libp2p host that uses a real member's identity and writes raw bytes on
// the custos protocols.
type hostilePeer struct {
	h      host.Host
	selfID string
	ids    map[peer.ID]string // honest peers
	pids   map[string]peer.ID
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	acts     []behaviour
	nextAct  int
	sessions map[protocol.SessionID]*invitation
	order    []*invitation
	frames   []captured
	outs     map[peer.ID]*outStream
}

type outStream struct {
	mu sync.Mutex
	s  network.Stream
}

// memberIdentity reads a stopped node's libp2p identity from its keystore, with the
// master key its configuration names, and returns it with the configuration.
func memberIdentity(configPath string) (crypto.PrivKey, *config.Config, error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, nil, err
	}
	mk, err := keystore.MasterKeyFromFile(cfg.MasterKey.File)
	if err != nil {
		return nil, nil, fmt.Errorf("master key: %w", err)
	}
	ks, err := keystore.Open(cfg.DataDir+"/keystore", mk, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, fmt.Errorf("open keystore: %w", err)
	}
	defer ks.Close()
	sk, err := node.Identity(ks)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %w", err)
	}
	return sk, cfg, nil
}

// newRawHost starts a libp2p host with the custos transport stack (TCP, Noise, yamux)
// and no gater: it dials and accepts anyone.
func newRawHost(sk crypto.PrivKey, listen []string) (host.Host, error) {
	opts := []libp2p.Option{
		libp2p.Identity(sk),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.ForceReachabilityPrivate(),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
	}
	if len(listen) > 0 {
		opts = append(opts, libp2p.ListenAddrStrings(listen...))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	return libp2p.New(opts...)
}

// addMembers puts every member but self in h's peerstore and returns node id → peer id.
func addMembers(h host.Host, members []config.Member) (map[string]peer.ID, error) {
	out := map[string]peer.ID{}
	for _, m := range members {
		pm, err := p2p.ParseMember(m.ID, m.PeerID, m.P2PAddrs)
		if err != nil {
			return nil, err
		}
		if pm.PeerID == h.ID() {
			continue
		}
		h.Peerstore().AddAddrs(pm.PeerID, pm.Addrs, peerstore.PermanentAddrTTL)
		out[m.ID] = pm.PeerID
	}
	return out, nil
}

// startHostile starts the hostile peer as member selfID with identity sk, listening where
// that member listened, and connects it to every other member.
func startHostile(ctx context.Context, sk crypto.PrivKey, cfg *config.Config, acts []behaviour, log *slog.Logger) (*hostilePeer, error) {
	h, err := newRawHost(sk, cfg.P2P.Listen)
	if err != nil {
		return nil, fmt.Errorf("hostile host: %w", err)
	}
	pids, err := addMembers(h, cfg.Cluster.Members)
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	hp := &hostilePeer{h: h, selfID: cfg.NodeID, pids: pids, ids: map[peer.ID]string{}, log: log, acts: acts,
		sessions: map[protocol.SessionID]*invitation{}, outs: map[peer.ID]*outStream{}}
	for id, p := range pids {
		hp.ids[p] = id
	}
	hp.ctx, hp.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(p2p.ProtocolTSS, hp.handleTSS)
	for id, p := range pids {
		var lastErr error
		for range 50 {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			lastErr = h.Connect(cctx, peer.AddrInfo{ID: p})
			cancel()
			if lastErr == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if lastErr != nil {
			hp.Close()
			return nil, fmt.Errorf("hostile peer cannot reach %s: %w", id, lastErr)
		}
	}
	return hp, nil
}

// Close stops the peer and waits for its goroutines.
func (hp *hostilePeer) Close() {
	hp.mu.Lock()
	hp.closed = true
	hp.mu.Unlock()
	hp.cancel()
	_ = hp.h.Close()
	hp.wg.Wait()
}

// handleTSS reads the frames an honest node sends and reacts to new sessions.
func (hp *hostilePeer) handleTSS(s network.Stream) {
	defer s.Reset()
	from, ok := hp.ids[s.Conn().RemotePeer()]
	if !ok {
		return
	}
	for {
		frame, err := readFrame(s, p2p.MaxFrameSize)
		if err != nil {
			return
		}
		m, err := protocol.UnmarshalMessage(frame, from)
		if err != nil {
			hp.log.Warn("honest node sent a malformed frame", "from", from, "err", err)
			continue
		}
		hp.record(from, frame, m)
	}
}

func (hp *hostilePeer) record(from string, frame []byte, m *protocol.Message) {
	c := captured{from: from, frame: frame, msg: m}
	if m.Kind == protocol.MsgTSS {
		c.typ = tssType(m, from)
	}
	hp.mu.Lock()
	if hp.closed {
		hp.mu.Unlock()
		return
	}
	if len(hp.frames) < maxCapturedFrames {
		hp.frames = append(hp.frames, c)
	}
	inv, seen := hp.sessions[m.Session]
	if !seen {
		kind := "eddsa"
		if strings.Contains(c.typ, "ecdsa") {
			kind = "ecdsa"
		}
		inv = &invitation{Session: m.Session, From: from, Kind: kind, At: time.Now()}
		if len(hp.acts) > 0 {
			inv.Act = hp.acts[hp.nextAct%len(hp.acts)]
			hp.nextAct++
		}
		hp.sessions[m.Session] = inv
		hp.order = append(hp.order, inv)
	}
	hp.wg.Add(1) // under mu, so never after Close started waiting
	hp.mu.Unlock()
	go func() {
		defer hp.wg.Done()
		hp.react(inv, c, !seen)
	}()
}

// tssType names the tss-lib message type of a captured tss message ("" if unparseable).
func tssType(m *protocol.Message, from string) string {
	pid := tss.NewPartyID(from, from, protocol.PartyKey(from))
	var typ string
	func() {
		defer func() { _ = recover() }()
		if pm, err := tss.ParseWireMessage(m.Payload, pid, m.Broadcast); err == nil {
			typ = pm.Type()
		}
	}()
	return typ
}

// react plays the session's behaviour on one message of an honest party.
func (hp *hostilePeer) react(inv *invitation, c captured, first bool) {
	if c.msg.Kind != protocol.MsgTSS {
		return
	}
	to := inv.From
	if c.from != to {
		return
	}
	switch inv.Act {
	case actGarbage:
		if first {
			hp.sendMsg(to, &protocol.Message{Session: inv.Session, Kind: protocol.MsgTSS, Payload: randomBytes(300)})
		}
	case actReflect:
		hp.sendFrame(to, c.frame)
	case actCrossReplay:
		if !first {
			return
		}
		old := hp.capturedFrom(to, inv.Session)
		if len(old) == 0 {
			// Nothing captured yet: replay the honest party's own message instead.
			old = []captured{c}
		}
		for _, o := range old {
			m := *o.msg
			m.Session = inv.Session
			hp.sendMsg(to, &m)
		}
	case actOutOfOrder:
		if !first {
			return
		}
		m, err := lastRoundMessage(inv.Session, inv.Kind, to)
		if err != nil {
			hp.log.Warn("cannot build an out-of-order message", "err", err)
			return
		}
		hp.sendMsg(to, m)
		hp.sendMsg(to, m) // an exact replay inside the session
	case actWrongFlag:
		if first {
			m := *c.msg
			m.Broadcast = !m.Broadcast
			hp.sendMsg(to, &m)
		}
	case actAbort:
		if first {
			hp.sendMsg(to, &protocol.Message{Session: inv.Session, Kind: protocol.MsgAbort, Payload: []byte("not today")})
		}
	case actSilent:
	}
}

// capturedFrom returns the tss messages from node captured in sessions other than sid.
func (hp *hostilePeer) capturedFrom(nodeID string, sid protocol.SessionID) []captured {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	var out []captured
	for _, c := range hp.frames {
		if c.from == nodeID && c.msg.Session != sid && c.msg.Kind == protocol.MsgTSS {
			out = append(out, c)
		}
	}
	if len(out) > 16 {
		out = out[len(out)-16:]
	}
	return out
}

// lastRoundMessage builds a well-formed message of the protocol's last round, whose
// tss-lib sender field names the honest party claimed (the envelope carries no sender).
func lastRoundMessage(sid protocol.SessionID, kind, claimed string) (*protocol.Message, error) {
	from := tss.NewPartyID(claimed, claimed, protocol.PartyKey(claimed))
	si, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 250))
	si.Add(si, big.NewInt(1))
	var pm tss.ParsedMessage
	if kind == "ecdsa" {
		pm = ecdsasigning.NewSignRound9Message(from, si)
	} else {
		pm = eddsasigning.NewSignRound3Message(from, si)
	}
	payload, routing, err := pm.WireBytes()
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", pm.Type(), err)
	}
	return &protocol.Message{Session: sid, Kind: protocol.MsgTSS, Broadcast: routing.IsBroadcast, Payload: payload}, nil
}

// Invitations returns the ceremonies the peer has been scheduled into, oldest first.
func (hp *hostilePeer) Invitations() []invitation {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	out := make([]invitation, len(hp.order))
	for i, inv := range hp.order {
		out[i] = *inv
	}
	return out
}

// Captured returns a copy of the recorded frames.
func (hp *hostilePeer) Captured() []captured {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return append([]captured(nil), hp.frames...)
}

// SetActs replaces the behaviours new sessions get.
func (hp *hostilePeer) SetActs(acts ...behaviour) {
	hp.mu.Lock()
	hp.acts, hp.nextAct = acts, 0
	hp.mu.Unlock()
}

// sendMsg encodes m without the honest encoder's checks and sends it as one frame.
func (hp *hostilePeer) sendMsg(to string, m *protocol.Message) {
	hp.sendFrame(to, rawEnvelope(1, m.Session, byte(m.Kind), flagsOf(m.Broadcast), m.Payload))
}

func flagsOf(bcast bool) byte {
	if bcast {
		return 1
	}
	return 0
}

// rawEnvelope lays out an envelope field by field, whatever the values.
func rawEnvelope(version byte, sid protocol.SessionID, kind, flags byte, payload []byte) []byte {
	b := make([]byte, 0, envelopeHeaderSize+len(payload))
	b = append(b, version)
	b = append(b, sid[:]...)
	b = append(b, kind, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// sendFrame writes one length-prefixed frame on the long-lived tss stream to node to
// (re-opened once if the honest node reset it). Failures are logged, not returned: a
// hostile peer does not care, and the tests judge by the honest nodes' counters.
func (hp *hostilePeer) sendFrame(to string, frame []byte) {
	if err := hp.writeRaw(to, frameBytes(frame)); err != nil {
		hp.log.Debug("hostile send failed", "to", to, "err", err)
	}
}

// writeRaw writes raw bytes on the long-lived tss stream to node to.
func (hp *hostilePeer) writeRaw(to string, b []byte) error {
	p, ok := hp.pids[to]
	if !ok {
		return fmt.Errorf("unknown node %s", to)
	}
	hp.mu.Lock()
	o := hp.outs[p]
	if o == nil {
		o = &outStream{}
		hp.outs[p] = o
	}
	hp.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	var err error
	for range 2 {
		if o.s == nil {
			ctx, cancel := context.WithTimeout(hp.ctx, 5*time.Second)
			o.s, err = hp.h.NewStream(ctx, p, p2p.ProtocolTSS)
			cancel()
			if err != nil {
				o.s = nil
				continue
			}
		}
		_ = o.s.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err = o.s.Write(b); err == nil {
			return nil
		}
		_ = o.s.Reset()
		o.s = nil
	}
	return err
}

// freshStream opens a new, separate tss stream to node to, for protocol violations that
// kill their stream.
func (hp *hostilePeer) freshStream(ctx context.Context, to string) (network.Stream, error) {
	return hp.h.NewStream(ctx, hp.pids[to], p2p.ProtocolTSS)
}

// frameBytes prefixes frame with its 4-byte big-endian length.
func frameBytes(frame []byte) []byte {
	b := make([]byte, 0, frameHeaderSize+len(frame))
	b = binary.BigEndian.AppendUint32(b, uint32(len(frame)))
	return append(b, frame...)
}

// readFrame reads one length-prefixed frame of at most limit bytes (the hostile peer's own
// parser of what honest nodes send it).
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("frame of %d bytes announced, limit %d", n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomSession() protocol.SessionID {
	var s protocol.SessionID
	_, _ = rand.Read(s[:])
	return s
}

// newStranger starts a libp2p host with a fresh random identity (not a cluster member) that
// knows every member's address; it is closed when the test ends.
func newStranger(t *testing.T, e *env) (host.Host, map[string]peer.ID) {
	t.Helper()
	sk, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := newRawHost(sk, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })
	pids, err := addMembers(stranger, e.cfg3.Cluster.Members)
	if err != nil {
		t.Fatal(err)
	}
	return stranger, pids
}
