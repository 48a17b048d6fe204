package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	"github.com/custos/custos/node/client"
)

// eventsFake is a node's /v1/events: it authenticates users (token and signature) and the
// admin (HS256, or EdDSA with a keyid "admin" signature when adminPub is set), records
// "who URI [Last-Event-ID]", and answers JSON pages or a stream of its events: the first
// connection (since takeCalls) ends after one event, the next stay open.
type eventsFake struct {
	t        *testing.T
	verifier *auth.TokenVerifier
	adminPub ed25519.PublicKey
	events   []api.Event
	// refuse answers 401 to the connection of this number (1-based), 0 for none.
	refuse int
	mu     sync.Mutex
	calls  []string
}

func (f *eventsFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	checkSig := func(keyID string, pub ed25519.PublicKey) string {
		parts := auth.RequestPartsFromHTTP(r, nil)
		sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
		if err == nil {
			err = auth.CheckProfile(sig, parts)
		}
		if err == nil && sig.KeyID != keyID {
			err = fmt.Errorf("keyid %s, want %s", sig.KeyID, keyID)
		}
		if err == nil {
			err = auth.VerifyEd25519(pub, sig, parts)
		}
		if err != nil {
			f.t.Errorf("signature: %v", err)
		}
		return keyID
	}
	who := ""
	if uc, err := f.verifier.VerifyUser(tok, now); err == nil {
		who = checkSig(auth.UserKeyID(uc.UserID), uc.PublicKey)
	} else if _, err := f.verifier.VerifyAdmin(tok, now); err == nil {
		who = "admin"
		if f.adminPub != nil {
			checkSig("admin", f.adminPub)
		}
	} else {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	call := who + " " + r.URL.RequestURI()
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		call += " Last-Event-ID:" + id
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	n := len(f.calls)
	f.mu.Unlock()
	if n == f.refuse {
		w.Header().Set("Content-Type", api.ContentTypeProblem)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"status":401,"code":"auth.token_expired","detail":"the token expired"}`)
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		after, _ = strconv.ParseUint(id, 10, 64)
	}
	var evs []api.Event
	for _, e := range f.events {
		if e.Seq > after {
			evs = append(evs, e)
		}
	}
	if r.Header.Get("Accept") != "text/event-stream" {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		out := api.EventList{Events: []api.Event{}}
		for _, e := range evs {
			if len(out.Events) == limit {
				out.Next = strconv.FormatUint(out.Events[limit-1].Seq, 10)
				break
			}
			out.Events = append(out.Events, e)
		}
		w.Header().Set("Content-Type", api.ContentTypeJSON)
		_ = json.NewEncoder(w).Encode(out)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = io.WriteString(w, ": custos event stream\n\n")
	if n == 1 && len(evs) > 1 {
		evs = evs[:1]
	}
	for _, e := range evs {
		b, _ := json.Marshal(e)
		fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b)
	}
	w.(http.Flusher).Flush()
	// The first connection ends after one event; the next ones stay open.
	if n > 1 {
		<-r.Context().Done()
	}
}

func (f *eventsFake) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// lineCounter cancels a context once it has received n lines.
type lineCounter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if strings.Count(l.buf.String(), "\n") >= l.n {
		l.cancel()
	}
	return len(p), nil
}

func (l *lineCounter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testEvents() []api.Event {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []api.Event{
		{ID: "evt_1", Seq: 1, Type: api.EventKeyCreated, Time: at, Data: api.EventData{KeyID: "key_1", UserID: 5, Actor: "user:5", Status: "active"}},
		{ID: "evt_2", Seq: 2, Type: api.EventRequestSubmitted, Time: at.Add(time.Second), Data: api.EventData{RequestID: "req_1", Kind: "sign", KeyID: "key_1", UserID: 5, Actor: "user:5"}},
		{ID: "evt_3", Seq: 3, Type: api.EventRequestSigned, Time: at.Add(2 * time.Second), Data: api.EventData{RequestID: "req_1", Kind: "sign", KeyID: "key_1", UserID: 5, Actor: "cluster", Status: "signed"}},
		{ID: "evt_4", Seq: 4, Type: api.EventApprovalDecided, Time: at.Add(3 * time.Second), Data: api.EventData{ApprovalID: "apr_1", RequestID: "req_2", Actor: "user:6", Decision: "deny", Detail: "not today"}},
	}
}

func TestEventsCLI(t *testing.T) {
	t.Setenv("CUSTOS_TOKEN", "")
	t.Setenv("CUSTOS_IDENTITY", "")
	adminKey := bytes.Repeat([]byte{7}, 32)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	f := &eventsFake{t: t, verifier: v, events: testEvents()}
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
	expect := func(step string, want ...string) {
		t.Helper()
		if got := f.takeCalls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s: calls\n%s\nwant\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	tail := func(lines int, args ...string) (string, error) {
		t.Helper()
		cx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		out := &lineCounter{n: lines, cancel: cancel}
		var stderr bytes.Buffer
		err := runEvents(cx, append([]string{"tail"}, args...), out, &stderr)
		if cx.Err() == context.DeadlineExceeded {
			t.Fatalf("tail %q: no %d lines in time: %q %q", args, lines, out.String(), stderr.String())
		}
		return out.String(), err
	}

	// list: one page, as the admin or the user.
	out, err = runCLI(t, append([]string{"events", "list", "--after", "1", "--limit", "2"}, asAdmin...)...)
	var page api.EventList
	if err != nil || json.Unmarshal([]byte(out), &page) != nil || len(page.Events) != 2 || page.Events[0].Seq != 2 || page.Next != "3" {
		t.Fatalf("events list as admin: %v %q", err, out)
	}
	expect("list as admin", "admin /v1/events?after=1&limit=2")
	if out, err = runCLI(t, append([]string{"events", "list"}, asUser...)...); err != nil || !strings.Contains(out, `"evt_4"`) {
		t.Fatalf("events list as user: %v %q", err, out)
	}
	expect("list as user", "user:5 /v1/events?limit=100")

	// tail: one line per event, following the stream across a reconnection (the first
	// connection ends after its events), until interrupted.
	out, err = tail(4, asUser...)
	want := `2026-01-02T03:04:05Z       1  key.created              key_id=key_1 user_id=5 actor=user:5 status=active
2026-01-02T03:04:06Z       2  request.submitted        request_id=req_1 kind=sign key_id=key_1 user_id=5 actor=user:5
2026-01-02T03:04:07Z       3  request.signed           request_id=req_1 kind=sign key_id=key_1 user_id=5 actor=cluster status=signed
2026-01-02T03:04:08Z       4  approval.decided         request_id=req_2 approval_id=apr_1 actor=user:6 decision=deny detail="not today"
`
	if err != nil || out != want {
		t.Fatalf("events tail: %v\n%s\nwant\n%s", err, out, want)
	}
	expect("tail", "user:5 /v1/events", "user:5 /v1/events Last-Event-ID:1")

	// --after, --types and --json, as the admin.
	f.events = append(f.events, api.Event{ID: "evt_5", Seq: 5, Type: api.EventRequestSigned, Data: api.EventData{RequestID: "req_3"}})
	out, err = tail(2, append([]string{"--after", "2", "--types", "request.signed", "--json"}, asAdmin...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 {
		t.Fatalf("events tail --json: %v %q", err, out)
	}
	for i, seq := range []uint64{3, 5} {
		var ev api.Event
		if err := json.Unmarshal([]byte(lines[i]), &ev); err != nil || ev.Seq != seq || ev.Type != api.EventRequestSigned {
			t.Fatalf("line %d: %v %q", i, err, lines[i])
		}
	}
	expect("tail --types", "admin /v1/events Last-Event-ID:2", "admin /v1/events Last-Event-ID:3")

	// A refused stream ends tail with the error.
	f.refuse = 1
	if _, err := tail(1, asUser...); client.CodeOf(err) != "auth.token_expired" {
		t.Fatalf("refused stream: %v", err)
	}
	f.takeCalls()
	f.refuse = 0
}

func TestEventsAdminKeyPair(t *testing.T) {
	t.Setenv("CUSTOS_TOKEN", "")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.ed25519")
	out, err := runCLI(t, "admin", "keygen", "--out", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var kg struct {
		PublicKey string `json:"public_key"`
	}
	_ = json.Unmarshal([]byte(out), &kg)
	pub, _ := hex.DecodeString(kg.PublicKey)
	v, err := auth.NewTokenVerifier(auth.VerifierConfig{AdminPublicKey: pub, Audience: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	f := &eventsFake{t: t, verifier: v, adminPub: pub, events: testEvents()}
	srv := httptest.NewServer(f)
	defer srv.Close()
	out, err = runCLI(t, "events", "list", "--limit", "1", "--url", srv.URL, "--admin-private-key-file", keyFile, "--audience", "prod")
	if err != nil || !strings.Contains(out, `"next": "1"`) {
		t.Fatalf("events list in key-pair mode: %v %q", err, out)
	}
	if got := f.takeCalls(); len(got) != 1 || got[0] != "admin /v1/events?limit=1" {
		t.Fatalf("calls %q", got)
	}
}

func TestEventsArguments(t *testing.T) {
	t.Setenv("CUSTOS_TOKEN", "")
	t.Setenv("CUSTOS_IDENTITY", "")
	url := []string{"--url", "http://127.0.0.1:1"}
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{nil, "usage: custos events"},
		{[]string{"follow"}, `unknown events command "follow"`},
		{[]string{"tail", "extra"}, "takes no argument"},
		{[]string{"list", "--types", "key.created"}, "--types and --json are tail's"},
		{[]string{"list", "--json"}, "--types and --json are tail's"},
		{[]string{"tail", "--limit", "5"}, "takes no --limit"},
		{[]string{"list", "--limit", "0"}, "--limit must be between 1 and 1000"},
		{[]string{"list", "--limit", "1001"}, "--limit must be between 1 and 1000"},
		{[]string{"tail", "--types", "request.signed,request.sent"}, `unknown event type "request.sent"`},
		{[]string{"tail", "--after", "-1"}, "invalid value"},
		{[]string{"tail", "--token", "t", "--admin-key-file", "k"}, "not both"},
		{[]string{"tail", "--token", "t"}, "no identity"},
	} {
		_, err := runCLI(t, append(append([]string{"events"}, tt.args...), url...)...)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("events %q: %v, want %q", tt.args, err, tt.err)
		}
	}
	want, err := parseEventTypes(" request.signed, approval.decided ")
	if err != nil || len(want) != 2 || !want["request.signed"] || !want["approval.decided"] {
		t.Fatalf("parseEventTypes: %v %v", want, err)
	}
	if want, err := parseEventTypes(""); want != nil || err != nil {
		t.Fatalf("no --types: %v %v", want, err)
	}
	if out, err := runCLI(t, "help"); err != nil || !strings.Contains(out, "custos events tail") || !strings.Contains(out, "custos events list") {
		t.Fatalf("usage does not show events: %v", err)
	}
}
