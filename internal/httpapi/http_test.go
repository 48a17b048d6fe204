package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/state/statetest"
)

// TestErrorAnswers: an error answer takes its status and title from internal/api's table
// (the statuses the server always answered stay), and its problem document carries them.
func TestErrorAnswers(t *testing.T) {
	tests := map[string]int{
		api.CodeRequestMalformed: 400, api.CodeRequestTooLarge: 413, api.CodeAuthMissing: 401, api.CodeAuthNonceReused: 401,
		api.CodePermDenied: 403, api.CodePolicyBlocked: 403, api.CodeKeyNotFound: 404, api.CodeUserNotFound: 404,
		api.CodeRequestNotFound: 404, api.CodeKeyNotActive: 409, api.CodeRequestIdempotencyConflict: 409,
		api.CodeClusterNoQuorum: 503, api.CodeClusterUnavailable: 503, api.CodeRateLimited: 429, api.CodeCeremonyFailed: 502,
		api.CodeAccessKeyNotFound: 404, api.CodeRequestConflict: 409, api.CodeAuthKeyRevoked: 401, api.CodeInternal: 500,
		api.CodeRouteNotFound: 404,
	}
	for code, want := range tests {
		if got := errf(code, "x").Status; got != want {
			t.Errorf("%s: %d, want %d", code, got, want)
		}
	}
	for _, c := range api.Codes() {
		rec := httptest.NewRecorder()
		x := &exchange{w: rec, r: httptest.NewRequest("GET", "/", nil), id: "rq_1"}
		x.fail(errf(c.Code, "detail of %s", c.Code))
		var p api.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		want := api.Problem{Type: api.ProblemTypeBlank, Title: c.Title, Status: c.Status, Code: c.Code, Detail: "detail of " + c.Code, RequestID: "rq_1"}
		if rec.Code != c.Status || rec.Header().Get("Content-Type") != api.ContentTypeProblem || p != want || x.code != c.Code || x.status != c.Status {
			t.Errorf("%s: %d %s %q", c.Code, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
	}
	if e := errf("no.such_code", ""); e.Status != 400 || api.Title(e.Code) != "no.such_code" {
		t.Errorf("a code outside the table: %+v", e)
	}
}

// TestRoutesMatchTheFSM holds the HTTP routes and the FSM's route table equal: the FSM
// derives each request's operation from its signed method and path.
func TestRoutesMatchTheFSM(t *testing.T) {
	s := &Server{}
	got := map[string]string{}
	for _, r := range s.apiRoutes() {
		got[r.op] = regexp.MustCompile(`\{[a-z_]+\}`).ReplaceAllString(r.pattern, "{}")
	}
	want := state.Routes()
	if len(got) != len(want) {
		t.Fatalf("HTTP has %d authenticated routes, the FSM %d", len(got), len(want))
	}
	for op, p := range want {
		if got[op] != p {
			t.Errorf("%s: HTTP %q, FSM %q", op, got[op], p)
		}
	}
}

// bareConfig is a server configuration over an empty FSM, with every function stubbed.
func bareConfig(t *testing.T, cfg *config.Config) Config {
	t.Helper()
	an, err := authn.New(authn.Config{HMACKey: bytes.Repeat([]byte{7}, 32), Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Config: cfg, State: statetest.Open(t, testVerifier{}, an, nil), Authn: an, Proposer: noProposer{},
		Registry: prometheus.NewRegistry(), IsLeader: func() bool { return false }, Leader: func() string { return "" },
		Live: func(string) bool { return false }, NotReady: func() []string { return nil },
		SessionID: func(*state.Request, *state.Key) string { return "" },
	}
}

// noProposer is the Proposer of servers that must never commit anything.
type noProposer struct{}

func (noProposer) Submit(context.Context, *state.SubmitBody) (state.Result, error) {
	return state.Result{}, errors.New("nothing may be proposed here")
}

func newBareServer(t *testing.T, c Config) *Server {
	t.Helper()
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDebugRoutesAreOptIn: /debug/state (which serialises the whole state under its lock)
// and the profiler exist only with api.debug; without it they are unknown routes.
func TestDebugRoutesAreOptIn(t *testing.T) {
	tests := []struct {
		name  string
		debug bool
		path  string
		want  int
	}{
		{"state off", false, "/debug/state", http.StatusNotFound},
		{"pprof off", false, "/debug/pprof/cmdline", http.StatusNotFound},
		{"pprof on", true, "/debug/pprof/cmdline", http.StatusOK},
		{"state on", true, "/debug/state", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{}
			cfg.API.Debug = tt.debug
			c := bareConfig(t, cfg)
			c.DebugState = func() any { return map[string]any{"node": "n1", "shares": 2} }
			rec := httptest.NewRecorder()
			newBareServer(t, c).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.want {
				t.Fatalf("GET %s: %d, want %d", tt.path, rec.Code, tt.want)
			}
			if tt.path == "/debug/state" && tt.debug && rec.Body.String() != `{"node":"n1","shares":2}`+"\n" {
				t.Fatalf("GET /debug/state: %q", rec.Body.String())
			}
		})
	}
	cfg := &config.Config{}
	cfg.API.Debug = true
	if _, err := New(bareConfig(t, cfg)); err == nil {
		t.Fatal("api.debug without DebugState accepted")
	}
}

func TestNewRequiresTheNodesFunctions(t *testing.T) {
	for name, drop := range map[string]func(*Config){
		"config": func(c *Config) { c.Config = nil }, "state": func(c *Config) { c.State = nil },
		"authn": func(c *Config) { c.Authn = nil }, "proposer": func(c *Config) { c.Proposer = nil },
		"registry": func(c *Config) { c.Registry = nil }, "is leader": func(c *Config) { c.IsLeader = nil },
		"leader": func(c *Config) { c.Leader = nil }, "live": func(c *Config) { c.Live = nil },
		"not ready": func(c *Config) { c.NotReady = nil }, "session id": func(c *Config) { c.SessionID = nil },
	} {
		c := bareConfig(t, &config.Config{})
		drop(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New without %s succeeded", name)
		}
	}
	// The request counter is the server's; a second server cannot register it twice.
	c := bareConfig(t, &config.Config{})
	newBareServer(t, c)
	if _, err := New(c); err == nil {
		t.Error("two servers registered custos_http_requests_total in one registry")
	}
}

// TestOpenEndpoints: liveness, readiness with the node's reasons, metrics, unknown routes
// and the mux's own answers, each with an X-Request-Id.
func TestOpenEndpoints(t *testing.T) {
	var reasons []string
	c := bareConfig(t, &config.Config{})
	c.NotReady = func() []string { return reasons }
	h := newBareServer(t, c).Handler()
	get := func(method, path string) *httptest.ResponseRecorder {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if !strings.HasPrefix(rec.Header().Get("X-Request-Id"), "rq_") {
			t.Fatalf("%s %s: X-Request-Id %q", method, path, rec.Header().Get("X-Request-Id"))
		}
		return rec
	}
	if rec := get("GET", "/healthz"); rec.Code != 200 || rec.Body.String() != `{"status":"ok"}`+"\n" {
		t.Fatalf("healthz: %d %q", rec.Code, rec.Body.String())
	}
	if rec := get("GET", "/readyz"); rec.Code != 200 || rec.Body.String() != `{"status":"ready"}`+"\n" {
		t.Fatalf("readyz: %d %q", rec.Code, rec.Body.String())
	}
	reasons = []string{"no raft leader", "pre-parameter pool empty"}
	if rec := get("GET", "/readyz"); rec.Code != 503 || rec.Body.String() != `{"status":"not_ready","reasons":["no raft leader","pre-parameter pool empty"]}`+"\n" {
		t.Fatalf("readyz not ready: %d %q", rec.Code, rec.Body.String())
	}
	get("GET", "/v1/nothing-here")
	if rec := get("GET", "/metrics"); rec.Code != 200 {
		t.Fatalf("metrics: %d", rec.Code)
	}
	rec := get("GET", "/v1/nothing-here")
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Code != 404 || p["code"] != "route.not_found" || p["request_id"] != rec.Header().Get("X-Request-Id") ||
		rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown route: %d %q", rec.Code, rec.Body.String())
	}
	// A method a route does not serve falls to the catch-all.
	if rec := get("PATCH", "/v1/keys"); rec.Code != http.StatusNotFound {
		t.Fatalf("PATCH /v1/keys: %d", rec.Code)
	}
	// An unauthenticated request is refused early, counted and never proposed.
	if rec := get("GET", "/v1/keys"); rec.Code != 401 {
		t.Fatalf("GET /v1/keys without credentials: %d", rec.Code)
	}
	if rec := get("GET", "/metrics"); !strings.Contains(rec.Body.String(), `custos_http_requests_total{code="auth.missing",route="keys.list"} 1`) {
		t.Fatalf("metrics:\n%s", rec.Body.String())
	}
}
