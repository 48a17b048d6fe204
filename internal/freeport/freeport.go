// Package freeport picks free TCP ports on the loopback interface for processes that
// tests and the dev tooling start (real custosd nodes, in-process nodes). It holds no
// state and must never be used by a node itself.
package freeport

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Pick returns n distinct free TCP ports on 127.0.0.1 (free when asked: another
// process may take one before it is used). They are picked at random below the kernel's
// ephemeral port range, so that no outgoing connection of this or any test (they get
// their local ports from that range) can take one between the pick and the node's bind;
// the kernel's own choice (":0") comes from that range and did collide.
func Pick(n int) ([]int, error) {
	lo, hi := 20000, ephemeralLow()-1
	if hi-lo < 64*n {
		return kernelPorts(n)
	}
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n && try < 100*n; try++ {
		p := lo + mrand.IntN(hi-lo+1)
		if slices.Contains(ports, p) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("cluster: found only %d free ports of %d below %d", len(ports), n, hi+1)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil || v < 1024 {
		return 32768
	}
	return v
}

// kernelPorts lets the kernel choose (when there is no room below its ephemeral range).
func kernelPorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
