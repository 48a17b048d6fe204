//go:build linux

package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRewriteMemberAddrs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	cfg := `{"cluster":{"name":"dev","threshold":2,"members":[{"id":"node1","p2p_addrs":["/ip4/127.0.0.1/tcp/1"]},{"id":"node2","p2p_addrs":["/ip4/127.0.0.1/tcp/2"]}]},"p2p":{"listen":["/ip4/127.0.0.1/tcp/1"],"quic":true},"api":{"max_body":1048576}}`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rewriteMemberAddrs(path, []string{"/ip4/127.0.0.1/tcp/11", "/ip4/127.0.0.1/tcp/12"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(string(b)), "")
	for _, want := range []string{`"p2p_addrs":["/ip4/127.0.0.1/tcp/11"]`, `"p2p_addrs":["/ip4/127.0.0.1/tcp/12"]`, `"listen":["/ip4/127.0.0.1/tcp/1"]`, `"quic":false`, `"max_body":1048576`, `"threshold":2`} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten config lacks %s:\n%s", want, got)
		}
	}
	if err := rewriteMemberAddrs(path, []string{"/ip4/127.0.0.1/tcp/11"}); err == nil {
		t.Error("a member count mismatch was accepted")
	}
}

// TestProxiedClusterLifecycle starts a real 3-node cluster behind latency proxies,
// checks that every peer connection crosses a proxy, kills and restarts a node, and
// checks that Close leaves no process behind.
func TestProxiedClusterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real custosd processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, Options{Proxied: true, OneWayDelay: 5 * time.Millisecond, StopTimeout: 10 * time.Second,
		Extra: map[string]any{"log": map[string]any{"level": "warn"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.NewUser(ctx, "lifecycle", time.Hour); err != nil {
		t.Fatal(err)
	}
	// Raft connects every pair; give the reconnect loop a moment for the last dials.
	var conns []NodeConns
	deadline := time.Now().Add(20 * time.Second)
	for {
		conns, err = c.VerifyProxied()
		if err == nil || time.Now().After(deadline) || errors.Is(err, ErrNotProxied) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%v (%+v)", err, conns)
	}
	for _, p := range c.Proxies() {
		if p.Accepted() == 0 {
			t.Errorf("proxy for %s accepted nothing", p.Target())
		}
	}
	if hwm, err := c.VmHWM(0); err != nil || hwm < 1<<20 {
		t.Fatalf("VmHWM %d, %v", hwm, err)
	}
	if err := c.ResetPeakRSS(0); err != nil {
		t.Fatal(err)
	}

	pids := c.PIDs()
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	if c.Running(2) || processAlive(pids[2]) {
		t.Fatal("killed node still running")
	}
	if err := c.Start(2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 2); err != nil {
		t.Fatal(err)
	}
	pids = c.PIDs()
	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("process %d survived Close", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s survived Close: %v", dir, err)
	}
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
