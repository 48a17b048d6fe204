//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// snapshotTrailingLogs is how many entries TestSnapshotVouching's nodes keep in their
// log before their last snapshot's end.
const snapshotTrailingLogs = 16

// readyz returns a node's /readyz status code and reasons.
func readyz(api string) (int, []string) {
	resp, err := http.Get(api + "/readyz")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body struct {
		Reasons []string `json:"reasons"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Reasons
}

// TestSnapshotVouching: a node that fell behind catches up from the leader's snapshot,
// and acts on it only once k other members signed checkpoints with the same state hash.
// An honest leader's snapshot is vouched for and the node serves again; a compromised
// leader's forged snapshot (a disabled user re-enabled with every permission) is not: the
// node finds its state differs from what k others signed, joins no ceremony and says so
// on /readyz, while the others keep signing.
func TestSnapshotVouching(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		forged bool
	}{{"honest snapshot", false}, {"forged snapshot", true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[int][]string{}
			if tc.forged {
				env[0] = []string{"CUSTOS_TEST_MISBEHAVE=forge-snapshot"}
			}
			c := startCluster(t, testcluster.Options{Binary: bins.CustosdHooks, NodeEnv: env, Extra: map[string]any{
				"insecure_testing": map[string]any{"raft_snapshot_threshold": 32, "raft_trailing_logs": snapshotTrailingLogs, "raft_snapshot_interval": "500ms"},
				"ceremony":         map[string]any{"sign_timeout": "5s"},
				"rate":             map[string]any{"per_caller_rps": 0},
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c.forceRole(ctx, 0, true)
			bystander := c.newUser(ctx, "bystander", "keys:read")
			adm1, err := admin.New(c.adminKey(), c.API(1))
			if err != nil {
				t.Fatal(err)
			}
			if err := adm1.DisableUser(ctx, bystander.ID); err != nil {
				t.Fatal(err)
			}
			u := c.newUser(ctx, "owner")
			key, _, err := u.Clients[1].CreateKey(ctx, "ed25519", 2, "k", "")
			if err != nil || key.Status != "active" {
				t.Fatalf("keygen: %v", err)
			}
			// Node 3 falls behind: far more entries than the leader keeps in its log.
			c.stop(2)
			var behind uint64 // at or past the first entry node 3 lacks (see appliedIndex)
			for i := 0; i < 120; i++ {
				if _, err := u.Clients[1].ListKeys(ctx); err != nil {
					t.Fatalf("list %d: %v", i, err)
				}
				if i == 0 {
					behind = c.appliedIndex(ctx, 1)
				}
			}
			c.waitCompacted(ctx, behind) // the leader snapshots and compacts
			c.start(2)
			if tc.forged {
				var reasons []string
				wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
				err := testcluster.Until(wctx, func() bool {
					_, reasons = readyz(c.API(2))
					return strings.Contains(strings.Join(reasons, " "), "differs from the state")
				})
				wcancel()
				if err != nil {
					t.Fatalf("node 3 did not find its forged state diverged: %v; last readyz reasons %q", err, reasons)
				}
				if v := metric(t, c.API(2), "custos_state_diverged"); v != 1 {
					t.Fatalf("custos_state_diverged = %v", v)
				}
				// Nor does it serve anything from the forged state: not the keys, not the
				// audit; a caller is told to ask another node.
				unavailable := func(what string, err error) {
					t.Helper()
					var ae *client.APIError
					if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != "cluster.unavailable" || !strings.Contains(ae.Detail, "another node") {
						t.Fatalf("%s through the diverged node: %v, want 503 cluster.unavailable", what, err)
					}
				}
				_, err = u.Clients[2].GetKey(ctx, key.KeyID)
				unavailable("a key read", err)
				adm3, err := admin.New(c.adminKey(), c.API(2))
				if err != nil {
					t.Fatal(err)
				}
				_, err = adm3.Audit(ctx, 0, 10)
				unavailable("an audit read", err)
				// The others keep signing (node 3 refuses to join; the leader picks others).
				for i := 0; i < 3; i++ {
					r, err := u.Clients[1].Sign(ctx, key.KeyID, []byte{byte(i)}, "", "")
					if err != nil || r.Status != "signed" {
						t.Fatalf("sign %d with a diverged member: %v", i, err)
					}
				}
				// A restart keeps the state that diverged: the node must not take part
				// again until the next checkpoint finds it out (no ready answer at all).
				c.stop(2)
				c.start(2)
				wctx, wcancel = context.WithTimeout(ctx, 60*time.Second)
				err = testcluster.Until(wctx, func() bool {
					code, rs := readyz(c.API(2))
					if code == http.StatusOK {
						t.Fatal("the diverged node is ready again after a restart")
					}
					reasons = rs
					return strings.Contains(strings.Join(rs, " "), "differs from the state")
				})
				wcancel()
				if err != nil {
					t.Fatalf("the diverged node, restarted, does not say so: %v; last readyz reasons %q", err, reasons)
				}
				_, err = u.Clients[2].GetKey(ctx, key.KeyID)
				unavailable("a key read after a restart", err)
				return
			}
			c.waitReady(2)
			if v := metric(t, c.API(2), "custos_state_unverified"); v != 0 {
				t.Fatalf("custos_state_unverified = %v after vouching", v)
			}
			// It did go through a snapshot from the leader, and waited for the vouching.
			logb, err := os.ReadFile(c.LogPath(2))
			if err != nil {
				t.Fatal(err)
			}
			restored := strings.Index(string(logb), "restored a snapshot this node did not take")
			vouched := strings.Index(string(logb), "restored state vouched for")
			if restored < 0 || vouched < restored {
				t.Fatalf("node 3 did not restore the leader's snapshot and then see it vouched for (at %d, %d)", restored, vouched)
			}
			// Node 3 takes part again: sign through it until it has been in a committee.
			for i := 0; i < 3; i++ {
				r, err := u.Clients[2].Sign(ctx, key.KeyID, []byte{byte(i)}, "", "")
				if err != nil || r.Status != "signed" {
					t.Fatalf("sign through the caught-up node: %v", err)
				}
			}
		})
	}
}

// metric reads one unlabelled metric from a node's /metrics (-1 when absent).
func metric(t *testing.T, api, name string) float64 {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// appliedIndex is node i's last applied raft index. A proposal returns once it applied on
// its entry node: once one made after a node stopped returned through node i, the index
// is at or past the first entry the stopped node lacks.
func (c *cluster) appliedIndex(ctx context.Context, i int) uint64 {
	c.t.Helper()
	ds, err := c.DebugState(ctx, i)
	c.must(err)
	return ds.Index
}

// waitCompacted waits until the leader's raft log holds no entry at or below index: it
// wrote a snapshot whose last entry is snapshotTrailingLogs or more past index. Raft
// compacts its log right after it writes a snapshot, up to that many entries before the
// snapshot's end (raft-wal then serves none of them), so a node that lacks the entries
// after index can catch up only from the leader's snapshot.
func (c *cluster) waitCompacted(ctx context.Context, index uint64) {
	c.t.Helper()
	var last uint64
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := testcluster.Until(wctx, func() bool {
		l, err := c.Leader(wctx)
		if err != nil {
			return false
		}
		raftDir := filepath.Join(c.Dir(), c.NodeID(l), "raft")
		// The snapshots a node takes are checkpoints; a forging leader's are streams.
		last = max(lastSnapshotIndex(c.t, filepath.Join(raftDir, "snapshots")), lastSnapshotIndex(c.t, filepath.Join(raftDir, "checkpoints")))
		return last >= index+snapshotTrailingLogs
	})
	if err != nil {
		c.t.Fatalf("the leader's last snapshot ends at index %d, want %d or more: %v", last, index+snapshotTrailingLogs, err)
	}
}

// lastSnapshotIndex is the last index of the newest snapshot kept in dir (raft's file
// store or raftnode's checkpoints: "<term>-<index>-<time>/meta.json"; ".tmp" while being
// written), 0 if none.
func lastSnapshotIndex(t *testing.T, dir string) uint64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var last uint64
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue // reaped meanwhile
		}
		var meta struct{ Index uint64 }
		if err := json.Unmarshal(b, &meta); err == nil {
			last = max(last, meta.Index)
		}
	}
	return last
}
