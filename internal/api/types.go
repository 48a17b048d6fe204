package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// Media types and headers of the API.
const (
	// ContentTypeJSON is the media type of every JSON body.
	ContentTypeJSON = "application/json"
	// ContentTypeProblem is the media type of an error answer (RFC 9457).
	ContentTypeProblem = "application/problem+json"
	// ProblemTypeBlank is the "type" of every problem the nodes write.
	ProblemTypeBlank = "about:blank"
	// HeaderRequestID carries the id a node gives every answer.
	HeaderRequestID = "X-Request-Id"
)

// Times: every time is RFC 3339 in UTC. The nodes write key, request and user times at
// whole seconds, access-key and access-log times at millisecond precision (trailing
// zeros dropped, as time.Time's MarshalJSON does). A server building these types from
// unix milliseconds therefore uses time.Unix(ms/1000, 0).UTC() for the former and
// time.UnixMilli(ms).UTC() for the latter.

// Key is a threshold key: POST /v1/keys's 201 answer, GET /v1/keys/{key_id}, an element
// of GET /v1/keys, and the "key" of a finished keygen request.
type Key struct {
	KeyID     string `json:"key_id"`
	Label     string `json:"label"`
	Curve     string `json:"curve"`
	Threshold int    `json:"threshold"`
	Parties   int    `json:"parties"`
	// PublicKey is hex: 33-byte compressed secp256k1 or 32-byte Ed25519.
	PublicKey string    `json:"public_key"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	// ChainCode is the BIP32 chain code (hex) of an active secp256k1 key, for
	// non-hardened derivation; absent otherwise.
	ChainCode string `json:"chain_code,omitempty"`
	// PreParamsInline (POST /v1/keys's answer only) lists the nodes that had no ECDSA
	// pre-parameters ready and generated them during the keygen.
	PreParamsInline []string `json:"preparams_inline,omitempty"`
	// DeleteAt is when a key whose deletion is scheduled will be erased (POST
	// /v1/keys/{key_id}/restore before it cancels); DeletedAt when it was.
	DeleteAt  *time.Time `json:"delete_at,omitempty"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
	// Members are the nodes that hold the key's shares (any Threshold of them sign);
	// Generation counts the reshares and refreshes the shares went through; Resharing
	// names the reshare running now (the old committee signs until it completes).
	Members    []string `json:"members,omitempty"`
	Generation uint32   `json:"generation,omitempty"`
	Resharing  string   `json:"resharing,omitempty"`
}

// Derived is POST /v1/keys/{key_id}/derive's answer: the non-hardened BIP32 child at
// Path of a secp256k1 key (hex public key and chain code) and its extended public key
// for the network asked ("m" is the key itself).
type Derived struct {
	Path      string `json:"path"`
	PublicKey string `json:"public_key"`
	ChainCode string `json:"chain_code"`
	XPub      string `json:"xpub"`
}

// Signature is a finished signature: R, S (hex, low-S), RecoveryID and DER for
// secp256k1; Signature (hex, 64 bytes) for Ed25519. RecoveryID is a pointer so that an
// ECDSA recovery id of 0 is written and an Ed25519 signature has none.
type Signature struct {
	R          string `json:"r,omitempty"`
	S          string `json:"s,omitempty"`
	RecoveryID *int   `json:"recovery_id,omitempty"`
	DER        string `json:"der,omitempty"`
	Signature  string `json:"signature,omitempty"`
}

// RequestError is the error of a failed, blocked or denied request.
type RequestError struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Request is a keygen or sign request and its state: GET /v1/requests/{request_id}, the
// body of every 202, the 200 of a sign, and the "request" of a problem about one.
type Request struct {
	RequestID string    `json:"request_id"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is zero when the node does not report it.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Message is the hex message of a sign request. It is written for every sign
	// request, even empty (an empty Ed25519 message), and never for other kinds.
	Message        string `json:"message,omitempty"`
	DerivationPath string `json:"derivation_path,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// SessionID is the MPC session of the request's current attempt (for log
	// correlation), absent before the request is scheduled.
	SessionID string `json:"session_id,omitempty"`
	// Signature is set once a sign request is signed.
	Signature *Signature `json:"signature,omitempty"`
	// Key is set once a keygen request is active.
	Key *Key `json:"key,omitempty"`
	// PreParamsInline (keygen) lists the nodes that generated ECDSA pre-parameters
	// during the keygen because their pool was empty.
	PreParamsInline []string `json:"preparams_inline,omitempty"`
	// Error is set on a failed, blocked or denied request.
	Error *RequestError `json:"error,omitempty"`
	// ApprovalID is the approval a governed request waited or waits for.
	ApprovalID string `json:"approval_id,omitempty"`
	// NotBefore is when an approved request with a delay runs (cancellable until then).
	NotBefore *time.Time `json:"not_before,omitempty"`
	// PolicyID is the policy a policy.modify request created or changed, once active.
	PolicyID string `json:"policy_id,omitempty"`
	// AccessKeyID is the access key an access.grant request created, once active.
	AccessKeyID string `json:"access_key_id,omitempty"`
	// Membership is a membership change's progress (kind member.change).
	Membership *Membership `json:"membership,omitempty"`

	// A PSBT signing (POST /v1/keys/{key_id}/psbt): what every node read of the
	// transaction, and once signed the finalized PSBT (base64), the transaction and its
	// broadcast when asked.
	PSBT      string     `json:"psbt,omitempty"`
	TxHex     string     `json:"tx_hex,omitempty"`
	TxID      string     `json:"txid,omitempty"`
	FeeSats   *int64     `json:"fee_sats,omitempty"`
	SentSats  *int64     `json:"sent_sats,omitempty"`
	Outputs   []Output   `json:"outputs,omitempty"`
	Broadcast *Broadcast `json:"broadcast,omitempty"`
}

// MarshalJSON writes the request object; "message" is present on every sign request,
// also when it is empty.
func (r Request) MarshalJSON() ([]byte, error) {
	type plain Request
	if r.Kind != KindSign {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		Message string `json:"message"`
	}{plain(r), r.Message})
}

// User is a user as the admin API shows it: GET /v1/admin/users/{id}, an element of
// GET /v1/admin/users, and the answer of the user operations (disable, enable,
// revoke-tokens, permissions).
type User struct {
	UserID uint64 `json:"user_id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	// Permissions is null for a user that holds none.
	Permissions []string  `json:"permissions"`
	CreatedAt   time.Time `json:"created_at"`
}

// UserCreated is POST /v1/admin/users's 201 answer.
type UserCreated struct {
	UserID uint64 `json:"user_id"`
	Name   string `json:"name"`
}

// SigpairUserCreated is POST /v1/create-user's answer (Sigpair's admin SDK).
type SigpairUserCreated struct {
	UserID uint64 `json:"user_id"`
}

// Member is one node of the cluster in GET /v1/cluster.
type Member struct {
	ID      string `json:"id"`
	API     string `json:"api"`
	PeerID  string `json:"peer_id"`
	Healthy bool   `json:"healthy"`
	Leader  bool   `json:"leader"`
	// Status is active, joining (added, catching up) or leaving (keys being reshared
	// away); P2PAddrs are the addresses the members dial it at (GET /v1/admin/members).
	Status   string   `json:"status,omitempty"`
	P2PAddrs []string `json:"p2p_addrs,omitempty"`
}

// MemberList is GET /v1/admin/members: every member, and the membership change running
// (a request id), if any.
type MemberList struct {
	Members []Member `json:"members"`
	Change  string   `json:"change,omitempty"`
	Next    string   `json:"next,omitempty"`
}

// Membership is a membership change request's progress: the change (add, remove,
// replace), the node added and the node removed, the phase (joining: the new node
// catches up; resharing: keys move) and how many keys are reshared of how many.
type Membership struct {
	Change    string `json:"change"`
	Member    string `json:"member,omitempty"`
	Target    string `json:"target,omitempty"`
	Phase     string `json:"phase,omitempty"`
	KeysTotal int    `json:"keys_total"`
	KeysDone  int    `json:"keys_done"`
}

// Cluster is GET /v1/cluster. Leader is the leader's node id, empty when there is none.
type Cluster struct {
	Name      string   `json:"name"`
	Threshold int      `json:"threshold"`
	Parties   int      `json:"parties"`
	Leader    string   `json:"leader"`
	Members   []Member `json:"members"`
}

// AccessKey is an access key: POST /v1/access-keys's 201 answer and an element of
// GET /v1/access-keys. ExpiresAt is zero when it never expires, RevokedAt zero while it
// is not revoked; on the wire both are then null. Permissions and KeyIDs are written as
// [] when empty.
type AccessKey struct {
	ID     string
	Label  string
	Scheme string
	// PublicKey is lowercase hex: a 32-byte Ed25519 key or a 33-byte compressed
	// secp256k1 key.
	PublicKey   string
	Permissions []string
	// KeyIDs limits the access key to these keys of its grantor; empty means all.
	KeyIDs    []string
	ExpiresAt time.Time
	CreatedAt time.Time
	RevokedAt time.Time
}

// accessKeyWire is AccessKey as written on the wire.
type accessKeyWire struct {
	ID          string   `json:"id"`
	Label       string   `json:"label"`
	Scheme      string   `json:"scheme"`
	PublicKey   string   `json:"public_key"`
	Permissions []string `json:"permissions"`
	KeyIDs      []string `json:"key_ids"`
	ExpiresAt   *string  `json:"expires_at"`
	CreatedAt   *string  `json:"created_at"`
	RevokedAt   *string  `json:"revoked_at"`
}

// MarshalJSON writes the access-key object: times as RFC 3339 UTC (null when zero),
// permissions and key_ids as [] when empty.
func (k AccessKey) MarshalJSON() ([]byte, error) {
	opt := func(t time.Time) *string {
		if t.IsZero() {
			return nil
		}
		s := t.UTC().Format(time.RFC3339Nano)
		return &s
	}
	w := accessKeyWire{ID: k.ID, Label: k.Label, Scheme: k.Scheme, PublicKey: k.PublicKey,
		Permissions: k.Permissions, KeyIDs: k.KeyIDs, ExpiresAt: opt(k.ExpiresAt), CreatedAt: opt(k.CreatedAt), RevokedAt: opt(k.RevokedAt)}
	if w.Permissions == nil {
		w.Permissions = []string{}
	}
	if w.KeyIDs == nil {
		w.KeyIDs = []string{}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the access-key object; expires_at, created_at and revoked_at may be
// null, empty or absent (zero time).
func (k *AccessKey) UnmarshalJSON(b []byte) error {
	var w accessKeyWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	opt := func(field string, s *string) (time.Time, error) {
		if s == nil || *s == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, *s)
		if err != nil {
			return time.Time{}, fmt.Errorf("access key %s: %w", field, err)
		}
		return t, nil
	}
	out := AccessKey{ID: w.ID, Label: w.Label, Scheme: w.Scheme, PublicKey: w.PublicKey, Permissions: w.Permissions, KeyIDs: w.KeyIDs}
	var err error
	if out.ExpiresAt, err = opt("expires_at", w.ExpiresAt); err != nil {
		return err
	}
	if out.CreatedAt, err = opt("created_at", w.CreatedAt); err != nil {
		return err
	}
	if out.RevokedAt, err = opt("revoked_at", w.RevokedAt); err != nil {
		return err
	}
	*k = out
	return nil
}

// Revoked reports whether the key was revoked at or before now.
func (k *AccessKey) Revoked(now time.Time) bool {
	return !k.RevokedAt.IsZero() && !k.RevokedAt.After(now)
}

// Expired reports whether the key had expired at now.
func (k *AccessKey) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now)
}

// AccessLogEntry is one use of an access key, allowed or refused, in its own log
// (GET /v1/access-keys/{id}/log).
type AccessLogEntry struct {
	// Seq numbers the key's uses, ascending.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Route is what the key was used for, as "METHOD /v1/pattern".
	Route string `json:"route"`
	// Object is the key, request or other object the use concerned ("" for none).
	Object string `json:"object"`
	// Outcome is OutcomeAllowed or OutcomeRefused.
	Outcome string `json:"outcome"`
	// Code is the error code of a refusal, "" when allowed.
	Code string `json:"code"`
}

// AuditEntry is one link of the hash-chained audit log (GET /v1/audit). Time is a
// string, kept exactly as the node wrote it, since Hash covers the entry's exact JSON
// (RFC 8785 canonical form without "hash").
type AuditEntry struct {
	Seq      uint64 `json:"seq"`
	Time     string `json:"time"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Object   string `json:"object"`
	Outcome  string `json:"outcome"`
	Code     string `json:"code"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// List pages. Every list answers its items under its own field, never null (an empty
// list is []), and "next" (the cursor to pass as after=) only when there is more.
type (
	// KeyList is GET /v1/keys.
	KeyList struct {
		Keys []Key  `json:"keys"`
		Next string `json:"next,omitempty"`
	}
	// UserList is GET /v1/admin/users.
	UserList struct {
		Users []User `json:"users"`
		Next  string `json:"next,omitempty"`
	}
	// AccessKeyList is GET /v1/access-keys.
	AccessKeyList struct {
		AccessKeys []AccessKey `json:"access_keys"`
		Next       string      `json:"next,omitempty"`
	}
	// AccessLog is GET /v1/access-keys/{id}/log.
	AccessLog struct {
		Entries []AccessLogEntry `json:"entries"`
		Next    string           `json:"next,omitempty"`
	}
	// AuditList is GET /v1/audit. Pruned, when the log was pruned, is the last pruned
	// entry's seq and hash: the first entry served links to it.
	AuditList struct {
		Entries []AuditEntry `json:"entries"`
		Next    string       `json:"next,omitempty"`
		Pruned  *AuditAnchor `json:"pruned,omitempty"`
	}

	// AuditAnchor is a point of the audit chain: an entry's seq and hash.
	AuditAnchor struct {
		Seq      uint64 `json:"seq"`
		HeadHash string `json:"head_hash"`
	}
)

// Problem is an error answer: RFC 9457 problem details with custos's stable code, sent
// as ContentTypeProblem. Type is ProblemTypeBlank; Title and Status are the code's
// (Title, StatusOf). Request is the request object a blocked, denied or failed keygen or
// sign concerns.
type Problem struct {
	Type      string   `json:"type"`
	Title     string   `json:"title"`
	Status    int      `json:"status"`
	Code      string   `json:"code"`
	Detail    string   `json:"detail"`
	RequestID string   `json:"request_id"`
	Request   *Request `json:"request,omitempty"`
}

// Readiness is GET /readyz: Status is ReadyStatusReady (200) or ReadyStatusNotReady
// (503, with the reasons).
type Readiness struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
}

// Health is GET /healthz: Status is HealthStatusOK.
type Health struct {
	Status string `json:"status"`
}

// AdminKey is PUT /v1/admin/admin-key's body and answer: the admin's Ed25519 public key
// (64 hex characters), the new one in the body, the cluster's current one in the answer.
type AdminKey struct {
	PublicKey string `json:"public_key"`
}

// Retention is GET and PUT /v1/admin/retention: how long the cluster keeps what it
// prunes, in seconds. PUT sets the writable ones (omitted or 0: unchanged); the others
// follow from them or from the protocol and are answered for information.
type Retention struct {
	// FinishedRequestsS is how long a request is kept after it settled (signed,
	// failed, …), with its idempotency key. Writable.
	FinishedRequestsS int64 `json:"finished_requests_s"`
	// DeadAccessKeysS is how long a revoked or expired access key and its log are kept.
	// Writable.
	DeadAccessKeysS int64 `json:"dead_access_keys_s"`
	// NoncesS is the replay window (the signature window with its margin); fixed.
	NoncesS int64 `json:"nonces_s"`
	// SessionNoncesS is twice FinishedRequestsS; ProposalResultsS is fixed.
	SessionNoncesS   int64 `json:"session_nonces_s"`
	ProposalResultsS int64 `json:"proposal_results_s"`
	// Audit is "forever": entries go only when the admin prunes an exported range.
	Audit string `json:"audit"`
	// EventsS is how long events (GET /v1/events, webhooks) are kept. Writable.
	EventsS int64 `json:"events_s"`
	// KeyDeletionDelayS is how long a key waits between DELETE /v1/keys/{key_id} and its
	// erasure (API.md's cluster setting keys.deletion_delay; default 7 days). Writable.
	KeyDeletionDelayS int64 `json:"key_deletion_delay_s"`
}

// AuditPruneBody is POST /v1/admin/audit/prune: drop the entries before Before, whose
// last (seq Before−1) has hash HeadHash — the head of the range the admin exported.
type AuditPruneBody struct {
	Before   uint64 `json:"before"`
	HeadHash string `json:"head_hash"`
}

// Request bodies, as the nodes decode them (strictly: unknown fields are refused).
type (
	// KeygenBody is POST /v1/keys's body.
	KeygenBody struct {
		Curve          string `json:"curve"`
		Threshold      int    `json:"threshold"`
		Label          string `json:"label,omitempty"`
		IdempotencyKey string `json:"idempotency_key,omitempty"`
	}
	// MemberBody is POST /v1/admin/members's body (and …/{id}/replace's): the node to
	// add, as `custosd init` and its configuration name it.
	MemberBody struct {
		ID       string   `json:"id"`
		PeerID   string   `json:"peer_id"`
		P2PAddrs []string `json:"p2p_addrs"`
		API      string   `json:"api"`
	}
	// ReshareBody is POST /v1/admin/keys/{key_id}/reshare's body: the new committee (node
	// ids) and threshold; either may be left out (the key's current ones).
	ReshareBody struct {
		Members   []string `json:"members,omitempty"`
		Threshold int      `json:"threshold,omitempty"`
	}
	// DeriveBody is POST /v1/keys/{key_id}/derive's body: a derivation path ("m" or
	// "m/i/…", non-hardened) and the network whose xpub version to use ("mainnet" when
	// empty; "testnet", "regtest", "signet", "simnet").
	DeriveBody struct {
		Path    string `json:"path"`
		Network string `json:"network,omitempty"`
	}
	// SignBody is POST /v1/keys/{key_id}/sign's body; Message is hex.
	SignBody struct {
		Message        string `json:"message"`
		DerivationPath string `json:"derivation_path,omitempty"`
		IdempotencyKey string `json:"idempotency_key,omitempty"`
	}
	// UserBody is POST /v1/admin/users's body; without permissions the user gets the
	// default ones.
	UserBody struct {
		Name        string    `json:"name"`
		Permissions *[]string `json:"permissions,omitempty"`
	}
	// PermissionsBody is PUT /v1/admin/users/{id}/permissions's body.
	PermissionsBody struct {
		Permissions []string `json:"permissions"`
	}
	// AccessKeyBody is POST /v1/access-keys's body: the access-key object's writable
	// fields. ExpiresAt is RFC 3339; absent means no expiry.
	AccessKeyBody struct {
		Label       string   `json:"label,omitempty"`
		Scheme      string   `json:"scheme"`
		PublicKey   string   `json:"public_key"`
		Permissions []string `json:"permissions"`
		KeyIDs      []string `json:"key_ids,omitempty"`
		ExpiresAt   *string  `json:"expires_at,omitempty"`
	}
)
