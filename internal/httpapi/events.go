package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state"
)

// The activity stream (API.md "Events"): GET /v1/events reads the replicated event log of
// this node's state. With Accept: text/event-stream it is Server-Sent Events that follow
// the log live, resumable with Last-Event-ID; without, JSON pages. A stream holds one page
// of events at a time and writes at the client's pace (a slow client slows only its own
// stream, it makes the node hold nothing more); at most maxStreams are open per node.

const (
	// maxStreams bounds the event streams open on a node at once.
	maxStreams = 256
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
		if more, _ := s.events.Events(user, all, last, 1, streamScan); len(more) > 0 {
			out.Next = strconv.FormatUint(last, 10)
		}
		x.json(http.StatusOK, out)
		return nil
	}
	if s.life.Err() != nil {
		return errf(api.CodeClusterUnavailable, "the node is stopping; reconnect to another node")
	}
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
	for {
		evs, last := s.events.Events(user, all, after, streamPage, streamScan)
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
