package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// refusedCeremonies reads custos_ceremonies_refused_total from a node's /metrics.
func refusedCeremonies(t *testing.T, api string) float64 {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^custos_ceremonies_refused_total (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestCompromisedCoordinator runs a test build in which every leader misbehaves when it
// schedules a signing: honest committee members re-verify the request from the log and
// refuse to start their parties, so no signature is produced (DESIGN.md invariant 2).
func TestCompromisedCoordinator(t *testing.T) {
	for _, mode := range []string{"swap-digest", "bad-signature"} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, clusterOpts{bin: bins.custosdHooks, env: []string{"CUSTOS_TEST_MISBEHAVE=" + mode},
				extra: map[string]any{"ceremony": map[string]any{"sign_timeout": "5s"}}})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			u := c.newUser(ctx, "victim")
			key, _, err := u.clients[0].CreateKey(ctx, "ed25519", 2, "", "")
			if err != nil || key == nil {
				t.Fatalf("keygen: %v", err)
			}
			r, err := u.clients[1].Sign(ctx, key.KeyID, []byte("transfer everything"), "", "")
			if err == nil && r.Status == "signed" {
				t.Fatal("a compromised coordinator obtained a signature")
			}
			if err == nil {
				if r, err = u.clients[1].WaitRequest(ctx, r.RequestID, 500*time.Millisecond); err != nil {
					t.Fatal(err)
				}
			}
			if err == nil && r.Status != "failed" {
				t.Fatalf("request ended %q", r.Status)
			}
			if code := apiCode(err); err != nil && code != "ceremony.failed" {
				t.Fatalf("sign error %v", err)
			}
			var refused float64
			for i := range c.cl.Nodes {
				refused += refusedCeremonies(t, c.api(i))
			}
			if refused < 2 {
				t.Fatalf("only %v parties refused to join", refused)
			}
		})
	}
}
