//go:build linux

package e2e

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	testcluster "github.com/custos/custos/test/cluster"
)

// clockSkewBound is node.clockBound: how far ahead of a majority of the voters' clocks a
// leader may stamp entries.
const clockSkewBound = 10 * time.Second

// TestClockSkew (issue 9, finding 6): a node whose clock runs 2 minutes ahead is made the
// raft leader and hands leadership over within seconds, without stamping anything: the
// log stays stamped on the honest clocks, so the honest nodes stay ready, and requests
// through the fast node are forwarded to the honest leader. A node 2 minutes ahead takes
// no part in ceremonies (a node does not act on an entry stamped more than 30 s from its
// clock), so the keygen and signing through the fast node run with it 20 s ahead: still
// more than the bound (it is never fit to lead) but within the 30 s its runner accepts.
func TestClockSkew(t *testing.T) {
	const fast = 0 // node 0 also serves the admin client: admin calls go through it
	c := startSkewedCluster(t, fast, 2*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fastID := c.NodeID(fast)

	// The fast node finds that the other voters' clocks disagree with its own and says so.
	c.waitClockReason(ctx, fast, "ahead of a majority of the voters' clocks")
	c.checkClockLead(fast, 2*time.Minute)
	alice := c.newUser(ctx, "alice") // through the fast node, forwarded
	c.checkLeaderNot(ctx, fastID)

	// Make the fast node the leader, deterministically: with node 1 down, an entry is
	// committed by nodes 0 and 2; then with node 2 down and node 1 started again, node 1's
	// log lacks that entry, so only node 0 can win the election (node 1 votes for it).
	c.stop(1)
	if _, err := c.Admin().CreateUser(ctx, "committed-by-0-and-2"); err != nil {
		t.Fatalf("create user with node 1 down: %v", err)
	}
	c.stop(2)
	before := c.clockStepdowns(fast) // node 0 alone cannot lead
	start := time.Now()
	c.start(1)
	stepdowns := before
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	err := testcluster.Until(sctx, func() bool {
		stepdowns = c.clockStepdowns(fast)
		return stepdowns > before
	})
	scancel()
	if err != nil {
		t.Fatalf("node %s never led and stepped down: %v (custos_clock_stepdowns_total was %v, last read %v)", fastID, err, before, stepdowns)
	}
	t.Logf("the fast node led and handed over %v after node 1 started", time.Since(start).Round(time.Millisecond))
	// Within a few seconds another node leads and stamps: GET /v1/cluster commits an entry.
	c.checkLeaderNot(ctx, fastID)
	t.Logf("another node leads %v after node 1 started", time.Since(start).Round(time.Millisecond))
	c.start(2)
	// Had the fast node stamped anything, the honest nodes would now find the log stamped
	// ahead of their clocks (more than 30 s) and report not ready.
	c.waitReady(1, 2)
	c.checkStamps(ctx, time.Now())
	c.waitClockReason(ctx, fast, "fix NTP on this host")

	// Keygen and signing through a fast node: 20 s ahead (see above).
	c.stop(fast)
	setClockOffset(t, c, fast, 20*time.Second)
	c.start(fast)
	c.waitClockReason(ctx, fast, "ahead of a majority of the voters' clocks")
	c.checkClockLead(fast, 20*time.Second)
	key, req, err := alice.Clients[fast].CreateKey(ctx, "ed25519", 2, "skewed", "")
	if err != nil || key == nil {
		t.Fatalf("ed25519 keygen through the fast node: %v (request %+v)", err, req)
	}
	msg := []byte("signed through a node whose clock runs ahead")
	r, err := alice.Clients[fast].Sign(ctx, key.KeyID, msg, "", "")
	if err != nil || r.Status != "signed" || r.Signature == nil {
		t.Fatalf("sign through the fast node: %v (request %+v)", err, r)
	}
	pub, _ := hex.DecodeString(key.PublicKey)
	sig, _ := hex.DecodeString(r.Signature.Signature)
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig) {
		t.Fatal("the Ed25519 signature does not verify under the key")
	}
	now := time.Now()
	for _, at := range []time.Time{key.CreatedAt, r.CreatedAt} {
		if at.After(now.Add(clockSkewBound)) {
			t.Fatalf("entry stamped %v, %v ahead of the test's clock", at, at.Sub(now))
		}
	}
	c.checkLeaderNot(ctx, fastID)
	c.checkStamps(ctx, time.Now())
}

// startSkewedCluster is startCluster with node skewed's clock shifted by offset (the
// test-only insecure_testing.clock_offset); it waits for the other nodes to be ready.
func startSkewedCluster(t *testing.T, skewed int, offset time.Duration) *cluster {
	t.Helper()
	return startCluster(t, testcluster.Options{NodeExtra: map[int]map[string]any{skewed: clockOffset(offset)}, SkipReady: []int{skewed}})
}

// clockOffset is the configuration that shifts a node's clock by offset.
func clockOffset(offset time.Duration) map[string]any {
	return map[string]any{"insecure_testing": map[string]any{"clock_offset": offset.String()}}
}

// setClockOffset sets insecure_testing.clock_offset in node i's configuration (the node
// reads it when it starts).
func setClockOffset(t *testing.T, c *cluster, i int, offset time.Duration) {
	t.Helper()
	if err := c.MergeConfig(i, clockOffset(offset)); err != nil {
		t.Fatal(err)
	}
}

// waitClockReason waits until node i's /readyz reports not ready with a reason
// containing want.
func (c *cluster) waitClockReason(ctx context.Context, i int, want string) {
	c.t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	err := testcluster.Until(wctx, func() bool {
		req, err := http.NewRequestWithContext(wctx, http.MethodGet, c.API(i)+"/readyz", nil)
		if err != nil {
			last = err.Error()
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Reasons []string `json:"reasons"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		last = fmt.Sprintf("%d: %s", resp.StatusCode, strings.Join(body.Reasons, "; "))
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.Join(body.Reasons, "; "), want)
	})
	if err != nil {
		c.t.Fatalf("node %d: /readyz never said %q: %v (last answer: %q)", i+1, want, err, last)
	}
}

// checkLeaderNot waits (a few seconds at most) until GET /v1/cluster, through node 0,
// names a leader other than id.
func (c *cluster) checkLeaderNot(ctx context.Context, id string) {
	c.t.Helper()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	var last string
	err := testcluster.Until(wctx, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cl, err := c.Admin().Cluster(cctx)
		cancel()
		if err != nil {
			last = err.Error()
			return false
		}
		last = cl.Leader
		return cl.Leader != "" && cl.Leader != id
	})
	if err != nil {
		c.t.Fatalf("GET /v1/cluster: leader still %q, want another node than %s: %v", last, id, err)
	}
}

// checkStamps checks that no audit entry is stamped more than the bound after now.
func (c *cluster) checkStamps(ctx context.Context, now time.Time) {
	c.t.Helper()
	entries, err := c.Admin().Audit(ctx, 0, 1000)
	if err != nil {
		c.t.Fatalf("audit: %v", err)
	}
	if len(entries) == 0 {
		c.t.Fatal("no audit entries")
	}
	for _, e := range entries {
		at, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil {
			c.t.Fatalf("audit entry %d: time %q: %v", e.Seq, e.Time, err)
		}
		if at.After(now.Add(clockSkewBound)) {
			c.t.Fatalf("audit entry %d (%s) stamped %v: %v ahead of the test's clock", e.Seq, e.Action, at, at.Sub(now))
		}
	}
}

// clockStepdowns reads custos_clock_stepdowns_total (all directions) from node i's
// /metrics; -1 when it cannot be read.
func (c *cluster) clockStepdowns(i int) float64 { return c.metric(i, "custos_clock_stepdowns_total") }

// checkClockLead checks node i's measured lead over the median clock (its
// custos_clock_lead_seconds) against want, within a second.
func (c *cluster) checkClockLead(i int, want time.Duration) {
	c.t.Helper()
	got := c.metric(i, "custos_clock_lead_seconds")
	if got < want.Seconds()-1 || got > want.Seconds()+1 {
		c.t.Fatalf("node %d measures its clock %vs ahead, want %v", i+1, got, want)
	}
}

// metric sums the samples of a metric on node i's /metrics; -1 when it cannot be read.
func (c *cluster) metric(i int, name string) float64 {
	resp, err := http.Get(c.API(i) + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}
