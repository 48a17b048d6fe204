package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/devcluster"
)

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
	for _, tc := range []struct {
		name   string
		forged bool
	}{{"honest snapshot", false}, {"forged snapshot", true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[int][]string{}
			if tc.forged {
				env[0] = []string{"CUSTOS_TEST_MISBEHAVE=forge-snapshot"}
			}
			c := startCluster(t, clusterOpts{bin: bins.custosdHooks, nodeEnv: env, extra: map[string]any{
				"insecure_testing": map[string]any{"raft_snapshot_threshold": 32, "raft_trailing_logs": 16, "raft_snapshot_interval": "500ms"},
				"ceremony":         map[string]any{"sign_timeout": "5s"},
				"rate":             map[string]any{"per_caller_rps": 0},
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c.forceRole(ctx, 0, true)
			bystander := c.newUser(ctx, "bystander", "keys:read")
			adm1, err := admin.New(c.key, c.api(1))
			if err != nil {
				t.Fatal(err)
			}
			if err := adm1.DisableUser(ctx, bystander.id); err != nil {
				t.Fatal(err)
			}
			u := c.newUser(ctx, "owner")
			key, _, err := u.clients[1].CreateKey(ctx, "ed25519", 2, "k", "")
			if err != nil || key.Status != "active" {
				t.Fatalf("keygen: %v", err)
			}
			// Node 3 falls behind: far more entries than the leader keeps in its log.
			c.stop(2)
			for i := 0; i < 120; i++ {
				if _, err := u.clients[1].ListKeys(ctx); err != nil {
					t.Fatalf("list %d: %v", i, err)
				}
			}
			time.Sleep(2 * time.Second) // the leader snapshots and compacts
			c.start(2)
			if tc.forged {
				var reasons []string
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) {
					_, reasons = readyz(c.api(2))
					if strings.Contains(strings.Join(reasons, " "), "differs from the state") {
						break
					}
					time.Sleep(500 * time.Millisecond)
				}
				if !strings.Contains(strings.Join(reasons, " "), "differs from the state") {
					t.Fatalf("node 3 did not find its forged state diverged; readyz reasons %q", reasons)
				}
				if v := metric(t, c.api(2), "custos_state_diverged"); v != 1 {
					t.Fatalf("custos_state_diverged = %v", v)
				}
				// The others keep signing (node 3 refuses to join; the leader picks others).
				for i := 0; i < 3; i++ {
					r, err := u.clients[1].Sign(ctx, key.KeyID, []byte{byte(i)}, "", "")
					if err != nil || r.Status != "signed" {
						t.Fatalf("sign %d with a diverged member: %v", i, err)
					}
				}
				return
			}
			c.waitReady(2)
			if v := metric(t, c.api(2), "custos_state_unverified"); v != 0 {
				t.Fatalf("custos_state_unverified = %v after vouching", v)
			}
			// It did go through a snapshot from the leader, and waited for the vouching.
			logb, err := os.ReadFile(devcluster.LogPath(c.dir, c.cl.Nodes[2].ID))
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
				r, err := u.clients[2].Sign(ctx, key.KeyID, []byte{byte(i)}, "", "")
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
