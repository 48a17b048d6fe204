package state

import (
	"encoding/json"
	"fmt"
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
)

// commandVersions lists the newest schema version each command type is at. A node refuses
// entries of a newer version than it knows. A command may write an older version when it
// uses nothing the newer one added (see versioned), so that nodes not yet upgraded halt
// only when a new feature is actually used, never diverge silently.
var commandVersions = map[string]int{
	TypeClusterInit:    1,
	TypeCall:           3, // v2: access keys (caller kind, access.* ops, X-Auth-Token form), token nonce key; v3: proposal id
	TypeShareStored:    2, // v2: inline_preparams
	TypeCeremonyResult: 1,
	TypeCeremonyFailed: 1,
	TypeReschedule:     1,
	TypeFail:           1,
}

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

// Encode builds a log entry for a command. The stamp is filled in by the leader.
func Encode(typ string, stamp int64, payload any) ([]byte, error) {
	v, ok := commandVersions[typ]
	if !ok {
		return nil, fmt.Errorf("state: unknown command type %q", typ)
	}
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
}

// Caller is what the entry node established about who sent a request. The stateless
// checks (token signature, request signature, content digest) were done before proposing;
// the FSM judges the stateful ones (status, revocation, nonce, permission) at the stamp.
type Caller struct {
	Kind   string `json:"kind"` // CallerAdmin, CallerUser or CallerAccessKey
	UserID uint64 `json:"user_id,omitempty"`
	// AccessKeyID names the access key ("ak_…") of an access-key caller.
	AccessKeyID   string `json:"access_key_id,omitempty"`
	TokenIssuedAt int64  `json:"token_iat,omitempty"` // unix seconds
	TokenExpires  int64  `json:"token_exp,omitempty"` // unix seconds
	Created       int64  `json:"created,omitempty"`   // signature created, unix seconds
	Expires       int64  `json:"expires,omitempty"`   // signature expires, unix seconds, 0 = none
	// NonceKey is the replay key this request consumes; empty when the scheme has none.
	NonceKey string `json:"nonce_key,omitempty"`
	// TokenNonceKey is a second replay key, the admin token's jti, when a signed admin
	// request also carries one: both are consumed.
	TokenNonceKey string `json:"token_nonce_key,omitempty"`
	// TokenHash is the SHA-256 (hex) of an admin token; admin tokens are never stored.
	TokenHash string `json:"token_hash,omitempty"`
	// SigpairOnly marks a Sigpair-style admin token ({name}), good only for create-user.
	SigpairOnly bool `json:"sigpair_only,omitempty"`
}

// Caller kinds.
const (
	CallerAdmin     = "admin"
	CallerUser      = "user"
	CallerAccessKey = "access_key"
)

// Actor names the caller in the audit log: "admin", "user:<id>" or the access key's id.
func (c Caller) Actor() string {
	switch c.Kind {
	case CallerAdmin:
		return "admin"
	case CallerAccessKey:
		return c.AccessKeyID
	}
	return fmt.Sprintf("user:%d", c.UserID)
}

// Operations a Call can carry, one per API route.
const (
	OpClusterGet       = "cluster.get"
	OpUserCreate       = "users.create"
	OpSigpairCreate    = "users.create_sigpair"
	OpUserList         = "users.list"
	OpUserGet          = "users.get"
	OpUserDisable      = "users.disable"
	OpUserEnable       = "users.enable"
	OpUserRevokeTokens = "users.revoke_tokens"
	OpUserPermissions  = "users.permissions"
	OpKeyCreate        = "keys.create"
	OpKeyList          = "keys.list"
	OpKeyGet           = "keys.get"
	OpKeySign          = "keys.sign"
	OpRequestGet       = "requests.get"
	OpAuditList        = "audit.list"
	OpAccessCreate     = "access.create"
	OpAccessList       = "access.list"
	OpAccessRevoke     = "access.revoke"
	OpAccessLog        = "access.log"
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
	Message        []byte `json:"message,omitempty"`
	MessageHex     string `json:"message_hex,omitempty"`
	Path           string `json:"path,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// BodyHash identifies the body for idempotency comparisons.
	BodyHash string `json:"body_hash,omitempty"`

	// AccessKeyID is the access key a revoke or log call is about.
	AccessKeyID string `json:"access_key_id,omitempty"`
	// Grant carries the writable fields of POST /v1/access-keys, exactly as sent.
	Grant *GrantFields `json:"grant,omitempty"`

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
	// Index is the raft index at which the command applied (filled by the proposer).
	Index uint64 `json:"index,omitempty"`
}

// OK reports whether the command was accepted.
func (r Result) OK() bool { return r.Code == "" }
