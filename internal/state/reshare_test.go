package state

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
)

// reshare submits the admin's reshare of k (body "" = refresh) with the leader's
// schedule (old committee old).
func (h *signedHarness) reshare(k *Key, body string, old []string) Result {
	h.t.Helper()
	route := "/v1/admin/keys/" + k.ID + "/refresh"
	if body != "" {
		route = "/v1/admin/keys/" + k.ID + "/reshare"
	}
	return h.submit("n1", h.admin("POST", route, body), &Schedule{RequestID: "req_" + randHex(), Committee: old, Nonce: randNonce()})
}

func (h *signedHarness) reshareReport(r *Request, node string, pub []byte, gen uint32) Result {
	h.t.Helper()
	return h.reportAs(node, node, TypeReshareStored, &ReshareStored{RequestID: r.ID, Nonce: r.Nonce, Node: node, PublicKey: pub, Generation: gen})
}

func TestReshareCommitsOnlyWhenEveryNewPartyReportedTheKey(t *testing.T) {
	h := newSignedHarness(t, 4, 2)
	k := h.activeKey() // 2 of n1..n4
	res := h.reshare(k, `{"members":["n1","n2","n3"],"threshold":3}`, []string{"n1", "n2"})
	if !res.OK() {
		t.Fatalf("reshare: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	if r.Kind != KindReshare || r.Status != StatusScheduled || len(r.Committee) != 2 || strings.Join(r.NewMembers, ",") != "n1,n2,n3" || r.NewThreshold != 3 {
		t.Fatalf("reshare request: %+v", r)
	}
	if got := strings.Join(r.Participants(), ","); got != "n1,n2,n3" {
		t.Fatalf("participants %s", got)
	}
	got := h.f.Key(k.ID)
	if got.Resharing == nil || got.Resharing.Generation != 1 || got.Threshold != 2 || len(got.Members) != 4 {
		t.Fatalf("key during the reshare: %+v", got)
	}
	// The old committee keeps signing meanwhile; a second reshare and a delete wait.
	if s := h.sign(got, digest); !s.OK() {
		t.Fatalf("sign during the reshare: %+v", s)
	}
	if again := h.reshare(k, "", []string{"n1", "n2"}); again.Code != api.CodeRequestConflict {
		t.Fatalf("second reshare: %+v", again)
	}
	if d := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, "", 0), nil); d.Code != api.CodeRequestConflict {
		t.Fatalf("delete during a reshare: %+v", d)
	}
	// Reports: from outside the new committee, of another generation, or twice count
	// nothing; each must be signed by the node it names.
	if rr := h.reshareReport(r, "n4", k.PublicKey, 1); rr.OK() {
		t.Fatalf("report from outside the new committee: %+v", rr)
	}
	if rr := h.reshareReport(r, "n1", k.PublicKey, 2); rr.OK() {
		t.Fatalf("report of another generation: %+v", rr)
	}
	if rr := h.reportAs("n2", "n3", TypeReshareStored, &ReshareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", PublicKey: k.PublicKey, Generation: 1}); rr.OK() {
		t.Fatalf("report signed by another node: %+v", rr)
	}
	for _, n := range []string{"n1", "n2"} {
		if rr := h.reshareReport(r, n, k.PublicKey, 1); !rr.OK() {
			t.Fatalf("report %s: %+v", n, rr)
		}
		if rr := h.reshareReport(r, n, k.PublicKey, 1); !rr.Existing {
			t.Fatalf("duplicate report %s: %+v", n, rr)
		}
	}
	if got := h.f.Key(k.ID); got.Generation != 0 || len(got.Members) != 4 {
		t.Fatalf("committed before every new party reported: %+v", got)
	}
	if rr := h.reshareReport(r, "n3", k.PublicKey, 1); !rr.OK() {
		t.Fatalf("last report: %+v", rr)
	}
	got = h.f.Key(k.ID)
	if got.Generation != 1 || got.Threshold != 3 || got.Parties != 3 || strings.Join(got.Members, ",") != "n1,n2,n3" || got.Resharing != nil || !bytes.Equal(got.PublicKey, k.PublicKey) {
		t.Fatalf("key after the reshare: %+v", got)
	}
	if r := h.f.Request(r.ID); r.Status != StatusActive {
		t.Fatalf("request after the reshare: %+v", r)
	}
	if len(h.auditBy("node:n3", "key.reshared")) != 1 {
		t.Fatal("no audit entry for the reshare")
	}
	// Signing now takes 3 of the new members; n4 is no party any more.
	s := &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n2", "n3", "n4"}, Nonce: randNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, digest), 0), s); res.OK() {
		t.Fatalf("sign with a node outside the new committee: %+v", res)
	}
	s = &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2", "n3"}, Nonce: randNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, digest), 0), s); !res.OK() {
		t.Fatalf("sign with the new committee: %+v", res)
	}
	// A refresh: same members and threshold, next generation.
	res = h.reshare(got, "", []string{"n1", "n2", "n3"})
	if !res.OK() {
		t.Fatalf("refresh: %+v", res)
	}
	r = h.f.Request(res.RequestID)
	for _, n := range []string{"n1", "n2", "n3"} {
		h.reshareReport(r, n, k.PublicKey, 2)
	}
	if got := h.f.Key(k.ID); got.Generation != 2 || got.Threshold != 3 || strings.Join(got.Members, ",") != "n1,n2,n3" {
		t.Fatalf("after the refresh: %+v", got)
	}
}

// TestReshareRefusesAnotherPublicKey: a hostile new party reporting another public key
// cannot make the key change: the reshare fails naming it and the old committee keeps the
// key, its generation and its threshold.
func TestReshareRefusesAnotherPublicKey(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	res := h.reshare(k, "", []string{"n1", "n3"})
	if !res.OK() {
		t.Fatal(res)
	}
	r := h.f.Request(res.RequestID)
	h.reshareReport(r, "n1", k.PublicKey, 1)
	h.reshareReport(r, "n2", k.PublicKey, 1)
	evil := bytes.Repeat([]byte{0x43}, 32)
	if rr := h.reshareReport(r, "n3", evil, 1); !rr.OK() {
		t.Fatalf("evil report: %+v", rr)
	}
	r = h.f.Request(r.ID)
	if r.Status != StatusFailed || !strings.Contains(r.Error.Detail, "n3") || len(r.Failures) == 0 || r.Failures[len(r.Failures)-1].Culprits[0] != "n3" {
		t.Fatalf("request: %+v", r)
	}
	got := h.f.Key(k.ID)
	if got.Generation != 0 || got.Resharing != nil || !bytes.Equal(got.PublicKey, k.PublicKey) || got.Status != KeyActive {
		t.Fatalf("key: %+v", got)
	}
	// A later honest report of that session changes nothing.
	if rr := h.reshareReport(r, "n3", k.PublicKey, 1); rr.OK() {
		t.Fatalf("report after the failure: %+v", rr)
	}
}

func TestReshareAdmissionRefusals(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	for _, tc := range []struct {
		name, body string
		old        []string
		code       string
	}{
		{"unknown member", `{"members":["n1","n9"]}`, []string{"n1", "n2"}, api.CodeMemberNotFound},
		{"duplicate member", `{"members":["n1","n1","n2"]}`, []string{"n1", "n2"}, api.CodeRequestMalformed},
		{"threshold above members", `{"members":["n1","n2"],"threshold":3}`, []string{"n1", "n2"}, api.CodeRequestMalformed},
		{"threshold 1", `{"threshold":1}`, []string{"n1", "n2"}, api.CodeRequestMalformed},
		{"unknown field", `{"committee":["n1"]}`, []string{"n1", "n2"}, api.CodeRequestMalformed},
		{"old committee too small", `{"threshold":3}`, []string{"n1"}, api.CodeClusterUnavailable},
		{"old committee outside the key", `{"threshold":3}`, []string{"n1", "n7"}, api.CodeClusterUnavailable},
		{"old committee twice one node", `{"threshold":3}`, []string{"n1", "n1"}, api.CodeClusterUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := h.reshare(k, tc.body, tc.old); res.Code != tc.code {
				t.Fatalf("%+v, want %s", res, tc.code)
			}
		})
	}
	// Users cannot reshare.
	if res := h.submit("n1", h.userReq("POST", "/v1/admin/keys/"+k.ID+"/refresh", "", 0), &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: randNonce()}); res.Code != api.CodePermDenied {
		t.Fatalf("user reshare: %+v", res)
	}
	// A failure report from a participant fails it at once; the key stays as it was.
	res := h.reshare(k, `{"threshold":3}`, []string{"n2", "n3"})
	r := h.f.Request(res.RequestID)
	if rr := h.reportAs("n1", "n1", TypeCeremonyFailed, &CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Code: "ceremony.failed", Detail: "timeout"}); !rr.OK() {
		t.Fatalf("failure report of a new party: %+v", rr)
	}
	if r := h.f.Request(r.ID); r.Status != StatusFailed {
		t.Fatalf("after a failure: %+v", r)
	}
	if got := h.f.Key(k.ID); got.Resharing != nil || got.Threshold != 2 {
		t.Fatalf("key after a failed reshare: %+v", got)
	}
	// The leader's timeout fails a running reshare the same way.
	res = h.reshare(k, "", []string{"n1", "n2"})
	if rr := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: res.RequestID, Code: "ceremony.failed", Detail: "reshare timed out"}); !rr.OK() {
		t.Fatalf("timeout: %+v", rr)
	}
	if got := h.f.Key(k.ID); got.Resharing != nil {
		t.Fatalf("key after a timed-out reshare: %+v", got)
	}
}
