package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/custos/custos/internal/api"
)

// Governance (API.md "Governance: policies and approvals") and PSBT signing ("Bitcoin:
// PSBT signing and broadcast"): the objects are internal/api's, named here so that code
// outside the module can use them.
type (
	// Policy is a policy as the API shows it.
	Policy = api.Policy
	// PolicyBody is a policy's writable fields (the admin SDK's CreatePolicy and
	// UpdatePolicy).
	PolicyBody = api.PolicyBody
	// PolicyRule is a policy's rule: Kind and the fields of that kind only.
	PolicyRule = api.PolicyRule
	// PolicyFilters narrow a policy's scope.
	PolicyFilters = api.PolicyFilters
	// ApprovalGroup is a group of approvers (user ids) of which Quorum must approve.
	ApprovalGroup = api.ApprovalGroup
	// Evaluation is a dry run's answer: the decision and the policies that fired.
	Evaluation = api.Evaluation
	// MatchedPolicy is one policy whose rule fired, and why.
	MatchedPolicy = api.MatchedPolicy
	// Approval is an approval as the API shows it.
	Approval = api.Approval
	// ApprovalGroupState is a group of an approval with its decisions so far.
	ApprovalGroupState = api.ApprovalGroupState
	// Decision is one approver's decision.
	Decision = api.Decision
	// Initiator is who started a governed request.
	Initiator = api.Initiator
	// ApprovalSummary is what the approvers are asked to approve.
	ApprovalSummary = api.ApprovalSummary
	// Output is one output of a transaction as the nodes read it.
	Output = api.Output
	// PSBTBody is POST /v1/keys/{key_id}/psbt's body.
	PSBTBody = api.PSBTBody
	// PSBTInput names an input to sign and the key's child that it spends.
	PSBTInput = api.PSBTInput
	// PSBTChange declares an output as change, paying the key's child at its path.
	PSBTChange = api.PSBTChange
	// Broadcast is the outcome of a signed transaction's broadcast.
	Broadcast = api.Broadcast
)

// Policy activities, rule kinds, actions, and approval statuses and decisions, as
// internal/api defines them.
const (
	ActivitySign         = api.ActivitySign
	ActivityKeygen       = api.ActivityKeygen
	ActivityKeyDelete    = api.ActivityKeyDelete
	ActivityAccessGrant  = api.ActivityAccessGrant
	ActivityPolicyModify = api.ActivityPolicyModify
	ActivityMemberChange = api.ActivityMemberChange

	RuleAlways             = api.RuleAlways
	RuleAmountLimit        = api.RuleAmountLimit
	RuleAmountVelocity     = api.RuleAmountVelocity
	RuleCountVelocity      = api.RuleCountVelocity
	RuleRecipientAllowlist = api.RuleRecipientAllowlist
	RuleTimeWindow         = api.RuleTimeWindow

	ActionBlock           = api.ActionBlock
	ActionRequireApproval = api.ActionRequireApproval
	ActionAllow           = api.ActionAllow

	ApprovalPending  = api.ApprovalPending
	ApprovalApproved = api.ApprovalApproved
	ApprovalDenied   = api.ApprovalDenied
	ApprovalExpired  = api.ApprovalExpired

	DecisionApprove = api.DecisionApprove
	DecisionDeny    = api.DecisionDeny

	// PermPoliciesRead lets a user read policies (ListPolicies, GetPolicy).
	PermPoliciesRead = api.PermPoliciesRead
)

// DoStatus is Do that also returns the HTTP status of a 2xx answer, for routes whose
// answer differs between 200/201 and 202 (the admin SDK's policy changes).
func (c *Client) DoStatus(ctx context.Context, method, path string, body, out any) (int, error) {
	return c.do(ctx, method, path, body, out)
}

func idPath(what, prefix, id, suffix string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("client: empty %s id", what)
	}
	return prefix + url.PathEscape(id) + suffix, nil
}

// listAllQuery is listAll for a route that takes query parameters besides limit and
// after (ListAll appends its own query to path).
func listAllQuery[T any](ctx context.Context, c *Client, path string, query url.Values, field string) ([]T, error) {
	out := []T{}
	after := ""
	seen := map[string]bool{}
	for range maxPages {
		q := url.Values{}
		for k, vs := range query {
			q[k] = append([]string(nil), vs...)
		}
		q.Set("limit", "1000")
		if after != "" {
			q.Set("after", after)
		}
		var page map[string]json.RawMessage
		if err := c.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		var items []T
		if raw, ok := page[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("client: decode %s page: %w", path, err)
			}
		}
		out = append(out, items...)
		after = NextCursor(page["next"])
		if after == "" {
			return out, nil
		}
		if seen[after] {
			return nil, fmt.Errorf("client: %s: pagination does not advance", path)
		}
		seen[after] = true
	}
	return nil, fmt.Errorf("client: %s: more than %d pages", path, maxPages)
}

// ListPolicies returns every policy, archived ones included (GET /v1/admin/policies,
// following pages; the admin, or a user with policies:read).
func (c *Client) ListPolicies(ctx context.Context) ([]Policy, error) {
	return listAllQuery[Policy](ctx, c, "/v1/admin/policies", nil, "policies")
}

// GetPolicy returns one policy (GET /v1/admin/policies/{policy_id}).
func (c *Client) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	p, err := idPath("policy", "/v1/admin/policies/", id, "")
	if err != nil {
		return nil, err
	}
	var out Policy
	if err := c.Do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// evaluateBody is POST /v1/policies/evaluate's body with the judged request's body kept
// as the caller's JSON.
type evaluateBody struct {
	Route string          `json:"route"`
	Body  json.RawMessage `json:"body,omitempty"`
}

// evaluationBody builds POST /v1/policies/evaluate's body: route is "METHOD /v1/path"
// with the real ids (e.g. "POST /v1/keys/key_1/psbt"), body the request's body as the
// caller would send it: a value that encodes to a JSON object, or its JSON text as a
// json.RawMessage, []byte or string; nil for none.
func evaluationBody(route string, body any) (json.RawMessage, error) {
	if route == "" {
		return nil, errors.New("client: evaluate needs a route, e.g. \"POST /v1/keys/KEY_ID/sign\"")
	}
	var raw json.RawMessage
	switch b := body.(type) {
	case nil:
	case json.RawMessage:
		raw = b
	case []byte:
		raw = b
	case string:
		raw = json.RawMessage(b)
	default:
		enc, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encode the evaluated body: %w", err)
		}
		raw = enc
	}
	if len(raw) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, errors.New("client: the evaluated body must be a JSON object")
		}
	}
	return json.Marshal(evaluateBody{Route: route, Body: raw})
}

// EvaluatePolicies asks what the policies would decide about a request, without making
// it (POST /v1/policies/evaluate; a dry run that changes nothing but the nonce). route
// is "METHOD /v1/path" with the real ids (e.g. "POST /v1/keys/key_1/psbt"), body the
// request's body as the caller would send it: a value that encodes to a JSON object, or
// its JSON text as a json.RawMessage, []byte or string; nil for none.
func (c *Client) EvaluatePolicies(ctx context.Context, route string, body any) (*Evaluation, error) {
	raw, err := evaluationBody(route, body)
	if err != nil {
		return nil, err
	}
	var out Evaluation
	if err := c.Do(ctx, http.MethodPost, "/v1/policies/evaluate", raw, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListApprovals returns the approvals the caller may see with that status (ApprovalPending,
// …; "" for all), following pages (GET /v1/approvals): for a user those it may decide and
// those it initiated, for the admin all. The list is never nil.
func (c *Client) ListApprovals(ctx context.Context, status string) ([]Approval, error) {
	var q url.Values
	if status != "" {
		q = url.Values{"status": {status}}
	}
	return listAllQuery[Approval](ctx, c, "/v1/approvals", q, "approvals")
}

// GetApproval returns one approval (GET /v1/approvals/{approval_id}).
func (c *Client) GetApproval(ctx context.Context, id string) (*Approval, error) {
	p, err := idPath("approval", "/v1/approvals/", id, "")
	if err != nil {
		return nil, err
	}
	var out Approval
	if err := c.Do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decide records the caller's decision (DecisionApprove or DecisionDeny) on an approval,
// with an optional reason, and returns the approval (POST
// /v1/approvals/{approval_id}/decisions; a user with approvals:decide in one of its
// groups). Deciding twice is 409 approval.already_decided, on a closed approval 409
// approval.closed, on one's own request 403 approval.self_approval.
func (c *Client) Decide(ctx context.Context, id, decision, reason string) (*Approval, error) {
	p, err := idPath("approval", "/v1/approvals/", id, "/decisions")
	if err != nil {
		return nil, err
	}
	if decision != DecisionApprove && decision != DecisionDeny {
		return nil, fmt.Errorf("client: decision must be %q or %q, got %q", DecisionApprove, DecisionDeny, decision)
	}
	var out Approval
	if err := c.Do(ctx, http.MethodPost, p, api.DecisionBody{Decision: decision, Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Approve approves an approval (Decide with DecisionApprove).
func (c *Client) Approve(ctx context.Context, id, reason string) (*Approval, error) {
	return c.Decide(ctx, id, DecisionApprove, reason)
}

// Deny denies an approval (Decide with DecisionDeny): one deny denies the request.
func (c *Client) Deny(ctx context.Context, id, reason string) (*Approval, error) {
	return c.Decide(ctx, id, DecisionDeny, reason)
}

// CancelRequest cancels a request that waits for its approval or its delay, and returns
// it, now denied (POST /v1/requests/{request_id}/cancel; the initiator or an approver).
func (c *Client) CancelRequest(ctx context.Context, id string) (*Request, error) {
	p, err := idPath("request", "/v1/requests/", id, "/cancel")
	if err != nil {
		return nil, err
	}
	var out Request
	if err := c.Do(ctx, http.MethodPost, p, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SignPSBT signs the inputs body lists of a PSBT (base64) with the key or its children
// (POST /v1/keys/{key_id}/psbt). It returns the request: signed (200), with the
// finalized PSBT, TxHex, TxID, FeeSats, SentSats, Outputs and, when asked, Broadcast (a
// failed broadcast is Broadcast.Error, the signed transaction is returned either way); or
// still pending (202: StatusPendingApproval with ApprovalID, or running; poll with
// WaitRequest). A blocked request (403 policy.blocked), a denied or failed one is an
// *APIError whose Request field holds the request; a PSBT the nodes refuse is 400
// psbt.invalid, psbt.input_not_ours or psbt.change_mismatch.
func (c *Client) SignPSBT(ctx context.Context, keyID string, body PSBTBody) (*Request, error) {
	p, err := idPath("key", "/v1/keys/", keyID, "/psbt")
	if err != nil {
		return nil, err
	}
	if body.PSBT == "" {
		return nil, errors.New("client: empty PSBT")
	}
	if body.Inputs == nil {
		body.Inputs = []PSBTInput{}
	}
	var out Request
	if err := c.Do(ctx, http.MethodPost, p, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
