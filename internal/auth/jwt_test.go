package auth

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testNow = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func testAdminKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

func testEd25519(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

// hsToken signs an arbitrary payload with HS256, bypassing Issuer's checks.
func hsToken(key []byte, header, payload string) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

const hsHeader = `{"alg":"HS256","typ":"JWT"}`

func userPayload(extra string) string {
	pk := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	iat := testNow.Unix()
	p := fmt.Sprintf(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"`, iat, iat+3600, pk)
	if extra != "" {
		p += "," + extra
	}
	return p + "}"
}

func mustVerifier(t *testing.T, cfg VerifierConfig) *TokenVerifier {
	t.Helper()
	v, err := NewTokenVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNewTokenVerifierConfig(t *testing.T) {
	pub := testEd25519(1).Public().(ed25519.PublicKey)
	bad := []VerifierConfig{
		{},
		{HMACKey: testAdminKey(), AdminPublicKey: pub},
		{HMACKey: make([]byte, 31)},
		{AdminPublicKey: pub[:31]},
		{HMACKey: testAdminKey(), Leeway: -time.Second},
		{HMACKey: testAdminKey(), Leeway: time.Hour},
		{HMACKey: testAdminKey(), RequireAudience: true},
		{HMACKey: testAdminKey(), MaxUserTokenTTL: -1},
	}
	for i, c := range bad {
		if _, err := NewTokenVerifier(c); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
	if v := mustVerifier(t, VerifierConfig{AdminPublicKey: pub}); v.Algorithm() != "EdDSA" {
		t.Fatal("key-pair mode must use EdDSA")
	}
}

func TestVerifyUserHS256(t *testing.T) {
	iss, err := NewHS256Issuer(testAdminKey())
	if err != nil {
		t.Fatal(err)
	}
	pk := testEd25519(9).Public().(ed25519.PublicKey)
	tok, err := iss.UserToken(42, hex.EncodeToString(pk), time.Hour, "", testNow)
	if err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, VerifierConfig{HMACKey: testAdminKey(), Audience: "dev"})
	c, err := v.VerifyUser(tok, testNow.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != 42 || !c.PublicKey.Equal(pk) || !c.IssuedAt.Equal(testNow) || !c.ExpiresAt.Equal(testNow.Add(time.Hour)) || c.Audience != nil {
		t.Fatalf("claims: %+v", c)
	}
	// The header and claims are exactly Sigpair's.
	parts := strings.Split(tok, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	pl, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if string(hdr) != hsHeader {
		t.Fatalf("header %s", hdr)
	}
	want := fmt.Sprintf(`{"exp":%d,"iat":%d,"public_key":"%s","user_id":42}`, testNow.Unix()+3600, testNow.Unix(), hex.EncodeToString(pk))
	if string(pl) != want {
		t.Fatalf("payload %s, want %s", pl, want)
	}
}

func TestVerifyUserRejects(t *testing.T) {
	key := testAdminKey()
	iat := testNow.Unix()
	pkHex := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	edIss, _ := NewEdDSAIssuer(testEd25519(3))
	edUser, _ := edIss.UserToken(42, pkHex, time.Hour, "", testNow)
	hsIss, _ := NewHS256Issuer(key)
	adminTok, _ := hsIss.AdminToken(testNow)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"user_id": 42, "iat": iat, "exp": iat + 60, "public_key": pkHex}).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	noneTok := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(userPayload(""))) + "."
	good := hsToken(key, hsHeader, userPayload(""))
	flipped := good[:len(good)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(good, "AA")]

	p := func(format string, args ...any) string { return hsToken(key, hsHeader, fmt.Sprintf(format, args...)) }
	cases := []struct {
		name  string
		token string
		cfg   VerifierConfig
		code  string
	}{
		{"valid", good, VerifierConfig{}, ""},
		{"empty", "", VerifierConfig{}, CodeMissing},
		{"garbage", "not.a.jwt", VerifierConfig{}, CodeTokenInvalid},
		{"too long", strings.Repeat("a", MaxTokenLen+1), VerifierConfig{}, CodeTokenInvalid},
		{"alg none", noneTok, VerifierConfig{}, CodeTokenInvalid},
		{"RS256", rs256, VerifierConfig{}, CodeTokenInvalid},
		{"HS256 wrong key", hsToken(make([]byte, 32), hsHeader, userPayload("")), VerifierConfig{}, CodeTokenInvalid},
		{"EdDSA in HMAC mode", edUser, VerifierConfig{}, CodeTokenInvalid},
		{"bad signature", flipped, VerifierConfig{}, CodeTokenInvalid},
		{"admin token as user", adminTok, VerifierConfig{}, CodeTokenInvalid},
		{"expired", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat-7200, iat-3600, pkHex), VerifierConfig{}, CodeTokenExpired},
		{"expired within leeway", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat-7200, iat-20, pkHex), VerifierConfig{}, ""},
		{"iat in the future", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat+120, iat+3600, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"iat in the future within leeway", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat+20, iat+3600, pkHex), VerifierConfig{}, ""},
		{"no exp", p(`{"user_id":42,"iat":%d,"public_key":"%s"}`, iat, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"no iat", p(`{"user_id":42,"exp":%d,"public_key":"%s"}`, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"exp not after iat", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat+10, iat+10, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"fractional exp", p(`{"user_id":42,"iat":%d,"exp":%d.5,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"string exp", p(`{"user_id":42,"iat":%d,"exp":"%d","public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"no public_key", p(`{"user_id":42,"iat":%d,"exp":%d}`, iat, iat+60), VerifierConfig{}, CodeTokenInvalid},
		{"user_id float", p(`{"user_id":42.5,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id 42.0", p(`{"user_id":42.0,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id exponent", p(`{"user_id":4e1,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id string", p(`{"user_id":"42","iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id negative", p(`{"user_id":-42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id zero", p(`{"user_id":0,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id above 2^53-1", p(`{"user_id":9007199254740992,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"user_id null", p(`{"user_id":null,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"public_key short", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, pkHex[:62]), VerifierConfig{}, CodeTokenInvalid},
		{"public_key long", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s00"}`, iat, iat+60, pkHex), VerifierConfig{}, CodeTokenInvalid},
		{"public_key uppercase", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, strings.ToUpper(pkHex)), VerifierConfig{}, CodeTokenInvalid},
		{"public_key not hex", p(`{"user_id":42,"iat":%d,"exp":%d,"public_key":"%s"}`, iat, iat+60, strings.Repeat("zz", 32)), VerifierConfig{}, CodeTokenInvalid},
		{"unknown claim", hsToken(key, hsHeader, userPayload(`"role":"admin"`)), VerifierConfig{}, CodeTokenInvalid},
		{"lifetime over max", good, VerifierConfig{MaxUserTokenTTL: 30 * time.Minute}, CodeTokenInvalid},
		{"lifetime at max", good, VerifierConfig{MaxUserTokenTTL: time.Hour}, ""},
		{"aud matches", hsToken(key, hsHeader, userPayload(`"aud":"dev"`)), VerifierConfig{Audience: "dev", RequireAudience: true}, ""},
		{"aud list matches", hsToken(key, hsHeader, userPayload(`"aud":["x","dev"]`)), VerifierConfig{Audience: "dev"}, ""},
		{"aud other cluster", hsToken(key, hsHeader, userPayload(`"aud":"prod"`)), VerifierConfig{Audience: "dev"}, CodeWrongAudience},
		{"aud but no cluster name", hsToken(key, hsHeader, userPayload(`"aud":"prod"`)), VerifierConfig{}, CodeWrongAudience},
		{"aud missing but required", good, VerifierConfig{Audience: "dev", RequireAudience: true}, CodeWrongAudience},
		{"aud missing, not required", good, VerifierConfig{Audience: "dev"}, ""},
		{"aud not a string", hsToken(key, hsHeader, userPayload(`"aud":7`)), VerifierConfig{Audience: "dev"}, CodeTokenInvalid},
		{"jti not a string", hsToken(key, hsHeader, userPayload(`"jti":7`)), VerifierConfig{}, CodeTokenInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.HMACKey = key
			_, err := mustVerifier(t, cfg).VerifyUser(c.token, testNow)
			if got := CodeOf(err); got != c.code {
				t.Fatalf("got %v (code %q), want %q", err, got, c.code)
			}
			if err != nil && strings.Contains(err.Error(), pkHex) {
				t.Fatal("error leaks token material")
			}
		})
	}
}

func TestEdDSAMode(t *testing.T) {
	admin := testEd25519(3)
	iss, err := NewEdDSAIssuer(admin)
	if err != nil {
		t.Fatal(err)
	}
	pkHex := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	v := mustVerifier(t, VerifierConfig{AdminPublicKey: admin.Public().(ed25519.PublicKey), Audience: "dev", RequireAudience: true})
	ut, _ := iss.UserToken(7, pkHex, time.Hour, "dev", testNow)
	if c, err := v.VerifyUser(ut, testNow); err != nil || c.UserID != 7 || len(c.Audience) != 1 {
		t.Fatalf("EdDSA user token: %+v %v", c, err)
	}
	at, _ := iss.AdminToken(testNow)
	if c, err := v.VerifyAdmin(at, testNow); err != nil || c.Role != "admin" || c.ID == "" {
		t.Fatalf("EdDSA admin token: %+v %v", c, err)
	}
	// HS256 tokens are refused in key-pair mode, including the classic confusion of
	// using the public key as the HMAC secret.
	hsIss, _ := NewHS256Issuer(testAdminKey())
	hsUser, _ := hsIss.UserToken(7, pkHex, time.Hour, "dev", testNow)
	confused := hsToken(admin.Public().(ed25519.PublicKey), hsHeader, userPayload(`"aud":"dev"`))
	for _, tok := range []string{hsUser, confused} {
		if _, err := v.VerifyUser(tok, testNow); CodeOf(err) != CodeTokenInvalid {
			t.Fatalf("HS256 accepted in key-pair mode: %v", err)
		}
	}
	// Another admin key's EdDSA token.
	other, _ := NewEdDSAIssuer(testEd25519(4))
	ot, _ := other.UserToken(7, pkHex, time.Hour, "dev", testNow)
	if _, err := v.VerifyUser(ot, testNow); CodeOf(err) != CodeTokenInvalid {
		t.Fatalf("other admin key accepted: %v", err)
	}
}

func TestVerifyAdmin(t *testing.T) {
	key := testAdminKey()
	iat := testNow.Unix()
	iss, _ := NewHS256Issuer(key)
	pkHex := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	userTok, _ := iss.UserToken(42, pkHex, time.Minute, "", testNow)
	ours, _ := iss.AdminToken(testNow)
	ours2, _ := iss.AdminToken(testNow)
	withAud, _ := iss.AdminTokenFor("dev", testNow)
	otherAud, _ := iss.AdminTokenFor("prod", testNow)
	sigpair, _ := iss.SigpairAdminToken("acme", testNow)
	p := func(format string, args ...any) string { return hsToken(key, hsHeader, fmt.Sprintf(format, args...)) }
	cases := []struct {
		name    string
		token   string
		code    string
		sigpair bool
	}{
		{"ours", ours, "", false},
		{"with matching aud", withAud, "", false},
		{"other aud", otherAud, CodeWrongAudience, false},
		{"sigpair name", sigpair, "", true},
		{"sigpair handmade", p(`{"name":"acme","iat":%d,"exp":%d}`, iat, iat+300), "", true},
		{"user token as admin", userTok, CodeTokenInvalid, false},
		{"user_id present", p(`{"role":"admin","user_id":1,"iat":%d,"exp":%d}`, iat, iat+60), CodeTokenInvalid, false},
		{"public_key present", p(`{"role":"admin","public_key":"%s","iat":%d,"exp":%d}`, pkHex, iat, iat+60), CodeTokenInvalid, false},
		{"lifetime 301s", p(`{"role":"admin","iat":%d,"exp":%d,"jti":"j1"}`, iat, iat+301), CodeTokenInvalid, false},
		{"lifetime 300s", p(`{"role":"admin","iat":%d,"exp":%d,"jti":"j1"}`, iat, iat+300), "", false},
		{"role admin without jti (accepted once, by its hash)", p(`{"role":"admin","iat":%d,"exp":%d}`, iat, iat+60), "", false},
		{"role admin with empty jti", p(`{"role":"admin","iat":%d,"exp":%d,"jti":""}`, iat, iat+60), "", false},
		{"role admin with jti not a string", p(`{"role":"admin","iat":%d,"exp":%d,"jti":7}`, iat, iat+60), CodeTokenInvalid, false},
		{"role admin and name without jti", p(`{"role":"admin","name":"acme","iat":%d,"exp":%d}`, iat, iat+60), "", false},
		{"role admin and name with jti", p(`{"role":"admin","name":"acme","iat":%d,"exp":%d,"jti":"j2"}`, iat, iat+60), "", false},
		{"sigpair with jti", p(`{"name":"acme","iat":%d,"exp":%d,"jti":"j3"}`, iat, iat+60), "", true},
		{"no iat", p(`{"role":"admin","exp":%d,"jti":"j1"}`, iat+60), CodeTokenInvalid, false},
		{"no exp", p(`{"role":"admin","iat":%d,"jti":"j1"}`, iat), CodeTokenInvalid, false},
		{"expired", p(`{"role":"admin","iat":%d,"exp":%d,"jti":"j1"}`, iat-300, iat-100), CodeTokenExpired, false},
		{"role user", p(`{"role":"user","iat":%d,"exp":%d}`, iat, iat+60), CodeTokenInvalid, false},
		{"role not a string", p(`{"role":1,"iat":%d,"exp":%d}`, iat, iat+60), CodeTokenInvalid, false},
		{"no role no name (API.md: iat, exp, no user_id)", p(`{"iat":%d,"exp":%d}`, iat, iat+60), "", false},
		{"no role no name, with jti", p(`{"iat":%d,"exp":%d,"jti":"j4"}`, iat, iat+60), "", false},
		{"empty name", p(`{"name":"","iat":%d,"exp":%d}`, iat, iat+60), CodeTokenInvalid, false},
		{"wrong key", hsToken(make([]byte, 32), hsHeader, fmt.Sprintf(`{"role":"admin","iat":%d,"exp":%d,"jti":"j1"}`, iat, iat+60)), CodeTokenInvalid, false},
	}
	v := mustVerifier(t, VerifierConfig{HMACKey: key, Audience: "dev", RequireAudience: true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := v.VerifyAdmin(c.token, testNow)
			if code := CodeOf(err); code != c.code {
				t.Fatalf("got %v (code %q), want %q", err, code, c.code)
			}
			if err == nil && got.SigpairStyle != c.sigpair {
				t.Fatalf("SigpairStyle = %v", got.SigpairStyle)
			}
		})
	}
	// Without a jti the claims carry none: internal/authn then makes the token's hash its
	// replay key (accepted once).
	if c, err := v.VerifyAdmin(p(`{"role":"admin","iat":%d,"exp":%d}`, iat, iat+60), testNow); err != nil || c.ID != "" {
		t.Fatalf("admin token without jti: %+v %v", c, err)
	}
	a1, _ := v.VerifyAdmin(ours, testNow)
	a2, _ := v.VerifyAdmin(ours2, testNow)
	if a1.ID == "" || a1.ID == a2.ID {
		t.Fatal("admin tokens need distinct jti")
	}
	if !a1.ExpiresAt.Equal(testNow.Add(AdminTokenTTL)) {
		t.Fatalf("admin token exp %v", a1.ExpiresAt)
	}
}

func TestIssuerInputChecks(t *testing.T) {
	if _, err := NewHS256Issuer(make([]byte, 16)); err == nil {
		t.Error("short admin key accepted")
	}
	if _, err := NewEdDSAIssuer(make([]byte, 10)); err == nil {
		t.Error("short Ed25519 key accepted")
	}
	iss, _ := NewHS256Issuer(testAdminKey())
	pkHex := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	if _, err := iss.UserToken(0, pkHex, time.Hour, "", testNow); err == nil {
		t.Error("user id 0 accepted")
	}
	if _, err := iss.UserToken(1, pkHex[:10], time.Hour, "", testNow); err == nil {
		t.Error("short public key accepted")
	}
	if _, err := iss.UserToken(1, pkHex, 0, "", testNow); err == nil {
		t.Error("zero ttl accepted")
	}
	if tok, err := iss.UserToken(1, strings.ToUpper(pkHex), time.Hour, "", testNow); err != nil {
		t.Error(err)
	} else if _, err := mustVerifier(t, VerifierConfig{HMACKey: testAdminKey()}).VerifyUser(tok, testNow); err != nil {
		t.Errorf("upper-case input must be lowercased: %v", err)
	}
}

func TestParseAdminKeyHex(t *testing.T) {
	want := testAdminKey()
	got, err := ParseAdminKeyHex(hex.EncodeToString(want) + "\n")
	if err != nil || string(got) != string(want) {
		t.Fatalf("got %x, %v", got, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 64), strings.Repeat("ab", 33)} {
		if _, err := ParseAdminKeyHex(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUnverifiedUserIDAndKeyIDs(t *testing.T) {
	iss, _ := NewHS256Issuer(testAdminKey())
	pkHex := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	tok, _ := iss.UserToken(1234, pkHex, time.Hour, "", testNow)
	if id, err := UnverifiedUserID(tok); err != nil || id != 1234 {
		t.Fatalf("got %d, %v", id, err)
	}
	at, _ := iss.AdminToken(testNow)
	if _, err := UnverifiedUserID(at); err == nil {
		t.Fatal("admin token has no user id")
	}
	if UserKeyID(1234) != "user:1234" {
		t.Fatal(UserKeyID(1234))
	}
	for in, want := range map[string]uint64{"user:1": 1, "user:1234": 1234, "user:01": 0, "user:": 0, "user:-1": 0, "ak_1": 0, "user:9007199254740992": 0} {
		got, ok := ParseUserKeyID(in)
		if got != want || ok != (want != 0) {
			t.Errorf("ParseUserKeyID(%q) = %d, %v", in, got, ok)
		}
	}
}
