package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/config"
)

// ourGoroutines returns the stacks of running goroutines that are in custos code,
// leaving out the test's own.
func ourGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/custos/custos/") && !strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "TestInProcessCluster") {
			out = append(out, g)
		}
	}
	return out
}

// TestInProcessClusterStopsCleanly starts three real nodes in this process (real Pebble
// in temp dirs, libp2p and raft on loopback, the HTTP API), waits until every one is
// ready, stops them, and checks that no goroutine of custos code outlives Stop.
func TestInProcessClusterStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	adminKey := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(adminKey, []byte(hex.EncodeToString(bytes.Repeat([]byte{3}, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		l.Close() // only reserved to pick a free port
	}
	var members []config.Member
	for i, port := range ports {
		id := fmt.Sprintf("node%d", i+1)
		pid, err := InitDataDir(filepath.Join(dir, id), filepath.Join(dir, id, "master.key"))
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, config.Member{ID: id, PeerID: pid, P2PAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}, API: "http://127.0.0.1:0"})
	}
	fixtures, _ := filepath.Abs(filepath.Join("..", "test", "fixtures", "preparams"))
	var nodes []*Node
	stopAll := func() {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := n.Stop(ctx); err != nil {
				t.Errorf("stop %s: %v", n.cfg.NodeID, err)
			}
			cancel()
		}
		nodes = nil
	}
	defer stopAll()
	for i, m := range members {
		raw, _ := json.Marshal(map[string]any{
			"mode": config.ModeDev, "node_id": m.ID, "data_dir": filepath.Join(dir, m.ID),
			"cluster":    map[string]any{"name": "inproc", "threshold": 2, "members": members},
			"api":        map[string]any{"listen": "127.0.0.1:0"},
			"p2p":        map[string]any{"listen": m.P2PAddrs},
			"master_key": map[string]any{"file": filepath.Join(dir, m.ID, "master.key")},
			"admin":      map[string]any{"key_file": adminKey, "allow_shared_key": true},
			"preparams":  map[string]any{"insecure_fixtures_dir": fixtures},
			"log":        map[string]any{"level": "error"},
		})
		cfg, err := config.Parse(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		n, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		var reasons []string
		if !waitUntil(deadline, func() bool {
			reasons = n.notReady()
			return len(reasons) == 0
		}) {
			t.Fatalf("%s not ready: %v", n.cfg.NodeID, reasons)
		}
	}
	if ours := ourGoroutines(); len(ours) == 0 {
		t.Fatal("no custos goroutine found while running: the leak check would see nothing")
	}
	stopAll()
	var left []string
	if !waitUntil(time.Now().Add(10*time.Second), func() bool {
		left = ourGoroutines()
		return len(left) == 0
	}) {
		t.Fatalf("%d custos goroutines outlived Stop, e.g.:\n%s", len(left), left[0])
	}
}

// waitUntil calls cond at once and then every 50 ms until it returns true (true) or
// deadline passes (false). It is test/cluster.Until for this package, which cannot import
// test/cluster: that package imports node.
func waitUntil(deadline time.Time, cond func() bool) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-timeout.C:
			return cond()
		case <-tick.C:
		}
	}
}
