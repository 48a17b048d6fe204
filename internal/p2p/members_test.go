package p2p

import (
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func testPeerID(t *testing.T) peer.ID {
	t.Helper()
	k, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := PeerIDOfKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseMember(t *testing.T) {
	id := testPeerID(t)
	other := testPeerID(t)
	tests := []struct {
		name      string
		nodeID    string
		peerID    string
		addrs     []string
		wantAddrs []string
		wantErr   string
	}{
		{"plain", "n1", id.String(), []string{"/ip4/127.0.0.1/tcp/7801"}, []string{"/ip4/127.0.0.1/tcp/7801"}, ""},
		{"p2p suffix stripped", "n1", id.String(), []string{"/ip4/127.0.0.1/tcp/7801/p2p/" + id.String()}, []string{"/ip4/127.0.0.1/tcp/7801"}, ""},
		{"duplicates merged", "n1", id.String(), []string{"/dns4/a.example/tcp/1", "/dns4/a.example/tcp/1"}, []string{"/dns4/a.example/tcp/1"}, ""},
		{"no addresses", "n1", id.String(), nil, nil, ""},
		{"bad peer id", "n1", "QmNope", nil, nil, "peer id"},
		{"empty node id", "", id.String(), nil, nil, "node id"},
		{"long node id", strings.Repeat("x", MaxNodeIDSize+1), id.String(), nil, nil, "node id"},
		{"bad address", "n1", id.String(), []string{"/ip4/999.0.0.1/tcp/1"}, nil, "address"},
		{"other peer's address", "n1", id.String(), []string{"/ip4/127.0.0.1/tcp/1/p2p/" + other.String()}, nil, "another peer"},
		{"p2p only", "n1", id.String(), []string{"/p2p/" + id.String()}, nil, "no transport"},
		{"too many addresses", "n1", id.String(), strings.Split(strings.Repeat("/ip4/1.2.3.4/tcp/1,", MaxAddrsPerMember+1), ",")[:MaxAddrsPerMember+1], nil, "addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMember(tt.nodeID, tt.peerID, tt.addrs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.NodeID != tt.nodeID || m.PeerID != id || len(m.Addrs) != len(tt.wantAddrs) {
				t.Fatalf("got %+v", m)
			}
			for i, a := range m.Addrs {
				if a.String() != tt.wantAddrs[i] {
					t.Fatalf("addr %d = %s, want %s", i, a, tt.wantAddrs[i])
				}
			}
		})
	}
}

func TestBuildMembersRefusals(t *testing.T) {
	a, b := testPeerID(t), testPeerID(t)
	tests := []struct {
		name    string
		members []Member
		wantErr string
	}{
		{"duplicate peer", []Member{{NodeID: "x", PeerID: a}, {NodeID: "y", PeerID: a}}, "listed twice"},
		{"duplicate node", []Member{{NodeID: "x", PeerID: a}, {NodeID: "x", PeerID: b}}, "listed twice"},
		{"empty peer id", []Member{{NodeID: "x"}}, "peer id"},
		{"too many", make([]Member, MaxMembers+1), "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := buildMembers(tt.members); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
	if _, _, err := buildMembers([]Member{{NodeID: "x", PeerID: a}, {NodeID: "y", PeerID: b}}); err != nil {
		t.Fatalf("valid set refused: %v", err)
	}
}

func TestDialAllowed(t *testing.T) {
	a, b := testPeerID(t), testPeerID(t)
	byPeer, byNode, err := buildMembers([]Member{
		{NodeID: "a", PeerID: a, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/7801"), ma.StringCast("/dns4/node-a.example/tcp/7802")}},
		{NodeID: "b", PeerID: b},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := newMemberSet()
	s.replace(byPeer, byNode)
	tests := []struct {
		name string
		p    peer.ID
		addr string
		want bool
	}{
		{"configured", a, "/ip4/10.0.0.1/tcp/7801", true},
		{"configured with p2p", a, "/ip4/10.0.0.1/tcp/7801/p2p/" + a.String(), true},
		{"resolved dns", a, "/ip4/192.0.2.7/tcp/7802", true},
		{"resolved dns ipv6", a, "/ip6/2001:db8::1/tcp/7802", true},
		{"other port", a, "/ip4/10.0.0.1/tcp/7803", false},
		{"advertised elsewhere", a, "/ip4/10.9.9.9/tcp/7801", false},
		{"resolved dns other port", a, "/ip4/192.0.2.7/tcp/9999", false},
		{"member without addresses", b, "/ip4/10.0.0.1/tcp/7801", false},
		{"non-member", testPeerID(t), "/ip4/10.0.0.1/tcp/7801", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.dialAllowed(tt.p, ma.StringCast(tt.addr)); got != tt.want {
				t.Fatalf("dialAllowed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseListenAddrs(t *testing.T) {
	tests := []struct {
		name  string
		addrs []string
		quic  bool
		ok    bool
	}{
		{"tcp", []string{"/ip4/127.0.0.1/tcp/0"}, false, true},
		{"tcp ipv6", []string{"/ip6/::1/tcp/7801"}, false, true},
		{"quic enabled", []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, true, true},
		{"quic disabled", []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, false, false},
		{"websocket", []string{"/ip4/127.0.0.1/tcp/0/ws"}, false, false},
		{"dns", []string{"/dns4/localhost/tcp/0"}, false, false},
		{"udp only", []string{"/ip4/127.0.0.1/udp/0"}, true, false},
		{"garbage", []string{"tcp://127.0.0.1:1"}, false, false},
		{"none", nil, false, false},
		{"too many", make([]string, MaxListenAddrs+1), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseListenAddrs(tt.addrs, tt.quic)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
