package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/custos/custos/internal/api"
)

// Hook is a webhook as the deliverer reads it from the replicated state.
type Hook struct {
	ID  string
	URL string
	// Events are the subscribed event types, or "*" for every one.
	Events []string
	// SecretCT is the secret sealed by Keyring.Seal under this hook's ID.
	SecretCT []byte
	// Through is the replicated cursor: the seq of the last event delivered or skipped.
	Through uint64
}

// State is what the deliverer reads of this node's replicated state.
type State interface {
	// Webhooks returns every webhook.
	Webhooks() []Hook
	// Events returns the events with seq > after, ascending, at most limit. last is the
	// seq of the last event read (after, when none): every event the state holds in
	// (after, last] was returned.
	Events(after uint64, limit int) (events []api.Event, last uint64)
}

// Reporter commits a delivery report (the leader's signed report through raft).
type Reporter interface {
	Delivered(ctx context.Context, r Report) error
}

// Report is one round of deliveries to one webhook: the cursor it moved to and the
// attempts it made.
type Report struct {
	WebhookID string
	// Through is the seq of the last event delivered or skipped (not subscribed) before
	// the first failure; never beyond what the state returned.
	Through  uint64
	Attempts []Attempt
}

// Attempt is one delivery attempt of an event.
type Attempt struct {
	EventSeq   uint64
	EventID    string
	Time       time.Time
	StatusCode int
	// Error is why the attempt failed ("" when the receiver answered 2xx); NextTry when
	// the event is tried again then.
	Error   string
	NextTry time.Time
}

// Config is what a Deliverer needs.
type Config struct {
	State    State
	Reporter Reporter
	// Keyring opens the hooks' sealed secrets.
	Keyring *Keyring
	// Client makes the deliveries; nil: NewHTTPClient(Guard{}, 10 s).
	Client *http.Client
	// IsLeader reports whether this node leads raft now: the deliverer acts only then.
	IsLeader func() bool
	// Now is the node's wall clock; nil: time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Backoff is the wait after the n-th failure in a row (n ≥ 1); nil: 1 s·2^(n-1),
	// at most 5 min, ±20 % jitter.
	Backoff func(failures int) time.Duration
	// Tick is how often the loop looks for work; default 250 ms.
	Tick time.Duration
}

const (
	// batch bounds the events one round reads for a hook (the state's bound on the
	// attempts of a report is the same).
	batch = 64
	// skipReportEvery bounds how often a hook's cursor is reported when only skipped
	// (not subscribed) events moved it.
	skipReportEvery = 10 * time.Second
	// reportRetry is the pause after a report failed.
	reportRetry = time.Second
	// reportTimeout bounds one report.
	reportTimeout         = 10 * time.Second
	canceledReportTimeout = 2 * time.Second
)

// DefaultBackoff is 1 s·2^(failures-1), at most 5 min, with ±20 % jitter.
func DefaultBackoff(failures int) time.Duration {
	d := 5 * time.Minute
	if failures < 1 {
		failures = 1
	}
	if failures <= 9 { // 2^8 s > 5 min
		d = min(time.Second<<(failures-1), d)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// hookState is the leader's memory of a hook (never replicated; a new leader starts
// fresh).
type hookState struct {
	// busy: a round is in flight (at most one per hook). drop: forget this state when
	// that round ends (leadership lost, or the hook gone).
	busy bool
	drop bool
	// failures in a row, and no round before retryAt.
	failures int
	retryAt  time.Time
	// through is this leader's cursor, ahead of the replicated one by skipped events not
	// yet reported, or delivered ones whose report failed (unreported).
	through    uint64
	unreported bool
	lastReport time.Time
}

// Deliverer is the leader's delivery loop.
type Deliverer struct {
	state    State
	reporter Reporter
	keyring  *Keyring
	client   *http.Client
	isLeader func() bool
	now      func() time.Time
	log      *slog.Logger
	backoff  func(int) time.Duration
	tick     time.Duration

	// mu guards hooks, stopping and the term; work counts the rounds in flight, which
	// Stop waits for (spawn refuses new ones once Stop began).
	mu         sync.Mutex
	hooks      map[string]*hookState
	stopping   bool
	termCtx    context.Context // this leadership's: canceled when it ends
	termCancel context.CancelFunc
	cancel     context.CancelFunc
	loop       sync.WaitGroup
	work       sync.WaitGroup
}

// New prepares a deliverer; Start runs its loop. State, Reporter, Keyring and IsLeader are
// required.
func New(cfg Config) *Deliverer {
	if cfg.State == nil || cfg.Reporter == nil || cfg.Keyring == nil || cfg.IsLeader == nil {
		panic("webhook: New needs State, Reporter, Keyring and IsLeader")
	}
	d := &Deliverer{state: cfg.State, reporter: cfg.Reporter, keyring: cfg.Keyring, client: cfg.Client,
		isLeader: cfg.IsLeader, now: cfg.Now, log: cfg.Logger, backoff: cfg.Backoff, tick: cfg.Tick,
		hooks: map[string]*hookState{}}
	if d.client == nil {
		d.client = NewHTTPClient(Guard{}, 0)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.backoff == nil {
		d.backoff = DefaultBackoff
	}
	if d.tick <= 0 {
		d.tick = 250 * time.Millisecond
	}
	return d
}

// Start runs the loop until Stop (or until ctx ends).
func (d *Deliverer) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	d.mu.Lock()
	d.cancel = cancel
	d.mu.Unlock()
	d.loop.Add(1)
	go func() {
		defer d.loop.Done()
		d.run(ctx)
	}()
}

// Stop ends the loop and waits for it and for the rounds in flight (which it cancels).
func (d *Deliverer) Stop() {
	d.mu.Lock()
	d.stopping = true
	cancel := d.cancel
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	d.loop.Wait()
	d.work.Wait()
}

func (d *Deliverer) run(ctx context.Context) {
	t := time.NewTicker(d.tick)
	defer t.Stop()
	defer d.endTerm()
	for {
		d.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// endTerm forgets every hook's state (and cancels the rounds in flight): leadership ended.
func (d *Deliverer) endTerm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.termCancel != nil {
		d.termCancel()
		d.termCtx, d.termCancel = nil, nil
	}
	for id, st := range d.hooks {
		if st.busy {
			st.drop = true
		} else {
			delete(d.hooks, id)
		}
	}
}

// step looks at every hook once and starts a round for each one with work.
func (d *Deliverer) step(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if !d.isLeader() {
		d.endTerm()
		return
	}
	d.mu.Lock()
	if d.termCtx == nil {
		d.termCtx, d.termCancel = context.WithCancel(ctx)
	}
	term := d.termCtx
	d.mu.Unlock()

	hooks := d.state.Webhooks()
	now := d.now()
	present := make(map[string]bool, len(hooks))
	for _, h := range hooks {
		present[h.ID] = true
		d.mu.Lock()
		st := d.hooks[h.ID]
		if st == nil {
			st = &hookState{}
			d.hooks[h.ID] = st
		}
		idle := !st.busy && !now.Before(st.retryAt)
		from := max(h.Through, st.through)
		unreported := st.unreported
		skipDue := now.Sub(st.lastReport) >= skipReportEvery
		d.mu.Unlock()
		if !idle {
			continue
		}
		events, last := d.state.Events(from, batch)
		if len(events) == 0 && last <= from && !unreported && !(from > h.Through && skipDue) {
			continue // no work
		}
		d.mu.Lock()
		if d.stopping || st.busy {
			d.mu.Unlock()
			continue
		}
		st.busy = true
		d.work.Add(1)
		d.mu.Unlock()
		go func() {
			defer d.work.Done()
			d.round(term, h, st, from, events, last)
		}()
	}
	d.mu.Lock()
	for id, st := range d.hooks {
		if !present[id] {
			if st.busy {
				st.drop = true
			} else {
				delete(d.hooks, id)
			}
		}
	}
	d.mu.Unlock()
}

// round delivers h's events after from, in order, stopping at the first failure, and
// reports the cursor and the attempts.
func (d *Deliverer) round(ctx context.Context, h Hook, st *hookState, from uint64, events []api.Event, last uint64) {
	defer func() {
		d.mu.Lock()
		st.busy = false
		if st.drop && d.hooks[h.ID] == st {
			delete(d.hooks, h.ID)
		}
		d.mu.Unlock()
	}()
	d.mu.Lock()
	failures := st.failures
	d.mu.Unlock()

	through := from
	delivered, failed := false, false
	var attempts []Attempt
	var retryAt time.Time
	var secret []byte
	for _, e := range events {
		if e.Seq <= through {
			continue
		}
		if !subscribed(h.Events, e.Type) {
			through = e.Seq
			continue
		}
		if ctx.Err() != nil {
			failed = true // leadership or the loop ended: neither delivered nor attempted
			break
		}
		at := d.attempt(ctx, h, &secret, e)
		if at.Error != "" && ctx.Err() != nil {
			failed = true // canceled, not the receiver's failure: not an attempt
			break
		}
		attempts = append(attempts, at)
		if at.Error != "" {
			failures++
			retryAt = at.Time.Add(d.backoff(failures))
			attempts[len(attempts)-1].NextTry = retryAt
			d.log.Warn("webhook delivery failed", "webhook", h.ID, "event", e.ID, "seq", e.Seq,
				"status", at.StatusCode, "error", at.Error, "failures", failures, "next_try", retryAt)
			failed = true
			break
		}
		failures = 0
		delivered = true
		through = e.Seq
	}
	clear(secret)
	if !failed && last > through {
		// Every event in (from, last] was returned and handled.
		through = last
	}

	now := d.now()
	d.mu.Lock()
	st.failures = failures
	if failed {
		st.retryAt = retryAt
	}
	st.through = max(st.through, through)
	unreported := st.unreported || delivered
	report := len(attempts) > 0 || unreported || (through > h.Through && now.Sub(st.lastReport) >= skipReportEvery)
	d.mu.Unlock()
	if !report || (ctx.Err() != nil && len(attempts) == 0) {
		return
	}

	// Report what was delivered even when the round was canceled (a lost report is a
	// duplicate delivery later), but briefly then.
	timeout := reportTimeout
	if ctx.Err() != nil {
		timeout = canceledReportTimeout
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	err := d.reporter.Delivered(rctx, Report{WebhookID: h.ID, Through: through, Attempts: attempts})
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.log.Warn("webhook delivery report failed", "webhook", h.ID, "through", through, "error", err)
		st.unreported = unreported
		st.retryAt = maxTime(st.retryAt, now.Add(reportRetry))
		return
	}
	st.unreported = false
	st.lastReport = now
}

// attempt delivers one event.
func (d *Deliverer) attempt(ctx context.Context, h Hook, secret *[]byte, e api.Event) Attempt {
	now := d.now()
	at := Attempt{EventSeq: e.Seq, EventID: e.ID, Time: now}
	if *secret == nil {
		s, err := d.keyring.Open(h.ID, h.SecretCT)
		if err != nil {
			at.Error = "the webhook's secret does not open under this node's webhook key"
			return at
		}
		*secret = s
	}
	body, err := json.Marshal(api.WebhookPayload{Type: e.Type, Timestamp: e.Time, Data: e.Data})
	if err != nil {
		at.Error = fmt.Sprintf("encode: %v", err)
		return at
	}
	status, err := Post(ctx, d.client, h.URL, Headers(*secret, e.ID, now.Unix(), body), body)
	at.StatusCode = status
	if err != nil {
		at.Error = errorText(err)
	}
	return at
}

// errorText is an attempt's error as the state keeps it: at most 256 bytes of UTF-8.
func errorText(err error) string {
	s := strings.ToValidUTF8(err.Error(), "?")
	for len(s) > 256 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

func subscribed(types []string, typ string) bool {
	return slices.Contains(types, "*") || slices.Contains(types, typ)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
