package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
)

// fakeState is a replicated state: its webhooks and its event log.
type fakeState struct {
	mu     sync.Mutex
	hooks  []Hook
	events []api.Event
}

func (s *fakeState) Webhooks() []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Hook, len(s.hooks))
	copy(out, s.hooks)
	return out
}

func (s *fakeState) Events(after uint64, limit int) ([]api.Event, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Event
	last := after
	for _, e := range s.events {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
			last = e.Seq
		}
	}
	return out, last
}

func (s *fakeState) add(types ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, typ := range types {
		seq := uint64(len(s.events) + 1)
		s.events = append(s.events, api.Event{ID: fmt.Sprintf("evt_%016x", seq), Seq: seq, Type: typ,
			Time: time.Unix(1700000000+int64(seq), 0).UTC(), Data: api.EventData{RequestID: "req_" + strconv.FormatUint(seq, 10)}})
	}
}

func (s *fakeState) through(id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hooks {
		if h.ID == id {
			return h.Through
		}
	}
	return 0
}

// fakeReporter applies reports to the state as the FSM does (the cursor never goes back).
type fakeReporter struct {
	st      *fakeState
	mu      sync.Mutex
	reports []Report
	fail    atomic.Bool
	hook    func(Report) // called before the report is applied
}

func (r *fakeReporter) Delivered(ctx context.Context, rep Report) error {
	if r.hook != nil {
		r.hook(rep)
	}
	if r.fail.Load() {
		return errors.New("not the leader")
	}
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	r.mu.Unlock()
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	for i := range r.st.hooks {
		if r.st.hooks[i].ID == rep.WebhookID && rep.Through > r.st.hooks[i].Through {
			r.st.hooks[i].Through = rep.Through
		}
	}
	return nil
}

func (r *fakeReporter) all() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Report(nil), r.reports...)
}

// delivery is what a receiver got.
type delivery struct {
	id, ts, sig string
	payload     api.WebhookPayload
	body        []byte
}

// receiver records deliveries and answers with answer(n) (n counts from 1).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []delivery
	answer func(n int, d delivery, r *http.Request) int
}

func newReceiver(t *testing.T, answer func(n int, d delivery, r *http.Request) int) *receiver {
	rc := &receiver{t: t, answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{id: r.Header.Get("webhook-id"), ts: r.Header.Get("webhook-timestamp"), sig: r.Header.Get("webhook-signature"), body: body}
		if err := json.Unmarshal(body, &d.payload); err != nil {
			t.Errorf("body: %v", err)
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("User-Agent") != UserAgent {
			t.Errorf("headers: %v", r.Header)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, d)
		n := len(rc.got)
		rc.mu.Unlock()
		status := 200
		if rc.answer != nil {
			status = rc.answer(n, d, r)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) ids() []string {
	var out []string
	for _, d := range rc.deliveries() {
		out = append(out, d.id)
	}
	return out
}

type harness struct {
	st       *fakeState
	rep      *fakeReporter
	kr       *Keyring
	leader   atomic.Bool
	secrets  map[string][]byte
	cfg      Config
	d        *Deliverer
	backoffs chan int
}

func newHarness(t *testing.T) *harness {
	h := &harness{st: &fakeState{}, kr: testKeyring(t), secrets: map[string][]byte{}, backoffs: make(chan int, 100)}
	h.rep = &fakeReporter{st: h.st}
	h.leader.Store(true)
	h.cfg = Config{State: h.st, Reporter: h.rep, Keyring: h.kr,
		Client:   NewHTTPClient(Guard{AllowLoopback: true}, 2*time.Second),
		IsLeader: h.leader.Load,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: func(n int) time.Duration {
			select {
			case h.backoffs <- n:
			default:
			}
			return 30 * time.Millisecond
		},
		Tick: 5 * time.Millisecond}
	return h
}

func (h *harness) hook(t *testing.T, id, url string, through uint64, events ...string) {
	secret, _ := NewSecret(rand.Reader)
	ct, err := h.kr.Seal(id, secret, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h.secrets[id] = secret
	h.st.mu.Lock()
	h.st.hooks = append(h.st.hooks, Hook{ID: id, URL: url, Events: events, SecretCT: ct, Through: through})
	h.st.mu.Unlock()
}

func (h *harness) start(t *testing.T) {
	h.d = New(h.cfg)
	h.d.Start(context.Background())
	t.Cleanup(h.d.Stop)
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestDeliverInOrderSigned(t *testing.T) {
	h := newHarness(t)
	rc := newReceiver(t, nil)
	h.st.add("request.submitted", "request.approved", "request.signed", "key.created", "policy.changed")
	h.hook(t, "wh_a", rc.srv.URL+"/hook", 0, "*")
	h.start(t)
	eventually(t, "the cursor at 5", func() bool { return h.st.through("wh_a") == 5 })

	got := rc.deliveries()
	if len(got) != 5 {
		t.Fatalf("%d deliveries, want 5", len(got))
	}
	for i, d := range got {
		e := h.st.events[i]
		if d.id != e.ID || d.payload.Type != e.Type || !d.payload.Timestamp.Equal(e.Time) || d.payload.Data != e.Data {
			t.Errorf("delivery %d = %s %+v, want event %+v", i, d.id, d.payload, e)
		}
		ts, err := strconv.ParseInt(d.ts, 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Errorf("webhook-timestamp %q", d.ts)
		}
		if want := Sign(h.secrets["wh_a"], d.id, ts, d.body); d.sig != want {
			t.Errorf("signature %s, want %s", d.sig, want)
		}
	}
	var attempts []Attempt
	for _, r := range h.rep.all() {
		attempts = append(attempts, r.Attempts...)
	}
	if len(attempts) != 5 {
		t.Fatalf("%d attempts reported, want 5", len(attempts))
	}
	for i, a := range attempts {
		if a.EventSeq != uint64(i+1) || a.EventID != h.st.events[i].ID || a.StatusCode != 200 || a.Error != "" || !a.NextTry.IsZero() || a.Time.IsZero() {
			t.Errorf("attempt %d = %+v", i, a)
		}
	}
	// Nothing new: nothing more is delivered or reported.
	n := len(h.rep.all())
	time.Sleep(50 * time.Millisecond)
	if len(rc.deliveries()) != 5 || len(h.rep.all()) != n {
		t.Fatal("delivered or reported again without new events")
	}
}

func TestStopAtFirstFailureBackoffRetry(t *testing.T) {
	h := newHarness(t)
	// Event 3 fails twice (a 500, then a redirect), then is accepted.
	var fails3 atomic.Int32
	rc := newReceiver(t, func(n int, d delivery, r *http.Request) int {
		if d.id == "evt_0000000000000003" && fails3.Add(1) <= 2 {
			if fails3.Load() == 1 {
				return 500
			}
			return 302
		}
		return 200
	})
	h.st.add("a", "b", "c", "d", "e")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	h.start(t)
	eventually(t, "the cursor at 5", func() bool { return h.st.through("wh_a") == 5 })

	want := []string{"evt_0000000000000001", "evt_0000000000000002", "evt_0000000000000003", "evt_0000000000000003",
		"evt_0000000000000003", "evt_0000000000000004", "evt_0000000000000005"}
	if got := rc.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("deliveries %v, want %v", got, want)
	}
	reps := h.rep.all()
	first := reps[0]
	if first.Through != 2 || len(first.Attempts) != 3 {
		t.Fatalf("first report %+v, want through 2 and 3 attempts", first)
	}
	failed := first.Attempts[2]
	if failed.EventSeq != 3 || failed.StatusCode != 500 || failed.Error == "" || failed.NextTry.Before(failed.Time) || failed.NextTry.IsZero() {
		t.Fatalf("failed attempt %+v", failed)
	}
	second := reps[1]
	if second.Through != 2 || len(second.Attempts) != 1 || second.Attempts[0].StatusCode != 302 {
		t.Fatalf("second report %+v", second)
	}
	if b1, b2 := <-h.backoffs, <-h.backoffs; b1 != 1 || b2 != 2 {
		t.Fatalf("backoff asked for %d then %d failures, want 1 then 2", b1, b2)
	}
	// The third try succeeded: the failure count starts again.
	h.st.add("f")
	fails3.Store(-100)
	eventually(t, "the cursor at 6", func() bool { return h.st.through("wh_a") == 6 })
	select {
	case n := <-h.backoffs:
		t.Fatalf("backoff asked again (%d)", n)
	default:
	}
}

func TestBackoffDelaysRetry(t *testing.T) {
	h := newHarness(t)
	h.cfg.Backoff = func(int) time.Duration { return 300 * time.Millisecond }
	var times []time.Time
	var mu sync.Mutex
	rc := newReceiver(t, func(n int, d delivery, r *http.Request) int {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if n == 1 {
			return 503
		}
		return 204
	})
	h.st.add("a")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	h.start(t)
	eventually(t, "the cursor at 1", func() bool { return h.st.through("wh_a") == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 || times[1].Sub(times[0]) < 250*time.Millisecond {
		t.Fatalf("tries at %v: want 2, the second after the backoff", times)
	}
}

func TestDefaultBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		base time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {9, 256 * time.Second}, {10, 5 * time.Minute}, {100, 5 * time.Minute}} {
		for range 50 {
			d := DefaultBackoff(tc.n)
			if d < tc.base*8/10 || d > tc.base*12/10 {
				t.Fatalf("DefaultBackoff(%d) = %v, want %v ±20%%", tc.n, d, tc.base)
			}
		}
	}
}

func TestSkipUnsubscribed(t *testing.T) {
	h := newHarness(t)
	var clock atomic.Int64
	clock.Store(time.Unix(1800000000, 0).UnixNano())
	h.cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	rc := newReceiver(t, nil)
	h.st.add("key.created", "key.created", "request.signed", "key.created", "key.created")
	h.hook(t, "wh_a", rc.srv.URL, 0, "request.signed", "request.failed")
	h.start(t)
	eventually(t, "the cursor at 5", func() bool { return h.st.through("wh_a") == 5 })
	if got := rc.ids(); len(got) != 1 || got[0] != "evt_0000000000000003" {
		t.Fatalf("deliveries %v, want event 3 only", got)
	}
	if reps := h.rep.all(); len(reps) != 1 || reps[0].Through != 5 || len(reps[0].Attempts) != 1 {
		t.Fatalf("reports %+v", reps)
	}

	// Only skipped events: the cursor is reported at most every 10 s.
	h.st.add("key.created", "key.created")
	time.Sleep(60 * time.Millisecond)
	if n := len(h.rep.all()); n != 1 || h.st.through("wh_a") != 5 {
		t.Fatalf("%d reports, cursor %d: skipped events reported within 10 s", n, h.st.through("wh_a"))
	}
	clock.Add(int64(11 * time.Second))
	eventually(t, "the cursor at 7", func() bool { return h.st.through("wh_a") == 7 })
	if reps := h.rep.all(); len(reps) != 2 || len(reps[1].Attempts) != 0 {
		t.Fatalf("reports %+v", reps)
	}

	// A subscribed event is delivered and reported at once, with the skipped before it.
	h.st.add("key.created", "request.failed")
	eventually(t, "the cursor at 9", func() bool { return h.st.through("wh_a") == 9 })
	if got := rc.ids(); len(got) != 2 || got[1] != "evt_0000000000000009" {
		t.Fatalf("deliveries %v", got)
	}
}

func TestNotLeader(t *testing.T) {
	h := newHarness(t)
	rc := newReceiver(t, nil)
	h.st.add("a", "b")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	h.leader.Store(false)
	h.start(t)
	time.Sleep(80 * time.Millisecond)
	if len(rc.deliveries()) != 0 || len(h.rep.all()) != 0 {
		t.Fatal("a follower delivered or reported")
	}
	h.leader.Store(true)
	eventually(t, "the cursor at 2", func() bool { return h.st.through("wh_a") == 2 })
}

func TestLeadershipLostDuringDelivery(t *testing.T) {
	h := newHarness(t)
	entered := make(chan struct{}, 10)
	rc := newReceiver(t, func(n int, d delivery, r *http.Request) int {
		entered <- struct{}{}
		<-r.Context().Done() // hangs until the deliverer gives up
		return 200
	})
	h.st.add("a")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	h.start(t)
	<-entered
	h.leader.Store(false)
	time.Sleep(100 * time.Millisecond)
	if reps := h.rep.all(); len(reps) != 0 {
		t.Fatalf("a canceled delivery was reported: %+v", reps)
	}
	if len(rc.deliveries()) != 1 {
		t.Fatalf("%d deliveries", len(rc.deliveries()))
	}
}

func TestSlowReceiverDoesNotDelayOthers(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	slow := newReceiver(t, func(n int, d delivery, r *http.Request) int {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return 200
	})
	fast := newReceiver(t, nil)
	h.st.add("a", "b", "c")
	h.hook(t, "wh_slow", slow.srv.URL, 0, "*")
	h.hook(t, "wh_fast", fast.srv.URL, 0, "*")
	h.start(t)
	eventually(t, "the fast hook's cursor at 3", func() bool { return h.st.through("wh_fast") == 3 })
	h.st.add("d")
	eventually(t, "the fast hook's cursor at 4", func() bool { return h.st.through("wh_fast") == 4 })
	if got := len(slow.deliveries()); got != 1 {
		t.Fatalf("the slow hook had %d deliveries in flight, want 1", got)
	}
	if h.st.through("wh_slow") != 0 {
		t.Fatal("the slow hook's cursor moved")
	}
	close(release)
	eventually(t, "the slow hook's cursor at 4", func() bool { return h.st.through("wh_slow") == 4 })
	if got := slow.ids(); len(got) != 4 {
		t.Fatalf("slow deliveries %v", got)
	}
}

func TestSecretDoesNotOpen(t *testing.T) {
	h := newHarness(t)
	rc := newReceiver(t, nil)
	h.st.add("a")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	// The sealed secret of wh_a moved to wh_b.
	h.st.mu.Lock()
	h.st.hooks = append(h.st.hooks, Hook{ID: "wh_b", URL: rc.srv.URL, Events: []string{"*"}, SecretCT: h.st.hooks[0].SecretCT})
	h.st.mu.Unlock()
	h.start(t)
	eventually(t, "wh_a's cursor at 1", func() bool { return h.st.through("wh_a") == 1 })
	eventually(t, "a report of wh_b's failure", func() bool {
		for _, r := range h.rep.all() {
			if r.WebhookID == "wh_b" && len(r.Attempts) == 1 && r.Attempts[0].Error != "" && r.Through == 0 {
				return true
			}
		}
		return false
	})
	if len(rc.deliveries()) != 1 {
		t.Fatalf("%d deliveries, want wh_a's only", len(rc.deliveries()))
	}
}

func TestReportFailureRetried(t *testing.T) {
	h := newHarness(t)
	rc := newReceiver(t, nil)
	h.st.add("a", "b")
	h.hook(t, "wh_a", rc.srv.URL, 0, "*")
	h.rep.fail.Store(true)
	var tries atomic.Int32
	h.rep.hook = func(Report) {
		if tries.Add(1) >= 2 {
			h.rep.fail.Store(false)
		}
	}
	h.start(t)
	eventually(t, "the cursor at 2", func() bool { return h.st.through("wh_a") == 2 })
	// The delivered events were not delivered again: the report was retried.
	if got := rc.ids(); len(got) != 2 {
		t.Fatalf("deliveries %v", got)
	}
}

func TestStopWaits(t *testing.T) {
	t.Run("for a report in flight", func(t *testing.T) {
		h := newHarness(t)
		rc := newReceiver(t, nil)
		entered := make(chan struct{}, 1)
		var done atomic.Bool
		h.rep.hook = func(Report) {
			select {
			case entered <- struct{}{}:
			default:
			}
			time.Sleep(150 * time.Millisecond)
			done.Store(true)
		}
		h.st.add("a")
		h.hook(t, "wh_a", rc.srv.URL, 0, "*")
		h.d = New(h.cfg)
		h.d.Start(context.Background())
		<-entered
		h.d.Stop()
		if !done.Load() {
			t.Fatal("Stop returned before the round ended")
		}
	})
	t.Run("cancelling a hanging delivery", func(t *testing.T) {
		h := newHarness(t)
		h.cfg.Client = NewHTTPClient(Guard{AllowLoopback: true}, time.Minute)
		entered := make(chan struct{}, 1)
		rc := newReceiver(t, func(n int, d delivery, r *http.Request) int {
			entered <- struct{}{}
			<-r.Context().Done()
			return 200
		})
		h.st.add("a")
		h.hook(t, "wh_a", rc.srv.URL, 0, "*")
		h.d = New(h.cfg)
		h.d.Start(context.Background())
		<-entered
		start := time.Now()
		h.d.Stop()
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Stop took %v", d)
		}
		if reps := h.rep.all(); len(reps) != 0 {
			t.Fatalf("a canceled delivery was reported: %+v", reps)
		}
		n := len(rc.deliveries())
		time.Sleep(30 * time.Millisecond)
		if len(rc.deliveries()) != n {
			t.Fatal("delivering after Stop")
		}
	})
}

func TestNoSecretInLogs(t *testing.T) {
	h := newHarness(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	h.cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rc := newReceiver(t, func(int, delivery, *http.Request) int { return 500 })
	h.st.add("a")
	h.hook(t, "wh_a", rc.srv.URL+"/path?token=sekrit", 0, "*")
	h.start(t)
	eventually(t, "a failed attempt", func() bool { return len(h.rep.all()) > 0 })
	h.d.Stop()
	d := rc.deliveries()[0]
	mu.Lock()
	defer mu.Unlock()
	logs := buf.String()
	for _, s := range []string{FormatSecret(h.secrets["wh_a"]), d.sig, string(d.body), "sekrit", "req_1"} {
		if bytes.Contains([]byte(logs), []byte(s)) {
			t.Fatalf("the log holds %q:\n%s", s, logs)
		}
	}
	if logs == "" {
		t.Fatal("the failure was not logged")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
