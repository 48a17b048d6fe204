package client

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

// These tests run against httptest servers, not the package's shared cluster.

func readBlocks(t *testing.T, in string) ([]sseEvent, time.Duration, error) {
	t.Helper()
	r := newSSEReader(strings.NewReader(in))
	var out []sseEvent
	for {
		ev, err := r.Next()
		if err != nil {
			return out, r.retry, err
		}
		out = append(out, ev)
	}
}

func TestSSEReader(t *testing.T) {
	ev := func(id, typ, data string) sseEvent { return sseEvent{ID: id, Type: typ, Data: data, HasData: true} }
	tests := []struct {
		name  string
		in    string
		want  []sseEvent
		retry time.Duration
	}{
		{"one event", "id: 1\nevent: key.created\ndata: {\"a\":1}\n\n", []sseEvent{ev("1", "key.created", `{"a":1}`)}, 0},
		{"comments and keep-alives ignored", ": custos event stream\n\n: keep-alive\n\nid: 2\n: in the middle\ndata: x\n\n: keep-alive\n\n",
			[]sseEvent{ev("2", "", "x")}, 0},
		{"multi-line data joined with LF", "id: 3\ndata: a\ndata:b\ndata:  c\ndata\n\n", []sseEvent{ev("3", "", "a\nb\n c\n")}, 0},
		{"CRLF", "id: 4\r\nevent: t\r\ndata: x\r\n\r\nid: 5\r\ndata: y\r\n\r\n", []sseEvent{ev("4", "t", "x"), ev("5", "", "y")}, 0},
		{"lone CR", "id: 6\rdata: x\r\rdata: y\r\r", []sseEvent{ev("6", "", "x"), ev("6", "", "y")}, 0},
		{"BOM skipped once", "\xef\xbb\xbfid: 7\ndata: x\n\n", []sseEvent{ev("7", "", "x")}, 0},
		{"id without data", "id: 8\n\nid: 9\ndata: x\n\n", []sseEvent{{ID: "8"}, ev("9", "", "x")}, 0},
		{"event type alone is not dispatched", "event: t\n\ndata: x\n\n", []sseEvent{ev("", "", "x")}, 0},
		{"id persists to the next block", "id: 10\ndata: x\n\ndata: y\n\n", []sseEvent{ev("10", "", "x"), ev("10", "", "y")}, 0},
		{"id with NUL ignored", "id: 11\ndata: x\n\nid: 1\x002\ndata: y\n\n", []sseEvent{ev("11", "", "x"), ev("11", "", "y")}, 0},
		{"empty data dispatches", "id: 12\ndata\n\n", []sseEvent{ev("12", "", "")}, 0},
		{"unknown fields ignored", "id: 13\nfoo: bar\ndata: x\n\n", []sseEvent{ev("13", "", "x")}, 0},
		{"retry", "retry: 2500\n\nretry: soon\n\nid: 14\ndata: x\n\n", []sseEvent{ev("14", "", "x")}, 2500 * time.Millisecond},
		{"incomplete block at EOF dropped", "id: 15\ndata: x\n\nid: 16\ndata: y\n", []sseEvent{ev("15", "", "x")}, 0},
		{"unterminated line at EOF", "id: 17\ndata: x\n\ndata: y", []sseEvent{ev("17", "", "x")}, 0},
		{"nothing", "", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, retry, err := readBlocks(t, tt.in)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("err %v, want io.EOF", err)
			}
			if !reflect.DeepEqual(got, tt.want) || retry != tt.retry {
				t.Fatalf("got %+v retry %v\nwant %+v retry %v", got, retry, tt.want, tt.retry)
			}
		})
	}
}

func TestSSEReaderLineLimit(t *testing.T) {
	// A line of MaxEventLine bytes is read, also split across reads and with CRLF.
	data := strings.Repeat("x", MaxEventLine-len("data: "))
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		got, _, err := readBlocks(t, "id: 1"+eol+"data: "+data+eol+eol)
		if !errors.Is(err, io.EOF) || len(got) != 1 || got[0].Data != data {
			t.Fatalf("longest line with %q: %d events, %v", eol, len(got), err)
		}
	}
	// One byte more is an error, not a truncated event.
	for _, eol := range []string{"\n", "\r\n", ""} {
		got, _, err := readBlocks(t, "id: 1\ndata: a\n\nid: 2\ndata: "+data+"y"+eol+eol)
		if !errors.Is(err, bufio.ErrTooLong) || len(got) != 1 {
			t.Fatalf("oversized line with %q: %d events, err %v", eol, len(got), err)
		}
	}
	// Far longer: the scanner's buffer limit.
	got, _, err := readBlocks(t, "data: "+strings.Repeat("z", 3*MaxEventLine)+"\n\n")
	if !errors.Is(err, bufio.ErrTooLong) || len(got) != 0 {
		t.Fatalf("huge line: %d events, err %v", len(got), err)
	}
}

func TestDecodeEvent(t *testing.T) {
	good := `{"id":"evt_1","seq":7,"type":"request.signed","time":"2026-01-02T03:04:05Z","data":{"request_id":"req_1"}}`
	if ev, err := decodeEvent(sseEvent{ID: "7", Type: "request.signed", Data: good, HasData: true}); err != nil || ev.Seq != 7 || ev.Data.RequestID != "req_1" {
		t.Fatalf("good event: %+v %v", ev, err)
	}
	if _, err := decodeEvent(sseEvent{ID: "7", Data: good, HasData: true}); err != nil {
		t.Fatalf("event without type line: %v", err)
	}
	for name, b := range map[string]sseEvent{
		"id is not the seq": {ID: "8", Data: good},
		"no id":             {Data: good},
		"other type":        {ID: "7", Type: "key.created", Data: good},
		"not JSON":          {ID: "7", Data: "{"},
		"seq 0":             {ID: "0", Data: `{"seq":0}`},
	} {
		if _, err := decodeEvent(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// fastStream shortens the stream's timing for a test.
func fastStream(t *testing.T) {
	t.Helper()
	saved := []time.Duration{eventRetryMin, eventRetryMax, eventIdle, eventHealthy}
	eventRetryMin, eventRetryMax = 10*time.Millisecond, 40*time.Millisecond
	t.Cleanup(func() { eventRetryMin, eventRetryMax, eventIdle, eventHealthy = saved[0], saved[1], saved[2], saved[3] })
}

func eventJSON(seq uint64, typ string) string {
	b, _ := json.Marshal(Event{ID: fmt.Sprintf("evt_%d", seq), Seq: seq, Type: typ, Time: time.Unix(1767323045, 0).UTC(),
		Data: EventData{RequestID: fmt.Sprintf("req_%d", seq), UserID: 5}})
	return string(b)
}

func sseBlock(seq uint64, eol string) string {
	return fmt.Sprintf("id: %d%sevent: request.signed%sdata: %s%s%s", seq, eol, eol, eventJSON(seq, "request.signed"), eol, eol)
}

// streamServer is a node's /v1/events for the iterator's tests: it checks each request's
// access-key signature and records its Last-Event-ID and nonce, then serves the
// connection's handler (by connection number, from 0).
type streamServer struct {
	t               *testing.T
	pub             ed25519.PublicKey
	conns           []func(w http.ResponseWriter, r *http.Request)
	mu              sync.Mutex
	lastIDs, nonces []string
}

func (s *streamServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := auth.RequestPartsFromHTTP(r, nil)
	sig, err := auth.ParseSignature(r.Header.Get("Signature-Input"), r.Header.Get("Signature"))
	if err == nil {
		err = auth.CheckProfile(sig, parts)
	}
	if err == nil {
		err = auth.VerifyEd25519(s.pub, sig, parts)
	}
	if err != nil {
		s.t.Errorf("signature: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/v1/events" || r.Header.Get("Accept") != "text/event-stream" {
		s.t.Errorf("request %s %s Accept %q", r.Method, r.URL, r.Header.Get("Accept"))
	}
	s.mu.Lock()
	n := len(s.lastIDs)
	s.lastIDs = append(s.lastIDs, r.Header.Get("Last-Event-ID"))
	s.nonces = append(s.nonces, sig.Nonce)
	s.mu.Unlock()
	if n >= len(s.conns) {
		s.t.Errorf("connection %d: unexpected", n+1)
		w.WriteHeader(http.StatusGone)
		return
	}
	s.conns[n](w, r)
}

func (s *streamServer) seen() (lastIDs, nonces []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lastIDs...), append([]string(nil), s.nonces...)
}

func newStreamServer(t *testing.T, conns ...func(w http.ResponseWriter, r *http.Request)) (*streamServer, *Client) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := &streamServer{t: t, pub: pub, conns: conns}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	// A short overall timeout: the stream must not be cut by it.
	c, err := NewAccessKey(srv.URL, "ak_test", priv, WithHTTPClient(&http.Client{Timeout: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func startStream(w http.ResponseWriter) http.Flusher {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, ": custos event stream\n\n")
	f := w.(http.Flusher)
	f.Flush()
	return f
}

func TestEventsReconnects(t *testing.T) {
	fastStream(t)
	s, c := newStreamServer(t,
		// 1: events 1-3, half of 4, then the connection drops.
		func(w http.ResponseWriter, r *http.Request) {
			f := startStream(w)
			_, _ = io.WriteString(w, sseBlock(1, "\n")+": keep-alive\n\n"+sseBlock(2, "\n")+sseBlock(3, "\n")+"id: 4\nevent: request.signed\ndata: {\"se")
			f.Flush()
			panic(http.ErrAbortHandler)
		},
		// 2: resends 2 and 3 (the client must not yield them again), 4 and 5 in CRLF,
		// waits longer than the HTTP client's timeout, then ends the stream.
		func(w http.ResponseWriter, r *http.Request) {
			f := startStream(w)
			_, _ = io.WriteString(w, sseBlock(2, "\r\n")+sseBlock(3, "\r\n")+sseBlock(4, "\r\n"))
			f.Flush()
			time.Sleep(400 * time.Millisecond)
			_, _ = io.WriteString(w, "retry: 20\r\n\r\n"+sseBlock(5, "\r\n"))
		},
		// 3: the node is unavailable.
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":503,"code":"cluster.unavailable","detail":"stopping"}`)
		},
		// 4: event 6, then the stream stays open until the client goes.
		func(w http.ResponseWriter, r *http.Request) {
			f := startStream(w)
			_, _ = io.WriteString(w, sseBlock(6, "\n"))
			f.Flush()
			<-r.Context().Done()
		},
	)
	var reconnects []string
	var seqs []uint64
	for ev, err := range c.Events(t.Context(), 0, OnReconnect(func(err error, wait time.Duration) {
		if wait <= 0 || wait > time.Second {
			t.Errorf("reconnect wait %v", wait)
		}
		reconnects = append(reconnects, err.Error())
	})) {
		if err != nil {
			t.Fatalf("after %v: %v", seqs, err)
		}
		if ev.Data.RequestID != fmt.Sprintf("req_%d", ev.Seq) || ev.Type != EventRequestSigned {
			t.Fatalf("event %+v", ev)
		}
		seqs = append(seqs, ev.Seq)
		if ev.Seq == 6 {
			break
		}
	}
	if !reflect.DeepEqual(seqs, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("yielded %v, want 1 to 6 once each", seqs)
	}
	lastIDs, nonces := s.seen()
	if !reflect.DeepEqual(lastIDs, []string{"", "3", "5", "5"}) {
		t.Fatalf("Last-Event-ID of the connections %q, want \"\", 3, 5, 5", lastIDs)
	}
	for i := range nonces {
		for j := range i {
			if nonces[i] == nonces[j] {
				t.Fatalf("connections %d and %d share the nonce %s", j+1, i+1, nonces[i])
			}
		}
	}
	if len(reconnects) != 3 || !strings.Contains(reconnects[1], "ended") || !strings.Contains(reconnects[2], "cluster.unavailable") {
		t.Fatalf("reconnections %q", reconnects)
	}
}

func TestEventsResumesFromAfter(t *testing.T) {
	fastStream(t)
	s, c := newStreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		startStream(w)
		_, _ = io.WriteString(w, sseBlock(41, "\n")+sseBlock(42, "\n"))
	})
	for ev, err := range c.Events(t.Context(), 41) {
		if err != nil || ev.Seq != 42 {
			t.Fatalf("yielded %+v %v, want 42 (41 is not after 41)", ev, err)
		}
		break
	}
	if lastIDs, _ := s.seen(); !reflect.DeepEqual(lastIDs, []string{"41"}) {
		t.Fatalf("Last-Event-ID %q", lastIDs)
	}
}

func TestEventsStopsOnRefusal(t *testing.T) {
	fastStream(t)
	for _, tt := range []struct {
		name   string
		status int
		code   string
	}{
		{"token expired", http.StatusUnauthorized, "auth.token_expired"},
		{"no permission", http.StatusForbidden, "perm.denied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newStreamServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(tt.status)
				fmt.Fprintf(w, `{"status":%d,"code":%q,"detail":"no"}`, tt.status, tt.code)
			})
			var errs []error
			for ev, err := range c.Events(t.Context(), 0) {
				if ev != nil {
					t.Fatalf("event %+v", ev)
				}
				errs = append(errs, err)
			}
			var ae *APIError
			if len(errs) != 1 || !errors.As(errs[0], &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("errors %v, want one %d %s", errs, tt.status, tt.code)
			}
			if lastIDs, _ := s.seen(); len(lastIDs) != 1 {
				t.Fatalf("%d connections, want 1", len(lastIDs))
			}
		})
	}
}

func TestEventsProtocolErrors(t *testing.T) {
	fastStream(t)
	for name, body := range map[string]string{
		"seq is not the id": "id: 3\ndata: " + eventJSON(4, "request.signed") + "\n\n",
		"data not an event": "id: 3\ndata: [1]\n\n",
		"oversized line":    "data: " + strings.Repeat("x", MaxEventLine) + "\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, c := newStreamServer(t, func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				_, _ = io.WriteString(w, sseBlock(1, "\n")+body)
			})
			var seqs []uint64
			var errs []error
			for ev, err := range c.Events(t.Context(), 0) {
				if err != nil {
					errs = append(errs, err)
				} else {
					seqs = append(seqs, ev.Seq)
				}
			}
			if !reflect.DeepEqual(seqs, []uint64{1}) || len(errs) != 1 {
				t.Fatalf("events %v errors %v", seqs, errs)
			}
		})
	}
	t.Run("JSON instead of a stream", func(t *testing.T) {
		_, c := newStreamServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"events":[]}`)
		})
		n := 0
		for _, err := range c.Events(t.Context(), 0) {
			if n++; err == nil || !strings.Contains(err.Error(), "not an event stream") {
				t.Fatalf("err %v", err)
			}
		}
		if n != 1 {
			t.Fatalf("%d yields", n)
		}
	})
}

func TestEventsSilentStreamReconnects(t *testing.T) {
	fastStream(t)
	eventIdle = 150 * time.Millisecond
	s, c := newStreamServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // no answer at all
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			<-r.Context().Done() // silent: no keep-alive
		},
		func(w http.ResponseWriter, r *http.Request) {
			f := startStream(w)
			_, _ = io.WriteString(w, sseBlock(1, "\n"))
			f.Flush()
			<-r.Context().Done()
		},
	)
	var reasons []string
	for ev, err := range c.Events(t.Context(), 0, OnReconnect(func(err error, _ time.Duration) { reasons = append(reasons, err.Error()) })) {
		if err != nil || ev.Seq != 1 {
			t.Fatalf("%+v %v", ev, err)
		}
		break
	}
	if lastIDs, _ := s.seen(); len(lastIDs) != 3 || len(reasons) != 2 || !strings.Contains(reasons[0], "no answer") || !strings.Contains(reasons[1], "silent") {
		t.Fatalf("connections %q, reconnected because %q", lastIDs, reasons)
	}
}

func TestEventsEndsWithContext(t *testing.T) {
	fastStream(t)
	ctx, cancel := context.WithCancel(t.Context())
	_, c := newStreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		f := startStream(w)
		_, _ = io.WriteString(w, sseBlock(1, "\n"))
		f.Flush()
		<-r.Context().Done()
	})
	n := 0
	for ev, err := range c.Events(ctx, 0) {
		if err != nil || ev.Seq != 1 {
			t.Fatalf("%+v %v", ev, err)
		}
		n++
		cancel()
	}
	if n != 1 {
		t.Fatalf("%d events", n)
	}
	// Cancelled while waiting to reconnect.
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	eventRetryMin, eventRetryMax = time.Hour, time.Hour
	_, c = newStreamServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	start := time.Now()
	for ev, err := range c.Events(ctx, 0) {
		t.Fatalf("%+v %v", ev, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v to end", d)
	}
}

func TestEventPage(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.RequestURI()+" "+r.Header.Get("Accept"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("after") == "" {
			_, _ = io.WriteString(w, `{"events":[]}`)
			return
		}
		fmt.Fprintf(w, `{"events":[%s,%s],"next":"7"}`, eventJSON(6, "key.created"), eventJSON(7, "request.signed"))
	}))
	defer srv.Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c, err := NewAccessKey(srv.URL, "ak_test", priv)
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.EventPage(t.Context(), 5, 2)
	if err != nil || len(page.Events) != 2 || page.Events[0].Seq != 6 || page.Events[1].Type != EventRequestSigned || page.Next != "7" {
		t.Fatalf("%+v %v", page, err)
	}
	page, err = c.EventPage(t.Context(), 0, 0)
	if err != nil || page.Events == nil || len(page.Events) != 0 || page.Next != "" {
		t.Fatalf("%+v %v", page, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/v1/events?after=5&limit=2 application/json", "/v1/events application/json"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("requests %q", got)
	}
}

func TestVerifyWebhook(t *testing.T) {
	// The Standard Webhooks specification's example.
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = int64(1614265330)
		sig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	body := []byte(`{"test": 2432232314}`)
	now := time.Unix(ts, 0).Add(30 * time.Second)
	headers := func(sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", fmt.Sprint(ts))
		if sig != "" {
			h.Set("webhook-signature", sig)
		}
		return h
	}
	if got, err := SignWebhook(secret, id, ts, body); err != nil || got != sig {
		t.Fatalf("SignWebhook %q %v, want %q", got, err, sig)
	}
	ok := []struct {
		name string
		h    http.Header
		now  time.Time
	}{
		{"the spec's vector", headers(sig), now},
		{"one of several, other versions skipped", headers("v1a,AAAA v1,Zm9v " + sig + " v2,xyz"), now},
		{"within the tolerance after", headers(sig), time.Unix(ts, 0).Add(5 * time.Minute)},
		{"within the tolerance before", headers(sig), time.Unix(ts, 0).Add(-5 * time.Minute)},
	}
	for _, tt := range ok {
		if err := VerifyWebhook(secret, tt.h, body, tt.now, 0); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	repeated := headers("v1,Zm9v")
	repeated.Add("webhook-signature", sig)
	if err := VerifyWebhook(secret, repeated, body, now, time.Minute); err != nil {
		t.Errorf("signature in a second header: %v", err)
	}
	if err := VerifyWebhook(strings.TrimPrefix(secret, "whsec_"), headers(sig), body, now, time.Minute); err != nil {
		t.Errorf("secret without its prefix: %v", err)
	}

	bad := []struct {
		name   string
		secret string
		h      http.Header
		body   string
		now    time.Time
		tol    time.Duration
		want   error
	}{
		{"tampered body", secret, headers(sig), `{"test": 2432232315}`, now, 0, ErrWebhookSignature},
		{"other id", secret, func() http.Header { h := headers(sig); h.Set("webhook-id", "msg_other"); return h }(), string(body), now, 0, ErrWebhookSignature},
		{"other secret", "whsec_" + strings.Repeat("A", 32), headers(sig), string(body), now, 0, ErrWebhookSignature},
		{"tampered signature", secret, headers("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), string(body), now, 0, ErrWebhookSignature},
		{"v1a only", secret, headers("v1a," + strings.TrimPrefix(sig, "v1,")), string(body), now, 0, ErrWebhookSignature},
		{"no signature", secret, headers(""), string(body), now, 0, ErrWebhookSignature},
		{"expired", secret, headers(sig), string(body), time.Unix(ts, 0).Add(5*time.Minute + time.Second), 0, ErrWebhookTimestamp},
		{"expired with a tighter tolerance", secret, headers(sig), string(body), now, 10 * time.Second, ErrWebhookTimestamp},
		{"from the future", secret, headers(sig), string(body), time.Unix(ts, 0).Add(-6 * time.Minute), 0, ErrWebhookTimestamp},
		{"timestamp not a number", secret, func() http.Header { h := headers(sig); h.Set("webhook-timestamp", "soon"); return h }(), string(body), now, 0, ErrWebhookTimestamp},
		{"malformed secret", "whsec_!!", headers(sig), string(body), now, 0, nil},
	}
	for _, tt := range bad {
		err := VerifyWebhook(tt.secret, tt.h, []byte(tt.body), tt.now, tt.tol)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestEventsFromNodes reads the activity stream of real nodes: a user's key.created as a
// JSON page and on the live stream, on the leader and another node.
func TestEventsFromNodes(t *testing.T) {
	u := newUser(t)
	k := createKey(t, u.c, CurveEd25519, "events")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var created *Event
	for i := range 2 {
		c := u.client(t, i)
		for ev, err := range c.Events(ctx, 0) {
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			if ev.Data.UserID != u.id && ev.Data.UserID != 0 {
				t.Fatalf("node %d: user %d sees %+v", i, u.id, ev)
			}
			if ev.Type == EventKeyCreated && ev.Data.KeyID == k.KeyID {
				created = ev
				break
			}
		}
		if created == nil || created.ID == "" || created.Time.IsZero() {
			t.Fatalf("node %d: no key.created for %s: %+v", i, k.KeyID, created)
		}
	}
	page, err := u.c.EventPage(ctx, created.Seq-1, 1)
	if err != nil || len(page.Events) != 1 || page.Events[0].ID != created.ID {
		t.Fatalf("page after %d: %+v %v", created.Seq-1, page, err)
	}
	all, err := adminCaller(t, u.cl, 0).EventPage(ctx, created.Seq-1, 1)
	if err != nil || len(all.Events) != 1 || all.Events[0].ID != created.ID {
		t.Fatalf("admin page after %d: %+v %v", created.Seq-1, all, err)
	}
	// A stream from the event on yields what follows it, not it again.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	for ev, err := range u.c.Events(short, created.Seq) {
		if err != nil || ev.Seq <= created.Seq {
			t.Fatalf("after %d: %+v %v", created.Seq, ev, err)
		}
	}
}
