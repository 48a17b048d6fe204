package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
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
	"github.com/custos/custos/node/client"
)

// buildPolicy parses policy flags as `custos admin policies create` does and builds the body.
func buildPolicy(t *testing.T, args ...string) (api.PolicyBody, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var pf policyFlags
	pf.register(fs)
	if err := fs.Parse(args); err != nil {
		return api.PolicyBody{}, err
	}
	return pf.body(flagsSet(fs))
}

func i64(v int64) *int64 { return &v }

func TestPolicyFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.json")
	_ = os.WriteFile(file, []byte(`{"name":"from a file","activity":"keygen","rule":{"kind":"count_velocity","window":"24h","max_count":3},"action":"block"}`), 0o600)
	typo := filepath.Join(dir, "typo.json")
	_ = os.WriteFile(typo, []byte(`{"name":"x","activity":"sign","rule":{"kind":"always"},"acton":"block"}`), 0o600)
	base := []string{"--name", "p", "--activity", "sign", "--action", "block"}
	with := func(more ...string) []string { return append(append([]string(nil), base...), more...) }
	tests := []struct {
		name string
		args []string
		want api.PolicyBody
		err  string
	}{
		{"always by default", base, api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "always"}}, ""},
		{"amount limit inferred", with("--max-sats", "100_000_000"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "amount_limit", MaxSats: i64(100000000)}}, ""},
		{"a zero limit is a limit", with("--max-sats", "0"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "amount_limit", MaxSats: i64(0)}}, ""},
		{"amount velocity inferred", with("--max-sats", "5", "--window", "7d"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "amount_velocity", MaxSats: i64(5), Window: "7d"}}, ""},
		{"count velocity inferred", with("--max-count", "10", "--window", "1h"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "count_velocity", MaxCount: i64(10), Window: "1h"}}, ""},
		{"allowlist inferred", with("--addresses", "bc1qa, bc1qb"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "recipient_allowlist", Addresses: []string{"bc1qa", "bc1qb"}}}, ""},
		{"time window inferred", with("--days", "mon,fri", "--from", "09:00", "--to", "17:00", "--tz", "Europe/Paris"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "time_window", Days: []string{"mon", "fri"}, From: "09:00", To: "17:00", TZ: "Europe/Paris"}}, ""},
		{"explicit kind wins", with("--rule-kind", "always", "--max-sats", "5"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "always", MaxSats: i64(5)}}, ""},
		{"filters", with("--key-ids", "key_1,key_2", "--labels", "treasury", "--users", "3, 4", "--access-keys", "ak_1"),
			api.PolicyBody{Name: "p", Activity: "sign", Action: "block", Rule: api.PolicyRule{Kind: "always"},
				Filters: &api.PolicyFilters{KeyIDs: []string{"key_1", "key_2"}, Labels: []string{"treasury"}, Users: []uint64{3, 4}, AccessKeys: []string{"ak_1"}}}, ""},
		{"approval", []string{"--name", "big", "--activity", "sign", "--action", "require_approval", "--max-sats", "100000000",
			"--group", "treasury:2:4,5,6", "--group", "ops:team:1:7", "--delay", "1h", "--approval-timeout", "48h", "--initiator-can-approve"},
			api.PolicyBody{Name: "big", Activity: "sign", Action: "require_approval", Rule: api.PolicyRule{Kind: "amount_limit", MaxSats: i64(100000000)},
				ApprovalGroups: []api.ApprovalGroup{{Name: "treasury", Quorum: 2, Members: []uint64{4, 5, 6}}, {Name: "ops:team", Quorum: 1, Members: []uint64{7}}},
				Delay:          "1h", ApprovalTimeout: "48h", InitiatorCanApprove: true}, ""},
		{"file", []string{"--file", file},
			api.PolicyBody{Name: "from a file", Activity: "keygen", Action: "block", Rule: api.PolicyRule{Kind: "count_velocity", Window: "24h", MaxCount: i64(3)}}, ""},
		{"file and flags", []string{"--file", file, "--name", "x"}, api.PolicyBody{}, "not both"},
		{"unknown field in the file", []string{"--file", typo}, api.PolicyBody{}, "acton"},
		{"missing file", []string{"--file", filepath.Join(dir, "none.json")}, api.PolicyBody{}, "no such file"},
		{"no name", []string{"--activity", "sign", "--action", "block"}, api.PolicyBody{}, "--name"},
		{"approval without group", []string{"--name", "p", "--activity", "sign", "--action", "require_approval"}, api.PolicyBody{}, "--group"},
		{"bad group", with("--group", "treasury:2"), api.PolicyBody{}, "NAME:QUORUM"},
		{"bad group quorum", with("--group", "treasury:two:4,5"), api.PolicyBody{}, "NAME:QUORUM"},
		{"bad group member", with("--group", "treasury:1:4,x"), api.PolicyBody{}, "not a user id"},
		{"bad user", with("--users", "0"), api.PolicyBody{}, "not a user id"},
		{"bad max-sats", with("--max-sats", "lots"), api.PolicyBody{}, "whole number"},
		{"window alone", with("--window", "1h"), api.PolicyBody{}, "--max-sats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildPolicy(t, tt.args...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("want an error with %q, got %v (%+v)", tt.err, err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tt.want)
				t.Fatalf("\n got %s\nwant %s", g, w)
			}
		})
	}
}

func TestPSBTArguments(t *testing.T) {
	raw := append([]byte("psbt\xff"), 1, 2, 3)
	b64 := base64.StdEncoding.EncodeToString(raw)
	for name, in := range map[string][]byte{
		"binary":             raw,
		"base64":             []byte(b64 + "\n"),
		"base64 wrapped":     []byte(b64[:4] + "\n" + b64[4:] + "\n"),
		"hex":                []byte(hex.EncodeToString(raw) + "\n"),
		"base64 with spaces": []byte("  " + b64 + "  "),
	} {
		if got, err := encodePSBT(in); err != nil || got != b64 {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	for name, in := range map[string][]byte{
		"empty":            nil,
		"text":             []byte("hello"),
		"base64 of junk":   []byte(base64.StdEncoding.EncodeToString([]byte("not a psbt"))),
		"transaction hex":  []byte("0200000001"),
		"truncated magic":  []byte("psbt"),
		"base64url of one": []byte(base64.URLEncoding.EncodeToString(append(raw, 0xfb, 0xff))),
	} {
		if got, err := encodePSBT(in); err == nil {
			t.Errorf("%s: accepted as %q", name, got)
		}
	}

	b, err := psbtBody(raw, "regtest", []string{"0:m/0/1", "2"}, []string{"1:m/1/0"}, true, "pay-1")
	want := `{"psbt":"` + b64 + `","network":"regtest","inputs":[{"index":0,"derivation_path":"m/0/1"},{"index":2}],"change":[{"output":1,"derivation_path":"m/1/0"}],"broadcast":true,"idempotency_key":"pay-1"}`
	if j, _ := json.Marshal(b); err != nil || string(j) != want {
		t.Fatalf("psbtBody:\n got %s %v\nwant %s", j, err, want)
	}
	for _, bad := range []struct {
		network       string
		inputs, chg   []string
		data          []byte
		errorMentions string
	}{
		{"", []string{"0"}, nil, raw, "--network"},
		{"regtest", nil, nil, raw, "--input"},
		{"regtest", []string{"x:m/0"}, nil, raw, "INDEX[:PATH]"},
		{"regtest", []string{"-1"}, nil, raw, "INDEX[:PATH]"},
		{"regtest", []string{"0:0/1"}, nil, raw, "start with m"},
		{"regtest", []string{"0"}, []string{"one:m/1"}, raw, "--change"},
		{"regtest", []string{"0"}, nil, []byte("nope"), "not a PSBT"},
	} {
		if _, err := psbtBody(bad.data, bad.network, bad.inputs, bad.chg, false, ""); err == nil || !strings.Contains(err.Error(), bad.errorMentions) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// govFake is a node for the governance commands: it authenticates the admin (HS256) and
// users (token and signature) as a node does, records who called what, and answers from
// routes ("METHOD /path" → status and body).
type govFake struct {
	t        *testing.T
	verifier *auth.TokenVerifier
	routes   map[string]govAnswer
	mu       sync.Mutex
	calls    []string // "admin|user:N METHOD URI BODY"
}

type govAnswer struct {
	status int
	body   string
}

func (f *govFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	who := ""
	if uc, err := f.verifier.VerifyUser(tok, now); err == nil {
		parts := auth.RequestPartsFromHTTP(r, body)
		sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
		if err == nil {
			err = auth.CheckProfile(sig, parts)
		}
		if err == nil {
			err = auth.VerifyEd25519(uc.PublicKey, sig, parts)
		}
		if err != nil {
			f.t.Errorf("user signature: %v", err)
		}
		who = "user:" + strings.TrimPrefix(sig.KeyID, "user:")
	} else if _, err := f.verifier.VerifyAdmin(tok, now); err == nil {
		who = "admin"
	} else {
		w.WriteHeader(401)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, strings.TrimSpace(who+" "+r.Method+" "+r.URL.RequestURI()+" "+string(body)))
	f.mu.Unlock()
	a, ok := f.routes[r.Method+" "+r.URL.Path]
	if !ok {
		a = govAnswer{404, `{"status":404,"code":"route.not_found","detail":"no route"}`}
	}
	if a.status >= 400 {
		w.Header().Set("Content-Type", api.ContentTypeProblem)
	} else {
		w.Header().Set("Content-Type", api.ContentTypeJSON)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (f *govFake) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestGovernanceCLI(t *testing.T) {
	t.Setenv("CUSTOS_TOKEN", "")
	t.Setenv("CUSTOS_IDENTITY", "")
	adminKey := bytes.Repeat([]byte{6}, 32)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	pending := `{"request_id":"req_7","kind":"sign","status":"pending_approval","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","message":"","approval_id":"apr_7"}`
	signed := `{"request_id":"req_8","kind":"sign","status":"signed","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","message":"","psbt":"cHNidP8BAAA=","tx_hex":"0200","txid":"ab12","fee_sats":1000}`
	f := &govFake{t: t, verifier: v, routes: map[string]govAnswer{
		"POST /v1/admin/policies":            {201, `{"policy_id":"pol_1","name":"big","status":"active","version":1}`},
		"GET /v1/admin/policies":             {200, `{"policies":[]}`},
		"GET /v1/admin/policies/pol_1":       {200, `{"policy_id":"pol_1","name":"big","status":"active","version":1}`},
		"PUT /v1/admin/policies/pol_1":       {202, `{"request_id":"req_5","kind":"policy.modify","status":"pending_approval","key_id":"","created_at":"2026-01-02T03:04:05Z","approval_id":"apr_5"}`},
		"DELETE /v1/admin/policies/pol_1":    {200, `{"policy_id":"pol_1","name":"big","status":"archived","version":2}`},
		"POST /v1/policies/evaluate":         {200, `{"decision":"require_approval","matched":[{"policy_id":"pol_1","name":"big","rule":"amount_limit","action":"require_approval","why":"1.5 BTC > 1 BTC"}]}`},
		"GET /v1/approvals":                  {200, `{"approvals":[{"approval_id":"apr_7","request_id":"req_7","status":"pending"}]}`},
		"GET /v1/approvals/apr_7":            {200, `{"approval_id":"apr_7","request_id":"req_7","status":"pending"}`},
		"POST /v1/approvals/apr_7/decisions": {200, `{"approval_id":"apr_7","request_id":"req_7","status":"approved"}`},
		"POST /v1/approvals/apr_x/decisions": {403, `{"status":403,"code":"approval.self_approval","detail":"user 5 initiated req_9"}`},
		"POST /v1/requests/req_7/cancel":     {200, strings.Replace(pending, "pending_approval", "denied", 1)},
		"POST /v1/keys/key_1/psbt":           {200, signed},
		"POST /v1/keys/key_2/psbt":           {202, pending},
		"POST /v1/keys/key_3/psbt":           {403, `{"status":403,"code":"policy.blocked","detail":"pol_2 (weekends)","request":{"request_id":"req_9","kind":"sign","status":"blocked","key_id":"key_3"}}`},
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()

	idFile := filepath.Join(dir, "id.key")
	out, err := runCLI(t, "keys", "new-identity", "--out", idFile)
	if err != nil {
		t.Fatal(err)
	}
	var ident struct {
		PublicKey string `json:"public_key"`
	}
	_ = json.Unmarshal([]byte(out), &ident)
	iss, _ := auth.NewHS256Issuer(adminKey)
	tok, _ := iss.UserToken(5, ident.PublicKey, time.Hour, "", time.Now())
	asAdmin := []string{"--url", srv.URL, "--admin-key-file", keyFile}
	asUser := []string{"--url", srv.URL, "--token", tok, "--identity", idFile}
	cli := func(creds []string, args ...string) (string, error) {
		return runCLI(t, append(args, creds...)...)
	}
	expect := func(step string, want ...string) {
		t.Helper()
		if got := f.takeCalls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s: calls\n%s\nwant\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// Policies: the admin's.
	out, err = cli(asAdmin, "admin", "policies", "create", "--name", "big", "--activity", "sign", "--action", "require_approval",
		"--max-sats", "100000000", "--labels", "treasury", "--group", "treasury:2:4,5,6", "--delay", "1h")
	if err != nil || !strings.Contains(out, `"policy_id": "pol_1"`) {
		t.Fatalf("policies create: %v %q", err, out)
	}
	expect("create", `admin POST /v1/admin/policies {"name":"big","activity":"sign","rule":{"kind":"amount_limit","max_sats":100000000},"filters":{"labels":["treasury"]},"action":"require_approval","approval_groups":[{"name":"treasury","members":[4,5,6],"quorum":2}],"delay":"1h"}`)
	if out, err = cli(asAdmin, "admin", "policies", "list"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("policies list: %v %q", err, out)
	}
	if out, err = cli(asAdmin, "admin", "policies", "get", "pol_1"); err != nil || !strings.Contains(out, `"version": 1`) {
		t.Fatalf("policies get: %v %q", err, out)
	}
	file := filepath.Join(dir, "p.json")
	_ = os.WriteFile(file, []byte(`{"name":"big","activity":"sign","rule":{"kind":"always"},"action":"block"}`), 0o600)
	if out, err = cli(asAdmin, "admin", "policies", "update", "pol_1", "--file", file); err != nil || !strings.Contains(out, `"approval_id": "apr_5"`) {
		t.Fatalf("policies update waiting for approval: %v %q", err, out)
	}
	if out, err = cli(asAdmin, "admin", "policies", "archive", "pol_1"); err != nil || !strings.Contains(out, `"status": "archived"`) {
		t.Fatalf("policies archive: %v %q", err, out)
	}
	expect("policies", "admin GET /v1/admin/policies?limit=1000", "admin GET /v1/admin/policies/pol_1",
		`admin PUT /v1/admin/policies/pol_1 {"name":"big","activity":"sign","rule":{"kind":"always"},"action":"block"}`,
		"admin DELETE /v1/admin/policies/pol_1")

	// Evaluate, list and read as the admin or as a user; a user reads policies too.
	body := `{"psbt":"cHNidP8=","network":"regtest","inputs":[{"index":0}]}`
	if out, err = cli(asUser, "policies", "evaluate", "--route", "POST /v1/keys/key_1/psbt", "--body", body); err != nil || !strings.Contains(out, "1.5 BTC") {
		t.Fatalf("evaluate as a user: %v %q", err, out)
	}
	if _, err = cli(asAdmin, "policies", "evaluate", "--route", "POST /v1/keys/key_1/sign"); err != nil {
		t.Fatalf("evaluate as the admin: %v", err)
	}
	if _, err = cli(asUser, "policies", "list"); err != nil {
		t.Fatalf("policies list as a user: %v", err)
	}
	expect("evaluate", `user:5 POST /v1/policies/evaluate {"route":"POST /v1/keys/key_1/psbt","body":`+body+`}`,
		`admin POST /v1/policies/evaluate {"route":"POST /v1/keys/key_1/sign"}`, "user:5 GET /v1/admin/policies?limit=1000")

	// Approvals.
	if out, err = cli(asUser, "approvals", "list", "--status", "pending"); err != nil || !strings.Contains(out, `"apr_7"`) {
		t.Fatalf("approvals list: %v %q", err, out)
	}
	if _, err = cli(asAdmin, "approvals", "get", "apr_7"); err != nil {
		t.Fatalf("approvals get as the admin: %v", err)
	}
	if out, err = cli(asUser, "approvals", "approve", "apr_7", "--reason", "checked the invoice"); err != nil || !strings.Contains(out, `"approved"`) {
		t.Fatalf("approve: %v %q", err, out)
	}
	if _, err = cli(asUser, "approvals", "deny", "apr_x"); err == nil || !strings.Contains(err.Error(), "approval.self_approval") {
		t.Fatalf("deny of one's own: %v", err)
	}
	if out, err = cli(asUser, "requests", "cancel", "req_7"); err != nil || !strings.Contains(out, `"denied"`) {
		t.Fatalf("requests cancel: %v %q", err, out)
	}
	expect("approvals", "user:5 GET /v1/approvals?limit=1000&status=pending", "admin GET /v1/approvals/apr_7",
		`user:5 POST /v1/approvals/apr_7/decisions {"decision":"approve","reason":"checked the invoice"}`,
		`user:5 POST /v1/approvals/apr_x/decisions {"decision":"deny"}`, "user:5 POST /v1/requests/req_7/cancel")

	// PSBT signing: signed (and written), waiting for approval, blocked.
	psbtFile := filepath.Join(dir, "tx.psbt")
	_ = os.WriteFile(psbtFile, append([]byte("psbt\xff"), 0, 1), 0o600)
	outFile := filepath.Join(dir, "signed.psbt")
	if out, err = cli(asUser, "psbt", "sign", "--key", "key_1", "--file", psbtFile, "--network", "regtest", "--input", "0:m/0/1", "--change", "1:m/1/0", "--broadcast", "--out", outFile); err != nil || !strings.Contains(out, `"txid": "ab12"`) {
		t.Fatalf("psbt sign: %v %q", err, out)
	}
	if b, err := os.ReadFile(outFile); err != nil || string(b) != "cHNidP8BAAA=\n" {
		t.Fatalf("--out: %q %v", b, err)
	}
	if _, err = cli(asUser, "psbt", "sign", "--key", "key_1", "--file", psbtFile, "--network", "regtest", "--input", "0", "--out", outFile); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("--out over an existing file: %v", err)
	}
	if out, err = cli(asUser, "psbt", "sign", "--key", "key_2", "--file", psbtFile, "--network", "regtest", "--input", "0"); err != nil || !strings.Contains(out, `"pending_approval"`) {
		t.Fatalf("psbt sign waiting for approval: %v %q", err, out)
	}
	if _, err = cli(asUser, "psbt", "sign", "--key", "key_3", "--file", psbtFile, "--network", "regtest", "--input", "0"); err == nil || !strings.Contains(err.Error(), "policy.blocked") {
		t.Fatalf("psbt sign blocked: %v", err)
	}
	b64 := base64.StdEncoding.EncodeToString(append([]byte("psbt\xff"), 0, 1))
	expect("psbt", `user:5 POST /v1/keys/key_1/psbt {"psbt":"`+b64+`","network":"regtest","inputs":[{"index":0,"derivation_path":"m/0/1"}],"change":[{"output":1,"derivation_path":"m/1/0"}],"broadcast":true}`,
		`user:5 POST /v1/keys/key_2/psbt {"psbt":"`+b64+`","network":"regtest","inputs":[{"index":0}]}`,
		`user:5 POST /v1/keys/key_3/psbt {"psbt":"`+b64+`","network":"regtest","inputs":[{"index":0}]}`)

	// Mistakes are refused before anything is sent, saying what to do.
	for _, bad := range []struct {
		args  []string
		creds []string
		say   string
	}{
		{[]string{"admin", "policies"}, asAdmin, "usage"},
		{[]string{"admin", "policies", "frob"}, asAdmin, "unknown"},
		{[]string{"admin", "policies", "get"}, asAdmin, "policy id"},
		{[]string{"admin", "policies", "update", "pol_1"}, asAdmin, "--name"},
		{[]string{"admin", "policies", "create", "--name", "x", "--activity", "sign", "--action", "require_approval"}, asAdmin, "--group"},
		{[]string{"policies", "evaluate"}, asUser, "--route"},
		{[]string{"policies", "evaluate", "--route", "POST /v1/keys", "--body", "[1]"}, asUser, "JSON object"},
		{[]string{"policies", "evaluate", "--route", "POST /v1/keys"}, append(append([]string(nil), asUser...), "--admin-key-file", keyFile), "not both"},
		{[]string{"approvals", "list", "--status", "open"}, asUser, "--status"},
		{[]string{"approvals", "approve"}, asUser, "approval id"},
		{[]string{"approvals", "approve", "apr_7"}, asAdmin, "decided by users"},
		{[]string{"approvals", "frob"}, asUser, "unknown"},
		{[]string{"requests", "cancel"}, asUser, "request id"},
		{[]string{"psbt"}, asUser, "usage"},
		{[]string{"psbt", "sign", "--file", psbtFile}, asUser, "--key"},
		{[]string{"psbt", "sign", "--key", "key_1", "--file", psbtFile, "--input", "0"}, asUser, "--network"},
		{[]string{"psbt", "sign", "--key", "key_1", "--file", idFile, "--network", "regtest", "--input", "0"}, asUser, "not a PSBT"},
		{[]string{"psbt", "sign", "--key", "key_1", "--file", psbtFile, "--network", "regtest", "--input", "0"}, []string{"--url", srv.URL}, "--token"},
	} {
		if _, err := cli(bad.creds, bad.args...); err == nil || !strings.Contains(err.Error(), bad.say) {
			t.Errorf("%v: %v (want it to say %q)", bad.args, err, bad.say)
		}
	}
	expect("refused")
}

func TestErrorHints(t *testing.T) {
	var b bytes.Buffer
	errorHint(&b, &client.APIError{Code: api.CodePolicyBlocked})
	if !strings.Contains(b.String(), "custos policies evaluate") {
		t.Fatalf("hint %q", b.String())
	}
	b.Reset()
	errorHint(&b, io.EOF)
	if b.Len() != 0 {
		t.Fatalf("a hint for a non-API error: %q", b.String())
	}
}
