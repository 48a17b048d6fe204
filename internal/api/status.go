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
	// KindDelete is a key deletion (API.md "Key lifecycle"): scheduled while it waits
	// for the key's delete_at, active once the key is deleted, denied (request.cancelled)
	// when the key was restored first.
	KindDelete = "delete"
	// KindReshare is a reshare or refresh of a key's shares (same public key): scheduled
	// while the ceremony runs, active once every new party reported the key, failed
	// otherwise (the old committee keeps signing).
	KindReshare = "reshare"
	// KindMemberChange is a membership change (add, remove or replace a node): scheduled
	// while the node joins and the keys are reshared, active when done.
	KindMemberChange = "member.change"
)

// Key statuses (the key object's "status").
const (
	KeyGenerating = "generating"
	KeyActive     = "active"
	KeyFailed     = "failed"
	// KeyDeletionScheduled: DELETE /v1/keys/{key_id} was accepted; the key signs nothing
	// and is erased at its delete_at unless restored first.
	KeyDeletionScheduled = "deletion_scheduled"
	// KeyDeleted: every node destroyed the key's data key and share (crypto-erase); the
	// public metadata stays.
	KeyDeleted = "deleted"
)

// Member statuses (GET /v1/admin/members).
const (
	MemberActive  = "active"
	MemberJoining = "joining"
	MemberLeaving = "leaving"
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
