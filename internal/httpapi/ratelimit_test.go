package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/custos/custos/internal/state"
)

func TestRateLimiterBuckets(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	type step struct {
		caller string
		at     time.Duration // since t0
		ok     bool
		wait   time.Duration // expected wait when refused
	}
	tests := []struct {
		name  string
		rps   float64
		burst int
		steps []step
	}{
		{"burst then refuse", 1, 3, []step{
			{"a", 0, true, 0}, {"a", 0, true, 0}, {"a", 0, true, 0}, {"a", 0, false, time.Second},
		}},
		{"refill at the rate", 2, 1, []step{
			{"a", 0, true, 0}, {"a", 100 * time.Millisecond, false, 400 * time.Millisecond},
			{"a", 500 * time.Millisecond, true, 0}, {"a", 600 * time.Millisecond, false, 400 * time.Millisecond},
		}},
		{"callers do not share a bucket", 1, 1, []step{
			{"a", 0, true, 0}, {"a", 0, false, time.Second}, {"b", 0, true, 0}, {"admin", 0, true, 0},
		}},
		{"refill never exceeds the burst", 10, 2, []step{
			{"a", 0, true, 0}, {"a", time.Hour, true, 0}, {"a", time.Hour, true, 0}, {"a", time.Hour, false, 100 * time.Millisecond},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newRateLimiter(tt.rps, tt.burst, 100)
			for i, s := range tt.steps {
				ok, wait := l.allow(s.caller, t0.Add(s.at))
				if ok != s.ok {
					t.Fatalf("step %d (%s at %v): allowed=%v", i, s.caller, s.at, ok)
				}
				if !ok && (wait < s.wait-time.Millisecond || wait > s.wait+time.Millisecond) {
					t.Fatalf("step %d: wait %v, want %v", i, wait, s.wait)
				}
			}
		})
	}
}

func TestRateLimiterOffAndBounded(t *testing.T) {
	if l := newRateLimiter(0, 10, 10); l != nil {
		t.Fatal("rate 0 must turn the limiter off")
	}
	var off *rateLimiter
	for i := 0; i < 1000; i++ {
		if ok, _ := off.allow("a", time.Now()); !ok {
			t.Fatal("a nil limiter refused")
		}
	}

	t0 := time.Unix(1_700_000_000, 0)
	l := newRateLimiter(1, 2, 16)
	// Many callers, each leaving a partly used bucket: the map stays within maxCallers.
	for i := 0; i < 200; i++ {
		l.allow(fmt.Sprintf("user:%d", i), t0.Add(time.Duration(i)*time.Millisecond))
		if n := l.size(); n > 16 {
			t.Fatalf("%d buckets tracked, limit 16", n)
		}
	}
	// Idle buckets (refilled completely) are swept once a minute.
	l.allow("late", t0.Add(time.Hour))
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets after every other one went idle, want 1", n)
	}
	// Eviction of an idle bucket loses nothing: the caller gets a full bucket either way,
	// while a busy one keeps its state.
	busy := newRateLimiter(1, 1, 16)
	busy.allow("busy", t0)
	for i := 0; i < 15; i++ {
		busy.allow(fmt.Sprintf("idle:%d", i), t0.Add(-time.Hour))
	}
	busy.allow("new", t0.Add(100*time.Millisecond))
	if ok, _ := busy.allow("busy", t0.Add(200*time.Millisecond)); ok {
		t.Fatal("the busy caller's bucket was evicted before the idle ones")
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, 10 * time.Second: 10} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestCheckRateAnswers429(t *testing.T) {
	s := &Server{limiter: newRateLimiter(0.5, 1, 16)}
	x := &exchange{caller: state.Caller{Kind: state.CallerUser, UserID: 7}}
	if err := s.checkRate(x); err != nil {
		t.Fatalf("first request: %v", err)
	}
	err := s.checkRate(x)
	if err == nil || err.Code != "rate.limited" || err.Status != http.StatusTooManyRequests || err.RetryAfter != 2 {
		t.Fatalf("second request: %+v", err)
	}
	other := &exchange{caller: state.Caller{Kind: state.CallerAccessKey, AccessKeyID: "ak_x"}}
	if err := s.checkRate(other); err != nil {
		t.Fatalf("another caller was limited: %v", err)
	}
	rec := httptest.NewRecorder()
	(&exchange{w: rec, id: "rq_1"}).fail(err)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("answer %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}
