package auth

import (
	"crypto/ed25519"
	"encoding/hex"
	"net/http"
	"testing"
	"time"
)

func FuzzParseSignature(f *testing.F) {
	f.Add(b26SignatureInput, b26Signature)
	f.Add(`sig1=("@method" "@path" "@query" "content-digest" "authorization");created=1;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="user:1";alg="ed25519"`, "sig1=:AAAA:")
	f.Add(`a=(), b=("x";y=1)`, `a=:=:`)
	f.Add(`sig1=("\"\\");expires=-1`, "sig1=:AA==:")
	f.Fuzz(func(t *testing.T, in, sig string) {
		s, err := ParseSignature(in, sig)
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever parses must re-parse to the same params (serialization is stable).
		s2, err := ParseSignature(s.Label+"="+s.Params, sig)
		if err != nil || s2.Params != s.Params {
			t.Fatalf("re-parse of %q: %v", s.Params, err)
		}
		rp := RequestParts{Method: "GET", Path: "/", Header: http.Header{"Date": {"x"}}, Authority: "a", Scheme: "http"}
		_ = CheckProfile(s, rp)
		_ = CheckWindow(s, time.Unix(1, 0))
		_, _ = SignatureBase(s, rp)
		_ = VerifyEd25519(make(ed25519.PublicKey, 32), s, rp)
	})
}

func FuzzCheckContentDigest(f *testing.F) {
	f.Add(ContentDigest([]byte("x")), []byte("x"))
	f.Add("sha-256=:AAAA:, sha-512=:BBBB:", []byte{})
	f.Fuzz(func(t *testing.T, h string, body []byte) {
		if err := CheckContentDigest(h, body); err != nil && CodeOf(err) != CodeSignatureInvalid {
			t.Fatalf("code %q", CodeOf(err))
		}
	})
}

func FuzzVerifyUser(f *testing.F) {
	key := testAdminKey()
	iss, _ := NewHS256Issuer(key)
	pk := hex.EncodeToString(testEd25519(9).Public().(ed25519.PublicKey))
	tok, _ := iss.UserToken(42, pk, time.Hour, "dev", testNow)
	at, _ := iss.AdminToken(testNow)
	f.Add(tok)
	f.Add(at)
	f.Add(hsToken(key, hsHeader, userPayload(`"aud":["dev"]`)))
	f.Add(hsToken(key, hsHeader, `{"user_id":1e400}`))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v, err := NewTokenVerifier(VerifierConfig{HMACKey: key, Audience: "dev", MaxUserTokenTTL: 24 * time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.VerifyUser(token, testNow)
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
		} else if c.UserID == 0 || len(c.PublicKey) != 32 {
			t.Fatalf("bad claims accepted: %+v", c)
		}
		_, _ = v.VerifyAdmin(token, testNow)
		_, _ = UnverifiedUserID(token)
	})
}

func FuzzParseXAuthToken(f *testing.F) {
	for _, v := range []string{
		"036c3c278d1bb0d2793ca2066890cde7fdd29c21cd381374b8cbbc65958754e9d4|bsm|2026-01-02T03:04:05.000Z|/v1/keys|H/P8C3tRsfE7rPXBHbTGtlaQ41g0jS1RRn6bdP1SMj7NbN6JOWABUQveHlAgw96733+goKvotIX3NRtmPibOXPo=",
		"0346aa49effc00491268d8f913cb7bb5475078f0852510b5e679fe77e272f0a223|brc77|2026-01-02T03:04:05.037Z|/v1/keys/k_abc/sign?x=1&y=%20z|QkIzAQNGqknv/ABJEmjY+RPLe7VHUHjwhSUQteZ5/nficvCiIwBy9QrRfpfH4Rkp5kEUA7xfuUpH0k0bPbAM2YBXD3f3ZjBEAiAZTidhC53S7oX43nd3PDMu8YCZa2PxJ8V4CBHtXsRpmwIgWb6YZigPppxmsyC1ANfjm1dI9NNKSq9lldwEMeqEWfw=",
		"||||",
		"02|brc77|x|/|QkIzAQ==",
	} {
		f.Add(v)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := ParseXAuthToken(h)
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		_ = VerifyXAuthToken(tok, "GET", tok.RequestPath, nil, now)
		_ = tok.ReplayKey([]byte("x"))
	})
}
