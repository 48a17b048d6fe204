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

	"github.com/custos/custos/internal/devcluster"
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
	// Raft connects every pair; wait for the reconnect loop's last dials.
	var conns []NodeConns
	vctx, vcancel := context.WithTimeout(ctx, 20*time.Second)
	_ = Until(vctx, func() bool {
		conns, err = c.VerifyProxied()
		return err == nil || errors.Is(err, ErrNotProxied)
	})
	vcancel()
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

	// Leadership moves on demand: the leader becomes a follower.
	l, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ForceRole(ctx, l, false); err != nil {
		t.Fatal(err)
	}
	if now, err := c.Leader(ctx); err != nil || now == l {
		t.Fatalf("leader %d after ForceRole(%d, follower): %v", now, l, err)
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

// TestUseHTTPS: every member's API URL becomes https, in the configuration and in API.
func TestUseHTTPS(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{dir: dir, dc: &devcluster.Cluster{Nodes: []devcluster.Node{{ID: "node1", API: "http://127.0.0.1:1"}, {ID: "node2", API: "http://127.0.0.1:2"}}}}
	cfg := `{"cluster":{"members":[{"id":"node1","api":"http://127.0.0.1:1"},{"id":"node2","api":"http://127.0.0.1:2"}]},"api":{"listen":"127.0.0.1:1","max_body":1048576}}`
	for i := range c.N() {
		if err := os.MkdirAll(filepath.Dir(c.ConfigPath(i)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.ConfigPath(i), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.useHTTPS(); err != nil {
		t.Fatal(err)
	}
	for i := range c.N() {
		if !strings.HasPrefix(c.API(i), "https://127.0.0.1:") {
			t.Errorf("API(%d) = %s", i, c.API(i))
		}
		b, err := os.ReadFile(c.ConfigPath(i))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(strings.Fields(string(b)), "")
		for _, want := range []string{`"api":"https://127.0.0.1:1"`, `"api":"https://127.0.0.1:2"`, `"listen":"127.0.0.1:1"`, `"max_body":1048576`} {
			if !strings.Contains(got, want) {
				t.Errorf("%s lacks %s:\n%s", c.ConfigPath(i), want, got)
			}
		}
	}
}

// TestUntil: Until checks at once, then every PollInterval, and gives up with ctx.
func TestUntil(t *testing.T) {
	n := 0
	if err := Until(t.Context(), func() bool { n++; return n == 3 }); err != nil || n != 3 {
		t.Fatalf("Until returned %v after %d checks", err, n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*PollInterval)
	defer cancel()
	start := time.Now()
	if err := Until(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 20*PollInterval {
		t.Fatalf("Until of a condition that never holds: %v after %v", err, time.Since(start))
	}
}
