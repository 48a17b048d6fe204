//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
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

// auditAll reads a node's whole audit log through the admin SDK.
func (c *cluster) auditAll(ctx context.Context, node int) []admin.AuditEntry {
	c.t.Helper()
	adm, err := c.AdminFor(node)
	c.must(err)
	var out []admin.AuditEntry
	after := uint64(0)
	for {
		page, err := adm.Audit(ctx, after, 1000)
		if err != nil {
			c.t.Fatalf("audit: %v", err)
		}
		out = append(out, page...)
		if len(page) < 1000 {
			// The end (reading is itself audited: the log grows by an entry a page).
			return out
		}
		after = page[len(page)-1].Seq
	}
}

// refusalsBy counts the audit entries in which the FSM refused an entry proposed by node
// (a forged or tampered request, or a report in another member's name).
func refusalsBy(entries []admin.AuditEntry, node string) (requests, reports int) {
	for _, e := range entries {
		if e.Actor != "node:"+node {
			continue
		}
		switch e.Action {
		case "request.refused", "request.replayed":
			requests++
		case "report.refused":
			reports++
		}
	}
	return
}

// TestCompromisedCoordinator runs a test build in which every leader misbehaves when it
// schedules a signing: it swaps the digest in the caller's signed body, or corrupts the
// caller's signature (re-signing the entry as its own). Every node's FSM verifies the
// caller's signature itself when the entry applies, so the request is refused before any
// ceremony is scheduled, and the refusal names the leader (DESIGN.md: the FSM believes
// signatures, never proposers).
func TestCompromisedCoordinator(t *testing.T) {
	for _, mode := range []string{"swap-digest", "bad-signature"} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, testcluster.Options{Binary: bins.CustosdHooks, Env: []string{"CUSTOS_TEST_MISBEHAVE=" + mode},
				Extra: map[string]any{"ceremony": map[string]any{"sign_timeout": "5s"}}})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			u := c.newUser(ctx, "victim")
			key, _, err := u.Clients[0].CreateKey(ctx, "ed25519", 2, "", "")
			if err != nil || key == nil {
				t.Fatalf("keygen: %v", err)
			}
			r, err := u.Clients[1].Sign(ctx, key.KeyID, []byte("transfer everything"), "", "")
			if err == nil {
				t.Fatalf("a compromised coordinator got the request through: %s", r.Status)
			}
			if code := apiCode(err); code != "auth.signature_invalid" {
				t.Fatalf("sign error %v, want auth.signature_invalid", err)
			}
			cl, err := c.Admin().Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			entries := c.auditAll(ctx, 0)
			if reqs, _ := refusalsBy(entries, cl.Leader); reqs < 1 {
				t.Fatalf("no refusal attributed to the leader %s", cl.Leader)
			}
			for _, e := range entries {
				if e.Action == "sign.signed" || e.Action == "keys.sign" && e.Outcome == "allowed" {
					t.Fatalf("something was signed: %+v", e)
				}
			}
			if refused := refusedCeremonies(t, c.API(0)); refused != 0 {
				t.Fatalf("a ceremony was even scheduled (%v refused)", refused)
			}
		})
	}
}

// TestCompromisedMembersForge: members running a test build that forges (as the entry
// node of every request they receive, leader or follower) propose, next to each keygen
// and signing, the caller's request again with a fresh proposal id, admin calls without
// a token, and share reports, results and failures in the other members' names. Every
// one is refused by every honest FSM and attributed to the forger; keys keep their
// honest public keys, signatures verify, users do not change, the audit chain verifies.
// With 3 nodes one member forges; with 5 nodes (k = 3) two collude.
func TestCompromisedMembersForge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		nodes, k int
		hostile  []int
		// roles: per round, whether the (first) forger must be the leader (true) or a
		// follower (false); nil leaves it to the election.
		roles []bool
	}{
		{"3 nodes, one forger", 3, 2, []int{0}, []bool{true, false}},
		{"5 nodes, two colluding", 5, 3, []int{0, 1}, []bool{true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[int][]string{}
			for _, i := range tc.hostile {
				env[i] = []string{"CUSTOS_TEST_MISBEHAVE=forge"}
			}
			c := startCluster(t, testcluster.Options{Nodes: tc.nodes, Threshold: tc.k, Binary: bins.CustosdHooks, NodeEnv: env})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// A bystander the forgers try to re-enable and re-empower.
			bystander := c.newUser(ctx, "bystander", "keys:read")
			if err := c.Admin().DisableUser(ctx, bystander.ID); err != nil {
				t.Fatal(err)
			}
			u := c.newUser(ctx, "victim")
			usersBefore, err := c.Admin().ListUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for round, asLeader := range tc.roles {
				c.forceRole(ctx, tc.hostile[0], asLeader)
				for _, h := range tc.hostile {
					key, _, err := u.Clients[h].CreateKey(ctx, "ed25519", tc.k, fmt.Sprintf("k%d-%d", round, h), "")
					if err != nil || key == nil || key.Status != "active" {
						t.Fatalf("keygen through the forger: %v %+v", err, key)
					}
					pub, _ := hex.DecodeString(key.PublicKey)
					msg := []byte(fmt.Sprintf("pay bob %d/%d", round, h))
					for _, entry := range []int{h, tc.nodes - 1} {
						r, err := u.Clients[entry].Sign(ctx, key.KeyID, msg, "", "")
						if err != nil || r.Status != "signed" || r.Signature == nil {
							t.Fatalf("sign through node %d: %v %+v", entry+1, err, r)
						}
						sig, _ := hex.DecodeString(r.Signature.Signature)
						if !ed25519.Verify(pub, msg, sig) {
							t.Fatalf("signature through node %d does not verify under the key's public key", entry+1)
						}
					}
				}
			}
			// A grant made through the forger, then revoked: the forger proposes the
			// grantor's signed grant again.
			agentPub, _, err := ed25519.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			agentHex := hex.EncodeToString(agentPub)
			ak, err := u.Clients[tc.hostile[0]].CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: agentHex, Permissions: []string{"keys:read"}})
			if err != nil {
				t.Fatalf("grant through the forger: %v", err)
			}
			if err := u.Clients[tc.nodes-1].RevokeAccessKey(ctx, ak.ID); err != nil {
				t.Fatal(err)
			}
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			recreated := testcluster.Until(rctx, func() bool {
				for _, e := range c.auditAll(ctx, tc.nodes-1) {
					if e.Actor == "node:"+c.NodeID(tc.hostile[0]) && e.Action == "request.replayed" && e.Object == "access.create" {
						return true
					}
				}
				return false
			})
			rcancel()
			if recreated != nil {
				t.Fatalf("the forger's re-created grant is not in the audit log: %v", recreated)
			}
			aks, err := u.Clients[tc.nodes-1].ListAccessKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range aks {
				if k.PublicKey == agentHex && (k.ID != ak.ID || k.RevokedAt.IsZero()) {
					t.Fatalf("the revoked grant came back: %+v", k)
				}
			}
			// Let the forgeries settle: wait until the refusals are in the last node's
			// audit log, then judge.
			c.waitReady(c.All()...)
			var entries []admin.AuditEntry
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			_ = testcluster.Until(sctx, func() bool {
				entries = c.auditAll(ctx, tc.nodes-1)
				for _, h := range tc.hostile {
					if reqs, reps := refusalsBy(entries, c.NodeID(h)); reqs < 4 || reps < 3 {
						return false
					}
				}
				return true
			})
			scancel()
			for _, h := range tc.hostile {
				id := c.NodeID(h)
				reqs, reps := refusalsBy(entries, id)
				// Per forged request: the replay and three admin calls; per committee
				// peer: three reports in its name.
				if reqs < 4 || reps < 3 {
					t.Errorf("refusals attributed to %s: %d requests, %d reports", id, reqs, reps)
				}
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Action, "users.") && e.Outcome == "allowed" && e.Actor != "admin" {
					t.Errorf("a non-admin changed users: %+v", e)
				}
			}
			usersAfter, err := c.Admin().ListUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(usersAfter) != len(usersBefore) {
				t.Fatalf("users %d → %d: a forged admin call created one", len(usersBefore), len(usersAfter))
			}
			b, err := c.Admin().GetUser(ctx, bystander.ID)
			if err != nil {
				t.Fatal(err)
			}
			if b.Status != "disabled" || strings.Join(b.Permissions, ",") != "keys:read" {
				t.Fatalf("the bystander was changed: %+v", b)
			}
			// The honest nodes agree on the chain, and it verifies.
			v, err := c.Admin().VerifyAudit(ctx, 0)
			if err != nil || v.Broken != nil {
				t.Fatalf("audit verify: %v %+v", err, v)
			}
			// Honest nodes keep serving.
			key, _, err := u.Clients[tc.nodes-1].CreateKey(ctx, "ed25519", tc.k, "after", "")
			if err != nil || key.Status != "active" {
				t.Fatalf("keygen after the forgeries: %v", err)
			}
		})
	}
}
