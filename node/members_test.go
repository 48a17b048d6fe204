package node

import (
	"fmt"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/internal/state"
)

func testPeer(t *testing.T) string {
	t.Helper()
	k, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// describe renders a member set as "id@port,…" (the first address's port) for comparison.
func describe(ms []p2p.Member) string {
	var parts []string
	for _, m := range ms {
		port := "-"
		if len(m.Addrs) > 0 {
			s := m.Addrs[0].String()
			port = s[strings.LastIndex(s, "/")+1:]
		}
		parts = append(parts, m.NodeID+"@"+port)
	}
	return strings.Join(parts, ",")
}

// TestEffectiveMembers: the p2p member set is the configuration's until the state lists
// members, then the state's (with this node's configured addresses for the members it
// knows under the same peer id, the state's for new ones), plus configured members that
// raft still lists; a member the state dropped is gone, as is a configured one that
// neither the state nor raft lists; unusable members are left out, not fatal.
func TestEffectiveMembers(t *testing.T) {
	p := map[string]string{}
	for _, id := range []string{"n1", "n2", "n3", "n4", "n5"} {
		p[id] = testPeer(t)
	}
	addr := func(port int) []string { return []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)} }
	cfg := []config.Member{
		{ID: "n1", PeerID: p["n1"], P2PAddrs: addr(1001)},
		{ID: "n2", PeerID: p["n2"], P2PAddrs: addr(1002)},
		{ID: "n3", PeerID: p["n3"], P2PAddrs: addr(1003)},
	}
	fsm := func(ids ...string) []state.Member {
		var out []state.Member
		for _, id := range ids {
			out = append(out, state.Member{ID: id, PeerID: p[id], P2PAddrs: addr(2000 + int(id[1]-'0'))})
		}
		return out
	}
	srv := func(ids ...string) []raftnode.Server {
		var out []raftnode.Server
		for _, id := range ids {
			out = append(out, raftnode.Server{ID: id, PeerID: p[id], Voter: true})
		}
		return out
	}
	tests := []struct {
		name    string
		fsm     []state.Member
		servers []raftnode.Server
		want    string
		errs    int
	}{
		{"bootstrap: no state yet", nil, nil, "n1@1001,n2@1002,n3@1003", 0},
		{"state lists the same members: configured addresses", fsm("n1", "n2", "n3"), srv("n1", "n2", "n3"), "n1@1001,n2@1002,n3@1003", 0},
		{"a new member: the state's address", fsm("n1", "n2", "n3", "n4"), srv("n1", "n2", "n3"), "n1@1001,n2@1002,n3@1003,n4@2004", 0},
		{"a removed member is dropped", fsm("n1", "n2", "n4"), srv("n1", "n2", "n4"), "n1@1001,n2@1002,n4@2004", 0},
		{"configured, not in the state, still in raft: kept", fsm("n1", "n2"), srv("n1", "n2", "n3"), "n1@1001,n2@1002,n3@1003", 0},
		{"configured, in neither: dropped", fsm("n1", "n2"), srv("n1", "n2"), "n1@1001,n2@1002", 0},
		{"state gives a node another peer id: the state wins", []state.Member{{ID: "n1", PeerID: p["n1"]}, {ID: "n2", PeerID: p["n2"]}, {ID: "n3", PeerID: p["n5"], P2PAddrs: addr(2005)}}, nil, "n1@1001,n2@1002,n3@2005", 0},
		{"unusable state member left out", append(fsm("n1", "n2"), state.Member{ID: "n9", PeerID: "bad"}), nil, "n1@1001,n2@1002", 1},
		{"a peer id twice: the first kept", append(fsm("n1", "n2"), state.Member{ID: "n9", PeerID: p["n2"]}), nil, "n1@1001,n2@1002", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := effectiveMembers(cfg, tt.fsm, tt.servers)
			if d := describe(got); d != tt.want || len(errs) != tt.errs {
				t.Fatalf("got %s (errors %v), want %s (%d errors)", d, errs, tt.want, tt.errs)
			}
		})
	}
}
