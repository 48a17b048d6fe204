// Package authn is custos's one verifier of credentials. Every user, access-key and admin
// request is authenticated here twice with the same code: by the HTTP entry node, for an
// early refusal, and by every node's FSM inside raft Apply, at the entry's stamp, from
// the request exactly as the caller signed it (a Form). What a request is allowed to do
// — who sent it, the nonce it consumes, the route and the body — is derived from that
// Form, never from what a proposer says (DESIGN.md: the FSM believes signatures, never
// proposers). The package also signs and verifies what nodes say in their own name
// (ceremony reports, forwarded proposals) with their libp2p identity keys.
//
// It is a pure function of its inputs: the time is a parameter, it reads no clock,
// network, disk or randomness, so that Apply stays deterministic. It knows nothing of
// HTTP servers, raft or the state's model beyond the small Directory it is given, and it
// never logs or returns a token, a signature or a key.
package authn

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/auth"
)

// Form is a request exactly as the caller signed it: what the entry node received and
// what goes into the raft log, so that every node verifies the same bytes.
type Form struct {
	Method   string `json:"method"`
	Path     string `json:"path"`      // as sent, still percent-encoded
	RawQuery string `json:"raw_query"` // as sent, without "?"
	// Authorization, ContentDigest, SignatureInput and Signature are the header values
	// (each header appears at most once; Content-Digest lines joined with ", ").
	Authorization  string `json:"authorization,omitempty"`
	ContentDigest  string `json:"content_digest,omitempty"`
	SignatureInput string `json:"signature_input,omitempty"`
	Signature      string `json:"signature,omitempty"`
	// XAuthToken is the X-Auth-Token header of a secp256k1 access key's request.
	XAuthToken string `json:"x_auth_token,omitempty"`
	Body       []byte `json:"body,omitempty"`
}

// Caller kinds.
const (
	KindAdmin     = "admin"
	KindUser      = "user"
	KindAccessKey = "access_key"
)

// Principal is who sent a request, as established from its credentials.
type Principal struct {
	Kind   string `json:"kind"` // KindAdmin, KindUser or KindAccessKey
	UserID uint64 `json:"user_id,omitempty"`
	// AccessKeyID names the access key ("ak_…") of an access-key caller.
	AccessKeyID   string `json:"access_key_id,omitempty"`
	TokenIssuedAt int64  `json:"token_iat,omitempty"` // unix seconds
	TokenExpires  int64  `json:"token_exp,omitempty"` // unix seconds
	Created       int64  `json:"created,omitempty"`   // signature created, unix seconds
	Expires       int64  `json:"expires,omitempty"`   // signature expires, unix seconds, 0 = none
	// NonceKey is the replay key this request consumes; empty when the scheme has none.
	NonceKey string `json:"nonce_key,omitempty"`
	// TokenNonceKey is a second replay key, the admin token's jti, when a signed admin
	// request also carries one: both are consumed.
	TokenNonceKey string `json:"token_nonce_key,omitempty"`
	// TokenHash is the SHA-256 (hex) of an admin token; admin tokens are never stored.
	TokenHash string `json:"token_hash,omitempty"`
	// SigpairOnly marks a Sigpair-style admin token ({name}), good only for create-user.
	SigpairOnly bool `json:"sigpair_only,omitempty"`
	// AdminName is the name claim of a Sigpair-style admin token (the user to create).
	AdminName string `json:"admin_name,omitempty"`
	// PublicKey is a user's public key, from its token (the key that signed the request).
	// Never encoded: what the FSM acts on, it derives from the signed form again.
	PublicKey []byte `json:"-"`
}

// Actor names the principal in the audit log: "admin", "user:<id>" or the access key's id.
func (p Principal) Actor() string {
	switch p.Kind {
	case KindAdmin:
		return "admin"
	case KindAccessKey:
		return p.AccessKeyID
	}
	return "user:" + strconv.FormatUint(p.UserID, 10)
}

// AccessKey is what the verifier needs to know of an access key.
type AccessKey struct {
	ID        string
	Scheme    string // "ed25519" (RFC 9421) or "secp256k1" (X-Auth-Token)
	PublicKey []byte
}

// Access-key schemes.
const (
	SchemeEd25519   = "ed25519"
	SchemeSecp256k1 = "secp256k1"
)

// Directory is the part of the replicated state the verifier reads. The FSM implements
// it over the state at the entry being applied; the HTTP entry node over its latest
// applied state.
type Directory interface {
	// AccessKey returns the access key with this id.
	AccessKey(id string) (AccessKey, bool)
	// AccessKeyByPublicKey returns the newest access key with this scheme and public key.
	AccessKeyByPublicKey(scheme string, pub []byte) (AccessKey, bool)
	// AdminPublicKey is the admin's Ed25519 public key in key-pair mode (nil otherwise).
	AdminPublicKey() ed25519.PublicKey
}

// Config is what every member must agree on to reach the same verdicts: the token
// policy and, in shared-key mode, the ADMIN_KEY. In key-pair mode the admin public key
// comes from the replicated state (Directory), never from a node's configuration.
type Config struct {
	// HMACKey is the raw 32-byte shared ADMIN_KEY; nil in key-pair mode.
	HMACKey []byte
	// Audience is the cluster name, matched against aud when a token carries one.
	Audience string
	// RequireAudience makes aud mandatory on user tokens.
	RequireAudience bool
	// MaxUserTokenTTL bounds exp - iat of user tokens; 0 means no limit.
	MaxUserTokenTTL time.Duration
}

// Verifier authenticates requests. It is safe for concurrent use.
type Verifier struct {
	cfg  Config
	hmac *auth.TokenVerifier // shared-key mode
	memo *Memo               // nil: every Ed25519 request signature is verified afresh
}

// WithMemo returns a verifier that answers Ed25519 request signatures through m (see
// Memo): the same verdicts, without verifying again what verified ahead of time.
func (v *Verifier) WithMemo(m *Memo) *Verifier {
	c := *v
	c.memo = m
	return &c
}

// New checks cfg and returns a verifier.
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	if cfg.HMACKey != nil {
		tv, err := auth.NewTokenVerifier(v.tokenConfig(nil))
		if err != nil {
			return nil, fmt.Errorf("authn: %w", err)
		}
		v.hmac = tv
	} else if cfg.RequireAudience && cfg.Audience == "" {
		return nil, errors.New("authn: RequireAudience needs an Audience (the cluster name)")
	}
	return v, nil
}

// KeyPair reports whether admin tokens are EdDSA tokens of the admin key pair.
func (v *Verifier) KeyPair() bool { return v.hmac == nil }

func (v *Verifier) tokenConfig(adminPub ed25519.PublicKey) auth.VerifierConfig {
	return auth.VerifierConfig{
		HMACKey: v.cfg.HMACKey, AdminPublicKey: adminPub, Audience: v.cfg.Audience,
		RequireAudience: v.cfg.RequireAudience, MaxUserTokenTTL: v.cfg.MaxUserTokenTTL,
	}
}

// tokens returns the JWT verifier: the shared key's, or one for the admin public key
// the state holds now.
func (v *Verifier) tokens(dir Directory) (*auth.TokenVerifier, error) {
	if v.hmac != nil {
		return v.hmac, nil
	}
	pub := dir.AdminPublicKey()
	if len(pub) != ed25519.PublicKeySize {
		return nil, &auth.Error{Code: auth.CodeTokenInvalid, Detail: "the cluster has no admin public key yet"}
	}
	tv, err := auth.NewTokenVerifier(v.tokenConfig(pub))
	if err != nil {
		return nil, &auth.Error{Code: auth.CodeTokenInvalid, Detail: "admin public key: " + err.Error()}
	}
	return tv, nil
}

func fail(code, format string, a ...any) *auth.Error {
	return &auth.Error{Code: code, Detail: fmt.Sprintf(format, a...)}
}

// Verify authenticates f at time at, in API.md's order of checks from step 2 (body size
// is the transport's): exactly one kind of credential, Content-Digest, token, signature
// components and parameters, created/expires window, the signature itself. Status,
// revocation, nonce and permissions are the state's to judge. Errors are *auth.Error
// with the API's code.
func (v *Verifier) Verify(f *Form, at time.Time, dir Directory) (*Principal, error) {
	signed := f.SignatureInput != "" || f.Signature != ""
	var token string
	if f.Authorization != "" {
		t, ok := Bearer(f.Authorization)
		if !ok {
			return nil, fail(auth.CodeMissing, `Authorization must be "Bearer <token>"`)
		}
		token = t
	}
	kind := ""
	switch {
	case f.XAuthToken != "" && (f.Authorization != "" || signed):
		return nil, fail(auth.CodeMissing, "a request carries exactly one kind of credential; this one mixes X-Auth-Token with others")
	case f.XAuthToken != "":
		kind = "xauth"
	case token != "" && signed:
		// A signed request with a token is a user's, unless the admin signs in key-pair
		// mode. An admin token here fails as a user token (auth.token_invalid).
		kind = KindUser
		if v.KeyPair() && SignatureKeyID(f.SignatureInput) == "admin" {
			kind = KindAdmin
		}
	case token != "":
		if PeekHasUserID(token) {
			return nil, fail(auth.CodeMissing, "user requests must carry an RFC 9421 signature (Signature-Input and Signature)")
		}
		if v.KeyPair() {
			return nil, fail(auth.CodeMissing, `admin requests must carry an RFC 9421 signature with keyid="admin"`)
		}
		kind = KindAdmin
	case signed:
		switch keyID := SignatureKeyID(f.SignatureInput); {
		case strings.HasPrefix(keyID, "user:"):
			return nil, fail(auth.CodeMissing, "user requests must carry the user token (Authorization: Bearer) as well as the signature")
		case keyID == "admin":
			return nil, fail(auth.CodeMissing, "admin requests must carry the admin token (Authorization: Bearer) as well as the signature")
		}
		kind = KindAccessKey
	default:
		return nil, fail(auth.CodeMissing, "no credentials: send a user token and an RFC 9421 signature, an access key's signature, or an X-Auth-Token")
	}

	// Content-Digest equals the body's hash (also for an X-Auth-Token request that sends
	// one; its own bodyHash is checked with its signature).
	if f.ContentDigest != "" || (signed && len(f.Body) > 0) {
		if err := auth.CheckContentDigest(f.ContentDigest, f.Body); err != nil {
			return nil, err
		}
	}
	switch kind {
	case "xauth":
		return v.verifyXAuth(f, at, dir)
	case KindAccessKey:
		return v.verifyAccessKey(f, at, dir)
	case KindAdmin:
		return v.verifyAdmin(f, token, signed, at, dir)
	}
	tv, err := v.tokens(dir)
	if err != nil {
		return nil, err
	}
	claims, err := tv.VerifyUser(token, at)
	if err != nil {
		return nil, err
	}
	sig, err := v.verifySignature(f, auth.UserKeyID(claims.UserID), claims.PublicKey, at)
	if err != nil {
		return nil, err
	}
	p := &Principal{
		Kind: KindUser, UserID: claims.UserID, TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(),
		Created: sig.Created, NonceKey: "sig|" + sig.KeyID + "|" + sig.Nonce, PublicKey: slices.Clone(claims.PublicKey),
	}
	if sig.Expires != nil {
		p.Expires = *sig.Expires
	}
	return p, nil
}

// Parts is the form as RFC 9421 covers it.
func (f *Form) Parts() auth.RequestParts {
	h := http.Header{}
	if f.Authorization != "" {
		h.Set("Authorization", f.Authorization)
	}
	if f.ContentDigest != "" {
		h.Set("Content-Digest", f.ContentDigest)
	}
	return auth.RequestParts{Method: f.Method, Path: f.Path, RawQuery: f.RawQuery, Header: h, Body: f.Body}
}

// verifySignature runs steps 5–7 for keyID's public key: components and parameters,
// window, the signature.
func (v *Verifier) verifySignature(f *Form, keyID string, pub []byte, at time.Time) (*auth.Signature, error) {
	parts := f.Parts()
	sig, err := auth.ParseSignature(f.SignatureInput, f.Signature)
	if err != nil {
		return nil, err
	}
	if err := auth.CheckProfile(sig, parts); err != nil {
		return nil, err
	}
	if sig.KeyID != keyID {
		return nil, fail(auth.CodeSignatureInvalid, "signature keyid %q does not match the token (want %q)", truncate(sig.KeyID, 64), keyID)
	}
	if err := auth.CheckWindow(sig, at); err != nil {
		return nil, err
	}
	if len(pub) == 0 {
		return nil, fail(auth.CodeSignatureInvalid, "no public key to verify this signature with")
	}
	if err := auth.VerifyEd25519With(v.memo.Verify, pub, sig, parts); err != nil {
		return nil, err
	}
	return sig, nil
}

// verifyAccessKey authenticates an Ed25519 access key's RFC 9421 request (no token): the
// key is known (unknown → auth.token_invalid, step 4's place), the profile, the window
// and the signature by the key's public key.
func (v *Verifier) verifyAccessKey(f *Form, at time.Time, dir Directory) (*Principal, error) {
	parts := f.Parts()
	sig, err := auth.ParseSignature(f.SignatureInput, f.Signature)
	if err != nil {
		return nil, err
	}
	// The access key stands in the token's place (step 4): known before its signature's
	// components and parameters are judged (step 5).
	if !strings.HasPrefix(sig.KeyID, "ak_") {
		return nil, fail(auth.CodeTokenInvalid, "unknown access key: keyid must be an access key id (ak_…), user:<id> with a token, or admin")
	}
	ak, ok := dir.AccessKey(sig.KeyID)
	if !ok {
		return nil, fail(auth.CodeTokenInvalid, "unknown access key")
	}
	if err := auth.CheckProfile(sig, parts); err != nil {
		return nil, err
	}
	if ak.Scheme != SchemeEd25519 {
		return nil, fail(auth.CodeSignatureInvalid, "this access key is a secp256k1 key: sign with X-Auth-Token")
	}
	if err := auth.CheckWindow(sig, at); err != nil {
		return nil, err
	}
	if err := auth.VerifyEd25519With(v.memo.Verify, ak.PublicKey, sig, parts); err != nil {
		return nil, err
	}
	p := &Principal{Kind: KindAccessKey, AccessKeyID: ak.ID, Created: sig.Created, NonceKey: "sig|" + ak.ID + "|" + sig.Nonce}
	if sig.Expires != nil {
		p.Expires = *sig.Expires
	}
	return p, nil
}

// verifyXAuth authenticates a secp256k1 access key's X-Auth-Token (AUTH-FORMATS.md §3):
// parse strictly, method (never DELETE or PUT), requestPath = the request's own path and
// query, the ±300 s window and the signature, then the access key whose public key it
// is. The replay key is SHA-256(pubkey ‖ signed message), not the token text.
func (v *Verifier) verifyXAuth(f *Form, at time.Time, dir Directory) (*Principal, error) {
	tok, err := auth.ParseXAuthToken(f.XAuthToken)
	if err != nil {
		return nil, err
	}
	pq := f.Path
	if f.RawQuery != "" || strings.HasSuffix(tok.RequestPath, "?") {
		pq += "?" + f.RawQuery
	}
	if err := auth.VerifyXAuthToken(tok, f.Method, pq, f.Body, at); err != nil {
		return nil, err
	}
	ak, ok := dir.AccessKeyByPublicKey(SchemeSecp256k1, tok.PubKey)
	if !ok {
		return nil, fail(auth.CodeTokenInvalid, "no access key has this public key")
	}
	rk := tok.ReplayKey(f.Body)
	return &Principal{Kind: KindAccessKey, AccessKeyID: ak.ID, Created: tok.Timestamp.Unix(), NonceKey: "xauth|" + hex.EncodeToString(rk[:])}, nil
}

// verifyAdmin verifies an admin token and, in key-pair mode, the RFC 9421 signature by
// the admin key (keyid="admin"). A jti is consumed once; a Sigpair-style token without
// one is consumed once by its hash; a signed request also consumes its signature nonce.
func (v *Verifier) verifyAdmin(f *Form, token string, signed bool, at time.Time, dir Directory) (*Principal, error) {
	tv, err := v.tokens(dir)
	if err != nil {
		return nil, err
	}
	claims, err := tv.VerifyAdmin(token, at)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(token))
	p := &Principal{
		Kind: KindAdmin, TokenIssuedAt: claims.IssuedAt.Unix(), TokenExpires: claims.ExpiresAt.Unix(),
		TokenHash: hex.EncodeToString(sum[:]), SigpairOnly: claims.SigpairStyle, AdminName: claims.Name,
	}
	switch {
	case claims.ID != "":
		p.NonceKey = "jti|" + claims.ID
	default:
		// A token without jti (Sigpair's admin SDK) is still accepted once.
		p.NonceKey = "admintoken|" + p.TokenHash
	}
	if signed {
		sig, err := v.verifySignature(f, "admin", dir.AdminPublicKey(), at)
		if err != nil {
			return nil, err
		}
		p.Created = sig.Created
		if sig.Expires != nil {
			p.Expires = *sig.Expires
		}
		p.TokenNonceKey = p.NonceKey
		p.NonceKey = "sig|admin|" + sig.Nonce
	}
	return p, nil
}

// Bearer returns the token of an "Authorization: Bearer <token>" value.
func Bearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// SignatureKeyID returns the keyid parameter of a Signature-Input header, or "" — only
// to tell which credential is presented; the header is parsed strictly right after.
func SignatureKeyID(sigInput string) string {
	i := strings.Index(sigInput, `keyid="`)
	if i < 0 {
		return ""
	}
	rest := sigInput[i+len(`keyid="`):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// PeekHasUserID reads a JWT's payload without verifying it, only to tell which kind of
// credential the caller presents; the token is verified right after.
func PeekHasUserID(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 8192 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	_, ok := m["user_id"]
	return ok
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
