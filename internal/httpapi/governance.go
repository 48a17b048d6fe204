package httpapi

import (
	"net/http"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/state"
)

// The governance routes (API.md "Governance"): policies, their evaluation, approvals and
// the cancellation of a request that waits. The FSM decides everything when the signed
// request applies; these handlers answer from the state it left.

// hPolicyCreate answers POST /v1/admin/policies: 201 with the policy, or 202 with the
// request that waits for the approval a policy.modify policy asks.
func (s *Server) hPolicyCreate(x *exchange) *apiError {
	return s.policyChanged(x, http.StatusCreated)
}

// hPolicyChange answers PUT and DELETE /v1/admin/policies/{policy_id}: 200 with the
// policy (replaced, or archived), or 202 as above.
func (s *Server) hPolicyChange(x *exchange) *apiError {
	return s.policyChanged(x, http.StatusOK)
}

func (s *Server) policyChanged(x *exchange, status int) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	if res.PolicyID == "" && res.RequestID != "" {
		if r := s.st.Request(res.RequestID); r != nil {
			x.json(http.StatusAccepted, s.requestView(r))
			return nil
		}
	}
	p := s.st.Policy(res.PolicyID)
	if p == nil {
		return errf(api.CodeInternal, "policy vanished")
	}
	x.json(status, p.View())
	return nil
}

func (s *Server) hPolicyList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	var out api.PolicyList
	out.Policies, out.Next = page(s.st.Policies(after, limit+1), limit,
		func(p policy.Record) string { return p.ID },
		func(p policy.Record) api.Policy { return p.View() })
	x.json(http.StatusOK, out)
	return nil
}

func (s *Server) hPolicyGet(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	p := s.st.Policy(res.PolicyID)
	if p == nil {
		return errf(api.CodePolicyNotFound, "no such policy")
	}
	x.json(http.StatusOK, p.View())
	return nil
}

// hEvaluate answers POST /v1/policies/evaluate with the FSM's dry run.
func (s *Server) hEvaluate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	if res.Evaluation == nil {
		return errf(api.CodeInternal, "no evaluation")
	}
	x.json(http.StatusOK, res.Evaluation)
	return nil
}

// hApprovalList answers GET /v1/approvals: the admin sees all, a user (or its access
// key) those it may decide and those it initiated.
func (s *Server) hApprovalList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	all := x.caller.Kind == state.CallerAdmin
	user := x.caller.UserID
	var list []*state.Approval
	if x.caller.Kind == state.CallerAccessKey {
		// An access key: what its grantor initiated on the keys it covers.
		ak := s.st.AccessKey(x.caller.AccessKeyID)
		if ak == nil {
			return errf(api.CodeAuthTokenInvalid, "unknown access key")
		}
		for _, ap := range s.st.Approvals(ak.Grantor, false, x.r.URL.Query().Get("status"), after, maxApprovalScan) {
			if state.ApprovalVisibleToAccessKey(ap, ak.Grantor, ak) && len(list) <= limit {
				list = append(list, ap)
			}
		}
	} else {
		list = s.st.Approvals(user, all, x.r.URL.Query().Get("status"), after, limit+1)
	}
	var out api.ApprovalList
	out.Approvals, out.Next = page(list, limit,
		func(ap *state.Approval) string { return ap.ID },
		func(ap *state.Approval) api.Approval { return ap.View() })
	x.json(http.StatusOK, out)
	return nil
}

// maxApprovalScan bounds the approvals read to fill an access key's page.
const maxApprovalScan = 10000

// hApproval answers GET /v1/approvals/{id} and a decision on it.
func (s *Server) hApproval(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	ap := s.st.Approval(res.ApprovalID)
	if ap == nil {
		return errf(api.CodeApprovalNotFound, "no such approval")
	}
	x.json(http.StatusOK, ap.View())
	return nil
}

// hRequestCancel answers POST /v1/requests/{id}/cancel with the request, now denied.
func (s *Server) hRequestCancel(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	r := s.st.Request(res.RequestID)
	if r == nil {
		return errf(api.CodeRequestNotFound, "no such request")
	}
	x.json(http.StatusOK, s.requestView(r))
	return nil
}
