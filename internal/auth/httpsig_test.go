package auth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// RFC 9421 appendix B.2.6 (signing a request using ed25519, key test-key-ed25519), with
// the request of appendix B.2 and the key of appendix B.1.4.
const (
	b26SignatureInput = `sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	b26Signature      = `sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:`
	b26Base           = `"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	b26PublicKeyHex = "26b40b8f93fff3d897112f7ebc582b232dbd72517d082fe83cfb30ddce43d1bb" // JWK x JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs
	b26SeedHex      = "9f8362f87a484a954e6e740c5b4c0e84229139a20aa8ab56ff66586f6a7d29c5" // JWK d n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU
)

func b26Request() RequestParts {
	h := http.Header{}
	h.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	h.Set("Content-Length", "18")
	return RequestParts{Method: "POST", Path: "/foo", RawQuery: "param=Value&Pet=dog", Header: h,
		Body: []byte(`{"hello": "world"}`), Authority: "example.com", Scheme: "https"}
}

func TestRFC9421B26(t *testing.T) {
	s, err := ParseSignature(b26SignatureInput, b26Signature)
	if err != nil {
		t.Fatal(err)
	}
	if s.Label != "sig-b26" || s.KeyID != "test-key-ed25519" || s.Created != 1618884473 || len(s.Components) != 6 {
		t.Fatalf("parsed: %+v", s)
	}
	req := b26Request()
	base, err := SignatureBase(s, req)
	if err != nil {
		t.Fatal(err)
	}
	if string(base) != b26Base {
		t.Fatalf("signature base differs:\n%s\nwant\n%s", base, b26Base)
	}
	pubBytes, _ := hex.DecodeString(b26PublicKeyHex)
	pub := ed25519.PublicKey(pubBytes)
	if err := VerifyEd25519(pub, s, req); err != nil {
		t.Fatalf("RFC 9421 B.2.6 signature does not verify: %v", err)
	}
	// Ed25519 is deterministic: the RFC's private key reproduces the RFC's signature.
	seed, _ := hex.DecodeString(b26SeedHex)
	priv := ed25519.NewKeyFromSeed(seed)
	if !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("test key pair mismatch")
	}
	if !bytes.Equal(ed25519.Sign(priv, base), s.Sig) {
		t.Fatal("signing the base with test-key-ed25519 does not give the RFC's signature")
	}
	// One changed covered value breaks it.
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if err := VerifyEd25519(pub, s, req); CodeOf(err) != CodeSignatureInvalid {
		t.Fatalf("tampered request verified: %v", err)
	}
	// It is a valid RFC 9421 signature but not custos's profile.
	if err := CheckProfile(s, b26Request()); CodeOf(err) != CodeSignatureInvalid {
		t.Fatalf("B.2.6 must fail the custos profile: %v", err)
	}
}

func TestContentDigest(t *testing.T) {
	// RFC 9530 / RFC 9421 example bodies.
	if got := ContentDigest([]byte(`{"hello": "world"}`)); got != "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:" {
		t.Fatal(got)
	}
	if got := ContentDigest([]byte("{\"hello\": \"world\"}\n")); got != "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:" {
		t.Fatal(got)
	}
	body := []byte(`{"a":1}`)
	good := ContentDigest(body)
	cases := []struct {
		name   string
		header string
		body   []byte
		ok     bool
	}{
		{"match", good, body, true},
		{"no header no body", "", nil, true},
		{"header on empty body", ContentDigest(nil), nil, true},
		{"no header with body", "", body, false},
		{"mismatch", ContentDigest([]byte("x")), body, false},
		{"sha-512 only", "sha-512=:" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + ":", body, false},
		{"two algorithms", good + ", sha-512=:" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + ":", body, false},
		{"duplicate member", good + ", " + good, body, false},
		{"not a byte sequence", `sha-256="abc"`, body, false},
		{"short digest", "sha-256=:AAAA:", body, false},
		{"parameters", good + ";x=1", body, false},
		{"garbage", "sha-256", body, false},
		{"too long", strings.Repeat("a", MaxContentDigestLen+1), body, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckContentDigest(c.header, c.body)
			if (err == nil) != c.ok {
				t.Fatalf("got %v", err)
			}
			if err != nil && CodeOf(err) != CodeSignatureInvalid {
				t.Fatalf("code %q", CodeOf(err))
			}
		})
	}
}

func testSigner() Signer { return Signer{KeyID: "user:42", Key: testEd25519(9)} }

// verifyAll runs the node's sequence: digest, parse, profile, window, signature.
func verifyAll(pub ed25519.PublicKey, rp RequestParts, now time.Time) (*Signature, error) {
	if err := CheckContentDigest(strings.Join(rp.Header.Values("Content-Digest"), ", "), rp.Body); err != nil {
		return nil, err
	}
	s, err := ParseSignature(strings.Join(rp.Header.Values("Signature-Input"), ", "), strings.Join(rp.Header.Values("Signature"), ", "))
	if err != nil {
		return nil, err
	}
	if err := CheckProfile(s, rp); err != nil {
		return s, err
	}
	if err := CheckWindow(s, now); err != nil {
		return s, err
	}
	return s, VerifyEd25519(pub, s, rp)
}

func TestSignerRoundTrip(t *testing.T) {
	sg := testSigner()
	pub := sg.Key.Public().(ed25519.PublicKey)
	cases := []struct {
		name, method, url, auth string
		body                    []byte
		comps                   string
	}{
		{"get", "GET", "http://node1:7701/v1/keys", "", nil, `("@method" "@path" "@query")`},
		{"get query", "GET", "http://node1:7701/v1/audit?after=3&limit=10", "Bearer x.y.z", nil, `("@method" "@path" "@query" "authorization")`},
		{"post body", "POST", "http://node1:7701/v1/keys", "Bearer x.y.z", []byte(`{"curve":"ed25519"}`), `("@method" "@path" "@query" "content-digest" "authorization")`},
		{"post no body", "POST", "http://node1:7701/v1/admin/users/1/disable", "", nil, `("@method" "@path" "@query")`},
		{"escaped path", "DELETE", "http://node1:7701/v1/keys/a%2Fb", "", nil, `("@method" "@path" "@query")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, c.url, bytes.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			if err := sg.Sign(req, c.body, testNow); err != nil {
				t.Fatal(err)
			}
			in := req.Header.Get("Signature-Input")
			if !strings.HasPrefix(in, "sig1="+c.comps+";created=") || !strings.Contains(in, `;keyid="user:42";alg="ed25519"`) {
				t.Fatalf("Signature-Input %s", in)
			}
			if (len(c.body) > 0) != (req.Header.Get("Content-Digest") != "") {
				t.Fatal("Content-Digest iff body")
			}
			s, err := verifyAll(pub, RequestPartsFromHTTP(req, c.body), testNow)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := base64.RawURLEncoding.DecodeString(s.Nonce)
			if len(n) != 16 {
				t.Fatalf("nonce %q", s.Nonce)
			}
		})
	}
}

func TestSignerFreshNonceAndResign(t *testing.T) {
	sg := testSigner()
	req, _ := http.NewRequest("POST", "http://x/v1/keys", nil)
	body := []byte(`{}`)
	_ = sg.Sign(req, body, testNow)
	first := req.Header.Get("Signature-Input")
	_ = sg.Sign(req, body, testNow)
	second := req.Header.Get("Signature-Input")
	if first == second {
		t.Fatal("nonce reused across calls")
	}
	if len(req.Header.Values("Signature")) != 1 || len(req.Header.Values("Signature-Input")) != 1 {
		t.Fatal("re-signing must replace, not add, the signature headers")
	}
	// Re-signing without a body drops a stale Content-Digest.
	_ = sg.Sign(req, nil, testNow)
	if req.Header.Get("Content-Digest") != "" {
		t.Fatal("stale Content-Digest kept")
	}
	if err := (Signer{KeyID: "user:1"}).Sign(req, nil, testNow); err == nil {
		t.Fatal("signer without key accepted")
	}
	if err := (Signer{KeyID: "bad\nid", Key: sg.Key}).Sign(req, nil, testNow); err == nil {
		t.Fatal("keyid with control character accepted")
	}
}

// TestSignatureOverRealHTTP checks that what the Go client sends and what a Go server
// sees (path as sent, escaped) agree.
func TestSignatureOverRealHTTP(t *testing.T) {
	sg := testSigner()
	pub := sg.Key.Public().(ed25519.PublicKey)
	errs := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := verifyAll(pub, RequestPartsFromHTTP(r, body), time.Now())
		errs <- err
	}))
	defer srv.Close()
	for _, u := range []string{"/v1/keys/k%2F1/sign?x=%20y&z", "/v1/keys", "/v1/requests/r_1?"} {
		body := []byte(`{"message":"00"}`)
		req, _ := http.NewRequest("POST", srv.URL+u, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer a.b.c")
		if err := sg.Sign(req, body, time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if err := <-errs; err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
}

// signedParts returns a signed request's parts for mutation.
func signedParts(t *testing.T, method, target string, auth string, body []byte) (RequestParts, ed25519.PublicKey) {
	t.Helper()
	sg := testSigner()
	req, _ := http.NewRequest(method, "http://node"+target, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if err := sg.Sign(req, body, testNow); err != nil {
		t.Fatal(err)
	}
	return RequestPartsFromHTTP(req, body), sg.Key.Public().(ed25519.PublicKey)
}

func TestVerifyRejectsTampering(t *testing.T) {
	body := []byte(`{"message":"00"}`)
	other := testEd25519(77).Public().(ed25519.PublicKey)
	cases := []struct {
		name string
		mut  func(rp *RequestParts, pub *ed25519.PublicKey)
	}{
		{"method", func(rp *RequestParts, _ *ed25519.PublicKey) { rp.Method = "PUT" }},
		{"path", func(rp *RequestParts, _ *ed25519.PublicKey) { rp.Path = "/v1/keys/k2/sign" }},
		{"query", func(rp *RequestParts, _ *ed25519.PublicKey) { rp.RawQuery = "a=2" }},
		{"body", func(rp *RequestParts, _ *ed25519.PublicKey) { rp.Body = []byte(`{"message":"01"}`) }},
		{"digest and body", func(rp *RequestParts, _ *ed25519.PublicKey) {
			rp.Body = []byte(`{"message":"01"}`)
			rp.Header.Set("Content-Digest", ContentDigest(rp.Body))
		}},
		{"authorization", func(rp *RequestParts, _ *ed25519.PublicKey) { rp.Header.Set("Authorization", "Bearer other") }},
		{"key", func(_ *RequestParts, pub *ed25519.PublicKey) { *pub = other }},
		{"signature bytes", func(rp *RequestParts, _ *ed25519.PublicKey) {
			s, _ := ParseSignature(rp.Header.Get("Signature-Input"), rp.Header.Get("Signature"))
			s.Sig[0] ^= 1
			rp.Header.Set("Signature", s.Label+"=:"+base64.StdEncoding.EncodeToString(s.Sig)+":")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rp, pub := signedParts(t, "POST", "/v1/keys/k1/sign?a=1", "Bearer tok", body)
			c.mut(&rp, &pub)
			if _, err := verifyAll(pub, rp, testNow); CodeOf(err) != CodeSignatureInvalid {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// profileCase parses sigInput (with a dummy signature) and runs CheckProfile.
func profileCase(t *testing.T, sigInput string, rp RequestParts) error {
	t.Helper()
	s, err := ParseSignature(sigInput, "sig1=:"+base64.StdEncoding.EncodeToString(make([]byte, 64))+":")
	if err != nil {
		return err
	}
	return CheckProfile(s, rp)
}

func TestCheckProfile(t *testing.T) {
	nonce := `nonce="` + base64.RawURLEncoding.EncodeToString(make([]byte, 16)) + `"`
	params := `;created=1;` + nonce + `;keyid="user:42";alg="ed25519"`
	hdrAuth := http.Header{"Authorization": {"Bearer t"}}
	noBody := RequestParts{Method: "GET", Path: "/v1/keys", Header: http.Header{}}
	withBody := RequestParts{Method: "POST", Path: "/v1/keys", Header: hdrAuth, Body: []byte("{}")}
	cases := []struct {
		name string
		in   string
		rp   RequestParts
		ok   bool
	}{
		{"minimal", `sig1=("@method" "@path" "@query")` + params, noBody, true},
		{"full", `sig1=("@method" "@path" "@query" "content-digest" "authorization")` + params, withBody, true},
		{"params in another order, expires and tag", `sig1=("@method" "@path" "@query");alg="ed25519";keyid="ak_1";expires=99;tag="t";` + nonce + `;created=1`, noBody, true},
		{"padded nonce", `sig1=("@method" "@path" "@query");created=1;nonce="` + base64.URLEncoding.EncodeToString(make([]byte, 16)) + `";keyid="k";alg="ed25519"`, noBody, true},
		{"other label", `mine=("@method" "@path" "@query")` + params, noBody, false}, // label differs from Signature's
		{"missing @query", `sig1=("@method" "@path")` + params, noBody, false},
		{"wrong order", `sig1=("@path" "@method" "@query")` + params, noBody, false},
		{"extra component", `sig1=("@method" "@path" "@query" "date")` + params, noBody, false},
		{"content-digest without body", `sig1=("@method" "@path" "@query" "content-digest")` + params, noBody, false},
		{"body but no content-digest", `sig1=("@method" "@path" "@query" "authorization")` + params, withBody, false},
		{"authorization not covered", `sig1=("@method" "@path" "@query" "content-digest")` + params, withBody, false},
		{"@target-uri instead of path", `sig1=("@method" "@target-uri" "@query")` + params, noBody, false},
		{"no created", `sig1=("@method" "@path" "@query");` + nonce + `;keyid="k";alg="ed25519"`, noBody, false},
		{"no nonce", `sig1=("@method" "@path" "@query");created=1;keyid="k";alg="ed25519"`, noBody, false},
		{"short nonce", `sig1=("@method" "@path" "@query");created=1;nonce="` + base64.RawURLEncoding.EncodeToString(make([]byte, 15)) + `";keyid="k";alg="ed25519"`, noBody, false},
		{"huge nonce", `sig1=("@method" "@path" "@query");created=1;nonce="` + base64.RawURLEncoding.EncodeToString(make([]byte, 65)) + `";keyid="k";alg="ed25519"`, noBody, false},
		{"std-base64 nonce", `sig1=("@method" "@path" "@query");created=1;nonce="++++++++++++++++++++++";keyid="k";alg="ed25519"`, noBody, false},
		{"no keyid", `sig1=("@method" "@path" "@query");created=1;` + nonce + `;alg="ed25519"`, noBody, false},
		{"empty keyid", `sig1=("@method" "@path" "@query");created=1;` + nonce + `;keyid="";alg="ed25519"`, noBody, false},
		{"no alg", `sig1=("@method" "@path" "@query");created=1;` + nonce + `;keyid="k"`, noBody, false},
		{"other alg", `sig1=("@method" "@path" "@query");created=1;` + nonce + `;keyid="k";alg="hmac-sha256"`, noBody, false},
		{"unknown parameter", `sig1=("@method" "@path" "@query")` + params + `;foo="bar"`, noBody, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := profileCase(t, c.in, c.rp)
			if (err == nil) != c.ok {
				t.Fatalf("got %v", err)
			}
			if err != nil && CodeOf(err) != CodeSignatureInvalid {
				t.Fatalf("code %q", CodeOf(err))
			}
		})
	}
}

func TestCheckWindow(t *testing.T) {
	now := testNow.Unix()
	i64 := func(v int64) *int64 { return &v }
	cases := []struct {
		name    string
		created int64
		expires *int64
		code    string
	}{
		{"now", now, nil, ""},
		{"300s ago", now - 300, nil, ""},
		{"301s ago", now - 301, nil, CodeSignatureExpired},
		{"300s ahead", now + 300, nil, ""},
		{"301s ahead", now + 301, nil, CodeSignatureInvalid},
		{"expires ahead", now, i64(now + 10), ""},
		{"expires now", now - 5, i64(now), ""},
		{"expired", now - 10, i64(now - 1), CodeSignatureExpired},
		// In the past: expired (API.md), though also before created.
		{"expires in the past, before created", now, i64(now - 1), CodeSignatureExpired},
		{"expires before created, not yet past", now + 20, i64(now + 10), CodeSignatureInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Signature{Created: c.created, Expires: c.expires, hasCreated: true}
			if got := CodeOf(CheckWindow(s, testNow)); got != c.code {
				t.Fatalf("got %q want %q", got, c.code)
			}
		})
	}
	if CodeOf(CheckWindow(&Signature{}, testNow)) != CodeSignatureInvalid {
		t.Fatal("missing created accepted")
	}
}

func TestParseSignatureRejects(t *testing.T) {
	sig := "sig1=:" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + ":"
	okIn := `sig1=("@method" "@path" "@query");created=1;keyid="k"`
	cases := []struct {
		name, in, sig string
		code          string
	}{
		{"ok", okIn, sig, ""},
		{"ok with spaces", `sig1=( "@method"  "@path" "@query" );created=1;keyid="k"`, sig, ""},
		{"both missing", "", "", CodeMissing},
		{"input missing", "", sig, CodeSignatureInvalid},
		{"signature missing", okIn, "", CodeSignatureInvalid},
		{"two signatures", okIn + ", " + strings.Replace(okIn, "sig1", "sig2", 1), sig + ", " + strings.Replace(sig, "sig1", "sig2", 1), CodeSignatureInvalid},
		{"duplicate label", okIn + ", " + okIn, sig, CodeSignatureInvalid},
		{"label mismatch", okIn, strings.Replace(sig, "sig1", "sig2", 1), CodeSignatureInvalid},
		{"uppercase label", strings.Replace(okIn, "sig1", "Sig1", 1), strings.Replace(sig, "sig1", "Sig1", 1), CodeSignatureInvalid},
		{"input not inner list", `sig1="@method";created=1`, sig, CodeSignatureInvalid},
		{"signature not bytes", okIn, `sig1="abc"`, CodeSignatureInvalid},
		{"signature with params", okIn, sig + ";a=1", CodeSignatureInvalid},
		{"bad base64", okIn, "sig1=:****:", CodeSignatureInvalid},
		{"base64 with newline", okIn, "sig1=:" + base64.StdEncoding.EncodeToString(make([]byte, 64))[:10] + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 64))[10:] + ":", CodeSignatureInvalid},
		{"component not a string", `sig1=(@method);created=1`, sig, CodeSignatureInvalid},
		{"component with params", `sig1=("@query-param";name="a");created=1`, sig, CodeSignatureInvalid},
		{"component flag", `sig1=("content-digest";sf);created=1`, sig, CodeSignatureInvalid},
		{"duplicate component", `sig1=("@method" "@method");created=1`, sig, CodeSignatureInvalid},
		{"uppercase component", `sig1=("Date");created=1`, sig, CodeSignatureInvalid},
		{"signature-params covered", `sig1=("@signature-params");created=1`, sig, CodeSignatureInvalid},
		{"decimal created", `sig1=("@method");created=1.5`, sig, CodeSignatureInvalid},
		{"string created", `sig1=("@method");created="1"`, sig, CodeSignatureInvalid},
		{"negative created", `sig1=("@method");created=-1`, sig, CodeSignatureInvalid},
		{"integer keyid", `sig1=("@method");created=1;keyid=5`, sig, CodeSignatureInvalid},
		{"token param", `sig1=("@method");created=1;alg=ed25519`, sig, CodeSignatureInvalid},
		{"boolean param", `sig1=("@method");created=1;x`, sig, CodeSignatureInvalid},
		{"duplicate param", `sig1=("@method");created=1;created=2`, sig, CodeSignatureInvalid},
		{"huge integer", `sig1=("@method");created=1234567890123456`, sig, CodeSignatureInvalid},
		{"unterminated list", `sig1=("@method" "@path"`, sig, CodeSignatureInvalid},
		{"unterminated string", `sig1=("@method);created=1`, sig, CodeSignatureInvalid},
		{"bad escape", `sig1=("@me\thod");created=1`, sig, CodeSignatureInvalid},
		{"control char", "sig1=(\"@me\x01thod\");created=1", sig, CodeSignatureInvalid},
		{"trailing comma", okIn + ",", sig, CodeSignatureInvalid},
		{"trailing garbage", okIn + " x", sig, CodeSignatureInvalid},
		{"too long", `sig1=("` + strings.Repeat("a", MaxSignatureHeaderLen) + `")`, sig, CodeSignatureInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSignature(c.in, c.sig)
			if got := CodeOf(err); got != c.code {
				t.Fatalf("got %v (code %q), want %q", err, got, c.code)
			}
		})
	}
}

func TestSignatureParamsSerialization(t *testing.T) {
	// Parameters keep their order; escapes are re-serialized; whitespace is normalised.
	in := `sig1=(  "@method" "@path"  );keyid="a\"b\\c";created=5;tag="x"`
	s, err := ParseSignature(in, "sig1=:"+base64.StdEncoding.EncodeToString(make([]byte, 64))+":")
	if err != nil {
		t.Fatal(err)
	}
	want := `("@method" "@path");keyid="a\"b\\c";created=5;tag="x"`
	if s.Params != want {
		t.Fatalf("Params %s, want %s", s.Params, want)
	}
	if s.KeyID != `a"b\c` {
		t.Fatalf("KeyID %q", s.KeyID)
	}
}

func TestSignatureBaseComponents(t *testing.T) {
	h := http.Header{}
	h.Add("X-Multi", " a ")
	h.Add("X-Multi", "b\t")
	rp := RequestParts{Method: "GET", Path: "", RawQuery: "", Header: h, Authority: "Example.COM:443", Scheme: "HTTPS"}
	s := &Signature{Components: []string{"@method", "@path", "@query", "@authority", "@scheme", "@target-uri", "@request-target", "x-multi"}, Params: "()"}
	base, err := SignatureBase(s, rp)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`"@method": GET`,
		`"@path": /`,
		`"@query": ?`,
		`"@authority": example.com`,
		`"@scheme": https`,
		`"@target-uri": https://example.com/`,
		`"@request-target": /`,
		`"x-multi": a, b`,
		`"@signature-params": ()`,
	}, "\n")
	if string(base) != want {
		t.Fatalf("base:\n%s\nwant:\n%s", base, want)
	}
	if h.Values("X-Multi")[0] != " a " {
		t.Fatal("SignatureBase modified the request's header")
	}
	for _, c := range []string{"@status", "@query-param", "absent-header"} {
		if _, err := SignatureBase(&Signature{Components: []string{c}}, rp); CodeOf(err) != CodeSignatureInvalid {
			t.Errorf("%s: %v", c, err)
		}
	}
}
