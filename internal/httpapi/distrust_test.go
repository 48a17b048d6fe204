package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDistrustedStateNotServed mounts what a compromised leader gets from a forged
// snapshot on an honest node: until k members vouch for the restored state (or once it
// diverged), every authenticated route answers 503 cluster.unavailable before anything
// reads the state — a forged key's public key, a forged audit log, a user the forgery
// re-enabled — and the open endpoints still answer. Once the state is vouched for, the
// same request is served.
func TestDistrustedStateNotServed(t *testing.T) {
	h := newAuthHarness(t, true)
	why := "state restored from a snapshot at index 200 is not yet vouched for"
	h.s.distrusted = func() string { return why }
	handler := h.s.Handler()
	serve := func(req *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"a user's key read", h.userRequest("GET", "/v1/keys/"+h.keyID, nil)},
		{"the admin's audit read", h.adminRequest("GET", "/v1/audit", nil)},
		{"a sign request", h.userRequest("POST", "/v1/keys/"+h.keyID+"/sign", []byte(`{"digest":"`+strings.Repeat("ab", 32)+`"}`))},
		{"no credentials at all", request("GET", "/v1/keys", nil)},
	} {
		rec := serve(tc.req)
		var p map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Code != 503 || p["code"] != "cluster.unavailable" ||
			!strings.Contains(fmt.Sprint(p["detail"]), why) || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("%s on a node whose state is not vouched for: %d %q (Retry-After %q)", tc.name, rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"))
		}
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if rec := serve(request("GET", path, nil)); rec.Code != 200 {
			t.Fatalf("%s: %d", path, rec.Code)
		}
	}
	why = ""
	if rec := serve(h.userRequest("GET", "/v1/keys/"+h.keyID, nil)); rec.Code != 200 {
		t.Fatalf("key read once the state is vouched for: %d %q", rec.Code, rec.Body.String())
	}
}
