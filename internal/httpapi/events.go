package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
)

// The activity stream (API.md "Events"): GET /v1/events reads the replicated event log of
// this node's state. With Accept: text/event-stream it is Server-Sent Events that follow
// the log live, resumable with Last-Event-ID; without, JSON pages. A stream holds one page
// of events at a time and writes at the client's pace (a slow client slows only its own
// stream, it makes the node hold nothing more); at most maxStreams are open per node.

const (
	// maxStreams bounds the event streams open on a node at once; maxStreamsPerCaller
	// those of one caller, so that no caller takes every slot.
	maxStreams          = 256
	maxStreamsPerCaller = 8
	// streamPage is how many events a stream reads from the log at once; streamScan how
	// many records it reads at most looking for the caller's.
	streamPage = 100
	streamScan = 10000
	// keepAlive is how often an idle stream sends a comment, so that proxies keep it open
	// and a dead client is noticed.
	keepAlive = 15 * time.Second
)

// EventLog is what the stream reads of the state (*state.FSM).
type EventLog interface {
	Events(user uint64, all bool, after uint64, limit, scan int) ([]state.EventRecord, uint64)
	WaitEvent(ctx context.Context, after uint64) error
}

// hEvents answers GET /v1/events: events about the caller's keys, requests and access
// keys and the approvals it may decide (the admin: all), with seq > after (Last-Event-ID
// wins over ?after=).
func (s *Server) hEvents(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "an event seq")
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	if id := x.r.Header.Get("Last-Event-ID"); id != "" {
		v, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
		if err != nil {
			return errf(api.CodeRequestMalformed, "Last-Event-ID must be the seq of the last event received")
		}
		after = v
	}
	all := x.caller.Kind == state.CallerAdmin
	user := x.caller.UserID
	if !strings.Contains(x.r.Header.Get("Accept"), "text/event-stream") {
		evs, last := s.events.Events(user, all, after, limit, streamScan)
		out := api.EventList{Events: make([]api.Event, 0, len(evs))}
		for i := range evs {
			out.Events = append(out.Events, evs[i].View())
		}
		// next: when more events the caller may see follow, or when the probe ran out of
		// its scan before the end of the log (a long run of events the caller does not
		// see): then the page ends where the probe stopped, so that no later event is lost
		// and no page scans more than twice streamScan records.
		if more, probed := s.events.Events(user, all, last, 1, streamScan); len(more) > 0 {
			out.Next = strconv.FormatUint(last, 10)
		} else if probed-last >= streamScan {
			out.Next = strconv.FormatUint(probed, 10)
		}
		x.json(http.StatusOK, out)
		return nil
	}
	if s.life.Err() != nil {
		return errf(api.CodeClusterUnavailable, "the node is stopping; reconnect to another node")
	}
	if !s.openStream(x.caller.Actor()) {
		return &apiError{Status: http.StatusTooManyRequests, Code: api.CodeRateLimited,
			Detail: fmt.Sprintf("at most %d event streams per caller on a node; close one (one stream sees every event the caller may see)", maxStreamsPerCaller), RetryAfter: 5}
	}
	defer s.closeStream(x.caller.Actor())
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Code: api.CodeClusterUnavailable,
			Detail: fmt.Sprintf("this node serves at most %d event streams at once; reconnect to another node or later", maxStreams), RetryAfter: 5}
	}
	s.stream(x, user, all, after)
	return nil
}

// stream writes Server-Sent Events from after on until the client goes away or the node
// stops: "id: <seq>", "event: <type>", "data: <the event as JSON>".
func (s *Server) stream(x *exchange, user uint64, all bool, after uint64) {
	w := x.w
	flusher, ok := w.(http.Flusher)
	if !ok {
		x.fail(errf(api.CodeInternal, "streaming unsupported"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	x.status = http.StatusOK
	ctx, cancel := context.WithCancel(x.r.Context())
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	// A first comment, so that the client sees the stream open at once.
	if _, err := fmt.Fprint(w, ": custos event stream\n\n"); err != nil {
		return
	}
	flusher.Flush()
	_, adminKey := s.st.AdminKeys()
	for {
		// A stream lives as long as its credential would still be accepted: not past the
		// token's expiry, nor once the user is disabled, its tokens revoked or the admin
		// key rotated (a request signed now with it would be refused).
		if !s.streamAllowed(x.caller, adminKey) {
			return
		}
		evs, last := s.events.Events(user, all, after, streamPage, streamScan)
		if s.distrusted() != "" {
			return // read from a state in doubt: not sent (see exchange.answerable)
		}
		for i := range evs {
			b, err := json.Marshal(evs[i].View())
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", evs[i].Seq, evs[i].Type, b); err != nil {
				return
			}
		}
		if len(evs) > 0 {
			flusher.Flush()
		}
		if last > after {
			after = last
			continue // more may follow at once
		}
		// Caught up: wait for the next event, with a keep-alive.
		wctx, cancel := context.WithTimeout(ctx, keepAlive)
		err := s.events.WaitEvent(wctx, after)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// streamAllowed reports whether a stream's caller would still be let in at this
// node's state and clock: the token not expired; a user still active, its token issued
// after its tokens were last revoked; the admin's key (key-pair mode) still the one the
// stream began with.
func (s *Server) streamAllowed(c authn.Principal, adminKey []byte) bool {
	if s.distrusted() != "" {
		return false // the state it would stream from is not vouched for (see Config.Distrusted)
	}
	if c.TokenExpires != 0 && c.TokenExpires <= s.now().Unix() {
		return false
	}
	switch c.Kind {
	case state.CallerAdmin:
		_, cur := s.st.AdminKeys()
		return bytes.Equal(cur, adminKey)
	case state.CallerUser:
		u := s.st.User(c.UserID)
		return u != nil && u.Status == state.UserActive && c.TokenIssuedAt >= u.TokensNotBefore
	}
	return false
}

// hWebhookCreate answers POST /v1/admin/webhooks: 201 with the webhook and, only here, its
// secret (opened with this node's copy of the cluster's webhook key).
func (s *Server) hWebhookCreate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	w := s.st.Webhook(res.WebhookID)
	if w == nil {
		return errf(api.CodeInternal, "webhook vanished")
	}
	v := w.View()
	if s.openSecret == nil {
		return errf(api.CodeInternal, "the webhook %s was created, but this node has no webhook key to show its secret: set webhooks.secret_key_file, delete the webhook and create it again", w.ID)
	}
	secret, oerr := s.openSecret(w.ID, w.SecretCT)
	if oerr != nil {
		return errf(api.CodeInternal, "the webhook %s was created, but its secret does not open with this node's webhook key (every node must have the same webhooks.secret_key_file): delete it and create it again", w.ID)
	}
	v.Secret = secret
	x.w.Header().Set("Location", "/v1/admin/webhooks/"+w.ID)
	x.json(http.StatusCreated, v)
	return nil
}

func (s *Server) hWebhookList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	var ws []state.Webhook
	for _, w := range s.st.Webhooks() { // in id order (at most state.MaxWebhooks)
		if w.ID > after {
			ws = append(ws, w)
		}
	}
	var out api.WebhookList
	out.Webhooks, out.Next = page(ws, limit, func(w state.Webhook) string { return w.ID }, func(w state.Webhook) api.Webhook { return w.View() })
	x.json(http.StatusOK, out)
	return nil
}

func (s *Server) hWebhookDelete(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	x.noContent()
	return nil
}

func (s *Server) hWebhookDeliveries(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a delivery number")
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	var ds []state.WebhookAttempt
	for _, d := range s.st.WebhookLog(res.WebhookID) { // in attempt order, a bounded log
		if d.N > after {
			ds = append(ds, d)
		}
	}
	var out api.DeliveryList
	out.Deliveries, out.Next = page(ds, limit, func(d state.WebhookAttempt) string { return strconv.FormatUint(d.N, 10) }, func(d state.WebhookAttempt) api.Delivery { return d.View() })
	x.json(http.StatusOK, out)
	return nil
}

// openStream counts a stream of caller, refusing one past maxStreamsPerCaller.
func (s *Server) openStream(caller string) bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.streamsBy[caller] >= maxStreamsPerCaller {
		return false
	}
	s.streamsBy[caller]++
	return true
}

func (s *Server) closeStream(caller string) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.streamsBy[caller]--; s.streamsBy[caller] <= 0 {
		delete(s.streamsBy, caller)
	}
}
