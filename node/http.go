package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/state"
)

// apiError is an error answer: an RFC 9457 problem with custos's stable code.
type apiError struct {
	Status int
	Code   string
	Detail string
	Extra  map[string]any
}

func (e *apiError) Error() string { return e.Code + ": " + e.Detail }

func errf(code, format string, a ...any) *apiError {
	return &apiError{Status: statusOf(code), Code: code, Detail: fmt.Sprintf(format, a...)}
}

// statusOf maps a stable error code to its HTTP status (API.md).
func statusOf(code string) int {
	switch {
	case code == "request.too_large":
		return http.StatusRequestEntityTooLarge
	case code == "rate.limited":
		return http.StatusTooManyRequests
	case strings.HasPrefix(code, "auth."):
		return http.StatusUnauthorized
	case code == "perm.denied", code == "policy.blocked":
		return http.StatusForbidden
	case strings.HasSuffix(code, ".not_found"):
		return http.StatusNotFound
	case code == "key.not_active", code == "request.idempotency_conflict", code == "request.conflict":
		return http.StatusConflict
	case code == "cluster.no_quorum", code == "cluster.unavailable":
		return http.StatusServiceUnavailable
	case code == "ceremony.failed":
		return http.StatusBadGateway
	case code == "internal":
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

var titles = map[string]string{
	"request.malformed":            "malformed request",
	"request.too_large":            "request too large",
	"request.idempotency_conflict": "idempotency key reused with a different body",
	"request.not_found":            "request not found",
	"route.not_found":              "no such route",
	"auth.missing":                 "authentication missing",
	"auth.token_invalid":           "token invalid",
	"auth.token_expired":           "token expired",
	"auth.wrong_audience":          "token for another cluster",
	"auth.signature_invalid":       "request signature invalid",
	"auth.signature_expired":       "request signature expired",
	"auth.nonce_reused":            "nonce already used",
	"auth.user_disabled":           "user disabled",
	"auth.key_revoked":             "access key revoked",
	"perm.denied":                  "permission denied",
	"policy.blocked":               "blocked by policy",
	"approval.required":            "approval required",
	"user.not_found":               "user not found",
	"key.not_found":                "key not found",
	"key.not_active":               "key not active",
	"cluster.no_quorum":            "no quorum",
	"cluster.unavailable":          "cluster unavailable",
	"ceremony.failed":              "ceremony failed",
	"rate.limited":                 "rate limited",
	"internal":                     "internal error",
}

// exchange is one HTTP request in flight.
type exchange struct {
	w         http.ResponseWriter
	r         *http.Request
	id        string
	route     string
	start     time.Time
	body      []byte
	caller    state.Caller
	signed    *state.SignedForm
	adminName string
	code      string
	status    int
}

func (x *exchange) json(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		x.fail(errf("internal", "encode response"))
		return
	}
	x.w.Header().Set("Content-Type", "application/json")
	x.w.WriteHeader(status)
	_, _ = x.w.Write(append(b, '\n'))
	x.status = status
}

func (x *exchange) fail(e *apiError) {
	title := titles[e.Code]
	if title == "" {
		title = e.Code
	}
	p := map[string]any{"type": "about:blank", "title": title, "status": e.Status, "code": e.Code, "detail": e.Detail, "request_id": x.id}
	for k, v := range e.Extra {
		p[k] = v
	}
	b, _ := json.Marshal(p)
	x.w.Header().Set("Content-Type", "application/problem+json")
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		x.w.Header().Set("Retry-After", "1")
	}
	x.w.WriteHeader(e.Status)
	_, _ = x.w.Write(append(b, '\n'))
	x.code, x.status = e.Code, e.Status
}

type handlerFunc func(x *exchange) *apiError

// routes builds the HTTP API.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	open := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, h) }
	open("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	open("GET /readyz", n.handleReady)
	metricsH := promhttp.HandlerFor(n.met.reg, promhttp.HandlerOpts{})
	open("GET /metrics", metricsH.ServeHTTP)
	authed := func(pattern, route string, h handlerFunc) { mux.Handle(pattern, n.authenticated(route, h)) }
	authed("GET /v1/cluster", state.OpClusterGet, n.hCluster)
	authed("POST /v1/admin/users", state.OpUserCreate, n.hUserCreate)
	authed("POST /v1/create-user", state.OpSigpairCreate, n.hSigpairCreate)
	authed("GET /v1/admin/users", state.OpUserList, n.hUserList)
	authed("GET /v1/admin/users/{id}", state.OpUserGet, n.hUserOp(state.OpUserGet))
	authed("POST /v1/admin/users/{id}/disable", state.OpUserDisable, n.hUserOp(state.OpUserDisable))
	authed("POST /v1/admin/users/{id}/enable", state.OpUserEnable, n.hUserOp(state.OpUserEnable))
	authed("POST /v1/admin/users/{id}/revoke-tokens", state.OpUserRevokeTokens, n.hUserOp(state.OpUserRevokeTokens))
	authed("PUT /v1/admin/users/{id}/permissions", state.OpUserPermissions, n.hUserOp(state.OpUserPermissions))
	authed("POST /v1/keys", state.OpKeyCreate, n.hKeyCreate)
	authed("GET /v1/keys", state.OpKeyList, n.hKeyList)
	authed("GET /v1/keys/{key_id}", state.OpKeyGet, n.hKeyGet)
	authed("POST /v1/keys/{key_id}/sign", state.OpKeySign, n.hKeySign)
	authed("GET /v1/requests/{request_id}", state.OpRequestGet, n.hRequestGet)
	authed("GET /v1/audit", state.OpAuditList, n.hAudit)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, r: r, id: w.Header().Get("X-Request-Id"), start: time.Now()}
		x.fail(errf("route.not_found", "no route %s %s", r.Method, r.URL.Path))
	})
	// Every response carries X-Request-Id, the mux's own 405 answers included.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", newRequestID())
		mux.ServeHTTP(w, r)
	})
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "rq_" + hex.EncodeToString(b)
}

// authenticated runs API.md's checks in their fixed order up to the signature itself;
// status, nonce, JSON syntax, permission, object and field values are judged by the FSM
// when the request's entry applies, in that order.
func (n *Node) authenticated(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, r: r, id: w.Header().Get("X-Request-Id"), route: route, start: time.Now(), status: 200}
		defer n.logDecision(x)
		if err := n.checkAuth(x); err != nil {
			x.fail(err)
			return
		}
		if err := h(x); err != nil {
			x.fail(err)
		}
	})
}

func (n *Node) logDecision(x *exchange) {
	code := x.code
	if code == "" {
		code = "ok"
	}
	n.met.requests.WithLabelValues(x.route, code).Inc()
	n.log.Info("request", "request_id", x.id, "route", x.route, "method", x.r.Method, "status", x.status,
		"code", code, "actor", x.caller.Actor(), "ms", time.Since(x.start).Milliseconds())
}

func (n *Node) checkAuth(x *exchange) *apiError {
	r := x.r
	// 1. body size.
	max := n.cfg.API.MaxBody
	if r.ContentLength > max {
		return errf("request.too_large", "request body is larger than %d bytes", max)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return errf("request.malformed", "could not read the body")
	}
	if int64(len(body)) > max {
		return errf("request.too_large", "request body is larger than %d bytes", max)
	}
	x.body = body

	// 2. exactly one kind of credential.
	authz := r.Header.Get("Authorization")
	sigIn, sigVal := r.Header.Get("Signature-Input"), r.Header.Get("Signature")
	xauth := r.Header.Get("X-Auth-Token")
	signed := sigIn != "" || sigVal != ""
	if len(r.Header.Values("Authorization")) > 1 || len(r.Header.Values("Signature-Input")) > 1 || len(r.Header.Values("Signature")) > 1 {
		return errf("auth.missing", "credential headers must appear once")
	}
	var token string
	if authz != "" {
		t, ok := bearer(authz)
		if !ok {
			return errf("auth.missing", "Authorization must be \"Bearer <token>\"")
		}
		token = t
	}
	kind := ""
	switch {
	case xauth != "" && (authz != "" || signed):
		return errf("auth.missing", "a request carries exactly one kind of credential; this one mixes X-Auth-Token with others")
	case xauth != "":
		kind = "xauth"
	case token != "" && signed:
		// A signed request with a token is a user's, unless the admin signs in key-pair
		// mode. An admin token here fails as a user token (auth.token_invalid).
		kind = "user"
		if n.adminKeyPair() && signatureKeyID(sigIn) == "admin" {
			kind = "admin"
		}
	case token != "":
		if peekHasUserID(token) {
			return errf("auth.missing", "user requests must carry an RFC 9421 signature (Signature-Input and Signature)")
		}
		if n.adminKeyPair() {
			return errf("auth.missing", "admin requests must carry an RFC 9421 signature with keyid=\"admin\"")
		}
		kind = "admin"
	case signed:
		kind = "access_key"
	default:
		return errf("auth.missing", "no credentials: send a user token and an RFC 9421 signature")
	}

	// 3. Content-Digest equals the body's hash.
	cd := r.Header.Get("Content-Digest")
	if len(body) > 0 || cd != "" {
		if kind != "xauth" && (signed || cd != "") {
			if err := auth.CheckContentDigest(cd, body); err != nil {
				return authErr(err)
			}
		}
	}

	switch kind {
	case "xauth", "access_key":
		// Access keys are granted through /v1/access-keys; none exists on this cluster.
		return errf("auth.token_invalid", "unknown access key")
	case "admin":
		return n.checkAdmin(x, token, signed)
	}
	// 4. token.
	now := time.Now()
	claims, err := n.tokens.VerifyUser(token, now)
	if err != nil {
		return authErr(err)
	}
	// 5–7. signature parameters, window, the signature itself.
	sig, parts, aerr := n.checkSignature(x, "user:"+strconv.FormatUint(claims.UserID, 10), claims.PublicKey, now)
	if aerr != nil {
		return aerr
	}
	x.caller = state.Caller{
		Kind: "user", UserID: claims.UserID, TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(),
		Created: sig.Created, NonceKey: "sig|" + sig.KeyID + "|" + sig.Nonce,
	}
	if sig.Expires != nil {
		x.caller.Expires = *sig.Expires
	}
	x.signed = &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery, Authorization: authz,
		ContentDigest: cd, SignatureInput: sigIn, Signature: sigVal, Body: body,
	}
	return nil
}

func (n *Node) adminKeyPair() bool { return n.cfg.Admin.PublicKey != "" }

func (n *Node) checkAdmin(x *exchange, token string, signed bool) *apiError {
	now := time.Now()
	claims, err := n.tokens.VerifyAdmin(token, now)
	if err != nil {
		return authErr(err)
	}
	sum := sha256.Sum256([]byte(token))
	x.caller = state.Caller{Kind: "admin", TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(), TokenHash: hex.EncodeToString(sum[:])}
	if claims.ID != "" {
		x.caller.NonceKey = "jti|" + claims.ID
	}
	x.caller.SigpairOnly = claims.SigpairStyle
	x.adminName = claims.Name
	if signed {
		sig, _, aerr := n.checkSignature(x, "admin", n.adminPub, now)
		if aerr != nil {
			return aerr
		}
		x.caller.Created = sig.Created
		if claims.ID == "" {
			x.caller.NonceKey = "sig|admin|" + sig.Nonce
		}
	}
	return nil
}

// checkSignature runs steps 5–7: components and parameters, window, signature.
func (n *Node) checkSignature(x *exchange, keyID string, pub []byte, now time.Time) (*auth.Signature, auth.RequestParts, *apiError) {
	r := x.r
	parts := auth.RequestPartsFromHTTP(r, x.body)
	sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
	if err != nil {
		return nil, parts, authErr(err)
	}
	if err := auth.CheckProfile(sig, parts); err != nil {
		return nil, parts, authErr(err)
	}
	if sig.KeyID != keyID {
		return nil, parts, errf("auth.signature_invalid", "signature keyid %q does not match the token (want %q)", sig.KeyID, keyID)
	}
	if err := auth.CheckWindow(sig, now); err != nil {
		return nil, parts, authErr(err)
	}
	if err := auth.VerifyEd25519(pub, sig, parts); err != nil {
		return nil, parts, authErr(err)
	}
	return sig, parts, nil
}

func authErr(err error) *apiError {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return &apiError{Status: statusOf(ae.Code), Code: ae.Code, Detail: ae.Detail}
	}
	return errf("auth.signature_invalid", "%v", err)
}

func bearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// signatureKeyID returns the keyid parameter of a Signature-Input header, or "" — only
// to tell which credential is presented; the header is parsed strictly right after.
func signatureKeyID(sigInput string) string {
	i := strings.Index(sigInput, `keyid="`)
	if i < 0 {
		return ""
	}
	rest := sigInput[i+len(`keyid="`):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// peekHasUserID reads a JWT's payload without verifying it, only to tell which kind of
// credential the caller presents; the token is verified right after.
func peekHasUserID(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 8192 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	_, ok := m["user_id"]
	return ok
}

// decodeBody parses the JSON body strictly into v and returns the syntax error to be
// judged after the nonce (API.md's order), or "".
func decodeBody(body []byte, v any) string {
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

// commit proposes a Call and turns a refusal into its API error.
func (n *Node) commit(x *exchange, c *state.Call) (state.Result, *apiError) {
	c.Caller = x.caller
	ctx, cancel := context.WithTimeout(x.r.Context(), 10*time.Second)
	defer cancel()
	res, err := n.propose(ctx, state.TypeCall, c)
	if err != nil {
		if errors.Is(err, errNoQuorum) || errors.Is(err, context.DeadlineExceeded) {
			return res, errf("cluster.no_quorum", "the request could not be committed: too few nodes reachable (%v)", err)
		}
		return res, errf("cluster.unavailable", "the request could not be committed: %v", err)
	}
	if !res.OK() {
		return res, &apiError{Status: statusOf(res.Code), Code: res.Code, Detail: res.Detail}
	}
	return res, nil
}

func bodyHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	reasons := n.notReady()
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		b, _ := json.Marshal(map[string]any{"status": "not_ready", "reasons": reasons})
		_, _ = w.Write(append(b, '\n'))
		return
	}
	_, _ = io.WriteString(w, `{"status":"ready"}`+"\n")
}

func (n *Node) notReady() []string {
	var reasons []string
	if h := n.fsm.Halted(); h != "" {
		reasons = append(reasons, "halted: "+h)
	}
	if addr, _ := n.raft.LeaderWithID(); addr == "" {
		reasons = append(reasons, "no raft leader")
	}
	if name, _, _ := n.fsm.Cluster(); name == "" {
		reasons = append(reasons, "cluster not initialised")
	}
	if ls := n.fsm.LastStamp(); ls > 0 && time.UnixMilli(ls).Sub(time.Now()) > maxStampSkew {
		reasons = append(reasons, "the log is stamped ahead of this node's clock; check NTP")
	}
	if !n.pool.ready() {
		reasons = append(reasons, "pre-parameter pool empty")
	}
	return reasons
}
