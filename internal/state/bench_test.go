package state

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
)

// BenchmarkApplySignLifecycle measures what Apply costs per signature: the sign request's
// entry and the result's, on one node. "signed" is today's path (the caller's request
// verified in Apply from its signed form, the entry node's and the reporter's identity
// signatures checked); "legacy" the entries before signed entries (the caller and the
// reporter taken on trust), replayed from old logs only. Entries are built before the
// clock starts; the threshold signature's own verification is stubbed in both.
func BenchmarkApplySignLifecycle(b *testing.B) {
	for _, mode := range []string{"legacy", "signed"} {
		b.Run(mode, func(b *testing.B) {
			h := newSignedHarness(b, 3, 2)
			k := h.activeKey()
			if mode == "legacy" {
				m := h.f.meta().clone()
				m.Strict = false
				h.f.committed.Store(m) // the next batch starts from it
			}
			entries := make([][]byte, 0, 2*b.N)
			base := h.stamp
			for i := 0; i < b.N; i++ {
				stamp := base + int64(2*i+1)
				reqID := fmt.Sprintf("req_%032x", i)
				nonce := make([]byte, 32)
				_, _ = rand.Read(nonce)
				sched := &Schedule{RequestID: reqID, Committee: []string{"n1", "n2"}, Nonce: nonce}
				var sub, res []byte
				switch mode {
				case "signed":
					f := h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":"%064x"}`, i), 0)
					sub, _ = Encode(TypeSubmit, stamp, h.submitAs("n1", "n1", f, randHex(), sched))
					body, _ := json.Marshal(&CeremonyResult{RequestID: reqID, Nonce: sched.Nonce, Node: "n2", Signature: Signature{Sig: []byte("good")}})
					sig, _ := signReport(h, "n2", TypeCeremonyResult, body)
					res, _ = Encode(TypeReport, stamp+1, &Report{Node: "n2", Kind: TypeCeremonyResult, Body: body, Sig: sig})
				case "legacy":
					c := &Call{Caller: Caller{Kind: CallerUser, UserID: h.user, NonceKey: randHex()}, Op: OpKeySign, KeyID: k.ID,
						MessageHex: fmt.Sprintf("%064x", i), Schedule: sched}
					sub, _ = Encode(TypeCall, stamp, c)
					res, _ = Encode(TypeCeremonyResult, stamp+1, &CeremonyResult{RequestID: reqID, Nonce: sched.Nonce, Node: "n2", Signature: Signature{Sig: []byte("good")}})
				}
				entries = append(entries, sub, res)
			}
			b.ResetTimer()
			for _, e := range entries {
				if r := h.applyRaw(e); !r.OK() {
					b.Fatalf("%s: %+v", mode, r)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/signature")
		})
	}
}

func signReport(h *signedHarness, node, kind string, body []byte) ([]byte, error) {
	return signNodeForTest(h, node, kind, body)
}

// benchPolicies creates n active sign policies: most filtered to other keys, users and
// labels, one in twenty in the key's scope (a tenth of those velocity rules, with a
// window larger than the run), none of which fires for a digest of key k but the
// always-allow ones; what Apply pays to judge a request at that many policies.
func benchPolicies(b *testing.B, h *signedHarness, k *Key, n int) {
	for i := range n {
		var body string
		switch {
		case i%20 == 0 && i%200 == 0:
			body = fmt.Sprintf(`{"name":"p%d","activity":"sign","rule":{"kind":"count_velocity","window":"24h","max_count":1000000},"filters":{"key_ids":[%q]},"action":"block"}`, i, k.ID)
		case i%20 == 0:
			body = fmt.Sprintf(`{"name":"p%d","activity":"sign","rule":{"kind":"time_window","days":["sun","mon","tue","wed","thu","fri","sat"],"from":"00:00","to":"23:59"},"filters":{"key_ids":[%q]},"action":"allow"}`, i, k.ID)
		case i%3 == 0:
			body = fmt.Sprintf(`{"name":"p%d","activity":"sign","rule":{"kind":"amount_limit","max_sats":%d},"filters":{"key_ids":["key_other_%d"]},"action":"block"}`, i, i, i)
		case i%3 == 1:
			body = fmt.Sprintf(`{"name":"p%d","activity":"sign","rule":{"kind":"always"},"filters":{"users":[%d]},"action":"block"}`, i, 100000+i)
		default:
			body = fmt.Sprintf(`{"name":"p%d","activity":"sign","rule":{"kind":"recipient_allowlist","addresses":["bc1q%d"]},"filters":{"labels":["other-%d"]},"action":"require_approval","approval_groups":[{"name":"g","members":[%d],"quorum":1}]}`, i, i, i, h.user)
		}
		if r := h.submit("n1", h.admin("POST", "/v1/admin/policies", body), nil); !r.OK() {
			b.Fatalf("policy %d: %+v", i, r)
		}
	}
}

// BenchmarkGovernedSignApply is what judging a sign request by the policies adds to its
// entry's Apply: the signed request's entry (authentication, nonce, policy, scheduling)
// with no policy and with 1000 active ones. The difference per request is the policy
// engine's cost, velocity ledgers included (issue: under 1 ms at 1000 policies).
func BenchmarkGovernedSignApply(b *testing.B) {
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			h := newSignedHarness(b, 3, 2)
			k := h.activeKey()
			benchPolicies(b, h, k, n)
			entries := make([][]byte, 0, b.N)
			base := h.stamp + 10
			for i := 0; i < b.N; i++ {
				nonce := make([]byte, 32)
				_, _ = rand.Read(nonce)
				sched := &Schedule{RequestID: fmt.Sprintf("req_%032x", i), Committee: []string{"n1", "n2"}, Nonce: nonce}
				f := h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":"%064x"}`, i), 0)
				e, _ := Encode(TypeSubmit, base+int64(i), h.submitAs("n1", "n1", f, randHex(), sched))
				entries = append(entries, e)
			}
			b.ResetTimer()
			for _, e := range entries {
				if r := h.applyRaw(e); !r.OK() {
					b.Fatalf("sign: %+v", r)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/request")
		})
	}
}

// BenchmarkApprovalQuorum is the Apply of the decision that completes an approval at
// 1000 active policies: the decision's own authentication, then every counted decision's
// signed request verified again (two here) and the approvers' standing checked.
func BenchmarkApprovalQuorum(b *testing.B) {
	h := newSignedHarness(b, 3, 2)
	k := h.activeKey()
	benchPolicies(b, h, k, 999)
	bob := h.newPerson("bob", PermApprovalDecide)
	carol := h.newPerson("carol", PermApprovalDecide)
	h.policy(fmt.Sprintf(`{"name":"two","activity":"sign","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"require_approval",
		"approval_groups":[{"name":"g","members":[%d,%d],"quorum":2}]}`, k.ID, bob.id, carol.id))
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		res := h.sign(k, digest)
		if res.ApprovalID == "" {
			b.Fatalf("no approval: %+v", res)
		}
		h.decide(bob, res.ApprovalID, "approve")
		f := h.as(carol, "POST", "/v1/approvals/"+res.ApprovalID+"/decisions", `{"decision":"approve"}`)
		e, _ := Encode(TypeSubmit, h.stamp, h.submitAs("n2", "n2", f, randHex(), nil))
		b.StartTimer()
		r := h.applyRaw(e)
		b.StopTimer()
		if !r.OK() || h.f.Request(res.RequestID).Status != StatusScheduled {
			b.Fatalf("quorum: %+v", r)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/decision")
}
