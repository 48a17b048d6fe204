//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/auth"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestAuditInvalidUTF8: a key id that is not UTF-8 (GET /v1/keys/%FF) lands in an audit
// entry's object; the node stores it as U+FFFD, and the whole chain still verifies, with
// admin.VerifyAudit through every node and with `custos audit verify`.
func TestAuditInvalidUTF8(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	alice := c.newUser(ctx, "alice")
	actor := "user:" + strconv.FormatUint(alice.ID, 10)

	// stored is the object as the node keeps it: each run of invalid bytes one U+FFFD
	// (internal/state), or one per byte where the key id went through encoding/json first.
	paths := []struct {
		path   string
		stored []string
	}{
		{"%FF", []string{"\uFFFD"}},
		{"a%C3", []string{"a\uFFFD"}},
		{"k%FF%FE%22%5C%0A%E2%80%A8%C3%A9", []string{"k\uFFFD\"\\\n\u2028é", "k\uFFFD\uFFFD\"\\\n\u2028é"}},
	}
	for i, p := range paths {
		req := signed(t, rawReq{"GET", c.API(i%c.N()) + "/v1/keys/" + p.path, nil}, alice.Token, auth.UserKeyID(alice.ID), alice.Key, time.Now())
		if status, code := send(t, req); status != 404 || code != "key.not_found" {
			t.Fatalf("GET /v1/keys/%s: %d %q, want 404 key.not_found", p.path, status, code)
		}
	}

	es, err := c.Admin().Audit(ctx, 0, 1000)
	wantOK(t, "read the audit log", err)

	// The whole chain, those entries included, verifies, read through each node.
	for i := range c.N() {
		adm, err := admin.New(c.adminKey(), c.API(i))
		wantOK(t, "admin client", err)
		res, err := adm.VerifyAudit(ctx, 0)
		wantOK(t, "VerifyAudit", err)
		if res.Broken != nil || res.Entries < uint64(len(es)) || res.HeadSeq != res.Entries {
			t.Fatalf("VerifyAudit through node %d: %+v, broken: %v", i+1, res, res.Broken)
		}
		t.Logf("node %d: %d entries verified, head %s", i+1, res.Entries, res.HeadHash)
	}
	out, err := custosCLI(t, nil, "audit", "verify", "--url", c.API(1), "--admin-key-file", filepath.Join(c.Dir(), "admin.key"))
	wantOK(t, "custos audit verify", err)
	var rep struct {
		Verified bool   `json:"verified"`
		Entries  uint64 `json:"entries_checked"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Verified || rep.Entries < uint64(len(es)) {
		t.Fatalf("custos audit verify printed %q", out)
	}

	// The refused reads are in the log, their key ids made valid UTF-8.
	for _, p := range paths {
		found := false
		for _, e := range es {
			if e.Actor == actor && slices.Contains(p.stored, e.Object) {
				found = true
				if e.Outcome != "refused" || e.Code != "key.not_found" {
					t.Errorf("audit entry %d for /v1/keys/%s: %s %s %q", e.Seq, p.path, e.Action, e.Outcome, e.Code)
				}
			}
		}
		if !found {
			t.Fatalf("no audit entry of %s with object %q (GET /v1/keys/%s)", actor, p.stored[0], p.path)
		}
	}
}
