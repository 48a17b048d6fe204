package state

import (
	"fmt"
	"testing"
)

// TestRetentionIsReplicatedConfiguration: the admin sets how long finished requests are
// kept; from that entry on every node prunes by it (judged by stamps only); values out of
// bounds, fixed fields and non-admins are refused.
func TestRetentionIsReplicatedConfiguration(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	set := func(body string) Result {
		return h.submit("n1", h.admin("PUT", "/v1/admin/retention", body), nil)
	}
	for _, tc := range []struct{ name, body, code string }{
		{"empty", `{}`, "request.malformed"},
		{"below the bound", `{"finished_requests_s":60}`, "request.malformed"},
		{"above the bound", fmt.Sprintf(`{"finished_requests_s":%d}`, MaxRequestRetentionMs/1000+1), "request.malformed"},
		{"a fixed value", `{"nonces_s":10}`, "request.malformed"},
		{"negative", `{"dead_access_keys_s":-5}`, "request.malformed"},
		{"unknown field", `{"forever":true}`, "request.malformed"},
	} {
		if r := set(tc.body); r.Code != tc.code {
			t.Errorf("%s: %+v, want %s", tc.name, r, tc.code)
		}
	}
	if r := h.submit("n1", h.userReq("PUT", "/v1/admin/retention", `{"finished_requests_s":3600}`, 0), nil); r.Code != "perm.denied" {
		t.Fatalf("a user set the retention: %+v", r)
	}
	if got := h.f.Retention(); got.FinishedRequestsS != RequestRetentionMs/1000 || got.DeadAccessKeysS != AccessKeyRetentionMs/1000 || got.SessionNoncesS != 2*got.FinishedRequestsS {
		t.Fatalf("defaults %+v", got)
	}
	if r := set(`{"finished_requests_s":3600}`); !r.OK() {
		t.Fatalf("set: %+v", r)
	}
	if got := h.f.Retention(); got.FinishedRequestsS != 3600 || got.DeadAccessKeysS != AccessKeyRetentionMs/1000 {
		t.Fatalf("after set %+v", got)
	}
	res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"00"}`, 0), &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()})
	r := h.f.Request(res.RequestID)
	h.reportAs("n2", "n2", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: Signature{Sig: []byte("good")}})
	h.stamp += 3600*1000 - 10_000
	h.submit("n1", h.admin("GET", "/v1/admin/users", ""), nil)
	if h.f.Request(r.ID) == nil {
		t.Fatal("pruned before its hour")
	}
	h.stamp += 20_000
	h.submit("n1", h.admin("GET", "/v1/admin/users", ""), nil)
	if h.f.Request(r.ID) != nil {
		t.Fatal("kept past the retention the admin set")
	}
}
