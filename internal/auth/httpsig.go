package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// MaxSignatureHeaderLen bounds the Signature-Input and Signature header values.
	MaxSignatureHeaderLen = 4 << 10
	// MaxContentDigestLen bounds the Content-Digest header value.
	MaxContentDigestLen = 1 << 10
	// SignatureWindow is how far created may be from the verifier's clock, either way.
	SignatureWindow = 300 * time.Second
	// MinNonceBytes is the least entropy a nonce must carry.
	MinNonceBytes = 16
	// MaxNonceBytes bounds a nonce (nonces are remembered cluster-wide).
	MaxNonceBytes = 64
	// MaxKeyIDLen bounds keyid.
	MaxKeyIDLen = 256
	// AlgEd25519 is the only RFC 9421 alg custos accepts.
	AlgEd25519 = "ed25519"
	// DefaultLabel is the signature label Signer writes.
	DefaultLabel = "sig1"
)

// RequestParts is what a request signature covers, as the verifier (or signer) sees it.
type RequestParts struct {
	// Method is the HTTP method as sent (case is preserved, per RFC 9421 §2.2.1).
	Method string
	// Path is the request path exactly as sent, still percent-encoded ("/" when empty).
	Path string
	// RawQuery is the query as sent, without the "?".
	RawQuery string
	// Header holds the request's header fields.
	Header http.Header
	// Body is the request body ("has a body" means len(Body) > 0).
	Body []byte
	// Authority is host[:port] from the Host header; only @authority and @target-uri use it.
	Authority string
	// Scheme is "http" or "https"; only @scheme and @target-uri use it.
	Scheme string
}

// RequestPartsFromHTTP builds RequestParts from a server-side request (path and query as
// sent, taken from RequestURI) and its already-read body.
func RequestPartsFromHTTP(r *http.Request, body []byte) RequestParts {
	rp := RequestParts{Method: r.Method, Header: r.Header, Body: body, Authority: r.Host, Scheme: "http"}
	if r.TLS != nil {
		rp.Scheme = "https"
	}
	target := r.RequestURI
	if target == "" && r.URL != nil {
		target = r.URL.RequestURI()
	}
	if !strings.HasPrefix(target, "/") {
		// absolute-form (or "*"): take the path and query from the parsed target.
		if u, err := url.ParseRequestURI(target); err == nil {
			target = u.EscapedPath()
			if u.ForceQuery || u.RawQuery != "" {
				target += "?" + u.RawQuery
			}
		}
	}
	rp.Path, rp.RawQuery, _ = strings.Cut(target, "?")
	return rp
}

// Signature is a parsed RFC 9421 signature: the one member of Signature-Input and of
// Signature, which must share a label.
type Signature struct {
	Label      string
	Components []string
	Created    int64
	Expires    *int64
	Nonce      string
	KeyID      string
	Alg        string
	Tag        string
	Sig        []byte
	// Params is the serialized @signature-params value (RFC 9421 §2.3).
	Params string

	hasCreated bool
	unknown    []string
}

// ParseSignature parses the Signature-Input and Signature header values (each with its
// multiple field lines already joined with ", "). It accepts any RFC 9421 signature made
// of plain component names and integer or string parameters, with exactly one label;
// CheckProfile then enforces custos's profile. Both empty is auth.missing.
func ParseSignature(sigInput, sig string) (*Signature, error) {
	if sigInput == "" && sig == "" {
		return nil, newErr(CodeMissing, "no request signature")
	}
	if sigInput == "" || sig == "" {
		return nil, sigInvalid("Signature-Input and Signature must both be present")
	}
	if len(sigInput) > MaxSignatureHeaderLen || len(sig) > MaxSignatureHeaderLen {
		return nil, sigInvalid("signature header too long")
	}
	in, err := parseSFDictionary(sigInput)
	if err != nil {
		return nil, sigInvalid("malformed Signature-Input")
	}
	sv, err := parseSFDictionary(sig)
	if err != nil {
		return nil, sigInvalid("malformed Signature")
	}
	if len(in) != 1 || len(sv) != 1 {
		return nil, sigInvalid("a request must carry exactly one signature")
	}
	if in[0].key != sv[0].key {
		return nil, sigInvalid("Signature-Input and Signature labels differ")
	}
	if !in[0].inner {
		return nil, sigInvalid("Signature-Input member is not an inner list")
	}
	if sv[0].inner || sv[0].item.kind != sfBytes || len(sv[0].params) != 0 {
		return nil, sigInvalid("Signature member is not a byte sequence")
	}
	s := &Signature{Label: in[0].key, Sig: sv[0].item.b}
	seen := map[string]bool{}
	for _, it := range in[0].items {
		if it.bare.kind != sfString || len(it.params) != 0 {
			return nil, sigInvalid("covered components must be plain strings")
		}
		c := it.bare.s
		if c == "" || c != strings.ToLower(c) || c == "@signature-params" || strings.ContainsAny(c, " \"") {
			return nil, sigInvalid("bad covered component name")
		}
		if seen[c] {
			return nil, sigInvalid("duplicate covered component")
		}
		seen[c] = true
		s.Components = append(s.Components, c)
	}
	for _, p := range in[0].params {
		switch p.key {
		case "created", "expires":
			if p.val.kind != sfInteger || p.val.i < 0 {
				return nil, sigInvalid(p.key + " must be a non-negative integer")
			}
			if p.key == "created" {
				s.Created, s.hasCreated = p.val.i, true
			} else {
				v := p.val.i
				s.Expires = &v
			}
		case "nonce", "keyid", "alg", "tag":
			if p.val.kind != sfString {
				return nil, sigInvalid(p.key + " must be a string")
			}
			switch p.key {
			case "nonce":
				s.Nonce = p.val.s
			case "keyid":
				s.KeyID = p.val.s
			case "alg":
				s.Alg = p.val.s
			case "tag":
				s.Tag = p.val.s
			}
		default:
			s.unknown = append(s.unknown, p.key)
		}
	}
	var b strings.Builder
	b.WriteByte('(')
	for i, c := range s.Components {
		if i > 0 {
			b.WriteByte(' ')
		}
		serializeSFString(&b, c)
	}
	b.WriteByte(')')
	serializeSFParams(&b, in[0].params)
	s.Params = b.String()
	return s, nil
}

// HasCreated reports whether the signature carried a created parameter.
func (s *Signature) HasCreated() bool { return s.hasCreated }

// ProfileComponents lists the components custos's profile requires, in order, for a
// request with or without a body and an Authorization header.
func ProfileComponents(hasBody, hasAuthorization bool) []string {
	c := []string{"@method", "@path", "@query"}
	if hasBody {
		c = append(c, "content-digest")
	}
	if hasAuthorization {
		c = append(c, "authorization")
	}
	return c
}

// CheckProfile enforces API.md's profile: the covered components are exactly "@method"
// "@path" "@query", then "content-digest" iff the request has a body, then
// "authorization" iff it has an Authorization header; created, nonce (base64url of 16 to
// 64 bytes, padded or not), keyid and alg="ed25519" are required; expires and tag are
// optional; any other parameter is refused.
func CheckProfile(s *Signature, req RequestParts) error {
	want := ProfileComponents(len(req.Body) > 0, len(req.Header.Values("Authorization")) > 0)
	if len(s.Components) != len(want) {
		return sigInvalid("signature must cover exactly " + strings.Join(want, " "))
	}
	for i := range want {
		if s.Components[i] != want[i] {
			return sigInvalid("signature must cover exactly " + strings.Join(want, " "))
		}
	}
	if len(s.unknown) > 0 {
		return sigInvalid("unknown signature parameter")
	}
	if !s.hasCreated {
		return sigInvalid("signature has no created parameter")
	}
	if s.KeyID == "" || len(s.KeyID) > MaxKeyIDLen {
		return sigInvalid("signature needs a keyid of at most 256 characters")
	}
	if s.Alg != AlgEd25519 {
		return sigInvalid(`signature needs alg="ed25519"`)
	}
	n, err := decodeNonce(s.Nonce)
	if err != nil || len(n) < MinNonceBytes || len(n) > MaxNonceBytes {
		return sigInvalid("nonce must be base64url of 16 to 64 random bytes")
	}
	return nil
}

func decodeNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty nonce")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '=') {
			return nil, errors.New("bad nonce character")
		}
	}
	if strings.HasSuffix(s, "=") {
		return base64.URLEncoding.Strict().DecodeString(s)
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

// CheckWindow checks created and expires against now.
//
// Codes: created more than SignatureWindow in the future is auth.signature_invalid (the
// client's clock is wrong: the signature is not yet valid, and waiting will not make it a
// replay risk); created more than SignatureWindow in the past, or expires in the past, is
// auth.signature_expired. An expires before created is auth.signature_invalid.
func CheckWindow(s *Signature, now time.Time) error {
	if !s.hasCreated {
		return sigInvalid("signature has no created parameter")
	}
	t := now.Unix()
	w := int64(SignatureWindow / time.Second)
	if s.Created > t+w {
		return sigInvalid("signature created in the future; check the client's clock")
	}
	if s.Created < t-w {
		return newErr(CodeSignatureExpired, "signature created too long ago; check the client's clock")
	}
	if s.Expires != nil {
		// Expired first: API.md answers an expires in the past with
		// auth.signature_expired, also when it is before created.
		if t > *s.Expires {
			return newErr(CodeSignatureExpired, "signature expired")
		}
		if *s.Expires < s.Created {
			return sigInvalid("signature expires before it was created")
		}
	}
	return nil
}

// SignatureBase builds the RFC 9421 §2.5 signature base for s over req: one line
// `"<component>": <value>` per covered component, then `"@signature-params": <params>`,
// joined with "\n" and without a trailing newline. Supported components: @method,
// @path, @query, @authority, @scheme, @target-uri, @request-target, and any header field
// by its lowercase name.
func SignatureBase(s *Signature, req RequestParts) ([]byte, error) {
	var b strings.Builder
	for _, c := range s.Components {
		v, err := componentValue(c, req)
		if err != nil {
			return nil, err
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, sigInvalid("component value contains a line break")
		}
		b.WriteByte('"')
		b.WriteString(c)
		b.WriteString(`": `)
		b.WriteString(v)
		b.WriteByte('\n')
	}
	b.WriteString(`"@signature-params": `)
	b.WriteString(s.Params)
	return []byte(b.String()), nil
}

func componentValue(c string, req RequestParts) (string, error) {
	switch c {
	case "@method":
		if req.Method == "" {
			return "", sigInvalid("request has no method")
		}
		return req.Method, nil
	case "@path":
		if req.Path == "" {
			return "/", nil
		}
		return req.Path, nil
	case "@query":
		return "?" + req.RawQuery, nil
	case "@request-target":
		p := req.Path
		if p == "" {
			p = "/"
		}
		if req.RawQuery != "" {
			p += "?" + req.RawQuery
		}
		return p, nil
	case "@authority":
		return authority(req)
	case "@scheme":
		if req.Scheme == "" {
			return "", sigInvalid("request scheme unknown")
		}
		return strings.ToLower(req.Scheme), nil
	case "@target-uri":
		a, err := authority(req)
		if err != nil {
			return "", err
		}
		if req.Scheme == "" {
			return "", sigInvalid("request scheme unknown")
		}
		p := req.Path
		if p == "" {
			p = "/"
		}
		if req.RawQuery != "" {
			p += "?" + req.RawQuery
		}
		return strings.ToLower(req.Scheme) + "://" + a + p, nil
	}
	if strings.HasPrefix(c, "@") {
		return "", sigInvalid("unsupported derived component")
	}
	vals := req.Header.Values(c)
	if len(vals) == 0 {
		return "", sigInvalid("a covered header field is absent")
	}
	trimmed := make([]string, len(vals))
	for i, v := range vals {
		trimmed[i] = strings.Trim(v, " \t")
	}
	return strings.Join(trimmed, ", "), nil
}

// authority is the lowercased Host with the scheme's default port removed.
func authority(req RequestParts) (string, error) {
	if req.Authority == "" {
		return "", sigInvalid("request authority unknown")
	}
	a := strings.ToLower(req.Authority)
	switch strings.ToLower(req.Scheme) {
	case "https":
		a = strings.TrimSuffix(a, ":443")
	case "http":
		a = strings.TrimSuffix(a, ":80")
	}
	return a, nil
}

// VerifyEd25519 verifies s over req with pub. When content-digest is covered it also
// checks that the Content-Digest header matches the body. It does not check the profile
// or the window (CheckProfile, CheckWindow) and never consumes the nonce.
func VerifyEd25519(pub ed25519.PublicKey, s *Signature, req RequestParts) error {
	return VerifyEd25519With(ed25519.Verify, pub, s, req)
}

// VerifyEd25519With is VerifyEd25519 with check in place of crypto/ed25519.Verify (a
// check that remembers what verified, authn.Memo; it must answer as Verify does).
func VerifyEd25519With(check func(pub ed25519.PublicKey, msg, sig []byte) bool, pub ed25519.PublicKey, s *Signature, req RequestParts) error {
	if len(pub) != ed25519.PublicKeySize {
		return sigInvalid("signing key is not an Ed25519 public key")
	}
	if s.Alg != "" && s.Alg != AlgEd25519 {
		return sigInvalid("signature algorithm is not ed25519")
	}
	for _, c := range s.Components {
		if c == "content-digest" {
			if err := CheckContentDigest(strings.Join(req.Header.Values("Content-Digest"), ", "), req.Body); err != nil {
				return err
			}
		}
	}
	if len(s.Sig) != ed25519.SignatureSize {
		return sigInvalid("signature is not 64 bytes")
	}
	base, err := SignatureBase(s, req)
	if err != nil {
		return err
	}
	if !check(pub, base, s.Sig) {
		return sigInvalid("request signature does not verify")
	}
	return nil
}

// ContentDigest returns the RFC 9530 Content-Digest value for body:
// "sha-256=:<base64 of SHA-256(body)>:".
func ContentDigest(body []byte) string {
	h := sha256.Sum256(body)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(h[:]) + ":"
}

// CheckContentDigest checks a Content-Digest header value (field lines joined with ", ")
// against body. The value must be a dictionary with exactly one member, sha-256, a
// 32-byte byte sequence equal to SHA-256(body). An absent header is fine only when the
// body is empty.
func CheckContentDigest(header string, body []byte) error {
	if header == "" {
		if len(body) > 0 {
			return sigInvalid("a request with a body needs a Content-Digest header")
		}
		return nil
	}
	if len(header) > MaxContentDigestLen {
		return sigInvalid("Content-Digest too long")
	}
	d, err := parseSFDictionary(header)
	if err != nil || len(d) != 1 || d[0].key != "sha-256" || d[0].inner || d[0].item.kind != sfBytes || len(d[0].params) != 0 || len(d[0].item.b) != sha256.Size {
		return sigInvalid(`Content-Digest must be "sha-256=:<base64>:"`)
	}
	h := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(h[:], d[0].item.b) != 1 {
		return sigInvalid("Content-Digest does not match the body")
	}
	return nil
}

// Signer signs outgoing requests with custos's RFC 9421 profile.
type Signer struct {
	// KeyID is the keyid parameter: "user:<user_id>", an access-key id, or "admin".
	KeyID string
	// Key is the Ed25519 private key.
	Key ed25519.PrivateKey
}

// Sign signs req, whose body is body (the caller sends exactly these bytes). It sets
// Content-Digest when body is not empty (and removes it otherwise), then Signature-Input
// and Signature with label "sig1", created=now, a fresh 16-byte random nonce, keyid and
// alg="ed25519", covering @method @path @query [content-digest] [authorization]. Set
// Authorization before signing. Each call re-signs from scratch, so a retry gets a new
// nonce.
func (s Signer) Sign(req *http.Request, body []byte, now time.Time) error {
	if len(s.Key) != ed25519.PrivateKeySize {
		return errors.New("auth: signer needs an Ed25519 private key")
	}
	if s.KeyID == "" || len(s.KeyID) > MaxKeyIDLen || !validSFString(s.KeyID) {
		return errors.New("auth: signer keyid must be 1 to 256 printable ASCII characters")
	}
	if req.URL == nil {
		return errors.New("auth: request has no URL")
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if len(body) > 0 {
		req.Header.Set("Content-Digest", ContentDigest(body))
	} else {
		req.Header.Del("Content-Digest")
	}
	var nb [MinNonceBytes]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return fmt.Errorf("auth: nonce: %w", err)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	rp := RequestParts{Method: method, Header: req.Header, Body: body, Authority: req.Host, Scheme: req.URL.Scheme}
	if rp.Authority == "" {
		rp.Authority = req.URL.Host
	}
	rp.Path, rp.RawQuery, _ = strings.Cut(req.URL.RequestURI(), "?")

	sig := &Signature{
		Label:      DefaultLabel,
		Components: ProfileComponents(len(body) > 0, len(req.Header.Values("Authorization")) > 0),
		Created:    now.Unix(),
		Nonce:      base64.RawURLEncoding.EncodeToString(nb[:]),
		KeyID:      s.KeyID,
		Alg:        AlgEd25519,
		hasCreated: true,
	}
	var p strings.Builder
	p.WriteByte('(')
	for i, c := range sig.Components {
		if i > 0 {
			p.WriteByte(' ')
		}
		serializeSFString(&p, c)
	}
	p.WriteByte(')')
	serializeSFParams(&p, []sfParam{
		{key: "created", val: sfBare{kind: sfInteger, i: sig.Created}},
		{key: "nonce", val: sfBare{kind: sfString, s: sig.Nonce}},
		{key: "keyid", val: sfBare{kind: sfString, s: sig.KeyID}},
		{key: "alg", val: sfBare{kind: sfString, s: sig.Alg}},
	})
	sig.Params = p.String()
	base, err := SignatureBase(sig, rp)
	if err != nil {
		return fmt.Errorf("auth: signature base: %w", err)
	}
	raw := ed25519.Sign(s.Key, base)
	req.Header.Set("Signature-Input", sig.Label+"="+sig.Params)
	req.Header.Set("Signature", sig.Label+"=:"+base64.StdEncoding.EncodeToString(raw)+":")
	return nil
}
