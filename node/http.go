package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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
	"github.com/custos/custos/internal/authn"
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
	w      http.ResponseWriter
	r      *http.Request
	id     string
	route  string
	start  time.Time
	body   []byte
	caller state.Caller
	signed *state.SignedForm
	code   string
	status int
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

// apiRoute is one authenticated route: its pattern, the FSM operation it commits and its
// handler.
type apiRoute struct {
	pattern, op string
	h           handlerFunc
}

// apiRoutes lists the authenticated routes; the FSM knows the same ones (state.Routes,
// held equal by a test), since it derives each request's operation from what was signed.
func (n *Node) apiRoutes() []apiRoute {
	return []apiRoute{
		{"GET /v1/cluster", state.OpClusterGet, n.hCluster},
		{"POST /v1/admin/users", state.OpUserCreate, n.hUserCreate},
		{"POST /v1/create-user", state.OpSigpairCreate, n.hSigpairCreate},
		{"GET /v1/admin/users", state.OpUserList, n.hUserList},
		{"GET /v1/admin/users/{id}", state.OpUserGet, n.hUserOp},
		{"POST /v1/admin/users/{id}/disable", state.OpUserDisable, n.hUserOp},
		{"POST /v1/admin/users/{id}/enable", state.OpUserEnable, n.hUserOp},
		{"POST /v1/admin/users/{id}/revoke-tokens", state.OpUserRevokeTokens, n.hUserOp},
		{"PUT /v1/admin/users/{id}/permissions", state.OpUserPermissions, n.hUserOp},
		{"PUT /v1/admin/admin-key", state.OpAdminKeyRotate, n.hAdminKeyRotate},
		{"POST /v1/keys", state.OpKeyCreate, n.hKeyCreate},
		{"GET /v1/keys", state.OpKeyList, n.hKeyList},
		{"GET /v1/keys/{key_id}", state.OpKeyGet, n.hKeyGet},
		{"POST /v1/keys/{key_id}/sign", state.OpKeySign, n.hKeySign},
		{"GET /v1/requests/{request_id}", state.OpRequestGet, n.hRequestGet},
		{"GET /v1/audit", state.OpAuditList, n.hAudit},
		{"POST /v1/access-keys", state.OpAccessCreate, n.hAccessCreate},
		{"GET /v1/access-keys", state.OpAccessList, n.hAccessList},
		{"DELETE /v1/access-keys/{id}", state.OpAccessRevoke, n.hAccessRevoke},
		{"GET /v1/access-keys/{id}/log", state.OpAccessLog, n.hAccessLog},
	}
}

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
	for _, r := range n.apiRoutes() {
		mux.Handle(r.pattern, n.authenticated(r.op, r.h))
	}
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

// checkAuth runs API.md's checks in their order up to the signature itself: the body
// size here, the rest in internal/authn, the one verifier the FSM runs again at the
// entry's stamp. It leaves the caller and the signed form on the exchange.
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
	// 2. exactly one kind of credential: each credential header at most once (the rest
	// of this step is authn's).
	for _, h := range []string{"Authorization", "Signature-Input", "Signature", "X-Auth-Token"} {
		if len(r.Header.Values(h)) > 1 {
			return errf("auth.missing", "credential headers must appear once (%s appears %d times)", h, len(r.Header.Values(h)))
		}
	}
	parts := auth.RequestPartsFromHTTP(r, body)
	f := &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery,
		Authorization: r.Header.Get("Authorization"), ContentDigest: strings.Join(r.Header.Values("Content-Digest"), ", "),
		SignatureInput: r.Header.Get("Signature-Input"), Signature: r.Header.Get("Signature"),
		XAuthToken: r.Header.Get("X-Auth-Token"), Body: body,
	}
	// 3–7.
	p, err := n.authn.Verify(f, n.now(), waitingDirectory{n: n, ctx: r.Context()})
	if err != nil {
		return authErr(err)
	}
	x.caller, x.signed = *p, f
	return nil
}

// accessKeyCatchUp is how long a node waits for its own state to catch up when it does not
// know an access key yet: a key created through another node is usable here as soon as
// its entry applies, usually within a heartbeat.
const accessKeyCatchUp = time.Second

// waitingDirectory is the verifier's view of this node's state for early refusals: an
// access key it does not know yet is waited for, up to accessKeyCatchUp.
type waitingDirectory struct {
	n   *Node
	ctx context.Context
}

func (d waitingDirectory) AccessKey(id string) (authn.AccessKey, bool) {
	dir := d.n.fsm.Directory()
	return d.n.findAccessKey(d.ctx, wellFormedAccessKeyID(id), func() (authn.AccessKey, bool) { return dir.AccessKey(id) })
}

func (d waitingDirectory) AccessKeyByPublicKey(scheme string, pub []byte) (authn.AccessKey, bool) {
	dir := d.n.fsm.Directory()
	return d.n.findAccessKey(d.ctx, true, func() (authn.AccessKey, bool) { return dir.AccessKeyByPublicKey(scheme, pub) })
}

func (d waitingDirectory) AdminPublicKey() ed25519.PublicKey {
	return d.n.fsm.Directory().AdminPublicKey()
}

// findAccessKey returns get()'s access key, waiting up to accessKeyCatchUp for newly
// applied entries when it is not known yet and the credential may name a new one. At most
// cap(n.akWaits) requests wait at once; the others are answered at once.
func (n *Node) findAccessKey(ctx context.Context, mayWait bool, get func() (authn.AccessKey, bool)) (authn.AccessKey, bool) {
	if ak, ok := get(); ok || !mayWait {
		return ak, ok
	}
	select {
	case n.akWaits <- struct{}{}:
		defer func() { <-n.akWaits }()
	default:
		return authn.AccessKey{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, accessKeyCatchUp)
	defer cancel()
	for {
		if err := n.fsm.WaitApplied(ctx, n.fsm.AppliedIndex()+1); err != nil {
			return get()
		}
		if ak, ok := get(); ok {
			return ak, ok
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

func authErr(err error) *apiError {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return &apiError{Status: statusOf(ae.Code), Code: ae.Code, Detail: ae.Detail}
	}
	return errf("auth.signature_invalid", "%v", err)
}

// commit proposes the exchange's signed request and turns a refusal into its API error.
// The entry carries the request exactly as the caller signed it, vouched for by this
// node's identity key; every node's FSM derives the operation and its arguments from it.
func (n *Node) commit(x *exchange) (state.Result, *apiError) {
	// One id for every retry of this proposal: a retry whose first copy committed gets
	// that copy's result (see state.Call.ProposalID).
	pid := make([]byte, 16)
	_, _ = rand.Read(pid)
	body := &state.SubmitBody{Signed: x.signed, ProposalID: hex.EncodeToString(pid)}
	sub, err := n.newSubmit(body)
	if err != nil {
		return state.Result{}, errf("internal", "could not sign the proposal")
	}
	ctx, cancel := context.WithTimeout(x.r.Context(), 10*time.Second)
	defer cancel()
	res, err := n.propose(ctx, state.TypeSubmit, sub)
	if err != nil {
		if errors.Is(err, errNoQuorum) || errors.Is(err, context.DeadlineExceeded) {
			return res, errf("cluster.no_quorum", "the request was not committed in time: too few nodes reachable (%v); it may still commit once the cluster heals, so send it again with the same idempotency_key to learn its outcome", err)
		}
		return res, errf("cluster.unavailable", "the request was not committed (%v); send it again with the same idempotency_key to learn its outcome", err)
	}
	if !res.OK() {
		return res, &apiError{Status: statusOf(res.Code), Code: res.Code, Detail: res.Detail}
	}
	n.misbehaveAfterCommit(body, res)
	return res, nil
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
	reasons = append(reasons, n.clockNotReady()...)
	if r := n.adminKeyMismatch(); r != "" {
		reasons = append(reasons, r)
	}
	if r := n.vouch.blocked(); r != "" {
		reasons = append(reasons, r)
	}
	if !n.pool.ready() {
		reasons = append(reasons, "pre-parameter pool empty")
	}
	if n.ks.Failed() {
		reasons = append(reasons, "keystore failed: the node is stopping")
	}
	return reasons
}
