package state

import (
	"slices"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
)

// Permissions a user or an access key can hold (API.md's whitelist).
const (
	PermKeysCreate     = api.PermKeysCreate
	PermKeysRead       = api.PermKeysRead
	PermKeysSign       = api.PermKeysSign
	PermKeysDelete     = api.PermKeysDelete
	PermAccessManage   = api.PermAccessManage
	PermApprovalDecide = api.PermApprovalsDecide
	PermPoliciesRead   = api.PermPoliciesRead
)

// AllPermissions lists every permission custos knows, in a stable order.
func AllPermissions() []string {
	return []string{PermKeysCreate, PermKeysRead, PermKeysSign, PermKeysDelete, PermAccessManage, PermApprovalDecide, PermPoliciesRead}
}

// DefaultPermissions are granted to a user created without an explicit list.
func DefaultPermissions() []string {
	return []string{PermKeysCreate, PermKeysRead, PermKeysSign, PermKeysDelete, PermAccessManage}
}

// ValidPermission reports whether p is a known permission.
func ValidPermission(p string) bool { return slices.Contains(AllPermissions(), p) }

// User statuses.
const (
	UserActive   = api.UserActive
	UserDisabled = api.UserDisabled
)

// Member is one node of the cluster as the replicated state knows it.
type Member struct {
	ID       string   `json:"id"`
	PeerID   string   `json:"peer_id"`
	P2PAddrs []string `json:"p2p_addrs"`
	API      string   `json:"api"`
	// Status is joining, active or leaving ("" = active: members.go).
	Status string `json:"status,omitempty"`
}

// User is a caller the admin created (Sigpair's numeric user id).
type User struct {
	ID          uint64   `json:"user_id"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Permissions []string `json:"permissions"`
	// TokensNotBefore refuses every token issued (iat, unix seconds) before it.
	TokensNotBefore int64 `json:"tokens_not_before,omitempty"`
	// ApproverKey is the public key (the token's public_key) of the user's first approval
	// decision: every later decision must be signed with it, so that whoever can mint
	// tokens (the admin, or any node in shared-key mode) cannot approve in its name.
	ApproverKey []byte `json:"approver_key,omitempty"`
	CreatedAt   int64  `json:"created_at_ms"`
}

// Has reports whether the user holds permission p.
func (u *User) Has(p string) bool { return slices.Contains(u.Permissions, p) }

// Key statuses.
const (
	KeyGenerating = api.KeyGenerating
	KeyActive     = api.KeyActive
	KeyFailed     = api.KeyFailed
)

// Curves.
const (
	CurveSecp256k1 = api.CurveSecp256k1
	CurveEd25519   = api.CurveEd25519
)

// Key is an MPC key's public metadata. The shares live only in each node's keystore.
type Key struct {
	ID        string   `json:"key_id"`
	Owner     uint64   `json:"owner"`
	Label     string   `json:"label"`
	Curve     string   `json:"curve"`
	Threshold int      `json:"threshold"`
	Parties   int      `json:"parties"`
	Members   []string `json:"members"`
	PublicKey []byte   `json:"public_key,omitempty"`
	ChainCode []byte   `json:"chain_code,omitempty"`
	Status    string   `json:"status"`
	RequestID string   `json:"request_id"`
	CreatedAt int64    `json:"created_at_ms"`
	// Reports holds, per node, the public key it computed and stored a share for.
	Reports map[string][]byte `json:"reports,omitempty"`
	// DeleteAt is when a key whose deletion is scheduled is erased, DeleteRequest the
	// request that scheduled it; DeletedAt when the deletion completed (lifecycle.go).
	DeleteAt      int64  `json:"delete_at_ms,omitempty"`
	DeleteRequest string `json:"delete_request,omitempty"`
	DeletedAt     int64  `json:"deleted_at_ms,omitempty"`
	// Generation counts the reshares the key's shares went through (its parties' keys
	// are protocol.PartyKeyAt(node, Generation)); Resharing is the reshare running now
	// (reshare.go).
	Generation uint32     `json:"generation,omitempty"`
	Resharing  *Resharing `json:"resharing,omitempty"`
	// LastGeneration is the newest generation any reshare attempt of the key was given:
	// an attempt that fails never hands its generation to another, so a node's share kept
	// aside names one attempt only.
	LastGeneration uint32 `json:"last_generation,omitempty"`
}

// Request kinds.
const (
	KindKeygen       = api.KindKeygen
	KindSign         = api.KindSign
	KindPolicyModify = api.KindPolicyModify
	KindAccessGrant  = api.KindAccessGrant
)

// Request statuses: the wire API's (internal/api).
const (
	StatusSubmitted       = api.StatusSubmitted
	StatusPendingApproval = api.StatusPendingApproval
	StatusScheduled       = api.StatusScheduled
	StatusSigning         = api.StatusSigning
	StatusSigned          = api.StatusSigned
	StatusActive          = api.StatusActive
	StatusBlocked         = api.StatusBlocked
	StatusDenied          = api.StatusDenied
	StatusFailed          = api.StatusFailed
)

// Final reports whether a request status is terminal (api.Final).
func Final(status string) bool { return api.Final(status) }

// ErrorInfo is the error attached to a failed, blocked or denied request.
type ErrorInfo struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Signature is a finished threshold signature. ECDSA fills R, S, RecoveryID and DER;
// Ed25519 fills Sig.
type Signature struct {
	R          []byte `json:"r,omitempty"`
	S          []byte `json:"s,omitempty"`
	RecoveryID int    `json:"recovery_id"`
	DER        []byte `json:"der,omitempty"`
	Sig        []byte `json:"signature,omitempty"`
}

// Failure is one report of a failed ceremony attempt.
type Failure struct {
	Node     string   `json:"node"`
	Attempt  int      `json:"attempt"`
	Code     string   `json:"code"`
	Detail   string   `json:"detail"`
	Culprits []string `json:"culprits,omitempty"`
}

// Request is a keygen or sign request and its state machine.
type Request struct {
	ID        string `json:"request_id"`
	Kind      string `json:"kind"`
	Status    string `json:"status"`
	KeyID     string `json:"key_id"`
	Owner     uint64 `json:"owner"`
	Actor     string `json:"actor"`
	CreatedAt int64  `json:"created_at_ms"`
	UpdatedAt int64  `json:"updated_at_ms"`

	// Message is the digest (secp256k1) or raw message (ed25519) to sign.
	Message []byte   `json:"message,omitempty"`
	Path    string   `json:"path,omitempty"`
	PathIdx []uint32 `json:"path_idx,omitempty"`
	// Signed is the caller's original signed request, for re-verification by every party.
	Signed *SignedForm `json:"signed,omitempty"`

	Committee   []string `json:"committee,omitempty"`
	Nonce       []byte   `json:"nonce,omitempty"`
	Attempt     int      `json:"attempt"`
	ScheduledAt int64    `json:"scheduled_at_ms"`
	// Retry is set when the current attempt failed and the leader should reschedule.
	Retry    bool      `json:"retry,omitempty"`
	Failures []Failure `json:"failures,omitempty"`

	Signature *Signature `json:"signature,omitempty"`
	SignedBy  string     `json:"signed_by,omitempty"`
	// InlinePreParams lists the nodes that had no pre-parameters ready and generated
	// them during this keygen (why it was slow).
	InlinePreParams []string   `json:"inline_preparams,omitempty"`
	Error           *ErrorInfo `json:"error,omitempty"`

	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// AccessKeyID is the access key that submitted the request ("" for the owner itself).
	AccessKeyID string `json:"access_key_id,omitempty"`

	// Governance (governance.go). ApprovalID is the approval the request waits or waited
	// for; NotBefore is when an approved request may run (its approval plus the delay);
	// Counted lists the velocity policies whose ledgers count it (removed again if it
	// fails or is denied); ChainCode is a keygen's chain code kept while it waits for
	// approval (its key is created when it runs); Result names what a governed change
	// made (a policy id or an access key id).
	ApprovalID string   `json:"approval_id,omitempty"`
	NotBefore  int64    `json:"not_before_ms,omitempty"`
	Counted    []string `json:"counted,omitempty"`
	// CountedAt is the stamp of the request's ledger entries when it is not CreatedAt (an
	// approved request is counted again when it runs).
	CountedAt int64  `json:"counted_at_ms,omitempty"`
	ChainCode []byte `json:"chain_code,omitempty"`
	Made      string `json:"made,omitempty"`
	// Amount is what a policy read as the request's amount (sats), when it had one.
	Amount *int64 `json:"amount,omitempty"`
	// NewMembers and NewThreshold are a reshare's new committee and threshold (its
	// Committee is the old signing committee).
	NewMembers   []string `json:"new_members,omitempty"`
	NewThreshold int      `json:"new_threshold,omitempty"`
	// ForChange is the membership change a reshare is part of; Change is a membership
	// change's own part (members.go).
	ForChange string        `json:"for_change,omitempty"`
	Change    *MemberChange `json:"change,omitempty"`
	// PSBT is a PSBT signing's transaction (psbt.go); nil for a digest or message.
	PSBT *PSBTSign `json:"psbt,omitempty"`
}

// RunnableAt is when the request could first run (ms): its submission, or for a request
// that waited for approval, its approval plus the delay. A ceremony must start within
// the signature window after it, so that a leader cannot hold a request and run it much
// later.
func (r *Request) RunnableAt() int64 { return max(r.CreatedAt, r.NotBefore) }

// SignedForm is a request exactly as the caller signed it.
type SignedForm = authn.Form

// Access-key schemes: how the holder signs its requests.
const (
	// SchemeEd25519 signs with RFC 9421 (keyid = the access key's id).
	SchemeEd25519 = "ed25519"
	// SchemeSecp256k1 signs with bitcoin-auth's X-Auth-Token.
	SchemeSecp256k1 = "secp256k1"
)

// AccessKey is a grant of a subset of a user's permissions to an extra public key
// (BWS grantAccess, Droplit allowlists). Its effective permissions are Permissions ∩ the
// grantor's current permissions, never access:manage; KeyIDs, when not empty, limits it to
// those keys of the grantor.
type AccessKey struct {
	ID          string   `json:"id"`
	Grantor     uint64   `json:"grantor"`
	Label       string   `json:"label"`
	Scheme      string   `json:"scheme"`
	PublicKey   []byte   `json:"public_key"`
	Permissions []string `json:"permissions"`
	KeyIDs      []string `json:"key_ids,omitempty"`
	ExpiresAt   int64    `json:"expires_at_ms,omitempty"` // 0 = never
	CreatedAt   int64    `json:"created_at_ms"`
	RevokedAt   int64    `json:"revoked_at_ms,omitempty"` // 0 = not revoked
	// Grant is the grantor's create request exactly as signed, so that every node can
	// re-verify who granted this public key what (DESIGN.md invariant 2).
	Grant *SignedForm `json:"grant,omitempty"`
}

// LiveAt reports whether the key is neither revoked nor expired at stamp (unix ms).
func (k *AccessKey) LiveAt(stamp int64) bool {
	return (k.RevokedAt == 0 || k.RevokedAt > stamp) && (k.ExpiresAt == 0 || k.ExpiresAt > stamp)
}

// deadSince is when the key stopped being live (revocation or expiry), or 0 if it has
// neither.
func (k *AccessKey) deadSince() int64 {
	switch {
	case k.RevokedAt != 0 && k.ExpiresAt != 0:
		return min(k.RevokedAt, k.ExpiresAt)
	case k.RevokedAt != 0:
		return k.RevokedAt
	}
	return k.ExpiresAt
}

// Effective returns the key's effective permissions given its grantor's current ones:
// the grant ∩ the grantor's, without access:manage, in the grant's order.
func (k *AccessKey) Effective(grantor *User) []string {
	out := []string{}
	for _, p := range k.Permissions {
		if p != PermAccessManage && grantor != nil && grantor.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// Covers reports whether the key may act on keyID (KeyIDs empty means every key of the
// grantor).
func (k *AccessKey) Covers(keyID string) bool {
	return len(k.KeyIDs) == 0 || slices.Contains(k.KeyIDs, keyID)
}

// AccessLogEntry is one use of an access key, allowed or refused.
type AccessLogEntry struct {
	Seq     uint64 `json:"seq"`
	Time    int64  `json:"time_ms"`
	Op      string `json:"op"`
	Object  string `json:"object,omitempty"`
	Outcome string `json:"outcome"`
	Code    string `json:"code,omitempty"`
}

// AccessLog is an access key's own log: its newest MaxAccessLogEntries uses.
type AccessLog struct {
	Next    uint64           `json:"next"`
	Entries []AccessLogEntry `json:"entries"`
}
