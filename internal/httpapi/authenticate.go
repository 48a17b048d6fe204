package httpapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
)

// maxGrantBody bounds POST /v1/access-keys: the grant is stored with the access key, so
// that every node can re-verify it.
const maxGrantBody = 64 << 10

// checkRate applies the per-caller token bucket once the caller is authenticated (after
// step 7), before anything is committed: a refused request consumes no nonce.
func (s *Server) checkRate(x *exchange) *apiError {
	ok, wait := s.limiter.allow(x.caller.Actor(), time.Now())
	if ok {
		return nil
	}
	secs := retryAfterSeconds(wait)
	e := errf(api.CodeRateLimited, "too many requests from this caller on this node; retry in %d s", secs)
	e.RetryAfter = secs
	return e
}

// maxDrain bounds the oversized body a node reads and drops before it answers 413.
const maxDrain = 8 << 20

// drainTooLarge reads and drops the rest of an oversized body (read bytes of it read
// already) when it is at most maxDrain in all, so that a client still sending it reads
// the 413 rather than a reset connection: net/http closes a connection with more than
// 256 KiB of its body unread, and a client writing a body that does not fit in the
// socket's buffers then fails before it reads the answer. Larger bodies are not read.
// The server's read timeout bounds the time it takes.
func drainTooLarge(r *http.Request, read int64) {
	if r.ContentLength > maxDrain {
		return
	}
	_, _ = io.CopyN(io.Discard, r.Body, maxDrain-read)
}

// checkAuth runs API.md's checks in their order up to the signature itself: the body
// size here, the rest in internal/authn, the one verifier the FSM runs again at the
// entry's stamp. It leaves the caller and the signed form on the exchange.
func (s *Server) checkAuth(x *exchange) *apiError {
	r := x.r
	// 1. body size.
	max := s.c.API.MaxBody
	if x.route == state.OpAccessCreate {
		max = min(max, maxGrantBody)
	}
	if r.ContentLength > max {
		drainTooLarge(r, 0)
		return errf(api.CodeRequestTooLarge, "request body is larger than %d bytes", max)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return errf(api.CodeRequestMalformed, "could not read the body")
	}
	if int64(len(body)) > max {
		drainTooLarge(r, int64(len(body)))
		return errf(api.CodeRequestTooLarge, "request body is larger than %d bytes", max)
	}
	x.body = body
	// 2. exactly one kind of credential: each credential header at most once (the rest
	// of this step is authn's).
	for _, h := range []string{"Authorization", "Signature-Input", "Signature", "X-Auth-Token"} {
		if len(r.Header.Values(h)) > 1 {
			return errf(api.CodeAuthMissing, "credential headers must appear once (%s appears %d times)", h, len(r.Header.Values(h)))
		}
	}
	parts := auth.RequestPartsFromHTTP(r, body)
	f := &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery,
		Authorization: r.Header.Get("Authorization"), ContentDigest: strings.Join(r.Header.Values("Content-Digest"), ", "),
		SignatureInput: r.Header.Get("Signature-Input"), Signature: r.Header.Get("Signature"),
		XAuthToken: r.Header.Get("X-Auth-Token"), Body: body,
	}
	// 3–7. An admin credential, or a user token, that does not verify against this node's
	// admin key may be one a rotation made valid that has not applied here yet: it gets
	// the same catch-up as an access key this node does not know yet.
	from := s.st.AppliedIndex()
	dir := &waitingDirectory{s: s, ctx: r.Context(), wait: true}
	p, err := s.authn.Verify(f, s.now(), dir)
	if err != nil && s.newerAdminKeyMayAccept(f, err) {
		p, err = s.awaitAdminKey(r.Context(), f, from, dir.admin, err)
	}
	if err != nil {
		return authErr(err)
	}
	x.caller, x.signed = *p, f
	return nil
}

// accessKeyCatchUp is how long a node waits for its own state to catch up when it does not
// know an access key yet, or when an admin credential does not verify against the admin
// key it holds: a key created or rotated through another node is usable here as soon as
// its entry applies, usually within a heartbeat.
const accessKeyCatchUp = time.Second

// waitingDirectory is the verifier's view of this node's state for early refusals: an
// access key it does not know yet is waited for (when wait is set), up to
// accessKeyCatchUp. The admin public key is read once, so that one verification checks
// the admin token and the admin signature against the same key, one the state held.
type waitingDirectory struct {
	s    *Server
	ctx  context.Context
	wait bool

	admin     ed25519.PublicKey // the admin key this verification read, once adminRead
	adminRead bool
}

// AccessKey returns the access key with this id, waiting for a well-formed id it does not
// know yet.
func (d *waitingDirectory) AccessKey(id string) (authn.AccessKey, bool) {
	dir := d.s.st.Directory()
	return d.s.findAccessKey(d.ctx, d.wait && wellFormedAccessKeyID(id), func() (authn.AccessKey, bool) { return dir.AccessKey(id) })
}

// AccessKeyByPublicKey returns the newest access key with this scheme and public key,
// waiting for one it does not know yet.
func (d *waitingDirectory) AccessKeyByPublicKey(scheme string, pub []byte) (authn.AccessKey, bool) {
	dir := d.s.st.Directory()
	return d.s.findAccessKey(d.ctx, d.wait, func() (authn.AccessKey, bool) { return dir.AccessKeyByPublicKey(scheme, pub) })
}

// AdminPublicKey is the admin key the state holds, the same for the whole verification.
func (d *waitingDirectory) AdminPublicKey() ed25519.PublicKey {
	if !d.adminRead {
		d.admin, d.adminRead = d.s.st.Directory().AdminPublicKey(), true
	}
	return d.admin
}

// findAccessKey returns get()'s access key, waiting (see catchUp) for newly applied
// entries when it is not known yet and the credential may name a new one.
func (s *Server) findAccessKey(ctx context.Context, mayWait bool, get func() (authn.AccessKey, bool)) (authn.AccessKey, bool) {
	from := s.st.AppliedIndex()
	ak, ok := get()
	if ok || !mayWait {
		return ak, ok
	}
	s.catchUp(ctx, from, func() bool {
		ak, ok = get()
		return ok
	})
	return ak, ok
}

// newerAdminKeyMayAccept reports whether err is a refusal of f that a newer admin key
// could turn into an acceptance (key-pair mode, where the admin key signs the admin's own
// tokens and requests and every user token): for the admin's credential (a token with an
// RFC 9421 signature by keyid "admin"), a token or a signature that does not verify; for
// a user's credential, a token that does not verify (the user's own signature is checked
// against the key in the token, which no admin key changes). An expired, malformed or
// wrong-audience credential stays refused whatever the key, and an access key's
// credential (X-Auth-Token) does not depend on it.
func (s *Server) newerAdminKeyMayAccept(f *state.SignedForm, err error) bool {
	if !s.authn.KeyPair() || f.XAuthToken != "" || f.Authorization == "" {
		return false
	}
	var ae *auth.Error
	if !errors.As(err, &ae) {
		return false
	}
	if authn.SignatureKeyID(f.SignatureInput) == "admin" {
		return ae.Code == api.CodeAuthTokenInvalid || ae.Code == api.CodeAuthSignatureInvalid
	}
	return ae.Code == api.CodeAuthTokenInvalid
}

// awaitAdminKey verifies an admin or user credential again while this node's state catches up
// (see catchUp): the cluster may have committed a rotation of the admin key that has not
// applied here yet. After each entry applied past index from that changes the admin key
// (tried is the key the last verdict was reached with), it verifies f again against the
// key the state holds then, until f verifies or is refused for a reason no key can
// change; when the wait ends it returns the last verdict. It accepts nothing the state
// does not hold: it only gives this node's own FSM time to apply what the cluster
// committed.
func (s *Server) awaitAdminKey(ctx context.Context, f *state.SignedForm, from uint64, tried ed25519.PublicKey, err error) (*authn.Principal, error) {
	var p *authn.Principal
	s.catchUp(ctx, from, func() bool {
		if bytes.Equal(s.st.Directory().AdminPublicKey(), tried) {
			return false // the same key gives the same verdict
		}
		dir := &waitingDirectory{s: s, ctx: ctx}
		p, err = s.authn.Verify(f, s.now(), dir)
		tried = dir.admin
		return err == nil || !s.newerAdminKeyMayAccept(f, err)
	})
	return p, err
}

// catchUp gives this node's own state time to catch up with the cluster: after each entry
// applied past index from, it calls settled, until settled reports true or the wait ends
// (accessKeyCatchUp, or ctx). At most cap(s.akWaits) requests wait at once; when every
// slot is taken it returns at once, without calling settled.
func (s *Server) catchUp(ctx context.Context, from uint64, settled func() bool) {
	select {
	case s.akWaits <- struct{}{}:
		defer func() { <-s.akWaits }()
	default:
		return
	}
	if s.catchingUp != nil {
		s.catchingUp()
	}
	ctx, cancel := context.WithTimeout(ctx, accessKeyCatchUp)
	defer cancel()
	for {
		err := s.st.WaitApplied(ctx, from+1)
		applied := s.st.AppliedIndex()
		if applied <= from {
			return // the wait ended with nothing new applied
		}
		from = applied
		// Entries applied as the wait ended still get their check.
		if settled() || err != nil {
			return
		}
	}
}

// wellFormedAccessKeyID reports whether id can be an access key's ("ak_" + 32 lowercase
// hex characters); only such ids are worth waiting for.
func wellFormedAccessKeyID(id string) bool {
	rest, ok := strings.CutPrefix(id, "ak_")
	if !ok || len(rest) != 32 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}

func authErr(err error) *apiError {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return &apiError{Status: api.StatusOf(ae.Code), Code: ae.Code, Detail: ae.Detail}
	}
	return errf(api.CodeAuthSignatureInvalid, "%v", err)
}
