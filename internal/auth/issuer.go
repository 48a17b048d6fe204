package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AdminTokenTTL is the lifetime of the admin tokens an Issuer mints (one per call).
const AdminTokenTTL = 120 * time.Second

// Issuer mints admin and user tokens: HS256 with the raw ADMIN_KEY, or EdDSA with the
// admin's Ed25519 private key. Issuing functions return ordinary errors (not *Error).
type Issuer struct {
	method jwt.SigningMethod
	key    any
}

// NewHS256Issuer returns an issuer keyed with the raw 32-byte ADMIN_KEY (not its hex text).
func NewHS256Issuer(adminKey []byte) (*Issuer, error) {
	if len(adminKey) != 32 {
		return nil, fmt.Errorf("auth: admin key must be 32 bytes, got %d", len(adminKey))
	}
	return &Issuer{method: jwt.SigningMethodHS256, key: append([]byte(nil), adminKey...)}, nil
}

// NewEdDSAIssuer returns an issuer that signs with the admin's Ed25519 private key.
func NewEdDSAIssuer(priv ed25519.PrivateKey) (*Issuer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("auth: Ed25519 private key must be %d bytes, got %d", ed25519.PrivateKeySize, len(priv))
	}
	return &Issuer{method: jwt.SigningMethodEdDSA, key: ed25519.PrivateKey(append([]byte(nil), priv...))}, nil
}

// UserToken mints a Sigpair user token {"user_id","iat","exp","public_key"} (plus "aud"
// when audience is not empty), valid for ttl (whole seconds, at least one) from now.
// publicKeyHex is the user's Ed25519 public key as 64 hex characters (lowercased here).
func (i *Issuer) UserToken(userID uint64, publicKeyHex string, ttl time.Duration, audience string, now time.Time) (string, error) {
	if userID == 0 || userID > MaxUserID {
		return "", fmt.Errorf("auth: user id %d out of range", userID)
	}
	pk := strings.ToLower(publicKeyHex)
	if _, err := parsePublicKeyHex(pk); err != nil {
		return "", errors.New("auth: public key must be 64 hex characters (32 bytes)")
	}
	if ttl < time.Second {
		return "", errors.New("auth: token lifetime must be at least one second")
	}
	iat := now.Unix()
	claims := jwt.MapClaims{
		"user_id":    userID,
		"iat":        iat,
		"exp":        iat + int64(ttl/time.Second),
		"public_key": pk,
	}
	if audience != "" {
		claims["aud"] = audience
	}
	return i.sign(claims)
}

// AdminToken mints a one-use admin token {"role":"admin","iat","exp","jti"} valid for
// AdminTokenTTL from now.
func (i *Issuer) AdminToken(now time.Time) (string, error) {
	return i.AdminTokenFor("", now)
}

// AdminTokenFor is AdminToken with an aud claim (the cluster name) when audience is not
// empty.
func (i *Issuer) AdminTokenFor(audience string, now time.Time) (string, error) {
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	iat := now.Unix()
	claims := jwt.MapClaims{"role": "admin", "iat": iat, "exp": iat + int64(AdminTokenTTL/time.Second), "jti": jti}
	if audience != "" {
		claims["aud"] = audience
	}
	return i.sign(claims)
}

// SigpairAdminToken mints an admin token the way Sigpair's admin SDK does
// ({"name","iat","exp"}, valid AdminTokenTTL); nodes accept it only on /v1/create-user.
func (i *Issuer) SigpairAdminToken(name string, now time.Time) (string, error) {
	if name == "" || len(name) > maxNameLen {
		return "", errors.New("auth: name must be 1 to 256 bytes")
	}
	iat := now.Unix()
	return i.sign(jwt.MapClaims{"name": name, "iat": iat, "exp": iat + int64(AdminTokenTTL/time.Second)})
}

func (i *Issuer) sign(claims jwt.MapClaims) (string, error) {
	s, err := jwt.NewWithClaims(i.method, claims).SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return s, nil
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ParseAdminKeyHex decodes an ADMIN_KEY written as 64 hex characters (surrounding
// whitespace, such as a file's final newline, is ignored) into its 32 raw bytes.
func ParseAdminKeyHex(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) != 64 {
		return nil, fmt.Errorf("auth: admin key must be 64 hex characters, got %d", len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("auth: admin key is not hex")
	}
	return b, nil
}
