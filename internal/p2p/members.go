package p2p

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Limits on the member set handed to SetMembers.
const (
	// MaxMembers is the largest member set SetMembers accepts.
	MaxMembers = 64
	// MaxAddrsPerMember is the largest number of dial addresses per member.
	MaxAddrsPerMember = 8
	// MaxNodeIDSize is the longest NodeID accepted, in bytes.
	MaxNodeIDSize = 128
)

// Member is one cluster member as the p2p layer sees it: the node id used by the rest of
// custos, its libp2p peer id, and the addresses this host dials it at (exactly these: a
// test proxy or NAT mapping in between is honoured, addresses a peer advertises itself are
// never dialled).
type Member struct {
	// NodeID is the cluster-wide node id (raft server id).
	NodeID string
	// PeerID is the member's libp2p identity.
	PeerID peer.ID
	// Addrs are the dial addresses, e.g. /ip4/10.0.0.2/tcp/7801. A member without
	// addresses is admitted when it connects but never dialled.
	Addrs []ma.Multiaddr
}

// ParseMember builds a Member from configuration strings (a peer id in its usual text form
// and multiaddr strings). A trailing /p2p/<id> on an address must name the same peer.
func ParseMember(nodeID, peerID string, addrs []string) (Member, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return Member{}, fmt.Errorf("p2p: member %q: peer id: %w", nodeID, err)
	}
	if len(addrs) > MaxAddrsPerMember {
		return Member{}, fmt.Errorf("p2p: member %q: %d addresses, at most %d", nodeID, len(addrs), MaxAddrsPerMember)
	}
	m := Member{NodeID: nodeID, PeerID: id}
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return Member{}, fmt.Errorf("p2p: member %q: address %q: %w", nodeID, s, err)
		}
		m.Addrs = append(m.Addrs, a)
	}
	return normalizeMember(m)
}

// normalizeMember validates m and returns a copy with /p2p suffixes stripped and
// duplicate addresses removed.
func normalizeMember(m Member) (Member, error) {
	if m.NodeID == "" || len(m.NodeID) > MaxNodeIDSize {
		return Member{}, fmt.Errorf("p2p: member node id must be 1..%d bytes, got %d", MaxNodeIDSize, len(m.NodeID))
	}
	if err := m.PeerID.Validate(); err != nil {
		return Member{}, fmt.Errorf("p2p: member %q: peer id: %w", m.NodeID, err)
	}
	if len(m.Addrs) > MaxAddrsPerMember {
		return Member{}, fmt.Errorf("p2p: member %q: %d addresses, at most %d", m.NodeID, len(m.Addrs), MaxAddrsPerMember)
	}
	out := Member{NodeID: m.NodeID, PeerID: m.PeerID}
	for _, a := range m.Addrs {
		if len(a) == 0 {
			return Member{}, fmt.Errorf("p2p: member %q: empty address", m.NodeID)
		}
		transport, id := peer.SplitAddr(a)
		if id != "" && id != m.PeerID {
			return Member{}, fmt.Errorf("p2p: member %q: address %s names another peer", m.NodeID, a)
		}
		if len(transport) == 0 {
			return Member{}, fmt.Errorf("p2p: member %q: address %s has no transport part", m.NodeID, a)
		}
		if !ma.Contains(out.Addrs, transport) {
			out.Addrs = append(out.Addrs, transport)
		}
	}
	return out, nil
}

// memberSet is the current set of admitted peers, shared by the gater and the stream
// handlers. It is replaced as a whole by SetMembers.
type memberSet struct {
	mu     sync.RWMutex
	byPeer map[peer.ID]Member
	byNode map[string]peer.ID
}

func newMemberSet() *memberSet {
	return &memberSet{byPeer: map[peer.ID]Member{}, byNode: map[string]peer.ID{}}
}

// buildMembers validates a member list and returns the two indexes.
func buildMembers(members []Member) (map[peer.ID]Member, map[string]peer.ID, error) {
	if len(members) > MaxMembers {
		return nil, nil, fmt.Errorf("p2p: %d members, at most %d", len(members), MaxMembers)
	}
	byPeer := make(map[peer.ID]Member, len(members))
	byNode := make(map[string]peer.ID, len(members))
	for _, m := range members {
		n, err := normalizeMember(m)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := byPeer[n.PeerID]; dup {
			return nil, nil, fmt.Errorf("p2p: peer id %s listed twice", n.PeerID)
		}
		if _, dup := byNode[n.NodeID]; dup {
			return nil, nil, fmt.Errorf("p2p: node id %q listed twice", n.NodeID)
		}
		byPeer[n.PeerID] = n
		byNode[n.NodeID] = n.PeerID
	}
	return byPeer, byNode, nil
}

// replace installs a new member set and returns the previous one.
func (s *memberSet) replace(byPeer map[peer.ID]Member, byNode map[string]peer.ID) (old map[peer.ID]Member) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old = s.byPeer
	s.byPeer, s.byNode = byPeer, byNode
	return old
}

func (s *memberSet) isMember(p peer.ID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.byPeer[p]
	return ok
}

func (s *memberSet) get(p peer.ID) (Member, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.byPeer[p]
	return m, ok
}

func (s *memberSet) peerOf(nodeID string) (peer.ID, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.byNode[nodeID]
	return p, ok
}

// list returns a deep copy of the members, sorted by NodeID.
func (s *memberSet) list() []Member {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Member, 0, len(s.byPeer))
	for _, m := range s.byPeer {
		out = append(out, Member{NodeID: m.NodeID, PeerID: m.PeerID, Addrs: slices.Clone(m.Addrs)})
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.NodeID < b.NodeID:
			return -1
		case a.NodeID > b.NodeID:
			return 1
		}
		return 0
	})
	return out
}

// dialAllowed reports whether addr is one of the configured addresses of member p, or the
// result of resolving one of them: a configured /dns, /dns4 or /dns6 address is resolved by
// the swarm before the gater sees it, so an /ip4 or /ip6 address with the same remainder
// (transport and port) is accepted for it.
func (s *memberSet) dialAllowed(p peer.ID, addr ma.Multiaddr) bool {
	m, ok := s.get(p)
	if !ok {
		return false
	}
	addr, _ = peer.SplitAddr(addr)
	if len(addr) == 0 {
		return false
	}
	for _, c := range m.Addrs {
		if c.Equal(addr) {
			return true
		}
		cFirst, cRest := ma.SplitFirst(c)
		aFirst, aRest := ma.SplitFirst(addr)
		if cFirst == nil || aFirst == nil {
			continue
		}
		switch cFirst.Code() {
		case ma.P_DNS, ma.P_DNS4, ma.P_DNS6:
		default:
			continue
		}
		switch aFirst.Code() {
		case ma.P_IP4, ma.P_IP6:
		default:
			continue
		}
		if cRest.Equal(aRest) {
			return true
		}
	}
	return false
}

// gater is the libp2p connection gater: it admits only members of the current set, and
// dials only their configured addresses.
type gater struct {
	self    peer.ID
	members *memberSet
	refused *atomic.Uint64
}

// InterceptPeerDial refuses to dial non-members and this host itself.
func (g *gater) InterceptPeerDial(p peer.ID) bool {
	return p != g.self && g.members.isMember(p)
}

// InterceptAddrDial allows only the member's configured addresses.
func (g *gater) InterceptAddrDial(p peer.ID, addr ma.Multiaddr) bool {
	return g.members.dialAllowed(p, addr)
}

// InterceptAccept allows every inbound connection: the peer is not known yet.
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured admits, in both directions, only authenticated member peers.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if p != g.self && g.members.isMember(p) {
		return true
	}
	g.refused.Add(1)
	return false
}

// InterceptUpgraded allows every connection that passed InterceptSecured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
