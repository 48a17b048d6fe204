// Package client is the Go SDK for custos's HTTP API, for wallet backends and agents.
//
// A Client signs every request with custos's RFC 9421 profile: in user mode it sends
// "Authorization: Bearer <user token>" and signs with the user's Ed25519 key (keyid
// "user:<user_id>"); in access-key mode it signs with the Ed25519 access key alone
// (keyid = the access key's id); in X-Auth mode (NewXAuth) a secp256k1 access key sends
// bitcoin-auth's X-Auth-Token instead. Each call encodes its JSON body once, digests and
// sends exactly those bytes, and signs afresh (new nonce or timestamp), so a retried call
// is a new signed request. Users manage their access keys with CreateAccessKey,
// ListAccessKeys, RevokeAccessKey and AccessKeyLog.
//
// The objects it returns (Key, Request, AccessKey, Cluster, …), the request statuses and
// Final are internal/api's: the one definition of the wire API, which the nodes marshal.
// API errors come back as *APIError (RFC 9457 problem details) so that callers can branch
// on Code; a code's HTTP status and title are those of internal/api's table. The package
// never logs and never sends a private key anywhere.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
)

const (
	// MaxRequestBody is the largest request body the API accepts (1 MiB).
	MaxRequestBody = 1 << 20
	// MaxResponseBody bounds how much of a response the client reads.
	MaxResponseBody = 8 << 20
	// DefaultTimeout is the HTTP client timeout used when no client is given. It exceeds
	// the node's default 30 s hold on keygen and sign.
	DefaultTimeout = 60 * time.Second
	// maxPages bounds how many pages the List helpers follow.
	maxPages = 10000
	// maxRetryAfter caps a Retry-After (seconds) so that it cannot overflow.
	maxRetryAfter = 86400
)

// Authenticator adds credentials to an outgoing request whose body is body: typically
// it sets Authorization and then signs (auth.Signer.Sign). It is called once per
// attempt, so every attempt carries a fresh signature.
type Authenticator func(req *http.Request, body []byte, now time.Time) error

// Client calls one custos node.
type Client struct {
	base  *url.URL
	hc    *http.Client
	authn Authenticator
	now   func() time.Time
}

type options struct {
	hc  *http.Client
	tls *tls.Config
}

// Option configures a Client.
type Option func(*options)

// WithHTTPClient sets the HTTP client (for timeouts, TLS, proxies). The default has a
// DefaultTimeout timeout.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// WithTLSConfig sets the TLS configuration of the default HTTP client, for an https node
// whose certificate a private CA signed (RootCAs) or that requires a client certificate
// (Certificates, for mutual TLS). It cannot be combined with WithHTTPClient: set the TLS
// configuration of that client's transport instead.
func WithTLSConfig(tc *tls.Config) Option { return func(o *options) { o.tls = tc } }

// New returns a client in user mode: every request carries the user token as a Bearer
// token and an RFC 9421 signature by signingKey with keyid "user:<user_id>", where the
// user id is read (not verified) from the token.
func New(baseURL string, userToken string, signingKey ed25519.PrivateKey, opts ...Option) (*Client, error) {
	if userToken == "" {
		return nil, errors.New("client: empty user token")
	}
	uid, err := auth.UnverifiedUserID(userToken)
	if err != nil {
		return nil, fmt.Errorf("client: user token: %w", err)
	}
	if len(signingKey) != ed25519.PrivateKeySize {
		return nil, errors.New("client: signing key must be an Ed25519 private key")
	}
	signer := auth.Signer{KeyID: auth.UserKeyID(uid), Key: signingKey}
	bearer := "Bearer " + userToken
	return NewCustom(baseURL, func(req *http.Request, body []byte, now time.Time) error {
		req.Header.Set("Authorization", bearer)
		return signer.Sign(req, body, now)
	}, opts...)
}

// NewAccessKey returns a client in access-key mode: requests carry only an RFC 9421
// signature by key with keyid = accessKeyID (an "ak_…" id), no token.
func NewAccessKey(baseURL, accessKeyID string, key ed25519.PrivateKey, opts ...Option) (*Client, error) {
	if accessKeyID == "" {
		return nil, errors.New("client: empty access key id")
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("client: access key must be an Ed25519 private key")
	}
	signer := auth.Signer{KeyID: accessKeyID, Key: key}
	return NewCustom(baseURL, func(req *http.Request, body []byte, now time.Time) error {
		req.Header.Del("Authorization")
		return signer.Sign(req, body, now)
	}, opts...)
}

// NewCustom returns a client whose credentials come from authn (the admin SDK uses it to
// mint a fresh admin token per call).
func NewCustom(baseURL string, authn Authenticator, opts ...Option) (*Client, error) {
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if authn == nil {
		return nil, errors.New("client: no authenticator")
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.hc != nil && o.tls != nil:
		return nil, errors.New("client: give WithHTTPClient or WithTLSConfig, not both (put the TLS configuration in the HTTP client's transport)")
	case o.tls != nil:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = o.tls.Clone()
		o.hc = &http.Client{Timeout: DefaultTimeout, Transport: tr}
	case o.hc == nil:
		o.hc = &http.Client{Timeout: DefaultTimeout}
	}
	return &Client{base: u, hc: o.hc, authn: authn, now: time.Now}, nil
}

// WithBaseURL returns a client for another node (baseURL) with the same credentials and
// HTTP client. Prefer it to a second constructor call for the same key: the copies share
// their state (an X-Auth client's timestamps, which must not repeat for identical calls).
func (c *Client) WithBaseURL(baseURL string) (*Client, error) {
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	return &Client{base: u, hc: c.hc, authn: c.authn, now: c.now}, nil
}

func parseBaseURL(baseURL string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: base URL must be http(s)://host[:port][/prefix], got %q", baseURL)
	}
	return u, nil
}

// BaseURL is the node URL this client calls.
func (c *Client) BaseURL() string { return c.base.String() }

// APIError is an error answer of the API (RFC 9457 problem details, api.Problem). A
// node answers each Code with the one HTTP status and title of internal/api's table.
type APIError struct {
	// Status is the HTTP status code of the answer.
	Status int
	// Code is the stable error code (API.md), e.g. "auth.token_expired"; empty when the
	// answer was not problem details.
	Code string
	// Title is the problem's title; when the answer had none, the code's title in the
	// table, else the HTTP status text.
	Title     string
	Detail    string
	RequestID string
	// RetryAfter is the Retry-After of a 429 or 503, zero when absent.
	RetryAfter time.Duration
	// Request is the request object the node attached (a blocked, denied or failed sign
	// or keygen), nil otherwise.
	Request *Request
}

// Error implements the error interface.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "custos: HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	} else if e.Title != "" {
		b.WriteString(": " + e.Title)
	}
	if e.RequestID != "" {
		b.WriteString(" (request_id " + e.RequestID + ")")
	}
	return b.String()
}

// CodeOf returns the API error code in err's chain, or "".
func CodeOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// Do sends one signed request: method to path (which may carry a query, e.g.
// "/v1/keys?limit=10"), with body JSON-encoded (nil for none; a json.RawMessage or
// []byte is sent as is), and decodes a 2xx JSON answer into out (nil to discard). Any
// 4xx/5xx answer is an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body any, out any) error {
	_, err := c.do(ctx, method, path, body, out)
	return err
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	if !strings.HasPrefix(path, "/") {
		return 0, fmt.Errorf("client: path must start with /: %q", path)
	}
	var raw []byte
	switch b := body.(type) {
	case nil:
	case json.RawMessage:
		raw = b
	case []byte:
		raw = b
	default:
		enc, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("client: encode body: %w", err)
		}
		raw = enc
	}
	if len(raw) > MaxRequestBody {
		return 0, fmt.Errorf("client: request body of %d bytes exceeds %d", len(raw), MaxRequestBody)
	}
	target := c.base.String() + path
	var rd io.Reader
	if len(raw) > 0 {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, fmt.Errorf("client: build request: %w", err)
	}
	req.Header.Set("Accept", api.ContentTypeJSON)
	if len(raw) > 0 {
		req.Header.Set("Content-Type", api.ContentTypeJSON)
	}
	if err := c.authn(req, raw, c.now()); err != nil {
		return 0, fmt.Errorf("client: authenticate request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("client: read response: %w", err)
	}
	if len(data) > MaxResponseBody {
		return resp.StatusCode, fmt.Errorf("client: response larger than %d bytes", MaxResponseBody)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, parseAPIError(resp, data)
	}
	if out != nil && len(data) > 0 && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: decode %s %s answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func parseAPIError(resp *http.Response, data []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get(api.HeaderRequestID)}
	var p api.Problem
	if json.Unmarshal(data, &p) == nil {
		e.Title, e.Code, e.Detail, e.Request = p.Title, p.Code, p.Detail, p.Request
		if p.RequestID != "" {
			e.RequestID = p.RequestID
		}
	} else {
		d := strings.TrimSpace(string(data))
		if len(d) > 200 {
			d = d[:200]
		}
		e.Detail = d
	}
	if e.Title == "" {
		if _, known := api.Lookup(e.Code); known {
			e.Title = api.Title(e.Code)
		} else {
			e.Title = http.StatusText(resp.StatusCode)
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(min(s, maxRetryAfter)) * time.Second
		}
	}
	return e
}

// NextCursor reads a list answer's "next" (a string or a number; empty when absent).
func NextCursor(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// ListAll follows a list route's pages: it GETs path?limit=…&after=… and calls page with
// each answer's body until "next" is absent. page returns the answer's "next" value.
func (c *Client) ListAll(ctx context.Context, path string, limit int, page func(data json.RawMessage) (next json.RawMessage, err error)) error {
	after := ""
	seen := map[string]bool{}
	for i := 0; i < maxPages; i++ {
		q := url.Values{}
		q.Set("limit", strconv.Itoa(limit))
		if after != "" {
			q.Set("after", after)
		}
		var data json.RawMessage
		if err := c.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &data); err != nil {
			return err
		}
		next, err := page(data)
		if err != nil {
			return err
		}
		after = NextCursor(next)
		if after == "" {
			return nil
		}
		if seen[after] {
			return fmt.Errorf("client: %s: pagination does not advance", path)
		}
		seen[after] = true
	}
	return fmt.Errorf("client: %s: more than %d pages", path, maxPages)
}
