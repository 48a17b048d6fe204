package auth

import "errors"

// Error codes returned by this package (API.md's taxonomy).
const (
	// CodeMissing: no credential where one is required.
	CodeMissing = "auth.missing"
	// CodeTokenInvalid: a JWT that is malformed, badly signed, of the wrong kind or with
	// wrong claims.
	CodeTokenInvalid = "auth.token_invalid"
	// CodeTokenExpired: a JWT whose exp is in the past.
	CodeTokenExpired = "auth.token_expired"
	// CodeWrongAudience: a JWT whose aud does not name this cluster, or that lacks aud
	// while the cluster requires it.
	CodeWrongAudience = "auth.wrong_audience"
	// CodeSignatureInvalid: a request signature (RFC 9421 or X-Auth-Token) that is
	// malformed, outside the profile, in the future, or does not verify; also a
	// Content-Digest that does not match the body.
	CodeSignatureInvalid = "auth.signature_invalid"
	// CodeSignatureExpired: a request signature that is too old or past its expires.
	CodeSignatureExpired = "auth.signature_expired"
)

// Error is the only error type this package returns for bad input. Code is one of the
// Code* constants; Detail is a short human sentence without secrets.
type Error struct {
	Code   string
	Detail string
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code
	}
	return e.Code + ": " + e.Detail
}

// Is reports whether target is an *Error with the same Code (Detail is ignored), so that
// errors.Is(err, &auth.Error{Code: auth.CodeTokenExpired}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// CodeOf returns the Code of the *Error in err's chain, or "" when there is none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func newErr(code, detail string) *Error { return &Error{Code: code, Detail: detail} }

func tokenInvalid(detail string) *Error { return newErr(CodeTokenInvalid, detail) }

func sigInvalid(detail string) *Error { return newErr(CodeSignatureInvalid, detail) }
