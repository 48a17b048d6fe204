package state

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
)

// Command types. Each is a small typed record with its own schema version; an unknown type
// or version halts apply loudly (see FSM.Apply).
const (
	TypeClusterInit    = "cluster.init"
	TypeCall           = "call"
	TypeShareStored    = "keygen.share_stored"
	TypeCeremonyResult = "ceremony.result"
	TypeCeremonyFailed = "ceremony.failed"
	TypeReschedule     = "request.reschedule"
	TypeFail           = "request.fail"

	// TypeSubmit carries a client's request exactly as signed, vouched for by the entry
	// node; the FSM derives everything from the signature (Submit).
	TypeSubmit = "submit"
	// TypeReport carries what a node says in its own name, signed with its identity key
	// (Report): share stored, ceremony result or failure, reschedule, fail.
	TypeReport = "node.report"
	// TypeUpgrade switches a cluster whose log predates signed entries to them (Upgrade).
	TypeUpgrade = "cluster.upgrade"
)

// Envelope is the form of every raft log entry custos writes.
type Envelope struct {
	Type    string          `json:"t"`
	Version int             `json:"v"`
	Stamp   int64           `json:"s"` // unix milliseconds, written by the leader
	Payload json.RawMessage `json:"p"`
}

// versioned is implemented by commands whose schema version depends on their content.
type versioned interface {
	schemaVersion() int
}

// EntryStamp reads the leader's stamp (unix milliseconds) from a log entry as Apply
// reads it (decodeEntry), without decoding its command; ok is false for bytes that do
// not decode as an envelope (Apply halts on those).
func EntryStamp(data []byte) (stamp int64, ok bool) {
	var env Envelope
	if json.Unmarshal(data, &env) != nil {
		return 0, false
	}
	return env.Stamp, true
}

// Encode builds a log entry for a command. The stamp is filled in by the leader.
func Encode(typ string, stamp int64, payload any) ([]byte, error) {
	c, ok := commands[typ]
	if !ok {
		return nil, fmt.Errorf("state: unknown command type %q", typ)
	}
	v := c.version
	if vc, ok := payload.(versioned); ok {
		v = min(v, vc.schemaVersion())
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("state: encode %s: %w", typ, err)
	}
	return json.Marshal(Envelope{Type: typ, Version: v, Stamp: stamp, Payload: p})
}

// ClusterInit records the cluster's name, threshold and members. The leader writes it
// once, from its bootstrap configuration.
type ClusterInit struct {
	Name      string   `json:"name"`
	Threshold int      `json:"threshold"`
	Members   []Member `json:"members"`
	// Strict makes the cluster accept only signed entries from the start (v2).
	Strict bool `json:"strict,omitempty"`
	// AdminPublicKey is the admin's Ed25519 public key in key-pair mode (v2); the FSM
	// verifies admin requests and user tokens against it.
	AdminPublicKey []byte `json:"admin_public_key,omitempty"`
	// Events turns the event log on from this entry (v3; events.go).
	Events bool `json:"events,omitempty"`
}

// schemaVersion implements versioned: v1 unless the v2 fields are used, v3 with events.
func (c *ClusterInit) schemaVersion() int {
	switch {
	case c.Events:
		return 3
	case c.Strict || len(c.AdminPublicKey) > 0:
		return 2
	}
	return 1
}

// Upgrade makes a cluster whose log predates signed entries strict: from this entry on,
// only signed entries (Submit, Report) are accepted. It only ever tightens, so any
// leader may propose it; in key-pair mode it records the admin public key, which every
// node then compares with its own configuration (a mismatch keeps that node not ready).
type Upgrade struct {
	AdminPublicKey []byte `json:"admin_public_key,omitempty"`
	// Events turns the event log on from this entry (v2), in a cluster whose log began
	// before there was one (events.go).
	Events bool `json:"events,omitempty"`
}

// schemaVersion implements versioned: v2 only when it turns events on.
func (u *Upgrade) schemaVersion() int {
	if u.Events {
		return 2
	}
	return 1
}

// Caller is who sent a request, as internal/authn established it from the signed form.
type Caller = authn.Principal

// Caller kinds.
const (
	CallerAdmin     = authn.KindAdmin
	CallerUser      = authn.KindUser
	CallerAccessKey = authn.KindAccessKey
)

// Submit is a client's API request in the log: the request exactly as its caller signed
// it (Body: SubmitBody, whose bytes the entry node Origin signed with its identity key,
// so that a forgery is attributed to the member that made it), plus what only the leader
// may choose (Schedule). Apply derives the caller, the nonce it consumes, the operation,
// the key, the message and the path from the signed form itself; nothing else in the
// entry is believed.
type Submit struct {
	Origin    string          `json:"origin"`
	Body      json.RawMessage `json:"body"`
	OriginSig []byte          `json:"origin_sig"`
	Schedule  *Schedule       `json:"schedule,omitempty"`
	// Unschedulable says why the leader could not schedule a ceremony (too few live nodes).
	Unschedulable string `json:"unschedulable,omitempty"`
}

// SubmitBody is the part of a Submit the entry node vouches for.
type SubmitBody struct {
	Signed *SignedForm `json:"signed"`
	// ProposalID is the entry node's id for this proposal, the same on every retry of it
	// (see Call.ProposalID).
	ProposalID string `json:"proposal_id,omitempty"`
}

// Report is what a node says in its own name: Body is one of ShareStored,
// CeremonyResult, CeremonyFailed, StateCheckpoint, CheckpointRequest (whose Node must be
// this Node), Reschedule or Fail (the leader's decisions), by Kind (their command types), signed by Node's libp2p identity
// key. Apply verifies the signature against the member's peer id in the state: a member
// can speak only for itself.
type Report struct {
	Node string          `json:"node"`
	Kind string          `json:"kind"`
	Body json.RawMessage `json:"body"`
	Sig  []byte          `json:"sig"`
}

// ReportMessage is what a report's signature covers: its kind and body.
func ReportMessage(kind string, body []byte) []byte {
	m := make([]byte, 0, len(kind)+1+len(body))
	m = append(m, kind...)
	m = append(m, 0)
	return append(m, body...)
}

// MemberReportKinds are the reports any member may forward to the leader; the others
// (Reschedule, Fail) are the leader's own decisions and never come over the propose RPC.
func MemberReportKinds() []string {
	return []string{TypeShareStored, TypeReshareStored, TypeCeremonyResult, TypeCeremonyFailed, TypeCheckpoint, TypeCheckpointRequest}
}

// decodeStrict decodes an entry payload, refusing unknown fields and trailing data: a
// field this binary does not know is a newer schema, never something to drop.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// Operations a Call can carry, one per API route.
const (
	OpClusterGet        = "cluster.get"
	OpUserCreate        = "users.create"
	OpSigpairCreate     = "users.create_sigpair"
	OpUserList          = "users.list"
	OpUserGet           = "users.get"
	OpUserDisable       = "users.disable"
	OpUserEnable        = "users.enable"
	OpUserRevokeTokens  = "users.revoke_tokens"
	OpUserPermissions   = "users.permissions"
	OpKeyCreate         = "keys.create"
	OpKeyList           = "keys.list"
	OpKeyGet            = "keys.get"
	OpKeySign           = "keys.sign"
	OpKeyDerive         = "keys.derive"
	OpKeyDelete         = "keys.delete"
	OpKeyRestore        = "keys.restore"
	OpKeyReshare        = "keys.reshare"
	OpKeyRefresh        = "keys.refresh"
	OpMemberList        = "members.list"
	OpMemberAdd         = "members.add"
	OpMemberRemove      = "members.remove"
	OpMemberReplace     = "members.replace"
	OpRequestGet        = "requests.get"
	OpAuditList         = "audit.list"
	OpAccessCreate      = "access.create"
	OpAccessList        = "access.list"
	OpAccessRevoke      = "access.revoke"
	OpAccessLog         = "access.log"
	OpAdminKeyRotate    = "admin.rotate_key"
	OpAuditPrune        = "audit.prune"
	OpRetentionGet      = "retention.get"
	OpRetentionSet      = "retention.set"
	OpPolicyCreate      = "policies.create"
	OpPolicyList        = "policies.list"
	OpPolicyGet         = "policies.get"
	OpPolicyReplace     = "policies.replace"
	OpPolicyArchive     = "policies.archive"
	OpPolicyEvaluate    = "policies.evaluate"
	OpApprovalList      = "approvals.list"
	OpApprovalGet       = "approvals.get"
	OpApprovalDecide    = "approvals.decide"
	OpRequestCancel     = "requests.cancel"
	OpEventList         = "events.list"
	OpWebhookCreate     = "webhooks.create"
	OpWebhookList       = "webhooks.list"
	OpWebhookDelete     = "webhooks.delete"
	OpWebhookDeliveries = "webhooks.deliveries"
)

// Call is one authenticated API request. Every authenticated request, reads included, is a
// Call committed through raft, so its nonce is consumed cluster-wide and it is authorised
// against the state at which it applies.
type Call struct {
	Caller Caller      `json:"caller"`
	Op     string      `json:"op"`
	Signed *SignedForm `json:"signed,omitempty"`
	// Malformed carries the JSON syntax error of the body, judged after the nonce.
	Malformed string `json:"malformed,omitempty"`

	UserName     string   `json:"user_name,omitempty"`
	Permissions  []string `json:"permissions,omitempty"`
	PermsSet     bool     `json:"perms_set,omitempty"`
	TargetUserID uint64   `json:"target_user_id,omitempty"`
	KeyID        string   `json:"key_id,omitempty"`
	RequestID    string   `json:"request_id,omitempty"`

	Curve          string `json:"curve,omitempty"`
	Threshold      int    `json:"threshold,omitempty"`
	Label          string `json:"label,omitempty"`
	MessageHex     string `json:"message_hex,omitempty"`
	Path           string `json:"path,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// BodyHash identifies the body for idempotency comparisons.
	BodyHash string `json:"body_hash,omitempty"`

	// AccessKeyID is the access key a revoke or log call is about.
	AccessKeyID string `json:"access_key_id,omitempty"`
	// Grant carries the writable fields of POST /v1/access-keys, exactly as sent.
	Grant *GrantFields `json:"grant,omitempty"`
	// AdminPublicKey is PUT /v1/admin/admin-key's new key (hex). Derived from the signed
	// body only (never in a legacy entry).
	AdminPublicKey string `json:"-"`
	// AuditPrune is POST /v1/admin/audit/prune's body (signed body only).
	AuditPrune *AuditPruneBody `json:"-"`
	// Retention is PUT /v1/admin/retention's body (signed body only).
	Retention *RetentionBody `json:"-"`
	// Governance (signed body only): the policy a route names and its body, an
	// evaluation's body, the approval a route names and a decision, the status filter of
	// an approvals list.
	PolicyID       string            `json:"-"`
	Policy         *api.PolicyBody   `json:"-"`
	Evaluate       *api.EvaluateBody `json:"-"`
	ApprovalID     string            `json:"-"`
	Decision       *api.DecisionBody `json:"-"`
	ApprovalStatus string            `json:"-"`
	// WebhookID is the webhook a route names; Webhook POST /v1/admin/webhooks's body
	// (signed body only).
	WebhookID string           `json:"-"`
	Webhook   *api.WebhookBody `json:"-"`
	// MemberID is the member a route names; Member the node POST /v1/admin/members (or
	// …/replace) adds (signed body only).
	MemberID string          `json:"-"`
	Member   *api.MemberBody `json:"-"`
	// Reshare is POST /v1/admin/keys/{key_id}/reshare's body (signed body only).
	Reshare *api.ReshareBody `json:"-"`
	// Derive is POST /v1/keys/{key_id}/derive's body (signed body only).
	Derive *api.DeriveBody `json:"-"`
	// PSBT is POST /v1/keys/{key_id}/psbt's body (signed body only).
	PSBT *api.PSBTBody `json:"-"`

	// ProposalID is the entry node's id for this proposal, the same on every retry of it
	// (random, 16 bytes hex). When a retry after an ambiguous failure (the leader died or
	// the forward timed out after the entry was appended) applies again, the FSM answers
	// with the first application's result instead of refusing the reused nonce: a request
	// that was committed is never reported refused.
	ProposalID string `json:"proposal_id,omitempty"`

	Schedule *Schedule `json:"schedule,omitempty"`
	// Unschedulable says why the leader could not schedule a ceremony (too few live nodes).
	Unschedulable string `json:"unschedulable,omitempty"`
}

// schemaVersion implements versioned: a Call that uses nothing of v2 is written as v1.
func (c *Call) schemaVersion() int {
	if c.ProposalID != "" {
		return 3
	}
	switch {
	case c.Caller.Kind == CallerAccessKey, c.Caller.AccessKeyID != "", c.Caller.TokenNonceKey != "",
		c.AccessKeyID != "", c.Grant != nil, c.Schedule != nil && c.Schedule.AccessKeyID != "",
		c.Signed != nil && c.Signed.XAuthToken != "":
		return 2
	}
	switch c.Op {
	case OpAccessCreate, OpAccessList, OpAccessRevoke, OpAccessLog:
		return 2
	}
	return 1
}

// GrantFields are the writable fields of an access key as the grantor sent them. The FSM
// validates them (field values are judged last, API.md's order).
type GrantFields struct {
	Label       string   `json:"label,omitempty"`
	Scheme      string   `json:"scheme"`
	PublicKey   string   `json:"public_key"` // hex
	Permissions []string `json:"permissions"`
	KeyIDs      []string `json:"key_ids,omitempty"`
	// ExpiresAt is RFC 3339, or empty for no expiry.
	ExpiresAt string `json:"expires_at,omitempty"`
}

// Schedule is what the leader adds to a keygen, sign or access-key Call before proposing
// it: the ids and randomness the FSM may not make itself.
type Schedule struct {
	RequestID string   `json:"request_id"`
	KeyID     string   `json:"key_id,omitempty"`
	Committee []string `json:"committee"`
	Nonce     []byte   `json:"nonce"`
	ChainCode []byte   `json:"chain_code,omitempty"`
	// AccessKeyID is the id of a new access key ("ak_" + 32 hex characters).
	AccessKeyID string `json:"access_key_id,omitempty"`
	// WebhookID ("wh_" + 32 hex) and WebhookSecret (the secret sealed under the cluster's
	// webhook key) are a new webhook's.
	WebhookID     string `json:"webhook_id,omitempty"`
	WebhookSecret []byte `json:"webhook_secret,omitempty"`
}

// ShareStored reports that a node stored its share of a new key.
type ShareStored struct {
	RequestID string `json:"request_id"`
	Nonce     []byte `json:"nonce"`
	Node      string `json:"node"`
	PublicKey []byte `json:"public_key"`
	// InlinePreParams says the node's pre-parameter pool was empty and it generated
	// the ECDSA pre-parameters during the keygen (the slow path).
	InlinePreParams bool `json:"inline_preparams,omitempty"`
}

// schemaVersion implements versioned: v2 only when the inline flag is set.
func (c *ShareStored) schemaVersion() int {
	if c.InlinePreParams {
		return 2
	}
	return 1
}

// CeremonyResult carries a finished signature from a committee member.
type CeremonyResult struct {
	RequestID string    `json:"request_id"`
	Nonce     []byte    `json:"nonce"`
	Node      string    `json:"node"`
	Signature Signature `json:"signature"`
	// Signatures are a PSBT signing's, one per input in the plan's order (Signature is
	// then empty).
	Signatures []Signature `json:"signatures,omitempty"`
}

// CeremonyFailed reports that a node's party failed or refused to start.
type CeremonyFailed struct {
	RequestID string   `json:"request_id"`
	Nonce     []byte   `json:"nonce"`
	Node      string   `json:"node"`
	Code      string   `json:"code"`
	Detail    string   `json:"detail"`
	Culprits  []string `json:"culprits,omitempty"`
}

// Reschedule gives a request a new committee and session nonce after a failed attempt.
type Reschedule struct {
	RequestID string   `json:"request_id"`
	Attempt   int      `json:"attempt"`
	Committee []string `json:"committee"`
	Nonce     []byte   `json:"nonce"`
}

// Fail ends a request as failed (timeouts, attempts exhausted).
type Fail struct {
	RequestID string `json:"request_id"`
	Code      string `json:"code"`
	Detail    string `json:"detail"`
}

// Result is what applying a command returns to its proposer.
type Result struct {
	Code      string `json:"code,omitempty"` // empty on success
	Detail    string `json:"detail,omitempty"`
	UserID    uint64 `json:"user_id,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
	// AccessKeyID is the access key created by access.create.
	AccessKeyID string `json:"access_key_id,omitempty"`
	// Existing is set when an idempotency key returned an earlier request.
	Existing bool `json:"existing,omitempty"`
	// WebhookID is the webhook a webhook route created or named.
	WebhookID string `json:"webhook_id,omitempty"`
	// PolicyID is the policy a policy route created or changed; ApprovalID the approval a
	// request now waits for, or a decision concerned.
	PolicyID   string `json:"policy_id,omitempty"`
	ApprovalID string `json:"approval_id,omitempty"`
	// Evaluation is POST /v1/policies/evaluate's answer.
	Evaluation *api.Evaluation `json:"evaluation,omitempty"`
	// Index is the raft index at which the command applied (filled by the proposer).
	Index uint64 `json:"index,omitempty"`
}

// OK reports whether the command was accepted.
func (r Result) OK() bool { return r.Code == "" }
