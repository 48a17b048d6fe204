package httpapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/state"
)

// guard bounds every wait of these tests on the server, so that a bug fails the test
// instead of hanging it. It synchronises nothing.
const guard = 10 * time.Second

// serve runs r through the server's Handler in a goroutine of its own: the handler holds
// its answer until the request settles, while the test goroutine plays the committee.
func (h *authHarness) serve(r *http.Request) <-chan *httptest.ResponseRecorder {
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.s.Handler().ServeHTTP(rec, r)
		done <- rec
	}()
	return done
}

func answer(t *testing.T, done <-chan *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	t.Helper()
	select {
	case rec := <-done:
		return rec
	case <-time.After(guard):
		t.Fatal("no answer")
	}
	return nil
}

func committedResult(t *testing.T, committed <-chan state.Result) state.Result {
	t.Helper()
	select {
	case res := <-committed:
		if !res.OK() {
			t.Fatalf("the FSM refused the request: %+v", res)
		}
		return res
	case <-time.After(guard):
		t.Fatal("nothing was committed")
	}
	return state.Result{}
}

// decode reads a JSON answer with its status and content type.
func decode(t *testing.T, rec *httptest.ResponseRecorder, status int) map[string]any {
	t.Helper()
	ct := "application/json"
	if status >= 400 {
		ct = "application/problem+json"
	}
	if rec.Code != status || rec.Header().Get("Content-Type") != ct || !strings.HasPrefix(rec.Header().Get("X-Request-Id"), "rq_") {
		t.Fatalf("answer %d (%s, X-Request-Id %q), want %d: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("X-Request-Id"), status, rec.Body.String())
	}
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("answer %q: %v", rec.Body.String(), err)
	}
	return v
}

// TestSignThroughTheHandler drives keygen and signing through Handler(): the request is
// authenticated, committed through the Proposer (raft's stand-in, applying to a real
// strict FSM), held until the committee's signed reports settle it, and answered.
func TestSignThroughTheHandler(t *testing.T) {
	h := newAuthHarness(t, false)
	committed := make(chan state.Result, 1)
	h.prop.set(nil, committed)

	// Keygen over the three members: 201 with the key once all three reported its key.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keygen := h.serve(h.userRequest("POST", "/v1/keys", []byte(`{"curve":"ed25519","threshold":2,"label":"hot"}`)))
	res := committedResult(t, committed)
	r := h.fsm.Request(res.RequestID)
	for _, m := range harnessMembers {
		if rr := h.report(m, state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: m, PublicKey: pub}); !rr.OK() {
			t.Fatalf("share stored by %s: %+v", m, rr)
		}
	}
	key := decode(t, answer(t, keygen), http.StatusCreated)
	if key["key_id"] != res.KeyID || key["public_key"] != hex.EncodeToString(pub) || key["status"] != state.KeyActive || key["curve"] != state.CurveEd25519 ||
		key["label"] != "hot" || key["threshold"] != 2.0 || key["parties"] != 3.0 {
		t.Fatalf("key %v", key)
	}
	keyID := res.KeyID

	// Sign: the answer waits for the committee's result.
	msg := []byte("pay 1 BTC to bob")
	body := []byte(`{"message":"` + hex.EncodeToString(msg) + `"}`)
	signing := h.serve(h.userRequest("POST", "/v1/keys/"+keyID+"/sign", body))
	res = committedResult(t, committed)
	r = h.fsm.Request(res.RequestID)
	if r.Status != state.StatusScheduled || !slices.Equal(r.Committee, []string{"n1", "n2"}) {
		t.Fatalf("request after commit %+v", r)
	}
	// A result that does not verify settles nothing; the handler keeps waiting.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if rr := h.report("n2", state.TypeCeremonyResult, &state.CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: state.Signature{Sig: ed25519.Sign(other, msg)}}); rr.Code != "ceremony.failed" {
		t.Fatalf("forged result: %+v", rr)
	}
	select {
	case rec := <-signing:
		t.Fatalf("answered before the request settled: %d %s", rec.Code, rec.Body.String())
	default:
	}
	sig := ed25519.Sign(priv, msg)
	if rr := h.report("n2", state.TypeCeremonyResult, &state.CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: state.Signature{Sig: sig}}); !rr.OK() {
		t.Fatalf("result: %+v", rr)
	}
	v := decode(t, answer(t, signing), http.StatusOK)
	want := map[string]any{
		"request_id": r.ID, "kind": state.KindSign, "status": state.StatusSigned, "key_id": keyID,
		"message": hex.EncodeToString(msg), "session_id": "sess-" + r.ID + "-1",
		"signature": map[string]any{"signature": hex.EncodeToString(sig)},
	}
	for k, w := range want {
		if fmt.Sprint(v[k]) != fmt.Sprint(w) {
			t.Errorf("%s: %v, want %v", k, v[k], w)
		}
	}
	// The request object reads the same afterwards.
	rec := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(rec, h.userRequest("GET", "/v1/requests/"+r.ID, nil))
	<-committed
	if again := decode(t, rec, http.StatusOK); fmt.Sprint(again["signature"]) != fmt.Sprint(v["signature"]) || again["status"] != state.StatusSigned {
		t.Fatalf("GET the request: %v", again)
	}

	// The decision is counted, and the entry node's phases are observed with its role.
	if n := metricValue(t, h.s.requests.WithLabelValues(state.OpKeySign, "ok")).GetCounter().GetValue(); n != 1 {
		t.Fatalf("custos_http_requests_total{route=%q,code=ok} = %v", state.OpKeySign, n)
	}
	for _, p := range []string{"auth", "commit", "wait"} {
		if n := metricValue(t, h.phases.WithLabelValues("sign_request", p, "leader").(prometheus.Metric)).GetHistogram().GetSampleCount(); n != 1 {
			t.Errorf("phase %s observed %d times", p, n)
		}
	}
	series := make(chan prometheus.Metric, 16)
	h.phases.Collect(series)
	if n := len(series); n != 3 {
		t.Fatalf("%d phase series, want 3", n)
	}

	// A wait that ends before the request settles answers 202 with the request to poll.
	h.cfg.API.WaitTimeout.Duration = time.Millisecond
	pending := h.serve(h.userRequest("POST", "/v1/keys/"+keyID+"/sign", body))
	res = committedResult(t, committed)
	if v := decode(t, answer(t, pending), http.StatusAccepted); v["request_id"] != res.RequestID || v["status"] != state.StatusScheduled || v["signature"] != nil {
		t.Fatalf("pending: %v", v)
	}
	h.cfg.API.WaitTimeout.Duration = guard

	// A keygen that fails answers the failure's problem, with the request object.
	failing := h.serve(h.userRequest("POST", "/v1/keys", []byte(`{"curve":"ed25519","threshold":2}`)))
	res = committedResult(t, committed)
	r = h.fsm.Request(res.RequestID)
	if rr := h.report("n2", state.TypeCeremonyFailed, &state.CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Code: "ceremony.failed", Detail: "timeout"}); !rr.OK() {
		t.Fatalf("failure: %+v", rr)
	}
	p := decode(t, answer(t, failing), http.StatusBadGateway)
	if p["code"] != "ceremony.failed" || p["title"] != "ceremony failed" || p["request"].(map[string]any)["status"] != state.StatusFailed {
		t.Fatalf("failed keygen: %v", p)
	}
}

// TestCommitAnswers: what the Proposer and the FSM say becomes the API's answer.
func TestCommitAnswers(t *testing.T) {
	h := newAuthHarness(t, false)
	var hooked []state.Result
	h.s.after = func(b *state.SubmitBody, res state.Result) {
		if b.Signed == nil || len(b.ProposalID) != 32 {
			t.Errorf("hook got %+v", b)
		}
		hooked = append(hooked, res)
	}
	tests := []struct {
		name       string
		err        error
		target     string
		status     int
		code       string
		detail     string
		retryAfter string
	}{
		{"no quorum", NoQuorum(errors.New("leader lost: committed but not yet applied here")), "/v1/keys", 503, "cluster.no_quorum",
			"the request was not committed in time: too few nodes reachable (leader lost: committed but not yet applied here); it may still commit", "1"},
		{"wrapped no quorum", fmt.Errorf("%w: enqueue timeout", ErrNoQuorum), "/v1/keys", 503, "cluster.no_quorum", "(no quorum: too few nodes reachable to commit: enqueue timeout)", "1"},
		{"deadline", fmt.Errorf("forwarding: %w", context.DeadlineExceeded), "/v1/keys", 503, "cluster.no_quorum", "too few nodes reachable", "1"},
		{"unavailable", errors.New("cluster unavailable: no leader"), "/v1/keys", 503, "cluster.unavailable",
			"the request was not committed (cluster unavailable: no leader); send it again with the same idempotency_key", "1"},
		{"not signed", fmt.Errorf("%w: keystore closed", ErrNotSigned), "/v1/keys", 500, "internal", "could not sign the proposal", ""},
		{"the FSM refuses", nil, "/v1/keys/key_nope", 404, "key.not_found", "", ""},
		{"committed", nil, "/v1/keys", 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.prop.set(tt.err, nil)
			before := len(hooked)
			rec := httptest.NewRecorder()
			h.s.Handler().ServeHTTP(rec, h.userRequest("GET", tt.target, nil))
			v := decode(t, rec, tt.status)
			if rec.Header().Get("Retry-After") != tt.retryAfter {
				t.Errorf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
			if tt.code == "" {
				if len(hooked) != before+1 || !hooked[len(hooked)-1].OK() {
					t.Fatal("the after-commit hook was not called")
				}
				return
			}
			if v["code"] != tt.code || !strings.Contains(fmt.Sprint(v["detail"]), tt.detail) || v["request_id"] != rec.Header().Get("X-Request-Id") {
				t.Fatalf("problem %v", v)
			}
			if len(hooked) != before {
				t.Fatal("the after-commit hook was called for a request that did not commit")
			}
		})
	}
}

// TestHandlerAnswers: the synchronous routes through Handler(), each committed through
// the Proposer and answered from the state it applied to.
func TestHandlerAnswers(t *testing.T) {
	h := newAuthHarness(t, false)
	do := func(r *http.Request, status int) (map[string]any, *httptest.ResponseRecorder) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.s.Handler().ServeHTTP(rec, r)
		if status == http.StatusNoContent {
			if rec.Code != status || rec.Body.Len() != 0 {
				t.Fatalf("%s %s: %d %q", r.Method, r.URL, rec.Code, rec.Body.String())
			}
			return nil, rec
		}
		return decode(t, rec, status), rec
	}
	v, _ := do(h.userRequest("GET", "/v1/cluster", nil), 200)
	if v["name"] != "test" || v["leader"] != "n1" || v["threshold"] != 2.0 || v["parties"] != 3.0 ||
		fmt.Sprint(v["members"]) != "[map[api:http://n1.test healthy:true id:n1 leader:true peer_id:"+peerOf(h, "n1")+"] "+
			"map[api:http://n2.test healthy:true id:n2 leader:false peer_id:"+peerOf(h, "n2")+"] "+
			"map[api:http://n3.test healthy:false id:n3 leader:false peer_id:"+peerOf(h, "n3")+"]]" {
		t.Fatalf("cluster %v", v)
	}
	v, _ = do(h.adminRequest("POST", "/v1/admin/users", []byte(`{"name":"carol"}`)), 201)
	if v["name"] != "carol" || v["user_id"] == nil {
		t.Fatalf("user create %v", v)
	}
	v, _ = do(h.adminRequest("GET", "/v1/admin/users?limit=1", nil), 200)
	if users := v["users"].([]any); len(users) != 1 || v["next"] != "1" || users[0].(map[string]any)["name"] != "alice" {
		t.Fatalf("users %v", v)
	}
	if v, _ = do(h.adminRequest("GET", "/v1/admin/users?after=x", nil), 400); v["code"] != "request.malformed" {
		t.Fatalf("bad cursor %v", v)
	}
	v, _ = do(h.adminRequest("POST", "/v1/admin/users/"+itoa(h.userID)+"/disable", nil), 200)
	if v["status"] != "disabled" {
		t.Fatalf("disable %v", v)
	}
	do(h.adminRequest("POST", "/v1/admin/users/"+itoa(h.userID)+"/enable", nil), 200)
	v, _ = do(h.userRequest("GET", "/v1/keys", nil), 200)
	if keys := v["keys"].([]any); len(keys) != 1 || keys[0].(map[string]any)["key_id"] != h.keyID {
		t.Fatalf("keys %v", v)
	}
	v, _ = do(h.userRequest("GET", "/v1/keys/"+h.keyID, nil), 200)
	if v["key_id"] != h.keyID || v["chain_code"] == nil {
		t.Fatalf("key %v", v)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	grant := mustJSON(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(pub), "permissions": []string{"keys:read"}})
	v, rec := do(h.userRequest("POST", "/v1/access-keys", grant), 201)
	akID, _ := v["id"].(string)
	if !strings.HasPrefix(akID, "ak_") || rec.Header().Get("Location") != "/v1/access-keys/"+akID || v["revoked_at"] != nil {
		t.Fatalf("grant %v (Location %q)", v, rec.Header().Get("Location"))
	}
	v, _ = do(h.userRequest("GET", "/v1/access-keys", nil), 200)
	if aks := v["access_keys"].([]any); len(aks) != 1 || aks[0].(map[string]any)["id"] != akID {
		t.Fatalf("access keys %v", v)
	}
	do(h.userRequest("DELETE", "/v1/access-keys/"+akID, nil), 204)
	v, _ = do(h.userRequest("GET", "/v1/access-keys/"+akID+"/log", nil), 200)
	if v["entries"] == nil {
		t.Fatalf("access-key log %v", v)
	}
	v, _ = do(h.adminRequest("GET", "/v1/audit?limit=2", nil), 200)
	if entries := v["entries"].([]any); len(entries) != 2 || v["next"] != "2" {
		t.Fatalf("audit %v", v)
	}
	if v, _ = do(h.userRequest("GET", "/v1/admin/users", nil), 403); v["code"] != "perm.denied" {
		t.Fatalf("user on an admin route %v", v)
	}
	// Rate limit: the caller's bucket empties, then 429 with Retry-After, nothing proposed.
	rps := 1.0
	h.cfg.Rate.PerCallerRPS, h.cfg.Rate.Burst = &rps, 1
	h.s.limiter = newRateLimiter(h.cfg.RateLimit())
	do(h.userRequest("GET", "/v1/keys", nil), 200)
	audits := h.auditCount()
	v, rec = do(h.userRequest("GET", "/v1/keys", nil), 429)
	if v["code"] != "rate.limited" || rec.Header().Get("Retry-After") != "1" || h.auditCount() != audits {
		t.Fatalf("rate limited %v (Retry-After %q)", v, rec.Header().Get("Retry-After"))
	}
}

func metricValue(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func peerOf(h *authHarness, id string) string {
	_, _, members := h.fsm.Cluster()
	for _, m := range members {
		if m.ID == id {
			return m.PeerID
		}
	}
	return ""
}
