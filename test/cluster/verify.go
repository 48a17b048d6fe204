//go:build linux

package cluster

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotProxied is wrapped by VerifyProxied's refusals.
var ErrNotProxied = errors.New("cluster: a peer connection bypasses the latency proxy")

// NodeConns is what VerifyProxied found for one node.
type NodeConns struct {
	Node string `json:"node"`
	// Outbound counts connections to a proxy's listen port (this node dialled a peer).
	Outbound int `json:"outbound_via_proxy"`
	// Inbound counts connections from a proxy's upstream dial (a peer dialled this node).
	Inbound int `json:"inbound_via_proxy"`
	// API counts connections on the node's own API port or to another node's API.
	API int `json:"api"`
	// Direct lists every other established TCP connection ("local->remote"): each is a
	// peer connection that does not cross a proxy.
	Direct []string `json:"direct,omitempty"`
}

// VerifyProxied checks, from each node process's established TCP sockets in /proc, that
// every connection except API traffic goes through a latency proxy: its remote end is
// either a proxy's listen port (an outbound dial) or a local address the proxy dialled
// from (an inbound connection). It also requires at least n-1 proxied connections per
// node, so that a node that never connected to its peers is not taken for a clean one.
// It fails with ErrNotProxied when the cluster was not started with Proxied.
func (c *Cluster) VerifyProxied() ([]NodeConns, error) {
	if len(c.proxies) == 0 {
		return nil, fmt.Errorf("%w: the cluster has no proxies", ErrNotProxied)
	}
	proxyPorts := map[int]bool{}
	for _, p := range c.proxies {
		proxyPorts[p.Port()] = true
	}
	apiPorts := map[int]bool{}
	for _, p := range c.apiPorts {
		apiPorts[p] = true
	}
	type snap struct {
		socks []Socket
		err   error
	}
	snaps := make([]snap, c.N())
	for i := range snaps {
		pid := c.PID(i)
		if pid == 0 {
			snaps[i].err = fmt.Errorf("%w: %s", ErrNotRunning, c.NodeID(i))
			continue
		}
		snaps[i].socks, snaps[i].err = ProcessSockets(pid)
	}
	// Read the proxies' upstream addresses after the socket tables: every connection the
	// tables show was dialled before, so it is in the set.
	upstream := map[string]bool{}
	for _, p := range c.proxies {
		for a := range p.UpstreamAddrs() {
			upstream[a] = true
		}
	}
	out := make([]NodeConns, c.N())
	var errs []error
	for i, s := range snaps {
		if s.err != nil {
			errs = append(errs, s.err)
			out[i] = NodeConns{Node: c.NodeID(i)}
			continue
		}
		out[i] = classify(c.NodeID(i), c.apiPorts[i], s.socks, apiPorts, proxyPorts, upstream)
		if err := out[i].check(c.N() - 1); err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// classify sorts one node's established sockets: API traffic (its own API port, or
// another node's API), outbound through a proxy (remote is a proxy's listen port),
// inbound through a proxy (remote is an address a proxy dialled from), or direct.
func classify(node string, ownAPI int, socks []Socket, apiPorts, proxyPorts map[int]bool, upstream map[string]bool) NodeConns {
	nc := NodeConns{Node: node}
	for _, so := range socks {
		if !so.Established {
			continue
		}
		switch {
		case so.LocalPort == ownAPI || apiPorts[so.RemotePort]:
			nc.API++
		case proxyPorts[so.RemotePort]:
			nc.Outbound++
		case upstream[so.Remote]:
			nc.Inbound++
		default:
			nc.Direct = append(nc.Direct, so.Local+"->"+so.Remote)
		}
	}
	return nc
}

// check refuses direct connections and fewer than peers proxied connections.
func (nc NodeConns) check(peers int) error {
	var errs []error
	if len(nc.Direct) > 0 {
		errs = append(errs, fmt.Errorf("%w: %s has %d direct connection(s): %s", ErrNotProxied, nc.Node, len(nc.Direct), strings.Join(nc.Direct, ", ")))
	}
	if nc.Outbound+nc.Inbound < peers {
		errs = append(errs, fmt.Errorf("cluster: %s has %d proxied peer connection(s), want at least %d", nc.Node, nc.Outbound+nc.Inbound, peers))
	}
	return errors.Join(errs...)
}
