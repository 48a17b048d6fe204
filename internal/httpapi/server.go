package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/ids"
	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/state"
)

// State is what the handlers read of this node's replicated state: the read methods of
// *state.FSM, over its latest applied entry.
type State interface {
	// Directory is the verifier's view of the state, for early refusals.
	Directory() authn.Directory
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, index uint64) error
	Cluster() (name string, threshold int, members []state.Member)
	MemberChange() string
	User(id uint64) *state.User
	Users(after uint64, limit int) []state.User
	Key(id string) *state.Key
	KeysIn(owner uint64, only []string, after string, limit int) []*state.Key
	Request(id string) *state.Request
	AuditPage(after uint64, limit int) state.AuditPage
	AuditPruned() (seq uint64, hash string)
	Retention() api.Retention
	AdminKeys() (genesis, current []byte)
	AccessKey(id string) *state.AccessKey
	AccessKeysOf(grantor uint64, after string, limit int) []*state.AccessKey
	AccessLog(id string, after uint64, limit int) ([]state.AccessLogEntry, bool)
	Policy(id string) *policy.Record
	Policies(after string, limit int) []policy.Record
	Approval(id string) *state.Approval
	Approvals(user uint64, all bool, status, after string, limit int) []*state.Approval
	EventLog
	Webhooks() []state.Webhook
	Webhook(id string) *state.Webhook
	WebhookLog(id string) []state.WebhookAttempt
}

var _ State = (*state.FSM)(nil)

// Proposer commits a client's signed request through raft and returns once the entry
// applied on this node, so that the reads that follow see it. It signs the entry with
// the node's identity (a state.Submit vouching for b) and calls again with the same b on
// every retry: b.ProposalID is the same, so a retry whose first copy committed gets that
// copy's result.
type Proposer interface {
	Submit(ctx context.Context, b *state.SubmitBody) (state.Result, error)
}

// Errors a Proposer's Submit may wrap. ErrNoQuorum: the entry was not committed in time
// and may still commit later (answered cluster.no_quorum, as is ctx's deadline);
// ErrNotSigned: the node could not sign the proposal (answered internal). Any other
// error is answered cluster.unavailable.
var (
	ErrNoQuorum  = errors.New("no quorum: too few nodes reachable to commit")
	ErrNotSigned = errors.New("the proposal could not be signed")
)

// NoQuorum marks err as ErrNoQuorum without changing its text, which the answer's detail
// quotes: errors.Is(NoQuorum(err), ErrNoQuorum) and errors.Is(NoQuorum(err), err) hold.
func NoQuorum(err error) error {
	if err == nil {
		return nil
	}
	return noQuorum{err}
}

type noQuorum struct{ err error }

func (e noQuorum) Error() string   { return e.err.Error() }
func (e noQuorum) Unwrap() []error { return []error{ErrNoQuorum, e.err} }

// Config is what a Server needs from its node. Every function must be safe to call from
// many goroutines.
type Config struct {
	// Config is the node's configuration: the api section, the cluster name, the node
	// id and the rate limit.
	Config *config.Config
	Logger *slog.Logger // nil: slog.Default()
	// State is this node's FSM (*state.FSM satisfies it).
	State State
	// Authn is the node's credential verifier, the one its FSM runs.
	Authn    *authn.Verifier
	Proposer Proposer
	// Registry is served at GET /metrics; New registers custos_http_requests_total in it.
	Registry *prometheus.Registry
	// Phases is custos_phase_seconds{event,phase,role}; nil: not observed.
	Phases *prometheus.HistogramVec
	// Now is the node's wall clock (shifted by the test-only clock offset), against
	// which credentials are judged; nil: time.Now.
	Now func() time.Time
	// IsLeader reports whether this node is the raft leader now (phase timings' role).
	IsLeader func() bool
	// Leader is the current raft leader's node id, "" when there is none.
	Leader func() string
	// Live reports whether a member is reachable now (GET /v1/cluster "healthy").
	Live func(nodeID string) bool
	// NotReady lists why this node is not ready (GET /readyz), none when it is.
	NotReady func() []string
	// Distrusted says why this node's replicated state must not be served, or "": a
	// snapshot the leader installed that k members have not yet vouched for, or a state
	// that differs from what k members signed (vouch.Blocked). Such a state is the
	// leader's word, not the log's: its users, keys, requests and audit may be forged,
	// so every authenticated route answers 503 until it is vouched for. nil: always
	// trusted (unit tests of other concerns).
	Distrusted func() string
	// SessionID is the ceremony session id of r's current attempt on key k, for
	// correlating node logs (the request object's session_id); "" for none. It is called
	// only for a request that has a session nonce.
	SessionID func(r *state.Request, k *state.Key) string
	// DebugState is GET /debug/state's body; required with api.debug.
	DebugState func() any
	// OpenWebhookSecret opens a webhook's sealed secret with this node's webhook key and
	// formats it ("whsec_…"), for the answer to its creation; nil without a key.
	OpenWebhookSecret func(webhookID string, sealed []byte) (string, error)
	// AfterCommit is a test hook called once a request committed; nil in real builds.
	AfterCommit func(*state.SubmitBody, state.Result)
}

// Server serves the HTTP API over a proposer and this node's state.
type Server struct {
	c        *config.Config
	log      *slog.Logger
	st       State
	authn    *authn.Verifier
	prop     Proposer
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	phases   *prometheus.HistogramVec
	now      func() time.Time
	isLeader func() bool
	leader   func() string
	live     func(string) bool
	notReady func() []string
	// distrusted is Config.Distrusted, never nil.
	distrusted func() string
	session    func(*state.Request, *state.Key) string
	debug      func() any
	after      func(*state.SubmitBody, state.Result)

	// limiter is the per-caller token bucket (nil when rate limiting is off).
	limiter *rateLimiter
	// akWaits bounds the requests waiting for this node's state to catch up (an access
	// key or an admin key rotation it has not applied yet; see catchUp).
	akWaits chan struct{}
	// catchingUp is a test hook, called when a request starts waiting in catchUp; nil in
	// real builds.
	catchingUp func()
	waiters    *waiters
	// events is the event log the activity stream reads (State's); streams bounds the
	// streams open at once.
	events  EventLog
	streams chan struct{}
	// streamMu guards streamsBy: the open event streams per caller.
	streamMu  sync.Mutex
	streamsBy map[string]int
	// openSecret opens a new webhook's secret (nil: no webhook key on this node).
	openSecret func(webhookID string, sealed []byte) (string, error)
	// life ends (endLife) when the node stops: open streams end with it, so that the
	// HTTP server's graceful shutdown does not wait for them.
	life    context.Context
	endLife context.CancelFunc
	handler http.Handler
	// routeOf names each operation's route pattern (from apiRoutes), for access-key logs.
	routeOf map[string]string
}

// maxAccessKeyWaits bounds the requests that wait at once for this node's state to catch
// up: for an unknown access key to appear, or for an admin key rotation to apply (see
// catchUp).
const maxAccessKeyWaits = 32

// New builds the API server and registers its metric.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Config == nil:
		return nil, errors.New("httpapi: no configuration")
	case cfg.State == nil, cfg.Authn == nil, cfg.Proposer == nil, cfg.Registry == nil:
		return nil, errors.New("httpapi: State, Authn, Proposer and Registry are required")
	case cfg.IsLeader == nil, cfg.Leader == nil, cfg.Live == nil, cfg.NotReady == nil, cfg.SessionID == nil:
		return nil, errors.New("httpapi: IsLeader, Leader, Live, NotReady and SessionID are required")
	case cfg.Config.API.Debug && cfg.DebugState == nil:
		return nil, errors.New("httpapi: api.debug needs DebugState")
	}
	distrusted := cfg.Distrusted
	if distrusted == nil {
		distrusted = func() string { return "" }
	}
	s := &Server{
		c: cfg.Config, log: cfg.Logger, st: cfg.State, authn: cfg.Authn, prop: cfg.Proposer, reg: cfg.Registry,
		phases: cfg.Phases, now: cfg.Now, isLeader: cfg.IsLeader, leader: cfg.Leader, live: cfg.Live,
		notReady: cfg.NotReady, session: cfg.SessionID, debug: cfg.DebugState, after: cfg.AfterCommit,
		limiter: newRateLimiter(cfg.Config.RateLimit()), akWaits: make(chan struct{}, maxAccessKeyWaits), waiters: newWaiters(),
		events: cfg.State, streams: make(chan struct{}, maxStreams), openSecret: cfg.OpenWebhookSecret, streamsBy: map[string]int{},
		distrusted: distrusted,
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "custos_http_requests_total", Help: "API requests by route and outcome code."}, []string{"route", "code"})
	if err := s.reg.Register(s.requests); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	s.routeOf = map[string]string{}
	for _, r := range s.apiRoutes() {
		s.routeOf[r.op] = r.pattern
	}
	return s, nil
}

// EndStreams ends the open event streams (and refuses new ones): the node calls it before
// it shuts the HTTP server down.
func (s *Server) EndStreams() { s.endLife() }

// Handler is the whole API: every response carries X-Request-Id.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer is an http.Server for Handler with the API's timeouts.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
}

// Settled wakes the handlers waiting for requestID: the node calls it when its FSM
// reports the request settled (state.EventSettled).
func (s *Server) Settled(requestID string) { s.waiters.notify(requestID) }

// route is one authenticated route: its pattern, the FSM operation it commits and its
// handler.
type route struct {
	pattern, op string
	h           handlerFunc
}

type handlerFunc func(x *exchange) *apiError

// apiRoutes lists the authenticated routes; the FSM knows the same ones (state.Routes,
// held equal by a test), since it derives each request's operation from what was signed.
func (s *Server) apiRoutes() []route {
	return []route{
		{"GET /v1/cluster", state.OpClusterGet, s.hCluster},
		{"POST /v1/admin/users", state.OpUserCreate, s.hUserCreate},
		{"POST /v1/create-user", state.OpSigpairCreate, s.hSigpairCreate},
		{"GET /v1/admin/users", state.OpUserList, s.hUserList},
		{"GET /v1/admin/users/{id}", state.OpUserGet, s.hUserOp},
		{"POST /v1/admin/users/{id}/disable", state.OpUserDisable, s.hUserOp},
		{"POST /v1/admin/users/{id}/enable", state.OpUserEnable, s.hUserOp},
		{"POST /v1/admin/users/{id}/revoke-tokens", state.OpUserRevokeTokens, s.hUserOp},
		{"PUT /v1/admin/users/{id}/permissions", state.OpUserPermissions, s.hUserOp},
		{"PUT /v1/admin/admin-key", state.OpAdminKeyRotate, s.hAdminKeyRotate},
		{"POST /v1/keys", state.OpKeyCreate, s.hKeyCreate},
		{"GET /v1/keys", state.OpKeyList, s.hKeyList},
		{"GET /v1/keys/{key_id}", state.OpKeyGet, s.hKeyGet},
		{"POST /v1/keys/{key_id}/sign", state.OpKeySign, s.hKeySign},
		{"POST /v1/keys/{key_id}/psbt", state.OpKeyPSBT, s.hKeySign},
		{"POST /v1/keys/{key_id}/derive", state.OpKeyDerive, s.hKeyDerive},
		{"DELETE /v1/keys/{key_id}", state.OpKeyDelete, s.hKeyDelete},
		{"POST /v1/keys/{key_id}/restore", state.OpKeyRestore, s.hKeyRestore},
		{"POST /v1/admin/keys/{key_id}/reshare", state.OpKeyReshare, s.hKeyReshare},
		{"POST /v1/admin/keys/{key_id}/refresh", state.OpKeyRefresh, s.hKeyReshare},
		{"GET /v1/admin/members", state.OpMemberList, s.hMembers},
		{"POST /v1/admin/members", state.OpMemberAdd, s.hMembers},
		{"DELETE /v1/admin/members/{id}", state.OpMemberRemove, s.hMembers},
		{"POST /v1/admin/members/{id}/replace", state.OpMemberReplace, s.hMembers},
		{"GET /v1/requests/{request_id}", state.OpRequestGet, s.hRequestGet},
		{"GET /v1/audit", state.OpAuditList, s.hAudit},
		{"POST /v1/admin/audit/prune", state.OpAuditPrune, s.hAuditPrune},
		{"GET /v1/admin/retention", state.OpRetentionGet, s.hRetention},
		{"PUT /v1/admin/retention", state.OpRetentionSet, s.hRetention},
		{"POST /v1/access-keys", state.OpAccessCreate, s.hAccessCreate},
		{"GET /v1/access-keys", state.OpAccessList, s.hAccessList},
		{"DELETE /v1/access-keys/{id}", state.OpAccessRevoke, s.hAccessRevoke},
		{"GET /v1/access-keys/{id}/log", state.OpAccessLog, s.hAccessLog},
		{"POST /v1/admin/policies", state.OpPolicyCreate, s.hPolicyCreate},
		{"GET /v1/admin/policies", state.OpPolicyList, s.hPolicyList},
		{"GET /v1/admin/policies/{policy_id}", state.OpPolicyGet, s.hPolicyGet},
		{"PUT /v1/admin/policies/{policy_id}", state.OpPolicyReplace, s.hPolicyChange},
		{"DELETE /v1/admin/policies/{policy_id}", state.OpPolicyArchive, s.hPolicyChange},
		{"POST /v1/policies/evaluate", state.OpPolicyEvaluate, s.hEvaluate},
		{"GET /v1/approvals", state.OpApprovalList, s.hApprovalList},
		{"GET /v1/approvals/{approval_id}", state.OpApprovalGet, s.hApproval},
		{"POST /v1/approvals/{approval_id}/decisions", state.OpApprovalDecide, s.hApproval},
		{"POST /v1/requests/{request_id}/cancel", state.OpRequestCancel, s.hRequestCancel},
		{"GET /v1/events", state.OpEventList, s.hEvents},
		{"POST /v1/admin/webhooks", state.OpWebhookCreate, s.hWebhookCreate},
		{"GET /v1/admin/webhooks", state.OpWebhookList, s.hWebhookList},
		{"DELETE /v1/admin/webhooks/{webhook_id}", state.OpWebhookDelete, s.hWebhookDelete},
		{"GET /v1/admin/webhooks/{webhook_id}/deliveries", state.OpWebhookDeliveries, s.hWebhookDeliveries},
	}
}

// routes builds the HTTP API.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	open := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, h) }
	open("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Health{Status: api.HealthStatusOK})
	})
	open("GET /readyz", s.handleReady)
	metricsH := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	open("GET /metrics", metricsH.ServeHTTP)
	if s.c.API.Debug {
		open("GET /debug/state", s.handleDebugState)
		registerPprof(mux)
	}
	for _, r := range s.apiRoutes() {
		mux.Handle(r.pattern, s.authenticated(r.op, r.h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, r: r, id: w.Header().Get(api.HeaderRequestID), start: time.Now()}
		x.fail(errf(api.CodeRouteNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	// Every response carries X-Request-Id, the mux's own 405 answers included.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderRequestID, newRequestID())
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
func (s *Server) authenticated(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: w, r: r, id: w.Header().Get(api.HeaderRequestID), route: route, start: time.Now(), status: 200, distrusted: s.distrusted}
		defer s.logDecision(x)
		// First of all: even the credential checks read the state (users, revocations,
		// the admin key), so a state not vouched for cannot judge them either. Every
		// answer is judged again once composed (exchange.answerable).
		if e := x.answerable(); e != nil {
			x.fail(e)
			return
		}
		if err := s.checkAuth(x); err != nil {
			x.fail(err)
			return
		}
		if err := s.checkRate(x); err != nil {
			x.fail(err)
			return
		}
		if err := h(x); err != nil {
			x.fail(err)
		}
	})
}

func (s *Server) logDecision(x *exchange) {
	code := x.code
	if code == "" {
		code = "ok"
	}
	s.requests.WithLabelValues(x.route, code).Inc()
	s.log.Info("request", "request_id", x.id, "route", x.route, "method", x.r.Method, "status", x.status,
		"code", code, "actor", x.caller.Actor(), "ms", time.Since(x.start).Milliseconds())
}

// commit proposes the exchange's signed request and turns a refusal into its API error.
// The entry carries the request exactly as the caller signed it, vouched for by this
// node's identity key (the Proposer signs it); every node's FSM derives the operation and
// its arguments from it.
func (s *Server) commit(x *exchange) (state.Result, *apiError) {
	// One id for every retry of this proposal: a retry whose first copy committed gets
	// that copy's result (see state.Call.ProposalID).
	body := &state.SubmitBody{Signed: x.signed, ProposalID: ids.New()}
	ctx, cancel := context.WithTimeout(x.r.Context(), 10*time.Second)
	defer cancel()
	res, err := s.prop.Submit(ctx, body)
	if err != nil {
		switch {
		case errors.Is(err, ErrNotSigned):
			return state.Result{}, errf(api.CodeInternal, "could not sign the proposal")
		case errors.Is(err, ErrNoQuorum) || errors.Is(err, context.DeadlineExceeded):
			return res, errf(api.CodeClusterNoQuorum, "the request was not committed in time: too few nodes reachable (%v); it may still commit once the cluster heals, so send it again with the same idempotency_key to learn its outcome", err)
		}
		return res, errf(api.CodeClusterUnavailable, "the request was not committed (%v); send it again with the same idempotency_key to learn its outcome", err)
	}
	if !res.OK() {
		e := &apiError{Status: api.StatusOf(res.Code), Code: res.Code, Detail: res.Detail}
		if res.RequestID != "" {
			// A request the refusal made (blocked by a policy): the problem carries it.
			if r := s.st.Request(res.RequestID); r != nil {
				rv := s.requestView(r)
				e.Request = &rv
			}
		}
		return res, e
	}
	if s.after != nil {
		s.after(body, res)
	}
	return res, nil
}

// handleReady serves GET /readyz: 200 when ready, 503 with the node's reasons when not.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if reasons := s.notReady(); len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, api.Readiness{Status: api.ReadyStatusNotReady, Reasons: reasons})
		return
	}
	writeJSON(w, http.StatusOK, api.Readiness{Status: api.ReadyStatusReady})
}

// writeJSON answers an open endpoint (no exchange) with v as its JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// handleDebugState serves GET /debug/state (api.debug): the node's DebugState.
func (s *Server) handleDebugState(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(s.debug())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	_, _ = w.Write(append(b, '\n'))
}

// registerPprof serves Go's profiler under /debug/pprof/ (api.debug; off by default:
// profiles reveal code paths and timing, so only trusted networks should reach them).
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
