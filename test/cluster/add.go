//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/devcluster"
)

// NewMember is a node AddNode created, as the admin adds it to the cluster
// (POST /v1/admin/members).
type NewMember struct {
	ID       string   `json:"id"`
	PeerID   string   `json:"peer_id"`
	P2PAddrs []string `json:"p2p_addrs"`
	API      string   `json:"api"`
}

// AddNode creates one more node for the running cluster and starts it: its own data
// directory (custosd init), free ports, and a configuration like the other nodes' (mode,
// admin credential, fixtures, Options.Extra, TLS) whose cluster.members are the current
// members and itself, with cluster.join set — so it does not bootstrap raft but waits,
// not ready, until the cluster's leader adds it. The other nodes' configurations are not
// changed: they learn the new member from the replicated state once the admin added it.
//
// The node gets the next index (N() grows by one), and every per-node method works for
// it (Start, Stop, Kill, LogPath, ConfigPath, API, NodeID, PeerID, AdminFor); Close stops
// it with the others. It is not waited for: it is not ready until it was added. Proxied
// clusters are not supported (the new node would need its own proxies).
func (c *Cluster) AddNode(ctx context.Context) (index int, member NewMember, err error) {
	if c.opts.Proxied {
		return -1, NewMember{}, errors.New("cluster: AddNode does not support Proxied clusters")
	}
	if err := ctx.Err(); err != nil {
		return -1, NewMember{}, fmt.Errorf("cluster: add node: %w", err)
	}
	c.addMu.Lock()
	defer c.addMu.Unlock()
	n := c.N()
	if n >= MaxNodes {
		return -1, NewMember{}, fmt.Errorf("cluster: already %d nodes (MaxNodes)", n)
	}
	id := ""
	for k := n + 1; ; k++ {
		if id = fmt.Sprintf("node%d", k); c.Index(id) < 0 {
			break
		}
	}
	var members []config.Member
	for i := range n {
		pid, err := c.PeerID(i)
		if err != nil {
			return -1, NewMember{}, err
		}
		members = append(members, config.Member{ID: c.NodeID(i), PeerID: pid, P2PAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", c.P2PPort(i))}, API: c.API(i)})
	}
	ports, err := FreePorts(2)
	if err != nil {
		return -1, NewMember{}, err
	}
	api := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if c.opts.TLS != nil {
		api = strings.Replace(api, "http://", "https://", 1)
	}
	m, err := devcluster.AddNode(devcluster.Spec{Dir: c.dir, Threshold: c.opts.Threshold, FixturesDir: c.fixtures, Extra: c.extra, Custosd: c.Binary()},
		devcluster.NewNode{ID: id, APIPort: ports[0], P2PPort: ports[1], API: api, Members: members})
	if err != nil {
		return -1, NewMember{}, fmt.Errorf("cluster: add node: %w", err)
	}

	// The process slot first, then the node: a node index is never without its slot.
	c.mu.Lock()
	c.procs = append(c.procs, nil)
	index = len(c.procs) - 1
	c.mu.Unlock()
	c.nodesMu.Lock()
	if index != len(c.dc.Nodes) {
		c.nodesMu.Unlock()
		return -1, NewMember{}, fmt.Errorf("cluster: add node: %d process slots for %d nodes", index+1, len(c.dc.Nodes)+1)
	}
	c.dc.Nodes = append(c.dc.Nodes, devcluster.Node{ID: m.ID, API: m.API})
	c.apiPorts = append(c.apiPorts, ports[0])
	c.p2pPorts = append(c.p2pPorts, ports[1])
	c.nodesMu.Unlock()
	a, err := c.newAdmin(index)
	if err != nil {
		return -1, NewMember{}, err
	}
	c.nodesMu.Lock()
	c.adms = append(c.adms, a)
	c.nodesMu.Unlock()

	if err := c.Start(index); err != nil {
		return -1, NewMember{}, err
	}
	c.log.Info("node added", "node", m.ID, "peer_id", m.PeerID, "api", m.API, "index", index)
	return index, NewMember{ID: m.ID, PeerID: m.PeerID, P2PAddrs: m.P2PAddrs, API: m.API}, nil
}

// PeerID is node i's libp2p peer id, from its configuration file.
func (c *Cluster) PeerID(i int) (string, error) {
	id := c.NodeID(i)
	var pid string
	err := editConfigRead(c.ConfigPath(i), func(cfg map[string]any) error {
		cl, _ := cfg["cluster"].(map[string]any)
		members, _ := cl["members"].([]any)
		for _, m := range members {
			mm, _ := m.(map[string]any)
			if mm["id"] == id {
				pid, _ = mm["peer_id"].(string)
			}
		}
		if pid == "" {
			return fmt.Errorf("lists no peer id for %s", id)
		}
		return nil
	})
	return pid, err
}

// Readiness asks node i's /readyz once: whether it is ready and, if not, its reasons.
func (c *Cluster) Readiness(ctx context.Context, i int) (ready bool, reasons []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.API(i)+"/readyz", nil)
	if err != nil {
		return false, nil, fmt.Errorf("cluster: %w", err)
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return false, nil, fmt.Errorf("cluster: %s /readyz: %w", c.NodeID(i), err)
	}
	defer resp.Body.Close()
	var body struct {
		Status  string   `json:"status"`
		Reasons []string `json:"reasons"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReadyzBody)).Decode(&body); err != nil {
		return false, nil, fmt.Errorf("cluster: %s /readyz (HTTP %d): %w", c.NodeID(i), resp.StatusCode, err)
	}
	return resp.StatusCode == http.StatusOK, body.Reasons, nil
}
