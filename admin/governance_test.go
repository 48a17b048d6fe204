package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

// govCall is one scripted call: what the SDK must send (method and request URI, and the
// body, "" for none) and what the fake node answers.
type govCall struct {
	call, body string
	status     int
	answer     string
}

// govNode answers a fixed sequence of admin calls, checking each call's method, path,
// query and exact body, and that it carries an admin token.
type govNode struct {
	t     *testing.T
	mu    sync.Mutex
	steps []govCall
}

func (n *govNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n.mu.Lock()
	defer n.mu.Unlock()
	got := r.Method + " " + r.URL.RequestURI()
	if len(n.steps) == 0 {
		n.t.Errorf("unexpected call %s %s", got, body)
		w.WriteHeader(500)
		return
	}
	st := n.steps[0]
	n.steps = n.steps[1:]
	if got != st.call || string(body) != st.body {
		n.t.Errorf("call\n got %s %s\nwant %s %s", got, body, st.call, st.body)
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		n.t.Errorf("%s without an admin token", got)
	}
	w.Header().Set(api.HeaderRequestID, "rq_test")
	ct := api.ContentTypeJSON
	if st.status >= 400 {
		ct = api.ContentTypeProblem
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(st.status)
	_, _ = io.WriteString(w, st.answer)
}

func govAdmin(t *testing.T, steps ...govCall) (*Admin, *govNode) {
	t.Helper()
	n := &govNode{t: t, steps: steps}
	srv := httptest.NewServer(n)
	t.Cleanup(srv.Close)
	a, err := New(make([]byte, 32), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return a, n
}

const (
	polJSON = `{"policy_id":"pol_1","name":"two of treasury","activity":"sign","rule":{"kind":"amount_limit","max_sats":100000000},` +
		`"filters":{"key_ids":["key_1"]},"action":"require_approval","approval_groups":[{"name":"treasury","members":[4,5,6],"quorum":2}],` +
		`"initiator_can_approve":false,"approval_timeout":"24h","delay":"1h","status":"active","version":%d,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`
	pendingJSON = `{"request_id":"req_7","kind":"policy.modify","status":"pending_approval","key_id":"","created_at":"2026-01-02T03:04:05Z","approval_id":"apr_7"}`
)

func pol(version string) string { return strings.Replace(polJSON, "%d", version, 1) }

func TestPolicyAdmin(t *testing.T) {
	maxSats := int64(100000000)
	body := PolicyBody{Name: "two of treasury", Activity: api.ActivitySign, Rule: PolicyRule{Kind: api.RuleAmountLimit, MaxSats: &maxSats},
		Filters: &PolicyFilters{KeyIDs: []string{"key_1"}}, Action: api.ActionRequireApproval,
		ApprovalGroups: []ApprovalGroup{{Name: "treasury", Members: []uint64{4, 5, 6}, Quorum: 2}}, Delay: "1h"}
	wire := `{"name":"two of treasury","activity":"sign","rule":{"kind":"amount_limit","max_sats":100000000},"filters":{"key_ids":["key_1"]},` +
		`"action":"require_approval","approval_groups":[{"name":"treasury","members":[4,5,6],"quorum":2}],"delay":"1h"}`
	archived := strings.Replace(pol("3"), `"status":"active"`, `"status":"archived"`, 1)
	a, n := govAdmin(t,
		govCall{"POST /v1/admin/policies", wire, 201, pol("1")},
		govCall{"POST /v1/admin/policies", wire, 202, pendingJSON},
		govCall{"POST /v1/admin/policies", `{"name":"","activity":"","rule":{"kind":""},"action":""}`, 400,
			`{"type":"about:blank","title":"malformed request","status":400,"code":"request.malformed","detail":"name: must be 1–64 characters of UTF-8","request_id":"rq_test"}`},
		govCall{"PUT /v1/admin/policies/pol_1", wire, 200, pol("2")},
		govCall{"PUT /v1/admin/policies/pol_1", wire, 202, pendingJSON},
		govCall{"DELETE /v1/admin/policies/pol_1", "", 200, archived},
		govCall{"DELETE /v1/admin/policies/pol_9", "", 404, `{"code":"policy.not_found","status":404,"detail":"no such policy"}`},
		govCall{"GET /v1/admin/policies?limit=1000", "", 200, `{"policies":[` + pol("1") + `],"next":"pol_1"}`},
		govCall{"GET /v1/admin/policies?after=pol_1&limit=1000", "", 200, `{"policies":[` + archived + `]}`},
		govCall{"GET /v1/admin/policies/pol_1", "", 200, pol("2")},
		govCall{"POST /v1/policies/evaluate", `{"route":"POST /v1/admin/policies","body":{"name":"x"}}`, 200,
			`{"decision":"require_approval","matched":[{"policy_id":"pol_0","name":"policies need two","rule":"always","action":"require_approval","why":"always"}]}`},
		govCall{"GET /v1/approvals?limit=1000&status=expired", "", 200, `{"approvals":[]}`},
		govCall{"GET /v1/approvals/apr_7", "", 200, `{"approval_id":"apr_7","request_id":"req_7","activity":"policy.modify","initiator":{"user_id":0,"access_key_id":"","admin":true},"status":"pending","policy_ids":["pol_0"],"groups":[],"summary":{"route":"POST /v1/admin/policies","body":"{}"},"initiator_can_approve":false,"delay":"0s","expires_at":"2026-01-03T03:04:05Z","created_at":"2026-01-02T03:04:05Z"}`},
		govCall{"POST /v1/requests/req_7/cancel", "", 200, strings.Replace(pendingJSON, "pending_approval", "denied", 1)},
		govCall{"GET /v1/requests/req_7", "", 200, strings.Replace(pendingJSON, "pending_approval", "denied", 1)},
	)
	ctx := context.Background()

	p, r, err := a.CreatePolicy(ctx, body)
	if err != nil || r != nil || p == nil || p.PolicyID != "pol_1" || p.Version != 1 || p.Delay != "1h" || p.ApprovalGroups[0].Members[2] != 6 {
		t.Fatalf("CreatePolicy: %+v %+v %v", p, r, err)
	}
	p, r, err = a.CreatePolicy(ctx, body)
	if err != nil || p != nil || r == nil || r.Status != api.StatusPendingApproval || r.ApprovalID != "apr_7" || r.Kind != api.KindPolicyModify {
		t.Fatalf("CreatePolicy waiting for approval: %+v %+v %v", p, r, err)
	}
	_, _, err = a.CreatePolicy(ctx, PolicyBody{})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != api.CodeRequestMalformed || !strings.HasPrefix(ae.Detail, "name:") {
		t.Fatalf("CreatePolicy of an empty body: %v", err)
	}
	if p, r, err = a.UpdatePolicy(ctx, "pol_1", body); err != nil || r != nil || p.Version != 2 {
		t.Fatalf("UpdatePolicy: %+v %+v %v", p, r, err)
	}
	if p, r, err = a.UpdatePolicy(ctx, "pol_1", body); err != nil || p != nil || r.ApprovalID != "apr_7" {
		t.Fatalf("UpdatePolicy waiting for approval: %+v %+v %v", p, r, err)
	}
	if p, r, err = a.ArchivePolicy(ctx, "pol_1"); err != nil || r != nil || p.Status != api.PolicyArchived {
		t.Fatalf("ArchivePolicy: %+v %+v %v", p, r, err)
	}
	if _, _, err = a.ArchivePolicy(ctx, "pol_9"); client.CodeOf(err) != api.CodePolicyNotFound {
		t.Fatalf("ArchivePolicy of an unknown policy: %v", err)
	}
	ps, err := a.ListPolicies(ctx)
	if err != nil || len(ps) != 2 || ps[0].Status != api.PolicyActive || ps[1].Status != api.PolicyArchived {
		t.Fatalf("ListPolicies: %+v %v", ps, err)
	}
	if p, err = a.GetPolicy(ctx, "pol_1"); err != nil || p.Version != 2 {
		t.Fatalf("GetPolicy: %+v %v", p, err)
	}
	ev, err := a.EvaluatePolicies(ctx, "POST /v1/admin/policies", json.RawMessage(`{"name":"x"}`))
	if err != nil || ev.Decision != api.ActionRequireApproval || ev.Matched[0].PolicyID != "pol_0" {
		t.Fatalf("EvaluatePolicies: %+v %v", ev, err)
	}
	if as, err := a.ListApprovals(ctx, api.ApprovalExpired); err != nil || as == nil || len(as) != 0 {
		t.Fatalf("ListApprovals: %#v %v", as, err)
	}
	if ap, err := a.GetApproval(ctx, "apr_7"); err != nil || !ap.Initiator.Admin || ap.Summary.Route != "POST /v1/admin/policies" {
		t.Fatalf("GetApproval: %+v %v", ap, err)
	}
	if r, err = a.CancelRequest(ctx, "req_7"); err != nil || r.Status != api.StatusDenied {
		t.Fatalf("CancelRequest: %+v %v", r, err)
	}
	if r, err = a.GetRequest(ctx, "req_7"); err != nil || r.RequestID != "req_7" {
		t.Fatalf("GetRequest: %+v %v", r, err)
	}
	for name, err := range map[string]error{
		"UpdatePolicy":  func() error { _, _, err := a.UpdatePolicy(ctx, "", body); return err }(),
		"ArchivePolicy": func() error { _, _, err := a.ArchivePolicy(ctx, ""); return err }(),
		"GetPolicy":     func() error { _, err := a.GetPolicy(ctx, ""); return err }(),
	} {
		if err == nil {
			t.Errorf("%s with an empty id: accepted", name)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.steps) > 0 {
		t.Errorf("%d scripted calls not made, first %s", len(n.steps), n.steps[0].call)
	}
}
