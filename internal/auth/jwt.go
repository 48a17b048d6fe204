package auth

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// DefaultLeeway is the clock leeway applied to exp and iat when VerifierConfig.Leeway
	// is zero.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway bounds VerifierConfig.Leeway.
	MaxLeeway = 5 * time.Minute
	// MaxAdminTokenLifetime is the longest exp - iat an admin token may have.
	MaxAdminTokenLifetime = 300 * time.Second
	// MaxTokenLen bounds the length of a JWT this package will look at.
	MaxTokenLen = 8 << 10
	// MaxUserID is the largest user_id accepted: JavaScript's Number.MAX_SAFE_INTEGER, so
	// that ids survive Sigpair's JavaScript SDKs unchanged.
	MaxUserID = 1<<53 - 1

	maxJTILen  = 128
	maxNameLen = 256
)

// UserClaims are the verified claims of a user token (AUTH-FORMATS.md §1).
type UserClaims struct {
	UserID    uint64
	IssuedAt  time.Time
	ExpiresAt time.Time
	// PublicKey is the user's Ed25519 request-signing key (32 bytes).
	PublicKey ed25519.PublicKey
	// Audience is the token's aud, empty when it has none.
	Audience []string
	// ID is the token's jti, empty when it has none.
	ID string
}

// AdminClaims are the verified claims of an admin token.
type AdminClaims struct {
	// Role is "admin" for custos-style tokens, empty for Sigpair-style ones.
	Role string
	// Name is Sigpair's name claim, empty when absent.
	Name      string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// ID is the token's jti: never empty for a custos-style token, empty when a
	// Sigpair-style one has none. The node accepts a jti once.
	ID string
	// SigpairStyle is true when the token had a name claim and no role: such tokens are
	// accepted only on POST /v1/create-user.
	SigpairStyle bool
}

// VerifierConfig configures a TokenVerifier. Exactly one of HMACKey and AdminPublicKey
// must be set.
type VerifierConfig struct {
	// HMACKey is the raw 32-byte ADMIN_KEY (HS256 mode), or nil.
	HMACKey []byte
	// AdminPublicKey is the admin's Ed25519 public key (EdDSA key-pair mode), or nil.
	AdminPublicKey ed25519.PublicKey
	// Audience is the cluster name, matched against aud when a token carries one.
	Audience string
	// RequireAudience makes aud mandatory on user tokens. (Admin tokens are checked when
	// they carry aud but never required to: Sigpair's admin SDK does not write one.)
	RequireAudience bool
	// MaxUserTokenTTL bounds exp - iat of user tokens; 0 means no limit.
	MaxUserTokenTTL time.Duration
	// Leeway is the clock skew allowed on exp and iat; 0 means DefaultLeeway.
	Leeway time.Duration
}

// TokenVerifier verifies admin and user JWTs. It is safe for concurrent use.
type TokenVerifier struct {
	method          string
	key             any
	audience        string
	requireAudience bool
	maxUserTTL      time.Duration
	leeway          time.Duration
}

// NewTokenVerifier checks cfg and returns a verifier. Configuration mistakes are ordinary
// errors (not *Error).
func NewTokenVerifier(cfg VerifierConfig) (*TokenVerifier, error) {
	v := &TokenVerifier{
		audience:        cfg.Audience,
		requireAudience: cfg.RequireAudience,
		maxUserTTL:      cfg.MaxUserTokenTTL,
		leeway:          cfg.Leeway,
	}
	switch {
	case cfg.HMACKey != nil && cfg.AdminPublicKey != nil:
		return nil, errors.New("auth: configure either an HMAC admin key or an admin public key, not both")
	case cfg.HMACKey != nil:
		if len(cfg.HMACKey) != 32 {
			return nil, fmt.Errorf("auth: HMAC admin key must be 32 bytes, got %d", len(cfg.HMACKey))
		}
		v.method = jwt.SigningMethodHS256.Alg()
		v.key = append([]byte(nil), cfg.HMACKey...)
	case cfg.AdminPublicKey != nil:
		if len(cfg.AdminPublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("auth: admin public key must be %d bytes, got %d", ed25519.PublicKeySize, len(cfg.AdminPublicKey))
		}
		v.method = jwt.SigningMethodEdDSA.Alg()
		v.key = ed25519.PublicKey(append([]byte(nil), cfg.AdminPublicKey...))
	default:
		return nil, errors.New("auth: no admin key configured")
	}
	if v.leeway < 0 || v.leeway > MaxLeeway {
		return nil, fmt.Errorf("auth: leeway must be between 0 and %s", MaxLeeway)
	}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	}
	if v.maxUserTTL < 0 {
		return nil, errors.New("auth: negative MaxUserTokenTTL")
	}
	if v.requireAudience && v.audience == "" {
		return nil, errors.New("auth: RequireAudience needs an Audience (the cluster name)")
	}
	return v, nil
}

// Algorithm is the JWT alg this verifier accepts ("HS256" or "EdDSA").
func (v *TokenVerifier) Algorithm() string { return v.method }

// Claim names allowed in each kind of token. Anything else is refused, so that a token
// of one kind cannot pass for the other and unknown semantics are never silently ignored.
func userClaimName(k string) bool {
	switch k {
	case "user_id", "public_key", "iat", "exp", "aud", "jti", "nbf", "iss", "sub":
		return true
	}
	return false
}

func adminClaimName(k string) bool {
	switch k {
	case "role", "name", "iat", "exp", "aud", "jti", "nbf", "iss", "sub":
		return true
	}
	return false
}

// parse checks the signature, algorithm, exp, iat and nbf with golang-jwt and returns
// the claims with numbers as json.Number.
func (v *TokenVerifier) parse(token string, now time.Time) (jwt.MapClaims, error) {
	if token == "" {
		return nil, newErr(CodeMissing, "no bearer token")
	}
	if len(token) > MaxTokenLen {
		return nil, tokenInvalid("token too long")
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{v.method}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithJSONNumber(),
		jwt.WithStrictDecoding(),
	)
	claims := jwt.MapClaims{}
	_, err := p.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return v.key, nil })
	if err != nil {
		return nil, mapJWTError(err)
	}
	return claims, nil
}

func mapJWTError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return tokenInvalid("malformed token")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return tokenInvalid("token signature or algorithm not accepted")
	case errors.Is(err, jwt.ErrTokenExpired):
		return newErr(CodeTokenExpired, "token expired")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return tokenInvalid("token issued in the future")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return tokenInvalid("token not valid yet")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return tokenInvalid("token has no exp")
	default:
		return tokenInvalid("token claims are invalid")
	}
}

// VerifyUser verifies a user token at time now and returns its claims. It does not know
// whether the user exists, is enabled or had its tokens revoked: the node checks that.
func (v *TokenVerifier) VerifyUser(token string, now time.Time) (*UserClaims, error) {
	claims, err := v.parse(token, now)
	if err != nil {
		return nil, err
	}
	if _, ok := claims["user_id"]; !ok {
		return nil, tokenInvalid("not a user token (no user_id)")
	}
	if err := checkClaimNames(claims, userClaimName); err != nil {
		return nil, err
	}
	uid, err := parseUserID(claims["user_id"])
	if err != nil {
		return nil, err
	}
	iat, exp, err := timeClaims(claims)
	if err != nil {
		return nil, err
	}
	if v.maxUserTTL > 0 && exp.Sub(iat) > v.maxUserTTL {
		return nil, tokenInvalid("token lifetime exceeds the cluster's maximum")
	}
	pkHex, ok := claims["public_key"].(string)
	if !ok {
		return nil, tokenInvalid("public_key missing or not a string")
	}
	pk, err := parsePublicKeyHex(pkHex)
	if err != nil {
		return nil, err
	}
	jti, err := stringClaim(claims, "jti", maxJTILen)
	if err != nil {
		return nil, err
	}
	aud, err := v.checkAudience(claims, v.requireAudience)
	if err != nil {
		return nil, err
	}
	return &UserClaims{UserID: uid, IssuedAt: iat, ExpiresAt: exp, PublicKey: pk, Audience: aud, ID: jti}, nil
}

// VerifyAdmin verifies an admin token at time now: no user_id, iat and exp present,
// exp - iat at most MaxAdminTokenLifetime, and either role "admin" with a non-empty jti
// (custos style) or a name claim without a role (Sigpair style, jti optional, for
// compatibility with Sigpair's admin SDK). The node enforces jti once and the
// Sigpair-style route restriction.
func (v *TokenVerifier) VerifyAdmin(token string, now time.Time) (*AdminClaims, error) {
	claims, err := v.parse(token, now)
	if err != nil {
		return nil, err
	}
	if _, ok := claims["user_id"]; ok {
		return nil, tokenInvalid("a user token is not an admin token")
	}
	if err := checkClaimNames(claims, adminClaimName); err != nil {
		return nil, err
	}
	iat, exp, err := timeClaims(claims)
	if err != nil {
		return nil, err
	}
	if exp.Sub(iat) > MaxAdminTokenLifetime {
		return nil, tokenInvalid("admin token lifetime exceeds 300 seconds")
	}
	role, err := stringClaim(claims, "role", 32)
	if err != nil {
		return nil, err
	}
	_, hasRole := claims["role"]
	if hasRole && role != "admin" {
		return nil, tokenInvalid("role must be \"admin\"")
	}
	name, err := stringClaim(claims, "name", maxNameLen)
	if err != nil {
		return nil, err
	}
	_, hasName := claims["name"]
	if hasName && name == "" {
		return nil, tokenInvalid("empty name claim")
	}
	// API.md: HS256 (or EdDSA), iat and exp at most 300 s apart, no user_id; role and
	// jti are optional. A token without a jti is accepted once all the same (its SHA-256
	// is its replay key, internal/authn): mint one per call.
	jti, err := stringClaim(claims, "jti", maxJTILen)
	if err != nil {
		return nil, err
	}
	sigpair := hasName && !hasRole
	if _, err := v.checkAudience(claims, false); err != nil {
		return nil, err
	}
	return &AdminClaims{Role: role, Name: name, IssuedAt: iat, ExpiresAt: exp, ID: jti, SigpairStyle: sigpair}, nil
}

func checkClaimNames(claims jwt.MapClaims, allowed func(string) bool) error {
	for k := range claims {
		if !allowed(k) {
			if len(k) > 32 {
				k = k[:32]
			}
			return tokenInvalid(fmt.Sprintf("unexpected claim %q", k))
		}
	}
	return nil
}

// timeClaims reads iat and exp (golang-jwt has already checked them against now) and
// requires both to be integers with exp after iat.
func timeClaims(claims jwt.MapClaims) (iat, exp time.Time, err error) {
	i, ok, err := intClaim(claims, "iat")
	if err != nil {
		return iat, exp, err
	}
	if !ok {
		return iat, exp, tokenInvalid("token has no iat")
	}
	e, ok, err := intClaim(claims, "exp")
	if err != nil {
		return iat, exp, err
	}
	if !ok {
		return iat, exp, tokenInvalid("token has no exp")
	}
	if _, _, err := intClaim(claims, "nbf"); err != nil {
		return iat, exp, err
	}
	if e <= i {
		return iat, exp, tokenInvalid("exp is not after iat")
	}
	for _, name := range []string{"iss", "sub"} {
		if _, err := stringClaim(claims, name, maxNameLen); err != nil {
			return iat, exp, err
		}
	}
	return time.Unix(i, 0).UTC(), time.Unix(e, 0).UTC(), nil
}

// intClaim reads a claim that must be a non-negative JSON integer (no fraction, no
// exponent) when present.
func intClaim(claims jwt.MapClaims, name string) (int64, bool, error) {
	raw, ok := claims[name]
	if !ok {
		return 0, false, nil
	}
	n, isNum := raw.(json.Number)
	if !isNum || !isDecimalDigits(string(n)) || len(n) > 15 {
		return 0, true, tokenInvalid(name + " is not an integer")
	}
	x, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, true, tokenInvalid(name + " is not an integer")
	}
	return x, true, nil
}

func isDecimalDigits(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func parseUserID(raw any) (uint64, error) {
	n, ok := raw.(json.Number)
	if !ok || !isDecimalDigits(string(n)) || len(n) > 16 {
		return 0, tokenInvalid("user_id is not a positive integer")
	}
	id, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil || id == 0 || id > MaxUserID {
		return 0, tokenInvalid("user_id is not a positive integer")
	}
	return id, nil
}

func stringClaim(claims jwt.MapClaims, name string, maxLen int) (string, error) {
	raw, ok := claims[name]
	if !ok {
		return "", nil
	}
	s, ok := raw.(string)
	if !ok || len(s) > maxLen {
		return "", tokenInvalid(name + " is not a string of acceptable length")
	}
	return s, nil
}

// parsePublicKeyHex accepts exactly 64 lowercase hex characters.
func parsePublicKeyHex(s string) (ed25519.PublicKey, error) {
	if len(s) != 2*ed25519.PublicKeySize || !isLowerHex(s) {
		return nil, tokenInvalid("public_key must be 64 lowercase hex characters")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, tokenInvalid("public_key must be 64 lowercase hex characters")
	}
	return ed25519.PublicKey(b), nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (v *TokenVerifier) checkAudience(claims jwt.MapClaims, required bool) ([]string, error) {
	if _, ok := claims["aud"]; !ok {
		if required {
			return nil, newErr(CodeWrongAudience, "token has no audience and this cluster requires one")
		}
		return nil, nil
	}
	aud, err := claims.GetAudience()
	if err != nil || len(aud) == 0 || len(aud) > 16 {
		return nil, tokenInvalid("aud is not a string or a list of strings")
	}
	for _, a := range aud {
		if v.audience != "" && a == v.audience {
			return []string(aud), nil
		}
	}
	return nil, newErr(CodeWrongAudience, "token is for another cluster")
}

// UnverifiedUserID reads user_id from a user token's payload WITHOUT verifying anything.
// Clients use it to build their keyid ("user:<id>"); never use it to authenticate.
func UnverifiedUserID(token string) (uint64, error) {
	if token == "" {
		return 0, newErr(CodeMissing, "no token")
	}
	if len(token) > MaxTokenLen {
		return 0, tokenInvalid("token too long")
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser(jwt.WithJSONNumber()).ParseUnverified(token, claims); err != nil {
		return 0, tokenInvalid("malformed token")
	}
	raw, ok := claims["user_id"]
	if !ok {
		return 0, tokenInvalid("not a user token (no user_id)")
	}
	return parseUserID(raw)
}

// UserKeyID is the RFC 9421 keyid of a user: "user:<user_id>".
func UserKeyID(userID uint64) string { return "user:" + strconv.FormatUint(userID, 10) }

// ParseUserKeyID parses a "user:<user_id>" keyid (canonical decimal, no leading zeros).
func ParseUserKeyID(keyID string) (uint64, bool) {
	rest, ok := strings.CutPrefix(keyID, "user:")
	if !ok || !isDecimalDigits(rest) || len(rest) > 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || id == 0 || id > MaxUserID {
		return 0, false
	}
	return id, true
}
