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
	// RetryAfter is the Retry-After header in seconds for 429 and 503 (1 when 0).
	RetryAfter int
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
	"request.conflict":             "conflict with the current state",
	"access_key.not_found":         "access key not found",
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
		x.w.Header().Set("Retry-After", strconv.Itoa(max(1, e.RetryAfter)))
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
	if n.cfg.API.Debug {
		open("GET /debug/state", n.handleDebugState)
		registerPprof(mux)
	}
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
	authed("POST /v1/access-keys", state.OpAccessCreate, n.hAccessCreate)
	authed("GET /v1/access-keys", state.OpAccessList, n.hAccessList)
	authed("DELETE /v1/access-keys/{id}", state.OpAccessRevoke, n.hAccessRevoke)
	authed("GET /v1/access-keys/{id}/log", state.OpAccessLog, n.hAccessLog)
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

// authenticated runs API.md's checks in their fixed order up to the signature itself,
// then the per-caller rate limit; status, nonce, JSON syntax, permission, object and field
// values are judged by the FSM when the request's entry applies, in that order.
func (n *Node) authenticated(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, r: r, id: w.Header().Get("X-Request-Id"), route: route, start: time.Now(), status: 200}
		defer n.logDecision(x)
		if err := n.checkAuth(x); err != nil {
			x.fail(err)
			return
		}
		if err := n.checkRate(x); err != nil {
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

// maxGrantBody bounds POST /v1/access-keys: the grant is stored with the access key, so
// that every node can re-verify it.
const maxGrantBody = 64 << 10

// checkRate applies the per-caller token bucket once the caller is authenticated (after
// step 7), before anything is committed: a refused request consumes no nonce.
func (n *Node) checkRate(x *exchange) *apiError {
	ok, wait := n.limiter.allow(x.caller.Actor(), time.Now())
	if ok {
		return nil
	}
	secs := retryAfterSeconds(wait)
	e := errf("rate.limited", "too many requests from this caller on this node; retry in %d s", secs)
	e.RetryAfter = secs
	return e
}

func (n *Node) checkAuth(x *exchange) *apiError {
	r := x.r
	// 1. body size.
	max := n.cfg.API.MaxBody
	if x.route == state.OpAccessCreate {
		max = min(max, maxGrantBody)
	}
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
	for _, h := range []string{"Authorization", "Signature-Input", "Signature", "X-Auth-Token"} {
		if len(r.Header.Values(h)) > 1 {
			return errf("auth.missing", "credential headers must appear once (%s appears %d times)", h, len(r.Header.Values(h)))
		}
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
		kind = state.CallerUser
		if n.adminKeyPair() && signatureKeyID(sigIn) == "admin" {
			kind = state.CallerAdmin
		}
	case token != "":
		if peekHasUserID(token) {
			return errf("auth.missing", "user requests must carry an RFC 9421 signature (Signature-Input and Signature)")
		}
		if n.adminKeyPair() {
			return errf("auth.missing", "admin requests must carry an RFC 9421 signature with keyid=\"admin\"")
		}
		kind = state.CallerAdmin
	case signed:
		switch keyID := signatureKeyID(sigIn); {
		case strings.HasPrefix(keyID, "user:"):
			return errf("auth.missing", "user requests must carry the user token (Authorization: Bearer) as well as the signature")
		case keyID == "admin":
			return errf("auth.missing", "admin requests must carry the admin token (Authorization: Bearer) as well as the signature")
		}
		kind = state.CallerAccessKey
	default:
		return errf("auth.missing", "no credentials: send a user token and an RFC 9421 signature, an access key's signature, or an X-Auth-Token")
	}

	// 3. Content-Digest equals the body's hash (also for an X-Auth-Token request that
	// sends one; its own bodyHash is checked with its signature).
	cd := strings.Join(r.Header.Values("Content-Digest"), ", ")
	if cd != "" || (signed && len(body) > 0) {
		if err := auth.CheckContentDigest(cd, body); err != nil {
			return authErr(err)
		}
	}

	switch kind {
	case "xauth":
		return n.checkXAuth(x, xauth)
	case state.CallerAccessKey:
		return n.checkAccessKeySignature(x)
	case state.CallerAdmin:
		return n.checkAdmin(x, token, signed)
	}
	// 4. token.
	now := n.now()
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
		Kind: state.CallerUser, UserID: claims.UserID, TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(),
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

// checkAccessKeySignature authenticates an Ed25519 access key's RFC 9421 request (no
// token): the profile (step 5; no "authorization" component, there is no such header),
// the access key is known on this node (step 4's place: unknown → auth.token_invalid),
// the window (6) and the signature by the key's public key (7). Status, expiry and
// revocation are judged by the FSM at the entry's stamp.
func (n *Node) checkAccessKeySignature(x *exchange) *apiError {
	r := x.r
	now := n.now()
	parts := auth.RequestPartsFromHTTP(r, x.body)
	sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
	if err != nil {
		return authErr(err)
	}
	if err := auth.CheckProfile(sig, parts); err != nil {
		return authErr(err)
	}
	if !strings.HasPrefix(sig.KeyID, "ak_") {
		return errf("auth.token_invalid", "unknown access key: keyid must be an access key id (ak_…), user:<id> with a token, or admin")
	}
	ak := n.findAccessKey(r.Context(), wellFormedAccessKeyID(sig.KeyID), func() *state.AccessKey { return n.fsm.AccessKey(sig.KeyID) })
	if ak == nil {
		return errf("auth.token_invalid", "unknown access key")
	}
	if ak.Scheme != state.SchemeEd25519 {
		return errf("auth.signature_invalid", "this access key is a secp256k1 key: sign with X-Auth-Token")
	}
	if err := auth.CheckWindow(sig, now); err != nil {
		return authErr(err)
	}
	if err := auth.VerifyEd25519(ak.PublicKey, sig, parts); err != nil {
		return authErr(err)
	}
	x.caller = state.Caller{Kind: state.CallerAccessKey, AccessKeyID: ak.ID, Created: sig.Created, NonceKey: "sig|" + ak.ID + "|" + sig.Nonce}
	if sig.Expires != nil {
		x.caller.Expires = *sig.Expires
	}
	x.signed = &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery,
		ContentDigest: strings.Join(r.Header.Values("Content-Digest"), ", "), SignatureInput: r.Header.Get("Signature-Input"),
		Signature: r.Header.Get("Signature"), Body: x.body,
	}
	return nil
}

// checkXAuth authenticates a secp256k1 access key's X-Auth-Token (AUTH-FORMATS.md §3):
// parse strictly, verify method (never DELETE or PUT), requestPath = this request's path
// and query as sent, the ±300 s window and the signature, then find the access key whose
// public key it is. The token's replay key is its nonce, accepted once cluster-wide.
func (n *Node) checkXAuth(x *exchange, header string) *apiError {
	r := x.r
	tok, err := auth.ParseXAuthToken(header)
	if err != nil {
		return authErr(err)
	}
	parts := auth.RequestPartsFromHTTP(r, x.body)
	if err := auth.VerifyXAuthToken(tok, r.Method, pathAndQuery(r, parts), x.body, n.now()); err != nil {
		return authErr(err)
	}
	ak := n.findAccessKey(r.Context(), true, func() *state.AccessKey {
		return n.fsm.AccessKeyByPublicKey(state.SchemeSecp256k1, tok.PubKey)
	})
	if ak == nil {
		return errf("auth.token_invalid", "no access key has this public key")
	}
	rk := tok.ReplayKey(x.body)
	x.caller = state.Caller{Kind: state.CallerAccessKey, AccessKeyID: ak.ID, Created: tok.Timestamp.Unix(), NonceKey: "xauth|" + hex.EncodeToString(rk[:])}
	x.signed = &state.SignedForm{Method: r.Method, Path: parts.Path, RawQuery: parts.RawQuery, XAuthToken: header, Body: x.body}
	return nil
}

// pathAndQuery is the request's path and query exactly as sent (a bare trailing "?"
// included), what an X-Auth-Token's requestPath must equal.
func pathAndQuery(r *http.Request, parts auth.RequestParts) string {
	p := parts.Path
	if parts.RawQuery != "" || strings.HasSuffix(r.RequestURI, "?") {
		p += "?" + parts.RawQuery
	}
	return p
}

// accessKeyCatchUp is how long a node waits for its own state to catch up when it does not
// know an access key yet: a key created through another node is usable here as soon as
// its entry applies, usually within a heartbeat.
const accessKeyCatchUp = time.Second

// findAccessKey returns get()'s access key, waiting up to accessKeyCatchUp for newly
// applied entries when it is not known yet and the credential may name a new one. At most
// cap(n.akWaits) requests wait at once; the others are answered at once.
func (n *Node) findAccessKey(ctx context.Context, mayWait bool, get func() *state.AccessKey) *state.AccessKey {
	if ak := get(); ak != nil || !mayWait {
		return ak
	}
	select {
	case n.akWaits <- struct{}{}:
		defer func() { <-n.akWaits }()
	default:
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, accessKeyCatchUp)
	defer cancel()
	for {
		if err := n.fsm.WaitApplied(ctx, n.fsm.AppliedIndex()+1); err != nil {
			return get()
		}
		if ak := get(); ak != nil {
			return ak
		}
	}
}

// wellFormedAccessKeyID reports whether id can be an access key's ("ak_" + 32 lowercase
// hex characters); only such ids are worth waiting for.
func wellFormedAccessKeyID(id string) bool {
	rest, ok := strings.CutPrefix(id, "ak_")
	if !ok || len(rest) != 32 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}

func (n *Node) adminKeyPair() bool { return n.cfg.Admin.PublicKey != "" }

// checkAdmin verifies an admin token and, in key-pair mode, the RFC 9421 signature by the
// admin key (keyid="admin"). A jti is accepted once; a signed request also consumes its
// signature nonce, so both replay keys go to the FSM.
func (n *Node) checkAdmin(x *exchange, token string, signed bool) *apiError {
	now := n.now()
	claims, err := n.tokens.VerifyAdmin(token, now)
	if err != nil {
		return authErr(err)
	}
	sum := sha256.Sum256([]byte(token))
	x.caller = state.Caller{Kind: state.CallerAdmin, TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(), TokenHash: hex.EncodeToString(sum[:])}
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
		if sig.Expires != nil {
			x.caller.Expires = *sig.Expires
		}
		x.caller.TokenNonceKey = x.caller.NonceKey
		x.caller.NonceKey = "sig|admin|" + sig.Nonce
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
	if len(pub) == 0 {
		return nil, parts, errf("auth.signature_invalid", "no public key to verify this signature with")
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
	// One id for every retry of this proposal: a retry whose first copy committed gets
	// that copy's result (see state.Call.ProposalID).
	pid := make([]byte, 16)
	_, _ = rand.Read(pid)
	c.ProposalID = hex.EncodeToString(pid)
	ctx, cancel := context.WithTimeout(x.r.Context(), 10*time.Second)
	defer cancel()
	res, err := n.propose(ctx, state.TypeCall, c)
	if err != nil {
		if errors.Is(err, errNoQuorum) || errors.Is(err, context.DeadlineExceeded) {
			return res, errf("cluster.no_quorum", "the request was not committed in time: too few nodes reachable (%v); it may still commit once the cluster heals, so send it again with the same idempotency_key to learn its outcome", err)
		}
		return res, errf("cluster.unavailable", "the request was not committed (%v); send it again with the same idempotency_key to learn its outcome", err)
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
	if ls := n.fsm.LastStamp(); ls > 0 && time.UnixMilli(ls).Sub(n.now()) > maxStampSkew {
		reasons = append(reasons, "the log is stamped ahead of this node's clock; check NTP")
	}
	if !n.pool.ready() {
		reasons = append(reasons, "pre-parameter pool empty")
	}
	if n.ks.Failed() {
		reasons = append(reasons, "keystore failed: the node is stopping")
	}
	return reasons
}
