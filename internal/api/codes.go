package api

import "net/http"

// Error codes (API.md "Errors"): the stable taxonomy clients branch on. Each has exactly
// one HTTP status and title in the table of Codes.
const (
	// CodeRequestMalformed: bad JSON syntax, unknown field or bad field value (400).
	CodeRequestMalformed = "request.malformed"
	// CodeRequestTooLarge: the body exceeds the node's limit (413).
	CodeRequestTooLarge = "request.too_large"
	// CodeRequestIdempotencyConflict: an idempotency key reused with another body (409).
	CodeRequestIdempotencyConflict = "request.idempotency_conflict"
	// CodeRequestConflict: the request conflicts with the current state (409).
	CodeRequestConflict = "request.conflict"
	// CodeRequestNotFound: no such request, or not the caller's (404).
	CodeRequestNotFound = "request.not_found"
	// CodeRequestCancelled: the request was cancelled during its delay (409).
	CodeRequestCancelled = "request.cancelled"
	// CodeRouteNotFound: no such route (404).
	CodeRouteNotFound = "route.not_found"

	// CodeAuthMissing: no credential, or more than one kind (401).
	CodeAuthMissing = "auth.missing"
	// CodeAuthTokenInvalid: a malformed, badly signed or wrong-kind token, or an unknown
	// access key (401).
	CodeAuthTokenInvalid = "auth.token_invalid"
	// CodeAuthTokenExpired: the token's exp is past (401).
	CodeAuthTokenExpired = "auth.token_expired"
	// CodeAuthWrongAudience: the token names another cluster (401).
	CodeAuthWrongAudience = "auth.wrong_audience"
	// CodeAuthSignatureInvalid: the request signature or Content-Digest does not verify
	// or is outside the profile (401).
	CodeAuthSignatureInvalid = "auth.signature_invalid"
	// CodeAuthSignatureExpired: the request signature is too old or past its expires (401).
	CodeAuthSignatureExpired = "auth.signature_expired"
	// CodeAuthNonceReused: the signature's nonce (or token's jti) was already used (401).
	CodeAuthNonceReused = "auth.nonce_reused"
	// CodeAuthUserDisabled: the user, or an access key's grantor, is disabled (401).
	CodeAuthUserDisabled = "auth.user_disabled"
	// CodeAuthKeyRevoked: the access key is revoked or expired, or the token was revoked (401).
	CodeAuthKeyRevoked = "auth.key_revoked"

	// CodePermDenied: the caller lacks the permission (403).
	CodePermDenied = "perm.denied"
	// CodePolicyBlocked: a policy blocks the request (403).
	CodePolicyBlocked = "policy.blocked"

	// CodeApprovalRequired: the request needs approval (403; reserved).
	CodeApprovalRequired = "approval.required"
	// CodeApprovalExpired: the approval was not complete in time (403).
	CodeApprovalExpired = "approval.expired"
	// CodeApprovalSelfApproval: the initiator tried to approve its own request (403).
	CodeApprovalSelfApproval = "approval.self_approval"
	// CodeApprovalAlreadyDecided: the user already decided this approval (409).
	CodeApprovalAlreadyDecided = "approval.already_decided"
	// CodeApprovalClosed: the approval is no longer pending (409).
	CodeApprovalClosed = "approval.closed"
	// CodeApprovalDenied: an approver denied the request (403).
	CodeApprovalDenied = "approval.denied"
	// CodeApprovalNotFound: no such approval, or not one the caller may see (404).
	CodeApprovalNotFound = "approval.not_found"
	// CodeWebhookNotFound: no such webhook (404).
	CodeWebhookNotFound = "webhook.not_found"
	// CodePolicyNotFound: no such policy (404).
	CodePolicyNotFound = "policy.not_found"

	// CodeUserNotFound: no such user (404).
	CodeUserNotFound = "user.not_found"
	// CodeKeyNotFound: no such key, or not visible to the caller (404).
	CodeKeyNotFound = "key.not_found"
	// CodeKeyNotActive: the key is not active (generating, failed, deletion scheduled) (409).
	CodeKeyNotActive = "key.not_active"
	// CodeAccessKeyNotFound: no such access key, or not the caller's (404).
	CodeAccessKeyNotFound = "access_key.not_found"
	// CodeMemberNotFound: no such cluster member (404; reserved).
	CodeMemberNotFound = "member.not_found"
	// CodeMemberUnavailable: the member cannot take part now (503; reserved).
	CodeMemberUnavailable = "member.unavailable"

	// CodeClusterNoQuorum: too few nodes reachable to commit (503).
	CodeClusterNoQuorum = "cluster.no_quorum"
	// CodeClusterUnavailable: the cluster cannot serve the request now (503).
	CodeClusterUnavailable = "cluster.unavailable"
	// CodeCeremonyFailed: the MPC ceremony failed for good (502).
	CodeCeremonyFailed = "ceremony.failed"
	// CodeCeremonyRefused: a node refused to take part in a ceremony; it appears in a
	// request's per-attempt failures, not as an answer of its own (502).
	CodeCeremonyRefused = "ceremony.refused"
	// CodeRateLimited: the caller exceeded its rate on this node; see Retry-After (429).
	CodeRateLimited = "rate.limited"

	// CodePSBTInvalid: the PSBT does not parse (400; reserved).
	CodePSBTInvalid = "psbt.invalid"
	// CodePSBTInputNotOurs: a listed input does not pay the key (400; reserved).
	CodePSBTInputNotOurs = "psbt.input_not_ours"
	// CodePSBTChangeMismatch: a change output does not pay the key's child (400; reserved).
	CodePSBTChangeMismatch = "psbt.change_mismatch"
	// CodeBroadcastFailed: the Bitcoin node refused the transaction (502; reserved).
	CodeBroadcastFailed = "broadcast.failed"

	// CodeInternal: a bug or an impossible state on the node (500).
	CodeInternal = "internal"
)

// CodeInfo is one row of the error-code table.
type CodeInfo struct {
	Code   string
	Status int
	Title  string
}

// Codes returns the table of every error code with its HTTP status and title: the only
// place where they are written. The slice is new on every call.
func Codes() []CodeInfo {
	return []CodeInfo{
		{CodeRequestMalformed, http.StatusBadRequest, "malformed request"},
		{CodeRequestTooLarge, http.StatusRequestEntityTooLarge, "request too large"},
		{CodeRequestIdempotencyConflict, http.StatusConflict, "idempotency key reused with a different body"},
		{CodeRequestConflict, http.StatusConflict, "conflict with the current state"},
		{CodeRequestNotFound, http.StatusNotFound, "request not found"},
		{CodeRequestCancelled, http.StatusConflict, "request cancelled"},
		{CodeRouteNotFound, http.StatusNotFound, "no such route"},

		{CodeAuthMissing, http.StatusUnauthorized, "authentication missing"},
		{CodeAuthTokenInvalid, http.StatusUnauthorized, "token invalid"},
		{CodeAuthTokenExpired, http.StatusUnauthorized, "token expired"},
		{CodeAuthWrongAudience, http.StatusUnauthorized, "token for another cluster"},
		{CodeAuthSignatureInvalid, http.StatusUnauthorized, "request signature invalid"},
		{CodeAuthSignatureExpired, http.StatusUnauthorized, "request signature expired"},
		{CodeAuthNonceReused, http.StatusUnauthorized, "nonce already used"},
		{CodeAuthUserDisabled, http.StatusUnauthorized, "user disabled"},
		{CodeAuthKeyRevoked, http.StatusUnauthorized, "access key revoked"},

		{CodePermDenied, http.StatusForbidden, "permission denied"},
		{CodePolicyBlocked, http.StatusForbidden, "blocked by policy"},

		{CodeApprovalRequired, http.StatusForbidden, "approval required"},
		{CodeApprovalExpired, http.StatusForbidden, "approval expired"},
		{CodeApprovalSelfApproval, http.StatusForbidden, "initiator cannot approve"},
		{CodeApprovalAlreadyDecided, http.StatusConflict, "approval already decided"},
		{CodeApprovalClosed, http.StatusConflict, "approval closed"},
		{CodeApprovalDenied, http.StatusForbidden, "approval denied"},
		{CodeApprovalNotFound, http.StatusNotFound, "approval not found"},
		{CodePolicyNotFound, http.StatusNotFound, "policy not found"},
		{CodeWebhookNotFound, http.StatusNotFound, "webhook not found"},

		{CodeUserNotFound, http.StatusNotFound, "user not found"},
		{CodeKeyNotFound, http.StatusNotFound, "key not found"},
		{CodeKeyNotActive, http.StatusConflict, "key not active"},
		{CodeAccessKeyNotFound, http.StatusNotFound, "access key not found"},
		{CodeMemberNotFound, http.StatusNotFound, "member not found"},
		{CodeMemberUnavailable, http.StatusServiceUnavailable, "member unavailable"},

		{CodeClusterNoQuorum, http.StatusServiceUnavailable, "no quorum"},
		{CodeClusterUnavailable, http.StatusServiceUnavailable, "cluster unavailable"},
		{CodeCeremonyFailed, http.StatusBadGateway, "ceremony failed"},
		{CodeCeremonyRefused, http.StatusBadGateway, "ceremony refused"},
		{CodeRateLimited, http.StatusTooManyRequests, "rate limited"},

		{CodePSBTInvalid, http.StatusBadRequest, "invalid PSBT"},
		{CodePSBTInputNotOurs, http.StatusBadRequest, "PSBT input not ours"},
		{CodePSBTChangeMismatch, http.StatusBadRequest, "PSBT change mismatch"},
		{CodeBroadcastFailed, http.StatusBadGateway, "broadcast failed"},

		{CodeInternal, http.StatusInternalServerError, "internal error"},
	}
}

// Lookup returns the code's row of the table, and false for a code not in it.
func Lookup(code string) (CodeInfo, bool) {
	for _, c := range Codes() {
		if c.Code == code {
			return c, true
		}
	}
	return CodeInfo{}, false
}

// StatusOf returns the HTTP status of an error code; a code not in the table is 400.
func StatusOf(code string) int {
	if c, ok := Lookup(code); ok {
		return c.Status
	}
	return http.StatusBadRequest
}

// Title returns the problem title of an error code; a code not in the table is its own
// title.
func Title(code string) string {
	if c, ok := Lookup(code); ok {
		return c.Title
	}
	return code
}
