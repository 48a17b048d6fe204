package api

import "time"

// Governance (API.md "Governance: policies and approvals"): the wire types of policies,
// their evaluation and approvals, shared by the nodes and both SDKs.

// Policy activities: what kind of request a policy governs.
const (
	ActivitySign         = "sign"
	ActivityKeygen       = "keygen"
	ActivityKeyDelete    = "key.delete"
	ActivityAccessGrant  = "access.grant"
	ActivityPolicyModify = "policy.modify"
	ActivityMemberChange = "member.change"
)

// Rule kinds.
const (
	RuleAlways             = "always"
	RuleAmountLimit        = "amount_limit"
	RuleAmountVelocity     = "amount_velocity"
	RuleCountVelocity      = "count_velocity"
	RuleRecipientAllowlist = "recipient_allowlist"
	RuleTimeWindow         = "time_window"
)

// Policy actions, and the decisions of an evaluation (block wins over
// require_approval, which wins over allow).
const (
	ActionBlock           = "block"
	ActionRequireApproval = "require_approval"
	ActionAllow           = "allow"
)

// Policy statuses.
const (
	PolicyActive   = "active"
	PolicyArchived = "archived"
)

// Approval statuses (GET /v1/approvals?status=…).
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
)

// Approval decisions.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
)

// PermPoliciesRead lets a user read policies (GET /v1/admin/policies…).
const PermPoliciesRead = "policies:read"

// Request kinds of governed changes that wait for approval like a signature does: their
// request object ends "active" once the change is in effect.
const (
	KindPolicyModify = ActivityPolicyModify
	KindAccessGrant  = ActivityAccessGrant
)

// PolicyRule is a policy's rule: Kind and the fields of that kind only (others are
// refused). Window, From/To and TZ are strings as the admin wrote them.
type PolicyRule struct {
	Kind      string   `json:"kind"`
	MaxSats   *int64   `json:"max_sats,omitempty"`
	MaxCount  *int64   `json:"max_count,omitempty"`
	Window    string   `json:"window,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Days      []string `json:"days,omitempty"`
	From      string   `json:"from,omitempty"`
	To        string   `json:"to,omitempty"`
	TZ        string   `json:"tz,omitempty"`
}

// PolicyFilters narrow a policy's scope; all given filters must match, none means every
// request of the activity.
type PolicyFilters struct {
	KeyIDs     []string `json:"key_ids,omitempty"`
	Labels     []string `json:"labels,omitempty"`
	Users      []uint64 `json:"users,omitempty"`
	AccessKeys []string `json:"access_keys,omitempty"`
}

// ApprovalGroup is a group of approvers (user ids) of which Quorum must approve.
type ApprovalGroup struct {
	Name    string   `json:"name"`
	Members []uint64 `json:"members"`
	Quorum  int      `json:"quorum"`
}

// PolicyBody is POST /v1/admin/policies's and PUT /v1/admin/policies/{id}'s body: the
// policy's writable fields (unknown fields refused).
type PolicyBody struct {
	Name                string          `json:"name"`
	Activity            string          `json:"activity"`
	Rule                PolicyRule      `json:"rule"`
	Filters             *PolicyFilters  `json:"filters,omitempty"`
	Action              string          `json:"action"`
	ApprovalGroups      []ApprovalGroup `json:"approval_groups,omitempty"`
	InitiatorCanApprove bool            `json:"initiator_can_approve,omitempty"`
	ApprovalTimeout     string          `json:"approval_timeout,omitempty"`
	Delay               string          `json:"delay,omitempty"`
}

// Policy is a policy as the API shows it.
type Policy struct {
	PolicyID            string          `json:"policy_id"`
	Name                string          `json:"name"`
	Activity            string          `json:"activity"`
	Rule                PolicyRule      `json:"rule"`
	Filters             PolicyFilters   `json:"filters"`
	Action              string          `json:"action"`
	ApprovalGroups      []ApprovalGroup `json:"approval_groups"`
	InitiatorCanApprove bool            `json:"initiator_can_approve"`
	ApprovalTimeout     string          `json:"approval_timeout"`
	Delay               string          `json:"delay"`
	Status              string          `json:"status"`
	Version             int             `json:"version"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           time.Time       `json:"updated_at"`
}

// PolicyList is GET /v1/admin/policies.
type PolicyList struct {
	Policies []Policy `json:"policies"`
	Next     string   `json:"next,omitempty"`
}

// EvaluateBody is POST /v1/policies/evaluate's body: the request to judge, as the
// caller would send it ("route" is "METHOD /v1/path" with the real ids).
type EvaluateBody struct {
	Route string         `json:"route"`
	Body  map[string]any `json:"body,omitempty"`
}

// MatchedPolicy is one policy whose rule fired, and why.
type MatchedPolicy struct {
	PolicyID string `json:"policy_id"`
	Name     string `json:"name"`
	Rule     string `json:"rule"`
	Action   string `json:"action"`
	Why      string `json:"why"`
}

// Evaluation is POST /v1/policies/evaluate's answer: what would happen and why.
type Evaluation struct {
	Decision string          `json:"decision"`
	Matched  []MatchedPolicy `json:"matched"`
}

// Initiator is who started a governed request: a user (and the access key it used), or
// the admin (Admin true, UserID 0).
type Initiator struct {
	UserID      uint64 `json:"user_id"`
	AccessKeyID string `json:"access_key_id"`
	Admin       bool   `json:"admin,omitempty"`
}

// Decision is one approver's decision.
type Decision struct {
	UserID   uint64    `json:"user_id"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
}

// ApprovalGroupState is a group of an approval with its decisions so far.
type ApprovalGroupState struct {
	Name      string     `json:"name"`
	Quorum    int        `json:"quorum"`
	Members   []uint64   `json:"members"`
	Decisions []Decision `json:"decisions"`
}

// Output is one output of a transaction as a policy reads it.
type Output struct {
	Address    string `json:"address"`
	AmountSats int64  `json:"amount_sats"`
	Change     bool   `json:"change"`
}

// ApprovalSummary is what the approvers are asked to approve.
type ApprovalSummary struct {
	KeyID          string   `json:"key_id,omitempty"`
	Message        string   `json:"message,omitempty"`
	DerivationPath string   `json:"derivation_path,omitempty"`
	Outputs        []Output `json:"outputs,omitempty"`
	FeeSats        *int64   `json:"fee_sats,omitempty"`
	// Change describes a governed change (policy.modify, access.grant, keygen): its
	// route and body as the initiator signed them.
	Route string `json:"route,omitempty"`
	Body  string `json:"body,omitempty"`
}

// Approval is an approval as the API shows it.
type Approval struct {
	ApprovalID string               `json:"approval_id"`
	RequestID  string               `json:"request_id"`
	Activity   string               `json:"activity"`
	Initiator  Initiator            `json:"initiator"`
	Status     string               `json:"status"`
	PolicyIDs  []string             `json:"policy_ids"`
	Groups     []ApprovalGroupState `json:"groups"`
	Summary    ApprovalSummary      `json:"summary"`
	// InitiatorCanApprove and Delay are the merged settings of the policies that asked.
	InitiatorCanApprove bool      `json:"initiator_can_approve"`
	Delay               string    `json:"delay"`
	ExpiresAt           time.Time `json:"expires_at"`
	CreatedAt           time.Time `json:"created_at"`
	// DecidedAt is when the approval closed (approved, denied or expired).
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

// ApprovalList is GET /v1/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
	Next      string     `json:"next,omitempty"`
}

// DecisionBody is POST /v1/approvals/{approval_id}/decisions's body.
type DecisionBody struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
}

// PSBTInput names an input a PSBT signing signs, and the key's child that it spends.
type PSBTInput struct {
	Index          int    `json:"index"`
	DerivationPath string `json:"derivation_path,omitempty"`
}

// PSBTChange declares an output as change: it must pay the key's child at the path.
type PSBTChange struct {
	Output         int    `json:"output"`
	DerivationPath string `json:"derivation_path,omitempty"`
}

// PSBTBody is POST /v1/keys/{key_id}/psbt's body.
type PSBTBody struct {
	PSBT           string       `json:"psbt"` // base64
	Network        string       `json:"network"`
	Inputs         []PSBTInput  `json:"inputs"`
	Change         []PSBTChange `json:"change,omitempty"`
	Broadcast      bool         `json:"broadcast,omitempty"`
	IdempotencyKey string       `json:"idempotency_key,omitempty"`
}

// Broadcast is the outcome of a signed transaction's broadcast: its txid, or the Bitcoin
// node's refusal (broadcast.failed).
type Broadcast struct {
	TxID  string        `json:"txid,omitempty"`
	Error *RequestError `json:"error,omitempty"`
}

// Event types (API.md "Events").
const (
	EventRequestSubmitted       = "request.submitted"
	EventRequestPendingApproval = "request.pending_approval"
	EventRequestApproved        = "request.approved"
	EventRequestDenied          = "request.denied"
	EventRequestBlocked         = "request.blocked"
	EventRequestSigned          = "request.signed"
	EventRequestFailed          = "request.failed"
	EventRequestCancelled       = "request.cancelled"
	EventKeyCreated             = "key.created"
	EventKeyDeletionScheduled   = "key.deletion_scheduled"
	EventKeyDeletionCancelled   = "key.deletion_cancelled"
	EventKeyDeleted             = "key.deleted"
	EventApprovalDecided        = "approval.decided"
	EventPolicyChanged          = "policy.changed"
	EventAccessKeyGranted       = "access_key.granted"
	EventAccessKeyRevoked       = "access_key.revoked"
	EventMemberChanged          = "member.changed"
	EventKeyReshared            = "key.reshared"
)

// EventTypes lists every event type, in a stable order.
func EventTypes() []string {
	return []string{EventRequestSubmitted, EventRequestPendingApproval, EventRequestApproved, EventRequestDenied,
		EventRequestBlocked, EventRequestSigned, EventRequestFailed, EventRequestCancelled, EventKeyCreated,
		EventKeyDeletionScheduled, EventKeyDeletionCancelled, EventKeyDeleted, EventApprovalDecided,
		EventPolicyChanged, EventAccessKeyGranted, EventAccessKeyRevoked, EventMemberChanged, EventKeyReshared}
}

// EventData is what an event says: ids, status and a summary; never a token, secret,
// share or signed body.
type EventData struct {
	RequestID   string `json:"request_id,omitempty"`
	Kind        string `json:"kind,omitempty"` // the request's kind
	KeyID       string `json:"key_id,omitempty"`
	ApprovalID  string `json:"approval_id,omitempty"`
	PolicyID    string `json:"policy_id,omitempty"`
	AccessKeyID string `json:"access_key_id,omitempty"`
	UserID      uint64 `json:"user_id,omitempty"` // the user the request or key is of
	Actor       string `json:"actor,omitempty"`   // who caused it: "admin", "user:<id>", an access key, "node:<id>", "cluster"
	Status      string `json:"status,omitempty"`
	Code        string `json:"code,omitempty"`
	Decision    string `json:"decision,omitempty"` // approval.decided
	Detail      string `json:"detail,omitempty"`
}

// Event is one entry of the activity stream (GET /v1/events) and of a webhook delivery.
type Event struct {
	ID   string    `json:"id"`
	Seq  uint64    `json:"seq"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data EventData `json:"data"`
}

// EventList is GET /v1/events without Accept: text/event-stream.
type EventList struct {
	Events []Event `json:"events"`
	Next   string  `json:"next,omitempty"`
}

// WebhookBody is POST /v1/admin/webhooks's body.
type WebhookBody struct {
	URL         string   `json:"url"`
	Events      []string `json:"events"` // event types, or ["*"]
	Description string   `json:"description,omitempty"`
}

// Webhook is a webhook as the API shows it. Secret ("whsec_<base64>") is only in the
// answer to its creation.
type Webhook struct {
	WebhookID   string    `json:"webhook_id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description,omitempty"`
	Secret      string    `json:"secret,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// DeliveredThrough is the seq of the last event delivered (or skipped: not
	// subscribed); Failing counts the failed attempts since the last success.
	DeliveredThrough uint64 `json:"delivered_through"`
	Failing          int    `json:"failing,omitempty"`
}

// WebhookList is GET /v1/admin/webhooks.
type WebhookList struct {
	Webhooks []Webhook `json:"webhooks"`
	Next     string    `json:"next,omitempty"`
}

// Delivery is one delivery attempt of an event to a webhook.
type Delivery struct {
	EventID    string    `json:"event_id"`
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	// NextTry is when a failed delivery is tried again.
	NextTry *time.Time `json:"next_try,omitempty"`
}

// DeliveryList is GET /v1/admin/webhooks/{id}/deliveries: the newest attempts, oldest
// first.
type DeliveryList struct {
	Deliveries []Delivery `json:"deliveries"`
	Next       string     `json:"next,omitempty"`
}

// WebhookPayload is the body of a delivery (Standard Webhooks).
type WebhookPayload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      EventData `json:"data"`
}
