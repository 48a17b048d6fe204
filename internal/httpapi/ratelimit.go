package httpapi

import (
	"math"
	"sync"
	"time"
)

// rateLimiter is a token bucket per authenticated caller on this node, so that one agent
// cannot starve the others. It is checked after a request's credentials verify and
// before its raft commit: a refused request costs no log entry and consumes no nonce.
//
// Memory is bounded: a bucket that has refilled completely carries no information (a new
// bucket starts full) and is evicted; when maxCallers buckets are still tracked, the least
// recently used one goes.
type rateLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxCallers int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// sweepEvery is how often idle buckets are evicted even below the limit.
const sweepEvery = time.Minute

// newRateLimiter returns a limiter, or nil (every request allowed) when rps is 0 or less.
func newRateLimiter(rps float64, burst, maxCallers int) *rateLimiter {
	if rps <= 0 {
		return nil
	}
	return &rateLimiter{rate: rps, burst: float64(max(burst, 1)), maxCallers: max(maxCallers, 1), buckets: map[string]*bucket{}}
}

// allow takes one token from caller's bucket at now. When the bucket is empty it answers
// false and how long until a token is available.
func (l *rateLimiter) allow(caller string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[caller]
	if b == nil {
		if len(l.buckets) >= l.maxCallers || now.Sub(l.lastSweep) >= sweepEvery {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[caller] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
}

// sweep evicts full (idle) buckets, then, if still at the limit, the least recently used.
func (l *rateLimiter) sweep(now time.Time) {
	l.lastSweep = now
	var oldest string
	var oldestAt time.Time
	for k, b := range l.buckets {
		// b.last is the bucket's last request: project its tokens without moving it.
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
			continue
		}
		if oldest == "" || b.last.Before(oldestAt) {
			oldest, oldestAt = k, b.last
		}
	}
	if len(l.buckets) >= l.maxCallers && oldest != "" {
		delete(l.buckets, oldest)
	}
}

// size is the number of buckets tracked (tests and metrics).
func (l *rateLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1 (Retry-After's unit).
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
