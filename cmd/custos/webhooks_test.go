package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
)

// webhooksFake is a node's /v1/admin/webhooks routes: it checks the admin's HS256 token,
// records "METHOD URI body" and answers from answers (keyed by "METHOD path").
type webhooksFake struct {
	t        *testing.T
	verifier *auth.TokenVerifier
	answers  map[string]struct {
		status int
		body   string
	}
	mu    sync.Mutex
	calls []string
}

func (f *webhooksFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if _, err := f.verifier.VerifyAdmin(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), time.Now()); err != nil {
		f.t.Errorf("%s %s: admin token: %v", r.Method, r.URL.RequestURI(), err)
	}
	f.mu.Lock()
	f.calls = append(f.calls, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+string(body)))
	f.mu.Unlock()
	a, ok := f.answers[r.Method+" "+r.URL.EscapedPath()]
	if !ok {
		a.status, a.body = 404, `{"status":404,"code":"route.not_found","detail":"no such route"}`
	}
	ct := api.ContentTypeJSON
	if a.status >= 400 {
		ct = api.ContentTypeProblem
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (f *webhooksFake) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestWebhooksCLI(t *testing.T) {
	adminKey := bytes.Repeat([]byte{9}, 32)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	created := `{"webhook_id":"wh_1","url":"https://hooks.example.com/custos","events":["request.signed","approval.decided"],` +
		`"description":"bot","secret":"whsec_c2VjcmV0","created_at":"2026-01-02T03:04:05Z","delivered_through":0}`
	f := &webhooksFake{t: t, verifier: v, answers: map[string]struct {
		status int
		body   string
	}{
		"POST /v1/admin/webhooks": {201, created},
		"GET /v1/admin/webhooks": {200, `{"webhooks":[{"webhook_id":"wh_1","url":"https://hooks.example.com/custos",` +
			`"events":["request.signed","approval.decided"],"created_at":"2026-01-02T03:04:05Z","delivered_through":7,"failing":2}]}`},
		"DELETE /v1/admin/webhooks/wh_1":         {204, ""},
		"DELETE /v1/admin/webhooks/wh_9":         {404, `{"status":404,"code":"webhook.not_found","detail":"no such webhook"}`},
		"GET /v1/admin/webhooks/wh_1/deliveries": {200, `{"deliveries":[{"event_id":"evt_7","seq":7,"time":"2026-01-02T03:04:05Z","status_code":500,"error":"HTTP 500","next_try":"2026-01-02T03:05:05Z"}]}`},
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	conn := []string{"--url", srv.URL, "--admin-key-file", keyFile}
	cli := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(append(append([]string{"admin", "webhooks"}, args...), conn...), &out, &errb)
		return out.String(), errb.String(), err
	}
	expect := func(step string, want ...string) {
		t.Helper()
		if got := f.takeCalls(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: calls\n%q\nwant\n%q", step, got, want)
		}
	}

	out, errOut, err := cli("create", "--webhook-url", "https://hooks.example.com/custos", "--events", "request.signed, approval.decided,request.signed", "--description", "bot")
	if err != nil {
		t.Fatalf("create: %v %s", err, errOut)
	}
	expect("create", `POST /v1/admin/webhooks {"url":"https://hooks.example.com/custos","events":["request.signed","approval.decided"],"description":"bot"}`)
	var w api.Webhook
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.WebhookID != "wh_1" || w.Secret != "whsec_c2VjcmV0" {
		t.Fatalf("create printed %q: %v", out, err)
	}
	if !strings.Contains(errOut, "shown only now") || !strings.Contains(errOut, "store it with the receiver") || strings.Contains(errOut, "whsec_") {
		t.Fatalf("create's note on stderr: %q", errOut)
	}

	if _, _, err = cli("create", "--webhook-url", "http://10.0.0.5:8080/hook", "--events", "*"); err != nil {
		t.Fatalf("create of every event: %v", err)
	}
	expect("create *", `POST /v1/admin/webhooks {"url":"http://10.0.0.5:8080/hook","events":["*"]}`)

	out, _, err = cli("list")
	var ws []api.Webhook
	if err != nil || json.Unmarshal([]byte(out), &ws) != nil || len(ws) != 1 || ws[0].Failing != 2 || ws[0].DeliveredThrough != 7 {
		t.Fatalf("list: %v %q", err, out)
	}
	expect("list", "GET /v1/admin/webhooks")

	out, _, err = cli("deliveries", "wh_1")
	var ds []api.Delivery
	if err != nil || json.Unmarshal([]byte(out), &ds) != nil || len(ds) != 1 || ds[0].StatusCode != 500 || ds[0].NextTry == nil {
		t.Fatalf("deliveries: %v %q", err, out)
	}
	expect("deliveries", "GET /v1/admin/webhooks/wh_1/deliveries")

	out, _, err = cli("delete", "wh_1")
	if err != nil || !strings.Contains(out, `"deleted": true`) || !strings.Contains(out, `"webhook_id": "wh_1"`) {
		t.Fatalf("delete: %v %q", err, out)
	}
	expect("delete", "DELETE /v1/admin/webhooks/wh_1")

	_, errOut, err = cli("delete", "wh_9")
	if err == nil || !strings.Contains(errOut, "custos admin webhooks list") {
		t.Fatalf("delete of an unknown webhook: %v, stderr %q", err, errOut)
	}
	expect("delete unknown", "DELETE /v1/admin/webhooks/wh_9")

	// A node without the routes.
	delete(f.answers, "GET /v1/admin/webhooks")
	_, errOut, err = cli("list")
	if err == nil || !strings.Contains(errOut, "upgrade") {
		t.Fatalf("list on a node without webhooks: %v, stderr %q", err, errOut)
	}
	expect("list without routes", "GET /v1/admin/webhooks")

	// An answer without the secret: the webhook cannot be used.
	f.answers["POST /v1/admin/webhooks"] = struct {
		status int
		body   string
	}{201, strings.Replace(created, `"secret":"whsec_c2VjcmV0",`, "", 1)}
	if _, _, err = cli("create", "--webhook-url", "https://h.example", "--events", "*"); err == nil || !strings.Contains(err.Error(), "custos admin webhooks delete wh_1") {
		t.Fatalf("create answered without a secret: %v", err)
	}
	expect("create without secret", `POST /v1/admin/webhooks {"url":"https://h.example","events":["*"]}`)
}

func TestWebhooksArguments(t *testing.T) {
	t.Setenv("CUSTOS_TOKEN", "")
	url := []string{"--url", "http://127.0.0.1:1", "--admin-key-file", filepath.Join(t.TempDir(), "none")}
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{nil, "usage: custos admin webhooks"},
		{[]string{"add"}, `unknown admin webhooks command "add"`},
		{[]string{"create", "--events", "*"}, "receiver's URL with --webhook-url"},
		{[]string{"create", "--webhook-url", "hooks.example.com", "--events", "*"}, "absolute http:// or https:// URL"},
		{[]string{"create", "--webhook-url", "ftp://hooks.example.com", "--events", "*"}, "absolute http:// or https:// URL"},
		{[]string{"create", "--webhook-url", "https://h.example"}, "needs --events"},
		{[]string{"create", "--webhook-url", "https://h.example", "--events", "request.sent"}, `unknown event type "request.sent"`},
		{[]string{"create", "--webhook-url", "https://h.example", "--events", "request.signed,,key.created"}, "empty entry"},
		{[]string{"create", "--webhook-url", "https://h.example", "--events", "*,key.created"}, "give it alone"},
		{[]string{"create", "--webhook-url", "https://h.example", "--events", "go.mod", "main.go"}, "quote '*'"},
		{[]string{"list", "extra"}, "takes no arguments"},
		{[]string{"list", "--events", "*"}, "takes no --events"},
		{[]string{"delete"}, "needs one webhook id"},
		{[]string{"delete", "wh_1", "wh_2"}, "needs one webhook id"},
		{[]string{"deliveries"}, "needs one webhook id"},
		{[]string{"deliveries", "wh_1", "--webhook-url", "https://h.example"}, "takes no --webhook-url"},
		{[]string{"delete", "wh_1"}, "no such file"},
	} {
		_, err := runCLI(t, append(append([]string{"admin", "webhooks"}, tt.args...), url...)...)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("admin webhooks %q: %v, want %q", tt.args, err, tt.err)
		}
	}
	// --url names the node: the receiver's URL is --webhook-url.
	if _, err := runCLI(t, "admin", "webhooks", "create", "--url", "https://hooks.example.com", "--events", "*"); err == nil || !strings.Contains(err.Error(), "--webhook-url") {
		t.Fatalf("create with --url only: %v", err)
	}

	if _, err := webhookBody("", "*", ""); err == nil || !strings.Contains(err.Error(), "needs --webhook-url") {
		t.Fatalf("webhookBody without a URL: %v", err)
	}
	got, err := parseWebhookEvents(" request.signed , approval.decided ")
	if err != nil || !reflect.DeepEqual(got, []string{"request.signed", "approval.decided"}) {
		t.Fatalf("parseWebhookEvents: %q %v", got, err)
	}
	if got, err = parseWebhookEvents("*"); err != nil || !reflect.DeepEqual(got, []string{"*"}) {
		t.Fatalf("parseWebhookEvents(*): %q %v", got, err)
	}
	for _, typ := range api.EventTypes() {
		if _, err := parseWebhookEvents(typ); err != nil {
			t.Errorf("event type %s refused: %v", typ, err)
		}
	}
	if out, err := runCLI(t, "help"); err != nil || !strings.Contains(out, "custos admin webhooks create") || !strings.Contains(out, "deliveries ID") {
		t.Fatalf("usage does not show admin webhooks: %v", err)
	}
}
