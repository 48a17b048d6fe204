package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/custos/custos/internal/api"
)

// Bodies of the API routes, decoded strictly (unknown fields refused) from the body the
// caller signed: the wire API's own types (internal/api), one definition for the SDKs that
// write them and the FSM that reads them.
type (
	SignBody        = api.SignBody
	KeygenBody      = api.KeygenBody
	UserBody        = api.UserBody
	PermissionsBody = api.PermissionsBody
	AccessKeyBody   = api.AccessKeyBody
	// AdminKeyBody is PUT /v1/admin/admin-key's body: the admin's new Ed25519 public key.
	AdminKeyBody = api.AdminKey
	// AuditPruneBody is POST /v1/admin/audit/prune's body.
	AuditPruneBody = api.AuditPruneBody
	// RetentionBody is PUT /v1/admin/retention's body.
	RetentionBody = api.Retention
)

// grantOf returns a grant body's grant fields.
func grantOf(b *AccessKeyBody) *GrantFields {
	g := &GrantFields{Label: b.Label, Scheme: b.Scheme, PublicKey: b.PublicKey, Permissions: b.Permissions, KeyIDs: b.KeyIDs}
	if b.ExpiresAt != nil {
		g.ExpiresAt = *b.ExpiresAt
		if g.ExpiresAt == "" {
			// An empty string is not "no expiry": refused as a field value.
			g.ExpiresAt = " "
		}
	}
	return g
}

// DecodeBody parses a JSON body strictly into v and returns the syntax error to be
// judged after the nonce (API.md's order), or "".
func DecodeBody(body []byte, v any) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return "body: " + err.Error()
	}
	if dec.More() {
		return "body: trailing data after the JSON object"
	}
	return ""
}

// route is one API route the FSM knows: method, path segments ("{}" for a parameter)
// and the operation.
type route struct {
	method string
	segs   []string
	op     string
}

// routes is the API as the FSM sees it. The HTTP server routes the same paths (node's
// mux); a test holds the two equal.
var routes = []route{
	{http.MethodGet, []string{"cluster"}, OpClusterGet},
	{http.MethodPost, []string{"admin", "users"}, OpUserCreate},
	{http.MethodPost, []string{"create-user"}, OpSigpairCreate},
	{http.MethodGet, []string{"admin", "users"}, OpUserList},
	{http.MethodGet, []string{"admin", "users", "{}"}, OpUserGet},
	{http.MethodPost, []string{"admin", "users", "{}", "disable"}, OpUserDisable},
	{http.MethodPost, []string{"admin", "users", "{}", "enable"}, OpUserEnable},
	{http.MethodPost, []string{"admin", "users", "{}", "revoke-tokens"}, OpUserRevokeTokens},
	{http.MethodPut, []string{"admin", "users", "{}", "permissions"}, OpUserPermissions},
	{http.MethodPut, []string{"admin", "admin-key"}, OpAdminKeyRotate},
	{http.MethodPost, []string{"keys"}, OpKeyCreate},
	{http.MethodGet, []string{"keys"}, OpKeyList},
	{http.MethodGet, []string{"keys", "{}"}, OpKeyGet},
	{http.MethodPost, []string{"keys", "{}", "sign"}, OpKeySign},
	{http.MethodPost, []string{"keys", "{}", "psbt"}, OpKeyPSBT},
	{http.MethodPost, []string{"keys", "{}", "derive"}, OpKeyDerive},
	{http.MethodDelete, []string{"keys", "{}"}, OpKeyDelete},
	{http.MethodPost, []string{"keys", "{}", "restore"}, OpKeyRestore},
	{http.MethodPost, []string{"admin", "keys", "{}", "reshare"}, OpKeyReshare},
	{http.MethodPost, []string{"admin", "keys", "{}", "refresh"}, OpKeyRefresh},
	{http.MethodGet, []string{"admin", "members"}, OpMemberList},
	{http.MethodPost, []string{"admin", "members"}, OpMemberAdd},
	{http.MethodDelete, []string{"admin", "members", "{}"}, OpMemberRemove},
	{http.MethodPost, []string{"admin", "members", "{}", "replace"}, OpMemberReplace},
	{http.MethodGet, []string{"requests", "{}"}, OpRequestGet},
	{http.MethodGet, []string{"audit"}, OpAuditList},
	{http.MethodPost, []string{"admin", "audit", "prune"}, OpAuditPrune},
	{http.MethodGet, []string{"admin", "retention"}, OpRetentionGet},
	{http.MethodPut, []string{"admin", "retention"}, OpRetentionSet},
	{http.MethodPost, []string{"access-keys"}, OpAccessCreate},
	{http.MethodGet, []string{"access-keys"}, OpAccessList},
	{http.MethodDelete, []string{"access-keys", "{}"}, OpAccessRevoke},
	{http.MethodGet, []string{"access-keys", "{}", "log"}, OpAccessLog},
	{http.MethodPost, []string{"admin", "policies"}, OpPolicyCreate},
	{http.MethodGet, []string{"admin", "policies"}, OpPolicyList},
	{http.MethodGet, []string{"admin", "policies", "{}"}, OpPolicyGet},
	{http.MethodPut, []string{"admin", "policies", "{}"}, OpPolicyReplace},
	{http.MethodDelete, []string{"admin", "policies", "{}"}, OpPolicyArchive},
	{http.MethodPost, []string{"policies", "evaluate"}, OpPolicyEvaluate},
	{http.MethodGet, []string{"approvals"}, OpApprovalList},
	{http.MethodGet, []string{"approvals", "{}"}, OpApprovalGet},
	{http.MethodPost, []string{"approvals", "{}", "decisions"}, OpApprovalDecide},
	{http.MethodPost, []string{"requests", "{}", "cancel"}, OpRequestCancel},
	{http.MethodGet, []string{"events"}, OpEventList},
	{http.MethodPost, []string{"admin", "webhooks"}, OpWebhookCreate},
	{http.MethodGet, []string{"admin", "webhooks"}, OpWebhookList},
	{http.MethodDelete, []string{"admin", "webhooks", "{}"}, OpWebhookDelete},
	{http.MethodGet, []string{"admin", "webhooks", "{}", "deliveries"}, OpWebhookDeliveries},
}

// Routes lists every route the FSM knows as "METHOD /v1/path/{}" patterns.
func Routes() map[string]string {
	out := map[string]string{}
	for _, r := range routes {
		out[r.op] = r.method + " /v1/" + strings.Join(r.segs, "/")
	}
	return out
}

// matchRoute finds the operation of a method and an escaped path, and its path
// parameters (unescaped).
func matchRoute(method, escapedPath string) (op string, params []string) {
	rest, ok := strings.CutPrefix(escapedPath, "/v1/")
	if !ok {
		return "", nil
	}
	segs := strings.Split(rest, "/")
	for _, r := range routes {
		if r.method != method || len(r.segs) != len(segs) {
			continue
		}
		var ps []string
		matched := true
		for i, s := range r.segs {
			if s == "{}" {
				v, err := url.PathUnescape(segs[i])
				if err != nil || v == "" {
					matched = false
					break
				}
				ps = append(ps, v)
			} else if segs[i] != s {
				matched = false
				break
			}
		}
		if matched {
			return r.op, ps
		}
	}
	return "", nil
}

// ParseRequest derives from a request exactly as its caller signed it everything the FSM
// acts on: the operation (from method and path), its path parameters and its body's
// fields. A body or query that does not parse sets Malformed, judged after the nonce.
// The caller, its nonce and permissions come from authn, never from here.
func ParseRequest(f *SignedForm) *Call {
	c := &Call{Signed: f}
	var params []string
	c.Op, params = matchRoute(f.Method, f.Path)
	param := func() string {
		if len(params) == 0 {
			return ""
		}
		return params[0]
	}
	emptyBody := func() {
		if len(f.Body) > 0 {
			var b struct{}
			c.Malformed = DecodeBody(f.Body, &b)
		}
	}
	q, _ := url.ParseQuery(f.RawQuery)
	switch c.Op {
	case "":
		c.Malformed = "no such route"
	case OpClusterGet:
	case OpUserCreate:
		var b UserBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.UserName = b.Name
		if b.Permissions != nil {
			c.Permissions, c.PermsSet = *b.Permissions, true
		}
	case OpSigpairCreate:
		emptyBody()
	case OpUserList, OpAuditList:
		c.Malformed = numericPage(q)
	case OpUserGet, OpUserDisable, OpUserEnable, OpUserRevokeTokens, OpUserPermissions:
		// An id that cannot exist is judged as "no such user" after the nonce.
		if id, err := strconv.ParseUint(param(), 10, 64); err == nil {
			c.TargetUserID = id
		}
		if c.Op == OpUserPermissions {
			var b PermissionsBody
			c.Malformed = DecodeBody(f.Body, &b)
			if c.Malformed == "" && b.Permissions == nil {
				c.Malformed = "permissions is required"
			}
			c.Permissions = b.Permissions
		} else {
			emptyBody()
		}
	case OpAdminKeyRotate:
		var b AdminKeyBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.AdminPublicKey = b.PublicKey
	case OpAuditPrune:
		var b AuditPruneBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.AuditPrune = &b
	case OpRetentionGet:
		emptyBody()
	case OpRetentionSet:
		var b RetentionBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Retention = &b
	case OpKeyCreate:
		var b KeygenBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Curve, c.Threshold, c.Label, c.IdempotencyKey = b.Curve, b.Threshold, b.Label, b.IdempotencyKey
		c.BodyHash = bodyHash(f.Body)
	case OpKeyList, OpAccessList:
		c.Malformed = page(q)
	case OpKeyGet:
		c.KeyID = param()
	case OpKeySign:
		c.KeyID = param()
		var b SignBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.MessageHex, c.Path, c.IdempotencyKey = b.Message, b.DerivationPath, b.IdempotencyKey
		c.BodyHash = bodyHash(f.Body)
	case OpKeyPSBT:
		c.KeyID = param()
		var b api.PSBTBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.PSBT = &b
		c.IdempotencyKey = b.IdempotencyKey
		c.BodyHash = bodyHash(f.Body)
	case OpKeyDerive:
		c.KeyID = param()
		var b api.DeriveBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Derive = &b
	case OpKeyDelete, OpKeyRestore, OpKeyRefresh:
		c.KeyID = param()
		emptyBody()
	case OpMemberList:
		emptyBody()
	case OpMemberAdd, OpMemberReplace:
		c.MemberID = param()
		var b api.MemberBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Member = &b
	case OpMemberRemove:
		c.MemberID = param()
		emptyBody()
	case OpKeyReshare:
		c.KeyID = param()
		var b api.ReshareBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Reshare = &b
	case OpRequestGet:
		c.RequestID = param()
	case OpAccessCreate:
		var b AccessKeyBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Grant = grantOf(&b)
	case OpAccessRevoke:
		c.AccessKeyID = param()
		emptyBody()
	case OpAccessLog:
		c.AccessKeyID = param()
		c.Malformed = numericPage(q)
	case OpPolicyCreate, OpPolicyReplace:
		c.PolicyID = param()
		var b api.PolicyBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Policy = &b
	case OpPolicyList:
		c.Malformed = page(q)
	case OpPolicyGet, OpPolicyArchive:
		c.PolicyID = param()
		emptyBody()
	case OpPolicyEvaluate:
		var b api.EvaluateBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Evaluate = &b
	case OpApprovalList:
		c.Malformed = page(q)
		c.ApprovalStatus = q.Get("status")
		if c.Malformed == "" && !validApprovalFilter(c.ApprovalStatus) {
			c.Malformed = "status must be pending, approved, denied or expired"
		}
	case OpApprovalGet:
		c.ApprovalID = param()
	case OpApprovalDecide:
		c.ApprovalID = param()
		var b api.DecisionBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Decision = &b
	case OpRequestCancel:
		c.RequestID = param()
		emptyBody()
	case OpEventList:
		c.Malformed = numericPage(q)
		emptyBody()
	case OpWebhookCreate:
		var b api.WebhookBody
		c.Malformed = DecodeBody(f.Body, &b)
		c.Webhook = &b
	case OpWebhookList:
		emptyBody()
	case OpWebhookDelete, OpWebhookDeliveries:
		c.WebhookID = param()
		emptyBody()
	}
	return c
}

// ParseGrantBody decodes a stored grant's body as POST /v1/access-keys does.
func ParseGrantBody(body []byte) (*GrantFields, string) {
	var b AccessKeyBody
	if bad := DecodeBody(body, &b); bad != "" {
		return nil, bad
	}
	return grantOf(&b), ""
}

// page checks a list's limit (a positive integer when present).
func page(q url.Values) string {
	if s := q.Get("limit"); s != "" {
		if v, err := strconv.Atoi(s); err != nil || v < 1 {
			return "limit must be a positive integer"
		}
	}
	return ""
}

// numericPage is page for lists whose cursor is a number.
func numericPage(q url.Values) string {
	if bad := page(q); bad != "" {
		return bad
	}
	if s := q.Get("after"); s != "" {
		if _, err := strconv.ParseUint(s, 10, 64); err != nil {
			return "after must be a number"
		}
	}
	return ""
}

func bodyHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
