package api

// Request statuses (API.md, "Request object"): a request's status is exactly one of
// these.
const (
	// StatusSubmitted: committed, not yet judged by policy or scheduled.
	StatusSubmitted = "submitted"
	// StatusPendingApproval: waiting for approvals.
	StatusPendingApproval = "pending_approval"
	// StatusScheduled: approved and waiting, retrying, or a keygen running.
	StatusScheduled = "scheduled"
	// StatusSigning: a signing ceremony is running.
	StatusSigning = "signing"
	// StatusSigned: a sign request is done; the request carries its signature (final).
	StatusSigned = "signed"
	// StatusActive: a keygen is done; the request carries the key (final).
	StatusActive = "active"
	// StatusBlocked: refused by a policy (final).
	StatusBlocked = "blocked"
	// StatusDenied: refused by an approver, or its approval expired (final).
	StatusDenied = "denied"
	// StatusFailed: the ceremony failed for good (final).
	StatusFailed = "failed"
)

// Final reports whether a request status is final: signed, active, blocked, denied or
// failed. A request in a final status never changes again.
func Final(status string) bool {
	switch status {
	case StatusSigned, StatusActive, StatusBlocked, StatusDenied, StatusFailed:
		return true
	}
	return false
}

// Request kinds (the request object's "kind").
const (
	KindKeygen = "keygen"
	KindSign   = "sign"
	// KindDelete is reserved for key deletion (API.md "Key lifecycle"; not built yet).
	KindDelete = "delete"
)

// Key statuses (the key object's "status").
const (
	KeyGenerating = "generating"
	KeyActive     = "active"
	KeyFailed     = "failed"
)

// User statuses (the user object's "status").
const (
	UserActive   = "active"
	UserDisabled = "disabled"
)

// Curves a key can be on (the key object's "curve", POST /v1/keys's "curve").
const (
	CurveSecp256k1 = "secp256k1"
	CurveEd25519   = "ed25519"
)

// Access-key schemes: how the key's holder signs its requests.
const (
	// SchemeEd25519 access keys sign with custos's RFC 9421 profile.
	SchemeEd25519 = "ed25519"
	// SchemeSecp256k1 access keys send bitcoin-auth's X-Auth-Token.
	SchemeSecp256k1 = "secp256k1"
)

// Permissions a user or an access key can hold (API.md's whitelist, as far as the
// nodes know it).
const (
	PermKeysCreate      = "keys:create"
	PermKeysRead        = "keys:read"
	PermKeysSign        = "keys:sign"
	PermKeysDelete      = "keys:delete"
	PermAccessManage    = "access:manage"
	PermApprovalsDecide = "approvals:decide"
)

// Outcomes of an audit entry or an access-key log entry.
const (
	OutcomeAllowed = "allowed"
	OutcomeRefused = "refused"
)

// Readiness and liveness statuses (GET /readyz, GET /healthz).
const (
	ReadyStatusReady    = "ready"
	ReadyStatusNotReady = "not_ready"
	HealthStatusOK      = "ok"
)
