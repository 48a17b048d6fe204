package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

// Governance (API.md "Governance: policies and approvals"): the admin's policies, their
// dry run, and the approvals of governed requests. The objects are internal/api's.
type (
	// Policy is a policy as the API shows it.
	Policy = api.Policy
	// PolicyBody is a policy's writable fields (CreatePolicy, UpdatePolicy).
	PolicyBody = api.PolicyBody
	// PolicyRule is a policy's rule: Kind and the fields of that kind only.
	PolicyRule = api.PolicyRule
	// PolicyFilters narrow a policy's scope.
	PolicyFilters = api.PolicyFilters
	// ApprovalGroup is a group of approvers (user ids) of which Quorum must approve.
	ApprovalGroup = api.ApprovalGroup
	// Evaluation is a dry run's answer: the decision and the policies that fired.
	Evaluation = api.Evaluation
	// Approval is an approval as the API shows it.
	Approval = api.Approval
	// Request is a request and its state: the answer of a policy change that waits for
	// approval, and of CancelRequest.
	Request = api.Request
)

// policyChange sends a policy change and tells its answers apart: 200/201 with the
// policy, or 202 with the request that waits for the approval a policy.modify policy
// asks (its ApprovalID names the approval; once approved it ends "active" with PolicyID).
func (a *Admin) policyChange(ctx context.Context, method, path string, body any) (*Policy, *Request, error) {
	var raw json.RawMessage
	status, err := a.c.DoStatus(ctx, method, path, body, &raw)
	if err != nil {
		return nil, nil, err
	}
	switch status {
	case http.StatusAccepted:
		var r Request
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, nil, fmt.Errorf("admin: decode the request of %s %s: %w", method, path, err)
		}
		return nil, &r, nil
	case http.StatusOK, http.StatusCreated:
		var p Policy
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, nil, fmt.Errorf("admin: decode the policy of %s %s: %w", method, path, err)
		}
		return &p, nil, nil
	default:
		return nil, nil, fmt.Errorf("admin: unexpected HTTP %d from %s %s", status, method, path)
	}
}

func policyPath(id string) (string, error) {
	if id == "" {
		return "", errors.New("admin: empty policy id")
	}
	return "/v1/admin/policies/" + url.PathEscape(id), nil
}

// CreatePolicy creates a policy (POST /v1/admin/policies) and returns it (version 1).
// When a policy.modify policy asks for approval it returns instead the request that
// waits (StatusPendingApproval, with ApprovalID); the policy exists once the approval
// completes (the request then ends "active" with its PolicyID). The node validates
// every field (400 request.malformed naming the field).
func (a *Admin) CreatePolicy(ctx context.Context, body PolicyBody) (*Policy, *Request, error) {
	return a.policyChange(ctx, http.MethodPost, "/v1/admin/policies", body)
}

// ListPolicies returns every policy, archived ones included (GET /v1/admin/policies,
// following pages).
func (a *Admin) ListPolicies(ctx context.Context) ([]Policy, error) {
	return a.c.ListPolicies(ctx)
}

// GetPolicy returns one policy (GET /v1/admin/policies/{policy_id}).
func (a *Admin) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	return a.c.GetPolicy(ctx, id)
}

// UpdatePolicy replaces a policy's writable fields (PUT /v1/admin/policies/{policy_id})
// and returns it with its version incremented, or the request that waits for approval
// (as CreatePolicy).
func (a *Admin) UpdatePolicy(ctx context.Context, id string, body PolicyBody) (*Policy, *Request, error) {
	p, err := policyPath(id)
	if err != nil {
		return nil, nil, err
	}
	return a.policyChange(ctx, http.MethodPut, p, body)
}

// ArchivePolicy archives a policy (DELETE /v1/admin/policies/{policy_id}): it stops
// applying and is kept, status "archived", for the audit. It returns the archived policy,
// or the request that waits for approval (as CreatePolicy).
func (a *Admin) ArchivePolicy(ctx context.Context, id string) (*Policy, *Request, error) {
	p, err := policyPath(id)
	if err != nil {
		return nil, nil, err
	}
	return a.policyChange(ctx, http.MethodDelete, p, nil)
}

// EvaluatePolicies asks what the policies would decide about a request, without making
// it (POST /v1/policies/evaluate). route is "METHOD /v1/path" with the real ids, body the
// request's body (a value that encodes to a JSON object, or its JSON text as a
// json.RawMessage, []byte or string; nil for none).
func (a *Admin) EvaluatePolicies(ctx context.Context, route string, body any) (*Evaluation, error) {
	return a.c.EvaluatePolicies(ctx, route, body)
}

// ListApprovals returns every approval with that status (api's ApprovalPending, …; ""
// for all), following pages (GET /v1/approvals).
func (a *Admin) ListApprovals(ctx context.Context, status string) ([]Approval, error) {
	return a.c.ListApprovals(ctx, status)
}

// GetApproval returns one approval (GET /v1/approvals/{approval_id}).
func (a *Admin) GetApproval(ctx context.Context, id string) (*Approval, error) {
	return a.c.GetApproval(ctx, id)
}

// CancelRequest cancels a request that waits for its approval or its delay (POST
// /v1/requests/{request_id}/cancel): the admin cancels the policy changes it initiated.
// It returns the request, now denied.
func (a *Admin) CancelRequest(ctx context.Context, id string) (*Request, error) {
	return a.c.CancelRequest(ctx, id)
}

// GetRequest returns a request's state (GET /v1/requests/{request_id}; the admin sees
// any), e.g. a policy change that waited for approval.
func (a *Admin) GetRequest(ctx context.Context, id string) (*Request, error) {
	return a.c.GetRequest(ctx, id)
}

// EventPage is one page of the event log as the admin sees it (every event): GET
// /v1/events without the stream (see client.EventPage).
func (a *Admin) EventPage(ctx context.Context, after uint64, limit int) (*client.EventList, error) {
	return a.c.EventPage(ctx, after, limit)
}

// Events follows the activity stream as the admin (every event), reconnecting and
// resuming after the last event it yielded (see client.Events).
func (a *Admin) Events(ctx context.Context, after uint64, opts ...client.StreamOption) iter.Seq2[*client.Event, error] {
	return a.c.Events(ctx, after, opts...)
}
