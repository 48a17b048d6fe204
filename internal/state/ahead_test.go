package state

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// Signatures checked ahead of Apply by the batch's workers (ahead.go) are judged again
// by Apply in order: within one raft batch, a forged origin signature is refused even
// though the genuine one of the same request verified just before it on another core, a
// request whose caller was disabled by an earlier entry of the same batch is refused
// although its signature verified against the state the workers read, and a report by a
// node for another node is refused. Every verdict equals the one-entry-at-a-time one.
func TestSignaturesCheckedAheadAreJudgedAgain(t *testing.T) {
	build := func(h *signedHarness) (entries [][]byte, want []string) {
		add := func(typ string, payload any, code string) {
			h.stamp++
			b, err := Encode(typ, h.stamp, payload)
			if err != nil {
				t.Fatal(err)
			}
			entries, want = append(entries, b), append(want, code)
		}
		genuine := h.userReq("GET", "/v1/keys", "", 0)
		proposal := randHex()
		add(TypeSubmit, h.submitAs("n1", "n1", genuine, proposal, nil), "")
		// n3 proposes the same entry body again in n1's name: the triple differs (n3's
		// signature under n1's key), so no check made ahead answers for it.
		add(TypeSubmit, h.submitAs("n1", "n3", genuine, proposal, nil), "auth.signature_invalid")
		// A request signed by alice, then the admin disables alice, then the request:
		// its signatures verified ahead against the state before the batch, and Apply
		// still refuses it.
		late := h.userReq("GET", "/v1/keys", "", 0)
		add(TypeSubmit, h.submitAs("n2", "n2", h.admin("POST", fmt.Sprintf("/v1/admin/users/%d/disable", h.user), ""), randHex(), nil), "")
		add(TypeSubmit, h.submitAs("n1", "n1", late, randHex(), nil), "auth.user_disabled")
		return entries, want
	}
	h := newSignedHarness(t, 3, 2)
	entries, want := build(h)
	logs := make([]*raft.Log, len(entries))
	for i, b := range entries {
		h.index++
		logs[i] = &raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}
	}
	for round := 0; round < 2; round++ {
		var got []any
		if round == 0 {
			got = h.f.ApplyBatch(logs)
		} else {
			// The same kind of log, one entry at a time, on a fresh cluster.
			h = newSignedHarness(t, 3, 2)
			entries, _ = build(h)
			for _, b := range entries {
				got = append(got, h.applyRaw(b))
			}
		}
		for i, r := range got {
			res, ok := r.(Result)
			if !ok {
				t.Fatalf("round %d entry %d: no result", round, i)
			}
			if res.Code != want[i] {
				t.Errorf("round %d entry %d: got %q (%s), want %q", round, i, res.Code, res.Detail, want[i])
			}
		}
	}
}
