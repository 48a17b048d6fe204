package client

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
	"time"

	"github.com/custos/custos/internal/api"
)

// exchange is one scripted call: what the client must send (method and request URI, and
// the body, "" for none) and what the fake node answers.
type exchange struct {
	call, body string
	status     int
	answer     string
}

// scripted is a node that answers a fixed sequence of calls and fails the test on any
// other: it checks each call's method, path, query and exact body.
type scripted struct {
	t     *testing.T
	mu    sync.Mutex
	steps []exchange
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	got := r.Method + " " + r.URL.RequestURI()
	if len(s.steps) == 0 {
		s.t.Errorf("unexpected call %s %s", got, body)
		w.WriteHeader(500)
		return
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	if got != st.call || string(body) != st.body {
		s.t.Errorf("call\n got %s %s\nwant %s %s", got, body, st.call, st.body)
	}
	if len(body) > 0 && r.Header.Get("Content-Type") != api.ContentTypeJSON {
		s.t.Errorf("%s: Content-Type %q", got, r.Header.Get("Content-Type"))
	}
	w.Header().Set(api.HeaderRequestID, "rq_test")
	if st.status >= 400 {
		w.Header().Set("Content-Type", api.ContentTypeProblem)
	} else {
		w.Header().Set("Content-Type", api.ContentTypeJSON)
	}
	w.WriteHeader(st.status)
	_, _ = io.WriteString(w, st.answer)
}

func (s *scripted) done() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.steps) > 0 {
		s.t.Errorf("%d scripted calls not made, first %s", len(s.steps), s.steps[0].call)
	}
}

// scriptedClient is a client (no credentials) of a node that answers steps.
func scriptedClient(t *testing.T, steps ...exchange) (*Client, *scripted) {
	t.Helper()
	s := &scripted{t: t, steps: steps}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c, err := NewCustom(srv.URL, func(*http.Request, []byte, time.Time) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func problem(code, detail string, req *api.Request) string {
	b, _ := json.Marshal(api.Problem{Type: api.ProblemTypeBlank, Title: api.Title(code), Status: api.StatusOf(code), Code: code, Detail: detail, RequestID: "rq_test", Request: req})
	return string(b)
}

const policyJSON = `{"policy_id":"pol_1","name":"big payments","activity":"sign","rule":{"kind":"amount_limit","max_sats":100000000},` +
	`"filters":{"labels":["treasury"]},"action":"require_approval","approval_groups":[{"name":"treasury","members":[4,5,6],"quorum":2}],` +
	`"initiator_can_approve":false,"approval_timeout":"24h","delay":"0s","status":"active","version":1,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`

const approvalJSON = `{"approval_id":"apr_1","request_id":"req_1","activity":"sign","initiator":{"user_id":3,"access_key_id":""},"status":"pending",` +
	`"policy_ids":["pol_1"],"groups":[{"name":"treasury","quorum":2,"members":[4,5,6],"decisions":[{"user_id":4,"decision":"approve","reason":"ok","time":"2026-01-02T03:05:00Z"}]}],` +
	`"summary":{"key_id":"key_1","outputs":[{"address":"bcrt1qxyz","amount_sats":150000000,"change":false}],"fee_sats":1000},` +
	`"initiator_can_approve":false,"delay":"0s","expires_at":"2026-01-03T03:04:05Z","created_at":"2026-01-02T03:04:05Z"}`

func TestPolicyAndApprovalRoutes(t *testing.T) {
	c, s := scriptedClient(t,
		exchange{"GET /v1/admin/policies?limit=1000", "", 200, `{"policies":[` + policyJSON + `],"next":"pol_1"}`},
		exchange{"GET /v1/admin/policies?after=pol_1&limit=1000", "", 200, `{"policies":[]}`},
		exchange{"GET /v1/admin/policies/pol%2F2", "", 404, problem(api.CodePolicyNotFound, "no such policy", nil)},
		exchange{"GET /v1/admin/policies/pol_1", "", 200, policyJSON},
		exchange{"POST /v1/policies/evaluate", `{"route":"POST /v1/keys/key_1/sign","body":{"message":"00"}}`, 200,
			`{"decision":"block","matched":[{"policy_id":"pol_1","name":"big payments","rule":"amount_limit","action":"block","why":"no transaction to read"}]}`},
		exchange{"POST /v1/policies/evaluate", `{"route":"POST /v1/keys/key_1/psbt","body":{"psbt":"cHNidP8=","network":"regtest"}}`, 200, `{"decision":"allow","matched":[]}`},
		exchange{"POST /v1/policies/evaluate", `{"route":"DELETE /v1/keys/key_1"}`, 200, `{"decision":"allow","matched":[]}`},
		exchange{"GET /v1/approvals?limit=1000&status=pending", "", 200, `{"approvals":[` + approvalJSON + `],"next":"apr_1"}`},
		exchange{"GET /v1/approvals?after=apr_1&limit=1000&status=pending", "", 200, `{"approvals":[]}`},
		exchange{"GET /v1/approvals?limit=1000", "", 200, `{"approvals":[]}`},
		exchange{"GET /v1/approvals/apr_1", "", 200, approvalJSON},
		exchange{"POST /v1/approvals/apr_1/decisions", `{"decision":"approve","reason":"looks right"}`, 200, approvalJSON},
		exchange{"POST /v1/approvals/apr_1/decisions", `{"decision":"deny"}`, 409, problem(api.CodeApprovalAlreadyDecided, "user 5 decided already", nil)},
		exchange{"POST /v1/requests/req_1/cancel", "", 200, `{"request_id":"req_1","kind":"sign","status":"denied","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","message":"","error":{"code":"request.cancelled","detail":"cancelled by user 3"}}`},
	)
	ctx := context.Background()

	ps, err := c.ListPolicies(ctx)
	if err != nil || len(ps) != 1 || ps[0].PolicyID != "pol_1" || ps[0].Rule.MaxSats == nil || *ps[0].Rule.MaxSats != 100000000 ||
		ps[0].ApprovalGroups[0].Quorum != 2 || ps[0].Filters.Labels[0] != "treasury" || ps[0].Version != 1 {
		t.Fatalf("ListPolicies: %+v %v", ps, err)
	}
	_, err = c.GetPolicy(ctx, "pol/2")
	if ae := (*APIError)(nil); !errors.As(err, &ae) || ae.Code != api.CodePolicyNotFound || ae.Status != 404 {
		t.Fatalf("GetPolicy of an unknown policy: %v", err)
	}
	if p, err := c.GetPolicy(ctx, "pol_1"); err != nil || p.Name != "big payments" || p.Action != ActionRequireApproval {
		t.Fatalf("GetPolicy: %+v %v", p, err)
	}

	ev, err := c.EvaluatePolicies(ctx, "POST /v1/keys/key_1/sign", map[string]any{"message": "00"})
	if err != nil || ev.Decision != ActionBlock || len(ev.Matched) != 1 || ev.Matched[0].Why != "no transaction to read" {
		t.Fatalf("EvaluatePolicies: %+v %v", ev, err)
	}
	if ev, err = c.EvaluatePolicies(ctx, "POST /v1/keys/key_1/psbt", json.RawMessage(`{"psbt":"cHNidP8=","network":"regtest"}`)); err != nil || ev.Decision != ActionAllow {
		t.Fatalf("EvaluatePolicies with a raw body: %+v %v", ev, err)
	}
	if _, err = c.EvaluatePolicies(ctx, "DELETE /v1/keys/key_1", nil); err != nil {
		t.Fatalf("EvaluatePolicies without a body: %v", err)
	}

	as, err := c.ListApprovals(ctx, ApprovalPending)
	if err != nil || len(as) != 1 || as[0].ApprovalID != "apr_1" || as[0].Initiator.UserID != 3 || len(as[0].Groups[0].Decisions) != 1 ||
		as[0].Summary.FeeSats == nil || *as[0].Summary.FeeSats != 1000 || as[0].Summary.Outputs[0].AmountSats != 150000000 {
		t.Fatalf("ListApprovals: %+v %v", as, err)
	}
	if as, err = c.ListApprovals(ctx, ""); err != nil || as == nil || len(as) != 0 {
		t.Fatalf("ListApprovals of none: %#v %v", as, err)
	}
	if ap, err := c.GetApproval(ctx, "apr_1"); err != nil || ap.RequestID != "req_1" || ap.ExpiresAt.IsZero() {
		t.Fatalf("GetApproval: %+v %v", ap, err)
	}
	if ap, err := c.Approve(ctx, "apr_1", "looks right"); err != nil || ap.ApprovalID != "apr_1" {
		t.Fatalf("Approve: %+v %v", ap, err)
	}
	if _, err := c.Deny(ctx, "apr_1", ""); CodeOf(err) != api.CodeApprovalAlreadyDecided {
		t.Fatalf("Deny after deciding: %v", err)
	}
	r, err := c.CancelRequest(ctx, "req_1")
	if err != nil || r.Status != StatusDenied || r.Error == nil || r.Error.Code != api.CodeRequestCancelled {
		t.Fatalf("CancelRequest: %+v %v", r, err)
	}
	s.done()

	// Refused before anything is sent.
	for name, err := range map[string]error{
		"GetPolicy":        func() error { _, err := c.GetPolicy(ctx, ""); return err }(),
		"GetApproval":      func() error { _, err := c.GetApproval(ctx, ""); return err }(),
		"Approve":          func() error { _, err := c.Approve(ctx, "", ""); return err }(),
		"Decide":           func() error { _, err := c.Decide(ctx, "apr_1", "abstain", ""); return err }(),
		"CancelRequest":    func() error { _, err := c.CancelRequest(ctx, ""); return err }(),
		"Evaluate route":   func() error { _, err := c.EvaluatePolicies(ctx, "", nil); return err }(),
		"Evaluate array":   func() error { _, err := c.EvaluatePolicies(ctx, "POST /v1/keys", "[1]"); return err }(),
		"Evaluate garbage": func() error { _, err := c.EvaluatePolicies(ctx, "POST /v1/keys", []byte("{")); return err }(),
		"Evaluate scalar":  func() error { _, err := c.EvaluatePolicies(ctx, "POST /v1/keys", 7); return err }(),
		"SignPSBT key":     func() error { _, err := c.SignPSBT(ctx, "", PSBTBody{PSBT: "cHNidP8="}); return err }(),
		"SignPSBT psbt":    func() error { _, err := c.SignPSBT(ctx, "key_1", PSBTBody{}); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSignPSBT(t *testing.T) {
	blocked := &api.Request{RequestID: "req_3", Kind: api.KindSign, Status: api.StatusBlocked, KeyID: "key_1",
		Error: &api.RequestError{Code: api.CodePolicyBlocked, Detail: "pol_2 (no payments on Sunday)"}}
	body := `{"psbt":"cHNidP8BAA==","network":"regtest","inputs":[{"index":0,"derivation_path":"m/0/1"},{"index":2}],` +
		`"change":[{"output":1,"derivation_path":"m/1/0"}],"broadcast":true,"idempotency_key":"pay-1"}`
	c, s := scriptedClient(t,
		exchange{"POST /v1/keys/key_1/psbt", body, 200, `{"request_id":"req_1","kind":"sign","status":"signed","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","message":"",` +
			`"psbt":"cHNidP8BAAA=","tx_hex":"0200","txid":"ab12","fee_sats":1000,"sent_sats":50000,"outputs":[{"address":"bcrt1qa","amount_sats":50000,"change":false},{"address":"bcrt1qb","amount_sats":9000,"change":true}],` +
			`"broadcast":{"error":{"code":"broadcast.failed","detail":"insufficient fee"}}}`},
		exchange{"POST /v1/keys/key_1/psbt", `{"psbt":"cHNidP8BAA==","network":"regtest","inputs":[]}`, 202,
			`{"request_id":"req_2","kind":"sign","status":"pending_approval","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","message":"","approval_id":"apr_2","fee_sats":1000}`},
		exchange{"POST /v1/keys/key%2F1/psbt", `{"psbt":"cHNidP8BAA==","network":"regtest","inputs":[{"index":0}]}`, 403, problem(api.CodePolicyBlocked, "pol_2 (no payments on Sunday)", blocked)},
	)
	ctx := context.Background()
	r, err := c.SignPSBT(ctx, "key_1", PSBTBody{PSBT: "cHNidP8BAA==", Network: "regtest",
		Inputs:    []PSBTInput{{Index: 0, DerivationPath: "m/0/1"}, {Index: 2}},
		Change:    []PSBTChange{{Output: 1, DerivationPath: "m/1/0"}},
		Broadcast: true, IdempotencyKey: "pay-1"})
	if err != nil || r.Status != StatusSigned || r.PSBT != "cHNidP8BAAA=" || r.TxHex != "0200" || r.TxID != "ab12" || *r.FeeSats != 1000 || *r.SentSats != 50000 ||
		len(r.Outputs) != 2 || !r.Outputs[1].Change || r.Broadcast == nil || r.Broadcast.Error == nil || r.Broadcast.Error.Code != api.CodeBroadcastFailed {
		t.Fatalf("signed: %+v %v", r, err)
	}
	r, err = c.SignPSBT(ctx, "key_1", PSBTBody{PSBT: "cHNidP8BAA==", Network: "regtest"})
	if err != nil || r.Status != StatusPendingApproval || r.ApprovalID != "apr_2" || Final(r.Status) {
		t.Fatalf("pending approval: %+v %v", r, err)
	}
	_, err = c.SignPSBT(ctx, "key/1", PSBTBody{PSBT: "cHNidP8BAA==", Network: "regtest", Inputs: []PSBTInput{{Index: 0}}})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != api.CodePolicyBlocked || ae.Status != 403 || ae.Request == nil || ae.Request.Status != StatusBlocked ||
		ae.Request.Error.Code != api.CodePolicyBlocked || !strings.Contains(ae.Detail, "pol_2") {
		t.Fatalf("blocked: %#v", err)
	}
	s.done()
}

// TestDoStatus tells a 202 from a 200 or 201.
func TestDoStatus(t *testing.T) {
	c, s := scriptedClient(t,
		exchange{"POST /v1/admin/policies", `{"name":"x"}`, 201, policyJSON},
		exchange{"PUT /v1/admin/policies/pol_1", `{"name":"y"}`, 202, `{"request_id":"req_9","status":"pending_approval","approval_id":"apr_9"}`},
	)
	var p Policy
	if st, err := c.DoStatus(context.Background(), http.MethodPost, "/v1/admin/policies", map[string]string{"name": "x"}, &p); err != nil || st != 201 || p.PolicyID != "pol_1" {
		t.Fatalf("201: %d %v", st, err)
	}
	var r Request
	if st, err := c.DoStatus(context.Background(), http.MethodPut, "/v1/admin/policies/pol_1", map[string]string{"name": "y"}, &r); err != nil || st != 202 || r.ApprovalID != "apr_9" {
		t.Fatalf("202: %d %v", st, err)
	}
	s.done()
}
