package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state"
)

// apiError is an error answer: an RFC 9457 problem with custos's stable code.
type apiError struct {
	Status int
	Code   string
	Detail string
	// Request is the request object a blocked, denied or failed keygen or sign concerns.
	Request *api.Request
	// RetryAfter is the Retry-After header in seconds for 429 and 503 (1 when 0).
	RetryAfter int
	// inDoubt marks the answer of a node whose state is in doubt (stateInDoubt).
	inDoubt bool
}

// stateInDoubt is the answer of a node that cannot vouch for its replicated state
// (Config.Distrusted says why).
func stateInDoubt(why string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: api.CodeClusterUnavailable, RetryAfter: 5, inDoubt: true,
		Detail: "this node cannot vouch for its replicated state (" + why + "); send the request to another node, or retry once GET /readyz on this one answers 200"}
}

func (e *apiError) Error() string { return e.Code + ": " + e.Detail }

// errf is the error answer with code, its HTTP status from internal/api's table.
func errf(code, format string, a ...any) *apiError {
	return &apiError{Status: api.StatusOf(code), Code: code, Detail: fmt.Sprintf(format, a...)}
}

// exchange is one HTTP request in flight.
type exchange struct {
	w      http.ResponseWriter
	r      *http.Request
	id     string
	route  string
	start  time.Time
	body   []byte
	caller state.Caller
	signed *state.SignedForm
	code   string
	status int
	// distrusted is the server's Config.Distrusted on authenticated routes (nil on the
	// open ones): every answer is judged by it once composed, after the last read of the
	// state (see answer).
	distrusted func() string
}

// answerable returns the 503 to give instead of an answer composed from the state, or
// nil. The check at a route's start is not enough: a request waits for its entry to
// apply, and the leader decides what happens meanwhile, such as installing a forged
// snapshot on this node. Vouching marks the state in doubt before a restore switches it
// in, so a check after the last read catches every answer composed from it.
func (x *exchange) answerable() *apiError {
	if x.distrusted == nil {
		return nil
	}
	if why := x.distrusted(); why != "" {
		return stateInDoubt(why)
	}
	return nil
}

// json answers v as the JSON body with status.
func (x *exchange) json(status int, v any) {
	if e := x.answerable(); e != nil {
		x.fail(e)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		x.fail(errf(api.CodeInternal, "encode response"))
		return
	}
	x.w.Header().Set("Content-Type", api.ContentTypeJSON)
	x.w.WriteHeader(status)
	_, _ = x.w.Write(append(b, '\n'))
	x.status = status
}

// noContent answers 204.
func (x *exchange) noContent() {
	if e := x.answerable(); e != nil {
		x.fail(e)
		return
	}
	x.w.WriteHeader(http.StatusNoContent)
	x.status = http.StatusNoContent
}

// fail answers e as a problem document, with Retry-After on 429 and 503.
func (x *exchange) fail(e *apiError) {
	if !e.inDoubt {
		if d := x.answerable(); d != nil {
			e = d // a refusal, too, may come from the state in doubt (a 404, a request object)
		}
	}
	p := api.Problem{
		Type: api.ProblemTypeBlank, Title: api.Title(e.Code), Status: e.Status, Code: e.Code,
		Detail: e.Detail, RequestID: x.id, Request: e.Request,
	}
	b, err := json.Marshal(p)
	if err != nil {
		// Only the request object can fail to encode (a time past year 9999): the
		// problem is still answered, without it.
		p.Request = nil
		b, _ = json.Marshal(p)
	}
	x.w.Header().Set("Content-Type", api.ContentTypeProblem)
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		x.w.Header().Set("Retry-After", strconv.Itoa(max(1, e.RetryAfter)))
	}
	x.w.WriteHeader(e.Status)
	_, _ = x.w.Write(append(b, '\n'))
	x.code, x.status = e.Code, e.Status
}
