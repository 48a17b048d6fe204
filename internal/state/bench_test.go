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
