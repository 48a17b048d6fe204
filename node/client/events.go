package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
)

// The activity stream (API.md "Events"): GET /v1/events, as JSON pages (EventPage) or as
// Server-Sent Events followed live across reconnections (Events); and VerifyWebhook,
// which a webhook receiver uses to check a delivery.

type (
	// Event is one entry of the activity stream and of a webhook delivery (api.Event).
	Event = api.Event
	// EventData is what an event says: ids, status and a summary (api.EventData).
	EventData = api.EventData
	// EventList is one page of GET /v1/events (api.EventList). Next, when not empty, is
	// the after of the following page.
	EventList = api.EventList
)

// Event types, as internal/api defines them.
const (
	EventRequestSubmitted       = api.EventRequestSubmitted
	EventRequestPendingApproval = api.EventRequestPendingApproval
	EventRequestApproved        = api.EventRequestApproved
	EventRequestDenied          = api.EventRequestDenied
	EventRequestBlocked         = api.EventRequestBlocked
	EventRequestSigned          = api.EventRequestSigned
	EventRequestFailed          = api.EventRequestFailed
	EventRequestCancelled       = api.EventRequestCancelled
	EventKeyCreated             = api.EventKeyCreated
	EventKeyDeletionScheduled   = api.EventKeyDeletionScheduled
	EventKeyDeletionCancelled   = api.EventKeyDeletionCancelled
	EventKeyDeleted             = api.EventKeyDeleted
	EventApprovalDecided        = api.EventApprovalDecided
	EventPolicyChanged          = api.EventPolicyChanged
	EventAccessKeyGranted       = api.EventAccessKeyGranted
	EventAccessKeyRevoked       = api.EventAccessKeyRevoked
	EventMemberChanged          = api.EventMemberChanged
)

// EventTypes lists every event type, in a stable order.
func EventTypes() []string { return api.EventTypes() }

const (
	// MaxEventLine is the longest line of an event stream the client reads (1 MiB, line
	// ending excluded); a longer one ends the stream with an error.
	MaxEventLine = 1 << 20
	// contentTypeEventStream is the media type of Server-Sent Events.
	contentTypeEventStream = "text/event-stream"
	// maxStreamErrorBody bounds how much of an error answer to a stream request is read.
	maxStreamErrorBody = 64 << 10
	// maxStreamRetryAfter caps how long a Retry-After makes the stream wait.
	maxStreamRetryAfter = time.Minute
)

// The stream's timing; variables so that the tests can shorten them.
var (
	// eventRetryMin and eventRetryMax bound the delay before a reconnection: it starts at
	// eventRetryMin (or the stream's "retry" field, within the bounds), doubles after
	// each failed connection up to eventRetryMax, and is jittered.
	eventRetryMin = 500 * time.Millisecond
	eventRetryMax = 10 * time.Second
	// eventIdle is how long a stream may stay silent before it is taken for dead and
	// reconnected: three of the node's 15 s keep-alives.
	eventIdle = 45 * time.Second
	// eventHealthy is how long a connection must have lasted for its end to reset the
	// delay to eventRetryMin even if it delivered no event.
	eventHealthy = time.Minute
)

// EventPage returns one page of the events the caller may see with seq > after (GET
// /v1/events?after=&limit=, as JSON): a user's are those about its keys, requests and
// access keys and the approvals it may decide; the admin's, all. limit <= 0 takes the
// node's default (100; at most 1000). Events is never nil; Next, when not empty, is the
// after of the following page (strconv.ParseUint).
func (c *Client) EventPage(ctx context.Context, after uint64, limit int) (*EventList, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out EventList
	if err := c.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	if out.Events == nil {
		out.Events = []Event{}
	}
	return &out, nil
}

// StreamOption configures Events.
type StreamOption func(*streamOptions)

type streamOptions struct {
	onReconnect func(err error, wait time.Duration)
}

// OnReconnect has Events call f, from the iterating goroutine, each time the stream broke
// (err says why: a network error, a 5xx or 429 answer, the stream's end) and will be
// reopened after wait. Without it the reconnections are silent.
func OnReconnect(f func(err error, wait time.Duration)) StreamOption {
	return func(o *streamOptions) { o.onReconnect = f }
}

// Events follows the activity stream live (GET /v1/events with Accept:
// text/event-stream): it yields, in seq order, each event the caller may see with seq >
// after (after = 0: from the oldest the node retains), then each new one as it happens.
//
// When the connection breaks (network error, no data for 45 s although the node sends a
// keep-alive every 15 s, a 5xx or 429 answer, the stream's end, e.g. the node stopping)
// it reconnects after a jittered delay growing from 0.5 s to 10 s (at least the answer's
// Retry-After, at most a minute), resuming with Last-Event-ID = the seq of the last event
// it yielded: every event is yielded once, none twice, across reconnections. Each
// connection is a freshly signed request, over a copy of the client's HTTP client
// without its overall timeout (same transport and TLS).
//
// It ends without an error when ctx ends or the loop breaks. It yields a non-nil error,
// once, and ends when the node refuses the request (a 4xx answer other than 429: an
// *APIError, e.g. auth.token_expired or a missing permission) or the stream breaks the
// protocol (a line longer than MaxEventLine, an event whose data is not an event or whose
// seq is not its id): retrying would not help.
//
//	for ev, err := range c.Events(ctx, 0) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(ev.Seq, ev.Type, ev.Data.RequestID)
//	}
func (c *Client) Events(ctx context.Context, after uint64, opts ...StreamOption) iter.Seq2[*Event, error] {
	var o streamOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(yield func(*Event, error) bool) {
		s := &eventStream{c: c, hc: c.streamHTTPClient(), cursor: after, minDelay: eventRetryMin}
		delay := s.minDelay
		for ctx.Err() == nil {
			start := time.Now()
			end := s.connect(ctx, yield)
			switch {
			case end.stop || ctx.Err() != nil:
				return
			case end.fatal != nil:
				yield(nil, end.fatal)
				return
			}
			if end.progressed || time.Since(start) >= eventHealthy {
				delay = s.minDelay
			}
			wait := max(jitter(delay), end.wait)
			if o.onReconnect != nil {
				o.onReconnect(end.retry, wait)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(max(delay*2, s.minDelay), eventRetryMax)
		}
	}
}

// streamHTTPClient is a copy of the client's HTTP client without its overall timeout,
// which would cut a stream: the same transport (TLS, proxies), redirects and cookies.
func (c *Client) streamHTTPClient() *http.Client {
	hc := *c.hc
	hc.Timeout = 0
	return &hc
}

// jitter returns a delay in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// eventStream is the state of one Events iteration.
type eventStream struct {
	c  *Client
	hc *http.Client
	// cursor is the seq of the last event yielded (or the after Events began with).
	cursor uint64
	// minDelay is the first reconnection delay: eventRetryMin, or the stream's "retry".
	minDelay time.Duration
}

// streamEnd is how one connection ended.
type streamEnd struct {
	stop       bool          // the consumer broke off
	fatal      error         // yield it and end
	retry      error         // else: why reconnect
	wait       time.Duration // reconnect no sooner (Retry-After)
	progressed bool          // the connection yielded an event
}

// connect opens one stream from s.cursor on and yields its events until it ends.
func (s *eventStream) connect(ctx context.Context, yield func(*Event, error) bool) (end streamEnd) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, s.c.base.String()+"/v1/events", nil)
	if err != nil {
		return streamEnd{fatal: fmt.Errorf("client: build request: %w", err)}
	}
	req.Header.Set("Accept", contentTypeEventStream)
	req.Header.Set("Cache-Control", "no-cache")
	if s.cursor > 0 {
		// Not a signed component: it may change without re-signing, but every
		// connection is signed afresh anyway.
		req.Header.Set("Last-Event-ID", strconv.FormatUint(s.cursor, 10))
	}
	if err := s.c.authn(req, nil, s.c.now()); err != nil {
		return streamEnd{fatal: fmt.Errorf("client: authenticate request: %w", err)}
	}
	// A silent node is a dead one: it answers at once and then sends a keep-alive every
	// 15 s. (The stream's HTTP client has no overall timeout.)
	idle := time.AfterFunc(eventIdle, cancel)
	defer idle.Stop()
	resp, err := s.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			err = fmt.Errorf("no answer for %v", eventIdle)
		}
		return streamEnd{retry: fmt.Errorf("client: GET /v1/events: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxStreamErrorBody))
		ae := parseAPIError(resp, data)
		switch {
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			return streamEnd{retry: ae, wait: min(ae.RetryAfter, maxStreamRetryAfter)}
		case resp.StatusCode >= 400:
			return streamEnd{fatal: ae}
		}
		return streamEnd{fatal: fmt.Errorf("client: GET /v1/events answered HTTP %d, not an event stream", resp.StatusCode)}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != contentTypeEventStream {
		return streamEnd{fatal: fmt.Errorf("client: GET /v1/events answered %q, not an event stream", resp.Header.Get("Content-Type"))}
	}

	r := newSSEReader(resp.Body)
	r.onLine = func() { idle.Reset(eventIdle) }
	for {
		blk, err := r.Next()
		if r.retry > 0 {
			s.minDelay = min(max(r.retry, eventRetryMin), eventRetryMax)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return streamEnd{stop: true}
		case errors.Is(err, bufio.ErrTooLong):
			return streamEnd{fatal: fmt.Errorf("client: event stream: %w", err)}
		case errors.Is(err, io.EOF):
			return streamEnd{retry: errors.New("client: the node ended the event stream"), progressed: end.progressed}
		case cctx.Err() != nil:
			return streamEnd{retry: fmt.Errorf("client: event stream silent for %v", eventIdle), progressed: end.progressed}
		default:
			return streamEnd{retry: fmt.Errorf("client: event stream: %w", err), progressed: end.progressed}
		}
		if !blk.HasData {
			continue // an id alone: no event to yield
		}
		ev, err := decodeEvent(blk)
		if err != nil {
			return streamEnd{fatal: err}
		}
		if ev.Seq <= s.cursor {
			continue // already yielded (the node resent it)
		}
		s.cursor = ev.Seq
		end.progressed = true
		// The consumer may take its time: that is not the stream's silence.
		idle.Stop()
		if !yield(ev, nil) {
			return streamEnd{stop: true}
		}
		idle.Reset(eventIdle)
	}
}

// decodeEvent reads an event block's data as an api.Event and checks it against the
// block: its seq must be the id, its type the block's event type (when given).
func decodeEvent(b sseEvent) (*Event, error) {
	var ev Event
	if err := json.Unmarshal([]byte(b.Data), &ev); err != nil {
		return nil, fmt.Errorf("client: event stream: data of event %q is not an event: %w", b.ID, err)
	}
	id, err := strconv.ParseUint(b.ID, 10, 64)
	if err != nil || id == 0 || id != ev.Seq {
		return nil, fmt.Errorf("client: event stream: event with id %q has seq %d", b.ID, ev.Seq)
	}
	if b.Type != "" && b.Type != "message" && b.Type != ev.Type {
		return nil, fmt.Errorf("client: event stream: event %d sent as %q has type %q", ev.Seq, b.Type, ev.Type)
	}
	return &ev, nil
}

// sseEvent is one event block of a Server-Sent Events stream.
type sseEvent struct {
	// ID is the stream's last event ID when the block was dispatched: the block's id
	// field, or the previous blocks' when it had none (as in the HTML standard).
	ID string
	// Type is the block's event field ("" when none: a "message").
	Type string
	// Data is the block's data lines joined with "\n"; HasData tells whether it had any
	// (a block with an id but no data has none).
	Data    string
	HasData bool
}

// sseReader parses Server-Sent Events (the HTML standard's "event stream
// interpretation"): lines ending in CRLF, LF or CR, at most MaxEventLine bytes; a
// leading BOM skipped; comments (":…") ignored; "field: value" with one space after the
// colon dropped; the fields data, event, id (unless it holds NUL) and retry (digits
// only), others ignored; a blank line ends a block. A block at the end of the stream
// without its blank line is incomplete and dropped.
type sseReader struct {
	sc      *bufio.Scanner
	started bool
	lastID  string
	// retry is the last retry field's value, 0 when none came.
	retry time.Duration
	// onLine, when set, is called for each line read.
	onLine func()
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	// Room for the longest line and its CRLF, and the byte after a CR.
	sc.Buffer(make([]byte, 0, 4096), MaxEventLine+3)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc}
}

var utf8BOM = []byte("\xef\xbb\xbf")

// Next returns the next block that has data or an id; io.EOF at the end of the stream;
// an error wrapping bufio.ErrTooLong for a line longer than MaxEventLine.
func (r *sseReader) Next() (sseEvent, error) {
	var (
		ev      sseEvent
		data    strings.Builder
		hasData bool
		hasID   bool
	)
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if r.onLine != nil {
			r.onLine()
		}
		if len(line) > MaxEventLine {
			return sseEvent{}, fmt.Errorf("line of %d bytes exceeds %d: %w", len(line), MaxEventLine, bufio.ErrTooLong)
		}
		if !r.started {
			r.started = true
			line = bytes.TrimPrefix(line, utf8BOM)
		}
		if len(line) == 0 {
			if hasData || hasID {
				ev.ID = r.lastID
				ev.HasData = hasData
				ev.Data = strings.TrimSuffix(data.String(), "\n")
				return ev, nil
			}
			ev, hasID = sseEvent{}, false
			continue
		}
		if line[0] == ':' {
			continue // a comment, e.g. a keep-alive
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			data.Write(value)
			data.WriteByte('\n')
			hasData = true
		case "event":
			ev.Type = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
				hasID = true
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 32); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseEvent{}, fmt.Errorf("line longer than %d bytes: %w", MaxEventLine, err)
		}
		return sseEvent{}, err
	}
	return sseEvent{}, io.EOF
}

// scanSSELines is a bufio.SplitFunc for the lines of an event stream: ending in CRLF,
// LF or CR; the last line may have no ending.
func scanSSELines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		switch {
		case data[i] == '\n':
			return i + 1, data[:i], nil
		case i+1 < len(data) && data[i+1] == '\n':
			return i + 2, data[:i], nil
		case i+1 < len(data) || atEOF:
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a CR last: is it a CRLF?
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// Webhooks (Standard Webhooks, https://www.standardwebhooks.com): what a receiver checks.

const (
	// DefaultWebhookTolerance is how far a delivery's webhook-timestamp may be from now
	// when VerifyWebhook is given no tolerance (Standard Webhooks' 5 minutes).
	DefaultWebhookTolerance = 5 * time.Minute
	// webhookSecretPrefix starts the secrets the node gives out.
	webhookSecretPrefix = "whsec_"
)

var (
	// ErrWebhookSignature is (wrapped) VerifyWebhook's error when a header is missing or
	// no signature matches.
	ErrWebhookSignature = errors.New("client: webhook signature invalid")
	// ErrWebhookTimestamp is (wrapped) VerifyWebhook's error when webhook-timestamp is
	// not a unix time within the tolerance of now (a replay or a skewed clock).
	ErrWebhookTimestamp = errors.New("client: webhook timestamp invalid")
)

// webhookKey decodes a webhook secret: "whsec_" (optional) and the key in base64.
func webhookKey(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(secret), webhookSecretPrefix))
	if err != nil || len(key) == 0 {
		return nil, errors.New("client: a webhook secret is whsec_ and the key in base64")
	}
	return key, nil
}

func webhookMAC(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SignWebhook returns the webhook-signature entry ("v1,<base64>") of a delivery of body
// with webhook-id id and webhook-timestamp timestamp (unix seconds), under secret: what
// the node sends, for tests of a receiver.
func SignWebhook(secret, id string, timestamp int64, body []byte) (string, error) {
	key, err := webhookKey(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(webhookMAC(key, id, strconv.FormatInt(timestamp, 10), body)), nil
}

// VerifyWebhook checks a webhook delivery as Standard Webhooks specifies: body is the
// request body exactly as received, headers its headers, secret the webhook's
// "whsec_<base64>" secret. The signed content is webhook-id + "." + webhook-timestamp +
// "." + body, HMAC-SHA256 under the secret's key; webhook-signature holds space-separated
// "v<version>,<base64>" entries, of which any "v1" may match (compared in constant time;
// several during a secret rotation). webhook-timestamp (unix seconds) must be within
// tolerance of now (DefaultWebhookTolerance when tolerance <= 0), which bounds replays;
// dedupe on webhook-id, the same on every retry of a delivery. The error wraps
// ErrWebhookSignature or ErrWebhookTimestamp, or says that the secret is malformed.
func VerifyWebhook(secret string, headers http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := webhookKey(secret)
	if err != nil {
		return err
	}
	id, ts := headers.Get("webhook-id"), headers.Get("webhook-timestamp")
	sigs := strings.Join(headers.Values("webhook-signature"), " ")
	if id == "" || ts == "" || strings.TrimSpace(sigs) == "" {
		return fmt.Errorf("%w: missing webhook-id, webhook-timestamp or webhook-signature header", ErrWebhookSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrWebhookTimestamp, ts)
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s is %v from now, more than %v", ErrWebhookTimestamp, ts, d.Round(time.Second), tolerance)
	}
	want := webhookMAC(key, id, ts, body)
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no v1 signature matches", ErrWebhookSignature)
}
