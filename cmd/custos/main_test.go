package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/state"
)

// fakeNode authenticates admin requests in key-pair mode (EdDSA token + RFC 9421 keyid
// "admin") or HS256 mode, and user requests (token + signature), with the auth package,
// then records them and answers from handlers.
type fakeNode struct {
	t        *testing.T
	verifier *auth.TokenVerifier
	adminPub ed25519.PublicKey
	mu       sync.Mutex
	calls    []string
	bodies   []string
	audit    []state.AuditEntry
	tamper   uint64
	// pruned is the audit log's pruned anchor, set by POST /v1/admin/audit/prune (nil
	// before any prune).
	pruned *api.AuditAnchor
	// catchUp, when set, is appended to audit at the first GET /v1/audit that asks for
	// entries past the end of audit: a node a little behind the others.
	catchUp []state.AuditEntry
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	fail := func(err error) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(401)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": 401, "code": auth.CodeOf(err), "detail": err.Error()})
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	parts := auth.RequestPartsFromHTTP(r, body)
	checkSig := func(keyID string, pub ed25519.PublicKey) error {
		sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
		if err == nil {
			err = auth.CheckProfile(sig, parts)
		}
		if err == nil && sig.KeyID != keyID {
			err = &auth.Error{Code: auth.CodeSignatureInvalid, Detail: "keyid " + sig.KeyID}
		}
		if err == nil {
			err = auth.VerifyEd25519(pub, sig, parts)
		}
		return err
	}
	if uc, err := f.verifier.VerifyUser(tok, now); err == nil {
		if err := checkSig(auth.UserKeyID(uc.UserID), uc.PublicKey); err != nil {
			fail(err)
			return
		}
	} else {
		if _, err := f.verifier.VerifyAdmin(tok, now); err != nil {
			fail(err)
			return
		}
		if f.adminPub != nil {
			if err := checkSig("admin", f.adminPub); err != nil {
				fail(err)
				return
			}
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
	f.bodies = append(f.bodies, string(body))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/admin/users":
		_ = json.NewEncoder(w).Encode(map[string]any{"users": []map[string]any{{"user_id": 1, "name": "alice", "status": "active"}}})
	case r.Method == "GET" && r.URL.Path == "/v1/audit":
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if f.catchUp != nil && len(f.audit) > 0 && after >= f.audit[len(f.audit)-1].Seq {
			f.audit, f.catchUp = append(f.audit, f.catchUp...), nil
		}
		var page []state.AuditEntry
		for _, e := range f.audit {
			if e.Seq > after && len(page) < limit {
				if e.Seq == f.tamper {
					e.Actor = "user:666"
				}
				page = append(page, e)
			}
		}
		out := map[string]any{"entries": page}
		if f.pruned != nil {
			out["pruned"] = f.pruned
		}
		_ = json.NewEncoder(w).Encode(out)
	case r.Method == "POST" && r.URL.Path == "/v1/admin/audit/prune":
		f.prune(w, body)
	case r.Method == "POST" && r.URL.Path == "/v1/access-keys":
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"ak_0123","label":"bot","scheme":"ed25519","public_key":"aa","permissions":["keys:read"],"key_ids":[],"expires_at":null,"created_at":"2026-01-02T03:04:05Z","revoked_at":null}`))
	case r.Method == "GET" && r.URL.Path == "/v1/access-keys":
		_, _ = w.Write([]byte(`{"access_keys":[]}`))
	case r.Method == "DELETE" && r.URL.Path == "/v1/access-keys/ak_0123":
		w.WriteHeader(204)
	case r.Method == "GET" && r.URL.Path == "/v1/access-keys/ak_0123/log":
		_, _ = w.Write([]byte(`{"entries":[{"time":"2026-01-02T03:04:05Z","route":"keys.list","outcome":"allowed","code":""}]}`))
	default:
		w.WriteHeader(404)
		_, _ = w.Write([]byte(`{"code":"key.not_found"}`))
	}
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	return out.String(), err
}

func TestAdminKeygenAndKeyPairMode(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.ed25519")
	out, err := runCLI(t, "admin", "keygen", "--out", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var kg struct {
		PublicKey string `json:"public_key"`
		File      string `json:"file"`
	}
	if err := json.Unmarshal([]byte(out), &kg); err != nil || len(kg.PublicKey) != 64 || kg.File != keyFile {
		t.Fatalf("keygen printed %q", out)
	}
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	if _, err := runCLI(t, "admin", "keygen", "--out", keyFile); err == nil {
		t.Fatal("keygen overwrote an existing file")
	}
	pub, _ := hex.DecodeString(kg.PublicKey)
	v, err := auth.NewTokenVerifier(auth.VerifierConfig{AdminPublicKey: pub, Audience: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	node := &fakeNode{t: t, verifier: v, adminPub: pub}
	srv := httptest.NewServer(node)
	defer srv.Close()
	out, err = runCLI(t, "admin", "users", "--admin-private-key-file", keyFile, "--url", srv.URL, "--audience", "prod")
	if err != nil || !strings.Contains(out, `"alice"`) {
		t.Fatalf("admin users in key-pair mode: %v %q", err, out)
	}
	// A user token minted offline with the key pair verifies under the public key.
	out, err = runCLI(t, "admin", "token", "--user-id", "7", "--public-key", strings.Repeat("ab", 32), "--admin-private-key-file", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.VerifyUser(strings.TrimSpace(out), time.Now()); err != nil || c.UserID != 7 {
		t.Fatalf("EdDSA user token: %v", err)
	}
	// Both credentials at once is a mistake, and a world-readable key file is refused.
	if _, err := runCLI(t, "admin", "users", "--admin-private-key-file", keyFile, "--admin-key-file", keyFile, "--url", srv.URL); err == nil {
		t.Fatal("both admin credentials accepted")
	}
	_ = os.Chmod(keyFile, 0o644)
	if _, err := runCLI(t, "admin", "users", "--admin-private-key-file", keyFile, "--url", srv.URL); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable key: %v", err)
	}
}

func auditChain(n int) []state.AuditEntry {
	prev := state.GenesisHash
	var out []state.AuditEntry
	for i := 1; i <= n; i++ {
		e := state.AuditEntry{Seq: uint64(i), Time: "2026-01-02T03:04:05.000Z", Actor: "admin", Action: "users.create",
			Object: "user:" + strconv.Itoa(i), Outcome: "allowed", PrevHash: prev}
		e.Hash = state.AuditHash(&e)
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func TestAuditVerify(t *testing.T) {
	adminKey := bytes.Repeat([]byte{3}, 32)
	keyFile := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	tests := []struct {
		name   string
		n      int
		tamper uint64
		page   string
	}{
		{"intact", 25, 0, "10"},
		{"tampered", 25, 17, "10"},
		{"empty", 0, 0, "1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := &fakeNode{t: t, verifier: v, audit: auditChain(tt.n), tamper: tt.tamper}
			srv := httptest.NewServer(node)
			defer srv.Close()
			out, err := runCLI(t, "audit", "verify", "--url", srv.URL, "--admin-key-file", keyFile, "--page-size", tt.page)
			var rep auditReport
			if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
				t.Fatalf("output %q: %v", out, jerr)
			}
			if tt.tamper != 0 {
				if err == nil || rep.Verified || rep.BrokenSeq != tt.tamper || rep.Entries != tt.tamper-1 || !strings.Contains(err.Error(), "seq 17") {
					t.Fatalf("tampered: %v %+v", err, rep)
				}
				return
			}
			if err != nil || !rep.Verified || rep.Entries != uint64(tt.n) || rep.HeadSeq != uint64(tt.n) {
				t.Fatalf("intact: %v %+v", err, rep)
			}
			if tt.n > 0 && rep.HeadHash != node.audit[tt.n-1].Hash {
				t.Fatalf("head %s", rep.HeadHash)
			}
			if tt.n == 0 && rep.HeadHash != state.GenesisHash {
				t.Fatalf("empty log head %s", rep.HeadHash)
			}
		})
	}
}

func TestAccessKeysCLI(t *testing.T) {
	adminKey := bytes.Repeat([]byte{4}, 32)
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	node := &fakeNode{t: t, verifier: v}
	srv := httptest.NewServer(node)
	defer srv.Close()
	dir := t.TempDir()
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
	user := []string{"--url", srv.URL, "--token", tok, "--identity", idFile}

	pub := strings.Repeat("AA", 32)
	out, err = runCLI(t, append([]string{"access-keys", "grant", "--scheme", "ed25519", "--public-key", pub,
		"--permissions", "keys:read, keys:sign", "--key-ids", "k1,k2", "--expires", "2030-01-02T03:04:05Z", "--label", "bot"}, user...)...)
	if err != nil || !strings.Contains(out, `"ak_0123"`) {
		t.Fatalf("grant: %v %q", err, out)
	}
	want := `{"label":"bot","scheme":"ed25519","public_key":"` + strings.ToLower(pub) + `","permissions":["keys:read","keys:sign"],"key_ids":["k1","k2"],"expires_at":"2030-01-02T03:04:05Z"}`
	if node.bodies[0] != want {
		t.Fatalf("grant body\n got %s\nwant %s", node.bodies[0], want)
	}
	if out, err = runCLI(t, append([]string{"access-keys", "list"}, user...)...); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list: %v %q", err, out)
	}
	if out, err = runCLI(t, append([]string{"access-keys", "log", "ak_0123"}, user...)...); err != nil || !strings.Contains(out, "keys.list") {
		t.Fatalf("log: %v %q", err, out)
	}
	if out, err = runCLI(t, append([]string{"access-keys", "revoke", "ak_0123"}, user...)...); err != nil || !strings.Contains(out, `"revoked": true`) {
		t.Fatalf("revoke: %v %q", err, out)
	}
	if _, err = runCLI(t, append([]string{"access-keys", "revoke", "ak_other"}, user...)...); err == nil {
		t.Fatal("revoke of an unknown key succeeded")
	}
	wantCalls := []string{"POST /v1/access-keys", "GET /v1/access-keys?limit=1000", "GET /v1/access-keys/ak_0123/log?limit=1000",
		"DELETE /v1/access-keys/ak_0123", "DELETE /v1/access-keys/ak_other"}
	if strings.Join(node.calls, "\n") != strings.Join(wantCalls, "\n") {
		t.Fatalf("calls:\n%s", strings.Join(node.calls, "\n"))
	}
	for _, bad := range [][]string{
		{"access-keys", "grant", "--scheme", "ed25519"},
		{"access-keys", "grant", "--scheme", "ed25519", "--public-key", pub, "--permissions", "keys:read", "--expires", "soon"},
		{"access-keys", "revoke"},
		{"access-keys", "frobnicate"},
		{"access-keys"},
	} {
		if _, err := runCLI(t, append(bad, user...)...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"24h", time.Date(2026, 1, 3, 3, 4, 5, 0, time.UTC), false},
		{"2027-05-06T07:08:09+02:00", time.Date(2027, 5, 6, 5, 8, 9, 0, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"0s", time.Time{}, true},
		{"tomorrow", time.Time{}, true},
		{"2027-05-06", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseExpiry(tt.in, now)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("parseExpiry(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// FuzzParseExpiry feeds arbitrary --expires values: a value is refused or names a time
// after now.
func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{"", "24h", "-1h", "2027-05-06T07:08:09Z", "2027-05-06T07:08:09.123+02:00", "1e9h", "9999999999h"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseExpiry(s, now)
		if err != nil || s == "" {
			return
		}
		if _, derr := time.ParseDuration(s); derr == nil && !got.After(now.Add(-time.Second)) {
			t.Fatalf("duration %q gave %v, not after %v", s, got, now)
		}
	})
}
