package state

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
)

// countingVerifier counts the verifications that reach the FSM's verifier, by signature.
type countingVerifier struct {
	mu    sync.Mutex
	calls map[string]int
}

func (v *countingVerifier) VerifySignature(curve string, pub, cc []byte, path []uint32, msg []byte, sig *Signature) error {
	v.mu.Lock()
	v.calls[string(sig.Sig)]++
	v.mu.Unlock()
	return okVerifier{}.VerifySignature(curve, pub, cc, path, msg, sig)
}

// Threshold signatures of results whose request is committed are verified by the
// batch's workers ahead of Apply, and Apply takes a memo hit only for the exact
// arguments that passed: within one raft batch a forged result is refused (verified
// again by Apply, never answered from the memo) although a genuine one for the same
// request passed just after it on another core, and each genuine signature reaches the
// verifier once. A result whose report a member did not sign costs no threshold
// verification at all, ahead or in Apply.
func TestThresholdSignaturesCheckedAhead(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	cv := &countingVerifier{calls: map[string]int{}}
	h.f.verifier = cv
	k := h.activeKey()
	var reqs []*Request
	for _, msg := range []string{"00ff", "01ff"} {
		res := h.sign(k, msg)
		if !res.OK() {
			t.Fatalf("sign: %+v", res)
		}
		reqs = append(reqs, h.f.Request(res.RequestID))
	}
	type step struct {
		node, signer, sig string
		req               *Request
		want              string
	}
	steps := []step{
		{"n3", "n2", "unsigned", reqs[1], "auth.signature_invalid"}, // n3's report, n2's signature
		{"n1", "n1", "forged", reqs[0], "ceremony.failed"},
		{"n2", "n2", "good", reqs[0], ""},
		{"n1", "n1", "good", reqs[1], ""},
	}
	var logs []*raft.Log
	for _, s := range steps {
		body := &CeremonyResult{RequestID: s.req.ID, Nonce: s.req.Nonce, Node: s.node, Signature: Signature{Sig: []byte(s.sig)}}
		h.index++
		h.stamp++
		logs = append(logs, &raft.Log{Index: h.index, Type: raft.LogCommand, Data: h.reportEntry(s.node, s.signer, TypeCeremonyResult, body)})
	}
	for i, r := range h.f.ApplyBatch(logs) {
		res := r.(Result)
		if res.Code != steps[i].want {
			t.Errorf("entry %d (%s by %s): %q (%s), want %q", i, steps[i].sig, steps[i].node, res.Code, res.Detail, steps[i].want)
		}
	}
	for _, r := range reqs {
		if got := h.f.Request(r.ID); got.Status != StatusSigned {
			t.Errorf("request %s: %s, want signed", r.ID, got.Status)
		}
	}
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if cv.calls["good"] != 2 {
		t.Errorf("genuine signatures verified %d times, want 2 (once each, ahead; Apply from the memo)", cv.calls["good"])
	}
	if cv.calls["forged"] != 2 {
		t.Errorf("forged signature verified %d times, want 2 (ahead and again by Apply)", cv.calls["forged"])
	}
	if cv.calls["unsigned"] != 0 {
		t.Errorf("threshold signature of a report no member signed verified %d times, want 0", cv.calls["unsigned"])
	}
}

// reportEntry is node's report of kind signed by signer, encoded as an entry at the
// current stamp (not applied).
func (h *signedHarness) reportEntry(node, signer, kind string, payload any) []byte {
	h.t.Helper()
	body, _ := json.Marshal(payload)
	sig, err := authn.SignNode(h.ids[signer], authn.DomainReport, ReportMessage(kind, body))
	if err != nil {
		h.t.Fatal(err)
	}
	b, err := Encode(TypeReport, h.stamp, &Report{Node: node, Kind: kind, Body: body, Sig: sig})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// The memo's key holds every argument, each delimited: moving bytes from one field to
// its neighbour, or changing any one, is another key.
func TestSigMemoKeyDistinct(t *testing.T) {
	base := func() (string, []byte, []byte, []uint32, []byte, *Signature) {
		return CurveSecp256k1, []byte("pub"), []byte("cc"), []uint32{0, 7}, []byte("msg"), &Signature{R: []byte("r"), S: []byte("s"), RecoveryID: 1, DER: []byte("der"), Sig: []byte("sig")}
	}
	seen := map[string]string{}
	add := func(name string, curve string, pub, cc []byte, path []uint32, msg []byte, sig *Signature) {
		k := sigMemoKey(curve, pub, cc, path, msg, sig)
		if other, ok := seen[k]; ok {
			t.Errorf("%s and %s share a key", name, other)
		}
		seen[k] = name
	}
	c, p, cc, path, m, s := base()
	add("base", c, p, cc, path, m, s)
	add("pub|cc moved", c, []byte("pu"), []byte("bcc"), path, m, s)
	add("curve", CurveEd25519, p, cc, path, m, s)
	add("path", c, p, cc, []uint32{0, 8}, m, s)
	add("path longer", c, p, cc, []uint32{0, 7, 0}, m, s)
	add("no path", c, p, cc, nil, m, s)
	add("message", c, p, cc, path, []byte("msh"), s)
	for name, bend := range map[string]func(*Signature){
		"r":           func(s *Signature) { s.R = []byte("q") },
		"r|s moved":   func(s *Signature) { s.R, s.S = []byte("rs"), nil },
		"recovery id": func(s *Signature) { s.RecoveryID = 0 },
		"der":         func(s *Signature) { s.DER = []byte("dex") },
		"sig":         func(s *Signature) { s.Sig = []byte("sih") },
	} {
		c, p, cc, path, m, s := base()
		bend(s)
		add(name, c, p, cc, path, m, s)
	}
}
