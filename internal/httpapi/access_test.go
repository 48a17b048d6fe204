package httpapi

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
)

func TestAccessKeyAuthenticationPipeline(t *testing.T) {
	h := newAuthHarness(t, false)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edAK := h.grant(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(edPub), "permissions": []string{"keys:read", "keys:sign"}})
	secpKey, _ := btcec.NewPrivateKey()
	secpAK := h.grant(map[string]any{"scheme": "secp256k1", "public_key": hex.EncodeToString(secpKey.PubKey().SerializeCompressed()), "permissions": []string{"keys:read"}})
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	strangerSecp, _ := btcec.NewPrivateKey()
	body := []byte(`{"message":"` + strings.Repeat("ab", 32) + `"}`)
	signPath := "/v1/keys/" + h.keyID + "/sign"

	tests := []struct {
		name  string
		req   func(t *testing.T) *http.Request
		want  string
		check func(t *testing.T, x *exchange)
	}{
		{"ed25519 access key GET", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys?limit=5", nil), nil, edAK.ID, edKey)
		}, "", func(t *testing.T, x *exchange) {
			c := x.caller
			if c.Kind != state.CallerAccessKey || c.AccessKeyID != edAK.ID || !strings.HasPrefix(c.NonceKey, "sig|"+edAK.ID+"|") || c.Created == 0 {
				t.Fatalf("caller %+v", c)
			}
			if x.signed.Authorization != "" || x.signed.SignatureInput == "" || x.signed.RawQuery != "limit=5" {
				t.Fatalf("signed form %+v", x.signed)
			}
		}},
		{"ed25519 access key POST", func(t *testing.T) *http.Request {
			return sign(t, request("POST", signPath, body), body, edAK.ID, edKey)
		}, "", func(t *testing.T, x *exchange) {
			if x.signed.ContentDigest == "" || !bytes.Equal(x.signed.Body, body) || x.signed.Path != signPath {
				t.Fatalf("signed form %+v", x.signed)
			}
		}},
		{"unknown access key", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, "ak_"+strings.Repeat("0", 32), edKey)
		}, "auth.token_invalid", nil},
		// The access key stands in the token's place: an unknown one is refused before
		// the signature's components are judged.
		{"unknown access key, components short of the profile", func(t *testing.T) *http.Request {
			r := sign(t, request("GET", "/v1/keys", nil), nil, "ak_"+strings.Repeat("0", 32), edKey)
			si := r.Header.Get("Signature-Input")
			short := strings.Replace(si, ` "@path" "@query"`, "", 1)
			if short == si {
				t.Fatalf("signature input %q", si)
			}
			r.Header.Set("Signature-Input", short)
			return r
		}, "auth.token_invalid", nil},
		{"known access key, components short of the profile", func(t *testing.T) *http.Request {
			r := sign(t, request("GET", "/v1/keys", nil), nil, edAK.ID, edKey)
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), ` "@path" "@query"`, "", 1))
			return r
		}, "auth.signature_invalid", nil},
		{"keyid that is no access key", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, "robot", edKey)
		}, "auth.token_invalid", nil},
		{"user keyid without a token", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, auth.UserKeyID(h.userID), h.userKey)
		}, "auth.missing", nil},
		{"admin keyid without a token", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, "admin", edKey)
		}, "auth.missing", nil},
		{"signed by another key", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, edAK.ID, strangerKey)
		}, "auth.signature_invalid", nil},
		{"RFC 9421 with a secp256k1 access key", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, secpAK.ID, edKey)
		}, "auth.signature_invalid", nil},
		{"body without Content-Digest", func(t *testing.T) *http.Request {
			r := sign(t, request("POST", signPath, body), body, edAK.ID, edKey)
			r.Header.Del("Content-Digest")
			return r
		}, "auth.signature_invalid", nil},
		{"body changed after signing", func(t *testing.T) *http.Request {
			r := sign(t, request("POST", signPath, body), body, edAK.ID, edKey)
			other := bytes.Replace(body, []byte("ab"), []byte("cd"), 1)
			r.Body = io.NopCloser(bytes.NewReader(other))
			r.ContentLength = int64(len(other))
			return r
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token bsm GET", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("GET", "/v1/keys?after=k", nil), secpKey, "/v1/keys?after=k", nil, false)
		}, "", func(t *testing.T, x *exchange) {
			c := x.caller
			if c.Kind != state.CallerAccessKey || c.AccessKeyID != secpAK.ID || !strings.HasPrefix(c.NonceKey, "xauth|") || len(c.NonceKey) != 6+64 {
				t.Fatalf("caller %+v", c)
			}
			if x.signed.XAuthToken == "" || x.signed.SignatureInput != "" {
				t.Fatalf("signed form %+v", x.signed)
			}
		}},
		{"X-Auth-Token brc77 POST", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("POST", signPath, body), secpKey, signPath, body, true)
		}, "", nil},
		{"X-Auth-Token with a matching Content-Digest", func(t *testing.T) *http.Request {
			r := xauthRequest(t, request("POST", signPath, body), secpKey, signPath, body, false)
			r.Header.Set("Content-Digest", auth.ContentDigest(body))
			return r
		}, "", nil},
		{"X-Auth-Token with a wrong Content-Digest", func(t *testing.T) *http.Request {
			r := xauthRequest(t, request("POST", signPath, body), secpKey, signPath, body, false)
			r.Header.Set("Content-Digest", auth.ContentDigest([]byte("x")))
			return r
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token on DELETE", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("DELETE", "/v1/access-keys/"+secpAK.ID, nil), secpKey, "/v1/access-keys/"+secpAK.ID, nil, false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token for another path", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("GET", "/v1/keys/"+h.keyID, nil), secpKey, "/v1/keys", nil, false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token for another body", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("POST", signPath, body), secpKey, signPath, []byte(`{}`), false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token of an unknown key", func(t *testing.T) *http.Request {
			return xauthRequest(t, request("GET", "/v1/keys", nil), strangerSecp, "/v1/keys", nil, false)
		}, "auth.token_invalid", nil},
		{"X-Auth-Token mixed with a token", func(t *testing.T) *http.Request {
			r := xauthRequest(t, request("GET", "/v1/keys", nil), secpKey, "/v1/keys", nil, false)
			r.Header.Set("Authorization", "Bearer "+h.userToken())
			return r
		}, "auth.missing", nil},
		{"X-Auth-Token twice", func(t *testing.T) *http.Request {
			r := xauthRequest(t, request("GET", "/v1/keys", nil), secpKey, "/v1/keys", nil, false)
			r.Header.Add("X-Auth-Token", r.Header.Get("X-Auth-Token"))
			return r
		}, "auth.missing", nil},
		{"grant body over 64 KiB", func(t *testing.T) *http.Request {
			big := bytes.Repeat([]byte(" "), maxGrantBody+1)
			return sign(t, request("POST", "/v1/access-keys", big), big, edAK.ID, edKey)
		}, "request.too_large", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := state.OpKeyList
			r := tt.req(t)
			if r.URL.Path == "/v1/access-keys" && r.Method == "POST" {
				route = state.OpAccessCreate
			}
			// What a member could propose for this request, whatever the entry node says.
			form := formOf(t, r)
			x, err := h.check(r, route)
			code := ""
			if err != nil {
				code = err.Code
			}
			if code != tt.want {
				t.Fatalf("code %q, want %q (%v)", code, tt.want, err)
			}
			if tt.check != nil {
				tt.check(t, x)
			}
			// The FSM runs the same verifier at the entry's stamp and reaches the same
			// verdict (the body size and repeated headers are the transport's).
			switch {
			case tt.want == "" && r.Method == "GET":
				if res := h.commit(x, nil); !res.OK() {
					t.Fatalf("accepted by the entry node, refused by the FSM: %+v", res)
				}
			case tt.want != "" && tt.want != "request.too_large" && len(r.Header.Values("X-Auth-Token")) < 2:
				n := h.auditCount()
				if res := h.submit(form, nil); res.Code != tt.want {
					t.Fatalf("the FSM answers %+v, the entry node %q", res, tt.want)
				}
				if a := h.lastAudit(); h.auditCount() != n+1 || a.Actor != "node:n1" || a.Action != "request.refused" || a.Code != tt.want {
					t.Fatalf("audit %+v", a)
				}
			}
		})
	}
}

func TestAccessKeyLifecycleThroughThePipeline(t *testing.T) {
	h := newAuthHarness(t, false)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	other := h.activeKey()
	ak := h.grant(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(edPub), "permissions": []string{"keys:read"},
		"key_ids": []string{h.keyID}, "label": "reader"})
	// The stored grant is the grantor's request exactly as signed, and its fields are the
	// signed body's (nothing a proposer could widen).
	if ak.Grantor != h.userID || ak.Grant == nil || ak.Grant.Path != "/v1/access-keys" || !strings.Contains(ak.Grant.SignatureInput, `keyid="user:`) {
		t.Fatalf("grant %+v", ak.Grant)
	}
	if g, bad := state.ParseGrantBody(ak.Grant.Body); bad != "" || !slices.Equal(g.KeyIDs, ak.KeyIDs) || !slices.Equal(g.Permissions, ak.Permissions) || g.Label != ak.Label {
		t.Fatalf("stored grant %+v differs from the signed body %+v (%s)", ak, g, bad)
	}
	use := func(op, target string) (*exchange, state.Result) {
		t.Helper()
		x := h.mustCheck(sign(t, request("GET", target, nil), nil, ak.ID, edKey), op)
		return x, h.commit(x, nil)
	}
	if _, res := use(state.OpKeyGet, "/v1/keys/"+h.keyID); !res.OK() || res.KeyID != h.keyID {
		t.Fatalf("in scope: %+v", res)
	}
	if _, res := use(state.OpKeyGet, "/v1/keys/"+other); res.Code != "key.not_found" {
		t.Fatalf("out of scope: %+v", res)
	}
	x, res := use(state.OpKeyList, "/v1/keys")
	if !res.OK() {
		t.Fatal(res)
	}
	owner, only, aerr := h.s.keyScope(x)
	if aerr != nil || owner != h.userID || len(only) != 1 {
		t.Fatalf("scope %d %v %v", owner, only, aerr)
	}
	if keys := h.fsm.KeysIn(owner, only, "", 100); len(keys) != 1 || keys[0].ID != h.keyID {
		t.Fatalf("listed %d keys", len(keys))
	}
	// A retry of the same proposal gets the first answer; the same request proposed again
	// (a fresh proposal id) is refused by the FSM (nonce); then revocation applies at once.
	rx := h.mustCheck(sign(t, request("GET", "/v1/keys", nil), nil, ak.ID, edKey), state.OpKeyList)
	first := h.submitOf(rx.signed, nil)
	if res := h.apply(state.TypeSubmit, first); !res.OK() {
		t.Fatalf("first: %+v", res)
	}
	if res := h.apply(state.TypeSubmit, first); !res.OK() {
		t.Fatalf("retry of the same proposal: %+v", res)
	}
	if res := h.commit(rx, nil); res.Code != "auth.nonce_reused" {
		t.Fatalf("replay: %+v", res)
	}
	h.do(h.userRequest("DELETE", "/v1/access-keys/"+ak.ID, nil), state.OpAccessRevoke, nil)
	if _, res := use(state.OpKeyList, "/v1/keys"); res.Code != "auth.key_revoked" {
		t.Fatalf("after revocation: %+v", res)
	}
	entries, _ := h.fsm.AccessLog(ak.ID, 0, 100)
	if len(entries) != 6 || entries[1].Code != "key.not_found" || entries[4].Code != "auth.nonce_reused" || entries[5].Code != "auth.key_revoked" {
		t.Fatalf("log %+v", entries)
	}
	v := accessKeyView(h.fsm.AccessKey(ak.ID))
	if v.RevokedAt.IsZero() || !v.ExpiresAt.IsZero() || v.Label != "reader" || len(v.KeyIDs) != 1 {
		t.Fatalf("view %v", v)
	}
}

func TestAdminKeyPairMode(t *testing.T) {
	h := newAuthHarness(t, true)
	if genesis, current := h.fsm.AdminKeys(); !bytes.Equal(genesis, h.adminPub) || !bytes.Equal(current, h.adminPub) {
		t.Fatal("the admin public key is not the cluster's first entry's")
	}
	adminReq := func(t *testing.T, tok string, signer ed25519.PrivateKey, keyID string) *http.Request {
		r := request("GET", "/v1/admin/users", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if signer != nil {
			sign(t, r, nil, keyID, signer)
		}
		return r
	}
	tok := func() string {
		s, err := h.iss.AdminToken(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hsTok := func() string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"role": "admin", "iat": time.Now().Unix(), "exp": time.Now().Unix() + 60, "jti": newID("")}).SignedString(bytes.Repeat([]byte{7}, 32))
		return s
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		req  func(t *testing.T) *http.Request
		want string
	}{
		{"EdDSA token and admin signature", func(t *testing.T) *http.Request { return adminReq(t, tok(), h.adminSK, "admin") }, ""},
		{"no signature", func(t *testing.T) *http.Request { return adminReq(t, tok(), nil, "") }, "auth.missing"},
		{"signature by another key", func(t *testing.T) *http.Request { return adminReq(t, tok(), other, "admin") }, "auth.signature_invalid"},
		{"HS256 token in key-pair mode", func(t *testing.T) *http.Request { return adminReq(t, hsTok(), h.adminSK, "admin") }, "auth.token_invalid"},
		{"admin token signed as a user", func(t *testing.T) *http.Request { return adminReq(t, tok(), h.adminSK, "user:1") }, "auth.token_invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req(t)
			form := formOf(t, r)
			x, err := h.check(r, state.OpUserList)
			code := ""
			if err != nil {
				code = err.Code
			}
			if code != tt.want {
				t.Fatalf("code %q, want %q (%v)", code, tt.want, err)
			}
			if tt.want == "" {
				c := x.caller
				if c.Kind != state.CallerAdmin || !strings.HasPrefix(c.NonceKey, "sig|admin|") || !strings.HasPrefix(c.TokenNonceKey, "jti|") || c.Created == 0 {
					t.Fatalf("caller %+v", c)
				}
				return
			}
			// The FSM, verifying against the admin key the state holds, agrees.
			if res := h.submit(form, nil); res.Code != tt.want {
				t.Fatalf("the FSM answers %+v", res)
			}
		})
	}
	// The jti and the signature nonce are each accepted once, cluster-wide.
	x := h.mustCheck(adminReq(t, tok(), h.adminSK, "admin"), state.OpUserList)
	if res := h.commit(x, nil); !res.OK() {
		t.Fatal(res)
	}
	if res := h.commit(x, nil); res.Code != "auth.nonce_reused" {
		t.Fatalf("replayed admin request: %+v", res)
	}
	resigned := x.r.Clone(x.r.Context())
	sign(t, resigned, nil, "admin", h.adminSK)
	y := h.mustCheck(resigned, state.OpUserList)
	if res := h.commit(y, nil); res.Code != "auth.nonce_reused" {
		t.Fatalf("the same token with a fresh signature: %+v", res)
	}
	// Users' tokens are verified against the admin key of the state too.
	if res := h.commit(h.mustCheck(h.userRequest("GET", "/v1/keys", nil), state.OpKeyList), nil); !res.OK() {
		t.Fatalf("user request in key-pair mode: %+v", res)
	}
}

// signForms builds fresh, honestly signed sign requests for the same body: the user's
// (token + RFC 9421), an Ed25519 access key's (RFC 9421) and a secp256k1 access key's
// (X-Auth-Token), each accepted by the entry node.
type signForms struct {
	h            *authHarness
	path         string
	body         []byte
	edAK, secpAK *state.AccessKey
	edKey        ed25519.PrivateKey
	secpKey      *btcec.PrivateKey
}

func newSignForms(h *authHarness, keyIDs []string, secpExpires string) *signForms {
	h.t.Helper()
	s := &signForms{h: h, path: "/v1/keys/" + h.keyID + "/sign"}
	s.body = []byte(`{"message":"` + strings.Repeat("ab", 32) + `","derivation_path":"m/0/7"}`)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	s.edKey = edKey
	s.secpKey, _ = btcec.NewPrivateKey()
	s.edAK = h.grant(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(edPub), "permissions": []string{"keys:read", "keys:sign"}, "key_ids": keyIDs})
	g := map[string]any{"scheme": "secp256k1", "public_key": hex.EncodeToString(s.secpKey.PubKey().SerializeCompressed()), "permissions": []string{"keys:sign"}}
	if secpExpires != "" {
		g["expires_at"] = secpExpires
	}
	s.secpAK = h.grant(g)
	return s
}

func (s *signForms) user() *state.SignedForm {
	return s.h.mustCheck(s.h.userRequest("POST", s.path, s.body), state.OpKeySign).signed
}

func (s *signForms) ed() *state.SignedForm {
	return s.h.mustCheck(sign(s.h.t, request("POST", s.path, s.body), s.body, s.edAK.ID, s.edKey), state.OpKeySign).signed
}

func (s *signForms) secp() *state.SignedForm {
	return s.h.mustCheck(xauthRequest(s.h.t, request("POST", s.path, s.body), s.secpKey, s.path, s.body, true), state.OpKeySign).signed
}

// TestFSMRefusesForgedSubmits replaces the runner's re-verification of stored requests
// (verifyScheduled): a sign request is admitted only by every node's own FSM, from the
// caller's signed request in the entry, and a request the caller did not sign — tampered
// by the entry node or the leader, replayed, attributed to someone else — is refused with
// nothing changed, and the refusal is attributed to the member that proposed it.
func TestFSMRefusesForgedSubmits(t *testing.T) {
	h := newAuthHarness(t, false)
	s := newSignForms(h, []string{h.keyID}, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	bobID, bobKey := h.newUser("bob")
	digest, _ := hex.DecodeString(strings.Repeat("ab", 32))

	// Honest requests are admitted with exactly what the caller signed.
	for _, c := range []struct {
		name string
		form func() *state.SignedForm
		ak   string
	}{{"user", s.user, ""}, {"ed25519 access key", s.ed, s.edAK.ID}, {"X-Auth-Token", s.secp, s.secpAK.ID}} {
		f := c.form()
		res := h.submit(f, signSchedule())
		if !res.OK() {
			t.Fatalf("honest %s request refused: %+v", c.name, res)
		}
		r := h.fsm.Request(res.RequestID)
		if r.Kind != state.KindSign || r.KeyID != h.keyID || !bytes.Equal(r.Message, digest) || r.Path != "m/0/7" ||
			!slices.Equal(r.PathIdx, []uint32{0, 7}) || r.Owner != h.userID || r.AccessKeyID != c.ak || !bytes.Equal(r.Signed.Body, f.Body) {
			t.Fatalf("%s: stored request %+v", c.name, r)
		}
	}

	swapDigest := func(f *state.SignedForm) { f.Body = bytes.Replace(f.Body, []byte("abab"), []byte("cdab"), 1) }
	tests := []struct {
		name   string
		form   func() *state.SignedForm
		tamper func(f *state.SignedForm)
		want   string
	}{
		{"swapped digest", s.user, swapDigest, "auth.signature_invalid"},
		{"swapped digest with its Content-Digest", s.ed, func(f *state.SignedForm) {
			swapDigest(f)
			f.ContentDigest = auth.ContentDigest(f.Body)
		}, "auth.signature_invalid"},
		{"swapped digest under an X-Auth-Token", s.secp, swapDigest, "auth.signature_invalid"},
		{"swapped derivation path", s.secp, func(f *state.SignedForm) {
			f.Body = bytes.Replace(f.Body, []byte("m/0/7"), []byte("m/0/8"), 1)
		}, "auth.signature_invalid"},
		{"another key's path", s.user, func(f *state.SignedForm) { f.Path = "/v1/keys/" + newID("key_") + "/sign" }, "auth.signature_invalid"},
		{"corrupted user signature", s.user, func(f *state.SignedForm) { f.Signature = corruptForTest(f.Signature) }, "auth.signature_invalid"},
		{"corrupted access-key signature", s.ed, func(f *state.SignedForm) { f.Signature = corruptForTest(f.Signature) }, "auth.signature_invalid"},
		{"keyid of another user", s.user, func(f *state.SignedForm) {
			f.SignatureInput = strings.Replace(f.SignatureInput, `keyid="`+auth.UserKeyID(h.userID)+`"`, `keyid="`+auth.UserKeyID(bobID)+`"`, 1)
		}, "auth.signature_invalid"},
		{"another user's token and keyid", s.user, func(f *state.SignedForm) {
			f.Authorization = "Bearer " + h.tokenFor(bobID, bobKey)
			f.SignatureInput = strings.Replace(f.SignatureInput, `keyid="`+auth.UserKeyID(h.userID)+`"`, `keyid="`+auth.UserKeyID(bobID)+`"`, 1)
		}, "auth.signature_invalid"},
		{"keyid of another access key", s.ed, func(f *state.SignedForm) {
			f.SignatureInput = strings.Replace(f.SignatureInput, s.edAK.ID, s.secpAK.ID, 1)
		}, "auth.signature_invalid"},
		{"corrupted X-Auth-Token", s.secp, func(f *state.SignedForm) {
			i := strings.LastIndexByte(f.XAuthToken, '|')
			f.XAuthToken = f.XAuthToken[:i+1] + corruptForTest(f.XAuthToken[i+1:])
		}, "auth.signature_invalid"},
		{"credentials stripped", s.user, func(f *state.SignedForm) {
			f.Authorization, f.SignatureInput, f.Signature = "", "", ""
		}, "auth.missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			honest := tt.form()
			forged := cloneForm(honest)
			tt.tamper(forged)
			before, n := h.stateDigest(), h.auditCount()
			sched := signSchedule()
			res := h.submit(forged, sched)
			if res.Code != tt.want {
				t.Fatalf("a request the caller did not sign: %+v, want %s", res, tt.want)
			}
			if h.fsm.Request(sched.RequestID) != nil || h.stateDigest() != before {
				t.Fatal("the state changed")
			}
			a := h.lastAudit()
			if h.auditCount() != n+1 || a.Actor != "node:n1" || a.Action != "request.refused" || a.Object != state.OpKeySign || a.Outcome != "refused" || a.Code != tt.want {
				t.Fatalf("audit %+v", a)
			}
			// The refusal consumed nothing: the request as signed still goes through.
			if res := h.submit(honest, signSchedule()); !res.OK() {
				t.Fatalf("the honest request after its forgery: %+v", res)
			}
		})
	}

	t.Run("replayed with a fresh proposal id", func(t *testing.T) {
		for _, form := range []func() *state.SignedForm{s.user, s.ed, s.secp} {
			f := form()
			sub := h.submitOf(f, signSchedule())
			res := h.apply(state.TypeSubmit, sub)
			if !res.OK() {
				t.Fatal(res)
			}
			open := len(h.fsm.OpenRequests())
			// A retry of the same proposal gets the first answer and creates nothing.
			if again := h.apply(state.TypeSubmit, sub); again.RequestID != res.RequestID || !again.OK() {
				t.Fatalf("retry of the proposal: %+v", again)
			}
			before := h.stateDigest()
			sched := signSchedule()
			if replay := h.submit(f, sched); replay.Code != "auth.nonce_reused" {
				t.Fatalf("replay: %+v", replay)
			}
			if h.fsm.Request(sched.RequestID) != nil || len(h.fsm.OpenRequests()) != open || h.stateDigest() != before {
				t.Fatal("the replay changed the state")
			}
			if a := h.lastAudit(); a.Code != "auth.nonce_reused" || a.Outcome != "refused" {
				t.Fatalf("audit %+v", a)
			}
		}
	})

	t.Run("origin signature", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			forge  func(sub *state.Submit)
			object string
		}{
			{"signed by another member", func(sub *state.Submit) {
				sub.OriginSig, _ = authn.SignNode(h.ids["n2"], authn.DomainRequest, sub.Body)
			}, "node:n1"},
			{"claims another origin", func(sub *state.Submit) { sub.Origin = "n2" }, "node:n2"},
			{"signed as a report", func(sub *state.Submit) {
				sub.OriginSig, _ = authn.SignNode(h.ids["n1"], authn.DomainReport, sub.Body)
			}, "node:n1"},
			{"body changed after signing", func(sub *state.Submit) {
				var b state.SubmitBody
				_ = json.Unmarshal(sub.Body, &b)
				b.Signed = s.ed()
				sub.Body, _ = json.Marshal(&b)
			}, "node:n1"},
			{"no signature", func(sub *state.Submit) { sub.OriginSig = nil }, "node:n1"},
			{"not a member", func(sub *state.Submit) { sub.Origin = "n9" }, "node:n9"},
		} {
			sched := signSchedule()
			sub := h.submitOf(s.user(), sched)
			c.forge(sub)
			before, n := h.stateDigest(), h.auditCount()
			if res := h.apply(state.TypeSubmit, sub); res.Code != "auth.signature_invalid" {
				t.Fatalf("%s: %+v", c.name, res)
			}
			if h.fsm.Request(sched.RequestID) != nil || h.stateDigest() != before {
				t.Fatalf("%s: the state changed", c.name)
			}
			if a := h.lastAudit(); h.auditCount() != n+1 || a.Actor != "cluster" || a.Action != "request.refused" || a.Object != c.object || a.Code != "auth.signature_invalid" {
				t.Fatalf("%s: audit %+v", c.name, a)
			}
		}
	})

	t.Run("legacy unsigned entries", func(t *testing.T) {
		before := h.stateDigest()
		sched := signSchedule()
		res := h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpKeySign,
			KeyID: h.keyID, MessageHex: strings.Repeat("cd", 32), Schedule: sched})
		if res.Code != "auth.signature_invalid" || h.fsm.Request(sched.RequestID) != nil || h.stateDigest() != before {
			t.Fatalf("unsigned call: %+v", res)
		}
		if a := h.lastAudit(); a.Actor != "cluster" || a.Action != "entry.refused" || a.Object != state.TypeCall {
			t.Fatalf("audit %+v", a)
		}
		// A grant the grantor never signed (a leader making up an access key).
		forgedPub, _, _ := ed25519.GenerateKey(rand.Reader)
		gs := grantSchedule()
		res = h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpAccessCreate,
			Grant: &state.GrantFields{Scheme: "ed25519", PublicKey: hex.EncodeToString(forgedPub), Permissions: []string{"keys:sign"}}, Schedule: gs})
		if res.Code != "auth.signature_invalid" || h.fsm.AccessKey(gs.AccessKeyID) != nil {
			t.Fatalf("unsigned grant: %+v", res)
		}
	})

	t.Run("admin calls without a token", func(t *testing.T) {
		users := len(h.fsm.Users(0, 100))
		for _, f := range []state.SignedForm{
			{Method: "POST", Path: "/v1/admin/users", Body: []byte(`{"name":"mallory"}`)},
			{Method: "PUT", Path: "/v1/admin/users/" + itoa(bobID) + "/permissions", Body: []byte(`{"permissions":["keys:read"]}`)},
		} {
			before := h.stateDigest()
			if res := h.submit(&f, nil); res.Code != "auth.missing" || h.stateDigest() != before {
				t.Fatalf("%s %s: %+v", f.Method, f.Path, res)
			}
			if a := h.lastAudit(); a.Actor != "node:n1" || a.Code != "auth.missing" {
				t.Fatalf("audit %+v", a)
			}
		}
		// The user's own credentials on an admin route: authenticated, not permitted.
		body := []byte(`{"name":"mallory"}`)
		if res := h.commit(h.mustCheck(h.userRequest("POST", "/v1/admin/users", body), state.OpUserCreate), nil); res.Code != "perm.denied" {
			t.Fatalf("user on an admin route: %+v", res)
		}
		if len(h.fsm.Users(0, 100)) != users {
			t.Fatal("a user was created")
		}
	})

	t.Run("revoked access key", func(t *testing.T) {
		h.do(h.userRequest("DELETE", "/v1/access-keys/"+s.edAK.ID, nil), state.OpAccessRevoke, nil)
		f := s.ed() // the entry node does not know of revocations: the FSM does
		before := h.stateDigest()
		sched := signSchedule()
		if res := h.submit(f, sched); res.Code != "auth.key_revoked" {
			t.Fatalf("revoked access key: %+v", res)
		}
		if h.fsm.Request(sched.RequestID) != nil || h.stateDigest() != before {
			t.Fatal("the state changed")
		}
		if a := h.lastAudit(); a.Actor != s.edAK.ID || a.Code != "auth.key_revoked" {
			t.Fatalf("audit %+v", a)
		}
	})
	// Last: an unknown field halts the FSM (it would be a newer binary's entry), so
	// this runs after everything else on this harness.
	t.Run("unknown fields halt, and the propose gate refuses them", func(t *testing.T) {
		caller := json.RawMessage(`{"kind":"user","user_id":` + itoa(bobID) + `}`)
		sched := signSchedule()
		var m map[string]json.RawMessage
		_ = json.Unmarshal(mustJSON(h.submitOf(s.user(), sched)), &m)
		m["caller"] = caller
		// Inside the body the origin signed, too.
		body, _ := json.Marshal(map[string]any{"signed": s.user(), "proposal_id": newID(""), "caller": caller})
		sig, _ := authn.SignNode(h.ids["n1"], authn.DomainRequest, body)
		inner := &state.Submit{Origin: "n1", Body: body, OriginSig: sig, Schedule: signSchedule()}
		for name, payload := range map[string]any{"next to the body": m, "in the signed body": inner} {
			if err := state.ValidateEntry(state.TypeSubmit, mustJSON(payload)); err == nil {
				t.Fatalf("%s: the propose gate would accept it", name)
			}
		}
		before := h.stateDigest()
		if res := h.apply(state.TypeSubmit, m); res.Code != "cluster.unavailable" || h.fsm.Halted() == "" {
			t.Fatalf("caller next to the body: %+v (halted %q)", res, h.fsm.Halted())
		}
		if h.fsm.Request(sched.RequestID) != nil || h.stateDigest() != before {
			t.Fatal("the state changed")
		}
	})
}

// TestFSMJudgesAtTheStamp: a request is judged at its entry's stamp, not when the entry
// node saw it; a leader that holds a signed request and proposes it long after is refused.
func TestFSMJudgesAtTheStamp(t *testing.T) {
	h := newAuthHarness(t, false)
	s := newSignForms(h, nil, "")
	forms := map[string]*state.SignedForm{"user": s.user(), "ed25519 access key": s.ed(), "X-Auth-Token": s.secp()}
	h.stamp += 10 * 60 * 1000
	for name, f := range forms {
		sched := signSchedule()
		if res := h.submit(f, sched); res.Code != "auth.signature_expired" || h.fsm.Request(sched.RequestID) != nil {
			t.Errorf("%s proposed 10 minutes late: %+v", name, res)
		}
		if a := h.lastAudit(); a.Actor != "node:n1" || a.Code != "auth.signature_expired" {
			t.Errorf("%s: audit %+v", name, a)
		}
	}
}

// TestSchedulingJudgedAgain replaces the runner's check of the caller's current rights:
// the FSM judges permission, revocation, expiry and the signature window again when the
// leader reschedules a request, and fails the request instead.
func TestSchedulingJudgedAgain(t *testing.T) {
	h := newAuthHarness(t, false)
	expires := time.Now().Add(60 * time.Second).Truncate(time.Second)
	s := newSignForms(h, []string{h.keyID}, expires.UTC().Format(time.RFC3339))

	admitted := func(f *state.SignedForm) *state.Request {
		t.Helper()
		res := h.submit(f, signSchedule("n1", "n2"))
		if !res.OK() {
			t.Fatalf("sign: %+v", res)
		}
		return h.fsm.Request(res.RequestID)
	}
	// failAndReschedule: a committee member reports a failure, the leader (n1) reschedules.
	failAndReschedule := func(r *state.Request) *state.Request {
		t.Helper()
		if res := h.report("n2", state.TypeCeremonyFailed, &state.CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Code: "ceremony.failed", Detail: "timeout"}); !res.OK() {
			t.Fatalf("failure report: %+v", res)
		}
		h.report("n1", state.TypeReschedule, &state.Reschedule{RequestID: r.ID, Attempt: r.Attempt, Committee: []string{"n1", "n3"}, Nonce: randomBytes(32)})
		return h.fsm.Request(r.ID)
	}
	failedWith := func(name string, r *state.Request, code string) {
		t.Helper()
		if r.Status != state.StatusFailed || r.Error == nil || r.Error.Code != code {
			t.Fatalf("%s: request %s status %s error %+v, want failed with %s", name, r.ID, r.Status, r.Error, code)
		}
	}

	// An honest retry is rescheduled.
	r := failAndReschedule(admitted(s.ed()))
	if r.Status != state.StatusScheduled || r.Attempt != 2 || !slices.Equal(r.Committee, []string{"n1", "n3"}) {
		t.Fatalf("rescheduled %+v", r)
	}

	// The grantor losing keys:sign stops new requests and retries, of the access key and
	// the grantor alike.
	pending := admitted(s.ed())
	pendingUser := admitted(s.user())
	h.setPermissions(h.userID, []string{"keys:read", "access:manage"})
	if res := h.submit(s.ed(), signSchedule()); res.Code != "perm.denied" {
		t.Fatalf("access key after the grantor lost keys:sign: %+v", res)
	}
	if res := h.submit(s.user(), signSchedule()); res.Code != "perm.denied" {
		t.Fatalf("user without keys:sign: %+v", res)
	}
	failedWith("access key's retry without keys:sign", failAndReschedule(pending), "perm.denied")
	failedWith("user's retry without keys:sign", failAndReschedule(pendingUser), "perm.denied")
	h.setPermissions(h.userID, state.DefaultPermissions())
	pending = admitted(s.ed())
	if r := failAndReschedule(admitted(s.ed())); r.Status != state.StatusScheduled {
		t.Fatalf("permission restored: %+v", r)
	}

	// Revoking the access key stops its retries.
	h.do(h.userRequest("DELETE", "/v1/access-keys/"+s.edAK.ID, nil), state.OpAccessRevoke, nil)
	failedWith("revoked access key's retry", failAndReschedule(pending), "auth.key_revoked")

	// An access key that expired since the request was made: its retry fails.
	pending = admitted(s.secp())
	h.stamp = max(h.stamp, expires.UnixMilli())
	failedWith("expired access key's retry", failAndReschedule(pending), "auth.key_revoked")

	// A request is not run later than the signature window after its submission.
	pending = admitted(s.user())
	h.stamp = pending.CreatedAt + state.SignatureWindowS*1000 + 1
	failedWith("retry after the signature window", failAndReschedule(pending), "ceremony.failed")
}

// TestReportsAreSignedByTheirMember: share reports count only when signed by the member
// they are about, with its own identity key, for their own kind.
func TestReportsAreSignedByTheirMember(t *testing.T) {
	h := newAuthHarness(t, false)
	keygen := h.do(h.userRequest("POST", "/v1/keys", []byte(`{"curve":"ed25519","threshold":2}`)), state.OpKeyCreate, keygenSchedule())
	r := h.fsm.Request(keygen.RequestID)
	stored := func(node string) *state.ShareStored {
		return &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: node, PublicKey: bytes.Repeat([]byte{9}, 32)}
	}
	forge := func(name string, apply func() state.Result, actor, object string) {
		t.Helper()
		n := h.auditCount()
		if res := apply(); res.Code != "auth.signature_invalid" {
			t.Fatalf("%s: %+v", name, res)
		}
		if k := h.fsm.Key(keygen.KeyID); k.Status != state.KeyGenerating || len(k.Reports) != 0 {
			t.Fatalf("%s: key %+v", name, k)
		}
		if a := h.lastAudit(); h.auditCount() != n+1 || a.Actor != actor || a.Object != object || a.Code != "auth.signature_invalid" {
			t.Fatalf("%s: audit %+v", name, a)
		}
	}
	forge("report in another member's name", func() state.Result { return h.reportSignedBy("n2", "n1", state.TypeShareStored, stored("n2")) }, "cluster", "node:n2")
	forge("own report about another member", func() state.Result { return h.report("n1", state.TypeShareStored, stored("n2")) }, "node:n1", "node:n2")
	forge("report of a non-member", func() state.Result { return h.reportSignedBy("n9", "n1", state.TypeShareStored, stored("n9")) }, "cluster", "node:n9")
	forge("signature for another kind", func() state.Result {
		body := mustJSON(stored("n1"))
		sig, _ := authn.SignNode(h.ids["n1"], authn.DomainReport, state.ReportMessage(state.TypeCeremonyFailed, body))
		return h.apply(state.TypeReport, &state.Report{Node: "n1", Kind: state.TypeShareStored, Body: body, Sig: sig})
	}, "cluster", "node:n1")
	forge("signature for another domain", func() state.Result {
		body := mustJSON(stored("n1"))
		sig, _ := authn.SignNode(h.ids["n1"], authn.DomainRequest, state.ReportMessage(state.TypeShareStored, body))
		return h.apply(state.TypeReport, &state.Report{Node: "n1", Kind: state.TypeShareStored, Body: body, Sig: sig})
	}, "cluster", "node:n1")
	forge("unsigned legacy report", func() state.Result { return h.apply(state.TypeShareStored, stored("n1")) }, "cluster", state.TypeShareStored)

	for _, m := range harnessMembers {
		if res := h.report(m, state.TypeShareStored, stored(m)); !res.OK() {
			t.Fatalf("%s: %+v", m, res)
		}
	}
	if k := h.fsm.Key(keygen.KeyID); k.Status != state.KeyActive || !bytes.Equal(k.PublicKey, bytes.Repeat([]byte{9}, 32)) {
		t.Fatalf("key %+v", k)
	}
}

func TestGrantBodyAndRoutes(t *testing.T) {
	tests := []struct {
		body string
		bad  bool
		exp  string
	}{
		{`{"scheme":"ed25519","public_key":"aa","permissions":["keys:read"]}`, false, ""},
		{`{"scheme":"ed25519","public_key":"aa","permissions":["keys:read"],"expires_at":null}`, false, ""},
		{`{"scheme":"ed25519","public_key":"aa","permissions":["keys:read"],"expires_at":"2030-01-01T00:00:00Z"}`, false, "2030-01-01T00:00:00Z"},
		{`{"scheme":"ed25519","public_key":"aa","permissions":["keys:read"],"expires_at":""}`, false, " "},
		{`{"scheme":"ed25519","public_key":"aa","permisions":["keys:read"]}`, true, ""},
	}
	for _, tt := range tests {
		g, bad := state.ParseGrantBody([]byte(tt.body))
		if (bad != "") != tt.bad {
			t.Errorf("%s: malformed=%q", tt.body, bad)
			continue
		}
		if !tt.bad && g.ExpiresAt != tt.exp {
			t.Errorf("%s: expires %q", tt.body, g.ExpiresAt)
		}
		// The FSM reads a grant from the signed request exactly as ParseGrantBody does.
		c := state.ParseRequest(&state.SignedForm{Method: "POST", Path: "/v1/access-keys", Body: []byte(tt.body)})
		if c.Op != state.OpAccessCreate || (c.Malformed != "") != tt.bad || (!tt.bad && c.Grant.ExpiresAt != tt.exp) {
			t.Errorf("%s: ParseRequest %+v", tt.body, c)
		}
	}
	// Access-key logs name the routes the FSM knows.
	h := newAuthHarness(t, false)
	fsmRoutes := state.Routes()
	for _, op := range []string{state.OpKeyList, state.OpKeyGet, state.OpKeySign, state.OpRequestGet, state.OpAccessLog,
		state.OpClusterGet, state.OpKeyCreate, state.OpAccessCreate, state.OpAccessList, state.OpAccessRevoke, state.OpAuditList} {
		r := h.s.opRoute(op)
		if !strings.Contains(r, " /v1/") {
			t.Errorf("opRoute(%s) = %q", op, r)
		}
		generic := r
		for _, p := range []string{"{key_id}", "{request_id}", "{id}"} {
			generic = strings.ReplaceAll(generic, p, "{}")
		}
		if fsmRoutes[op] != generic {
			t.Errorf("opRoute(%s) = %q, the FSM routes %q", op, r, fsmRoutes[op])
		}
	}
	for id, ok := range map[string]bool{"ak_" + strings.Repeat("0a", 16): true, "ak_" + strings.Repeat("0A", 16): false, "ak_1": false, "key_" + strings.Repeat("0", 32): false} {
		if wellFormedAccessKeyID(id) != ok {
			t.Errorf("wellFormedAccessKeyID(%q) != %v", id, ok)
		}
	}
}

func TestFindAccessKeyWaitsForTheEntry(t *testing.T) {
	h := newAuthHarness(t, false)
	h.s.akWaits = make(chan struct{}, 1)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	raw, _ := json.Marshal(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(pub), "permissions": []string{"keys:read"}})
	// The grant, accepted by the entry node and scheduled; it applies here only later
	// (it went through another node).
	sched := grantSchedule()
	grant := h.submitOf(h.mustCheck(h.userRequest("POST", "/v1/access-keys", raw), state.OpAccessCreate).signed, sched)
	// A request by the new access key reaches this node before the grant applied.
	r := sign(t, request("GET", "/v1/keys", nil), nil, sched.AccessKeyID, key)
	done := make(chan *exchange, 1)
	fail := make(chan *apiError, 1)
	go func() {
		x := &exchange{w: httptest.NewRecorder(), r: r, route: state.OpKeyList}
		if err := h.s.checkAuth(x); err != nil {
			fail <- err
			return
		}
		done <- x
	}()
	// Apply once the request waits for the entry: it holds the one wait slot.
	deadline := time.Now().Add(3 * time.Second)
	for len(h.s.akWaits) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never waited for the grant")
		}
		runtime.Gosched()
	}
	if res := h.apply(state.TypeSubmit, grant); !res.OK() || res.AccessKeyID != sched.AccessKeyID {
		t.Fatalf("grant: %+v", res)
	}
	select {
	case x := <-done:
		if x.caller.AccessKeyID != sched.AccessKeyID {
			t.Fatalf("caller %+v", x.caller)
		}
	case err := <-fail:
		t.Fatalf("refused while the grant applied: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("checkAuth did not return")
	}

	never := func() (authn.AccessKey, bool) { return authn.AccessKey{}, false }
	start := time.Now()
	if _, ok := h.s.findAccessKey(t.Context(), false, never); ok || time.Since(start) > 100*time.Millisecond {
		t.Fatal("an id that cannot exist was waited for")
	}
	// Waiting is bounded in time…
	start = time.Now()
	if _, ok := h.s.findAccessKey(t.Context(), true, never); ok || time.Since(start) < accessKeyCatchUp/2 || time.Since(start) > accessKeyCatchUp+2*time.Second {
		t.Fatalf("waited %v for a key that never appears", time.Since(start))
	}
	// …and in number: with every slot taken, a request is answered at once.
	h.s.akWaits <- struct{}{}
	start = time.Now()
	if _, ok := h.s.findAccessKey(t.Context(), true, never); ok || time.Since(start) > 100*time.Millisecond {
		t.Fatal("waited although every waiting slot was taken")
	}
	<-h.s.akWaits
}

// TestAdminKeyRotationCatchUp: once the cluster rotated the admin key (key-pair mode), a
// node that has not applied the rotation yet waits for it, bounded as for access keys, and
// does not refuse the new key's requests early; it never accepts a key its state does not
// hold, and once the rotation applied it refuses the old key.
func TestAdminKeyRotationCatchUp(t *testing.T) {
	h := newAuthHarness(t, true)
	h.s.akWaits = make(chan struct{}, 2)
	waiting := make(chan struct{}, 8)
	h.s.catchingUp = func() { waiting <- struct{}{} }
	waited := func() {
		t.Helper()
		select {
		case <-waiting:
		case <-time.After(guard):
			t.Fatal("the request never waited for this node's state to catch up")
		}
	}
	// adminAs is an admin request with the token and signature of the admin key priv.
	adminAs := func(priv ed25519.PrivateKey, method, target string, body []byte) *http.Request {
		t.Helper()
		iss, err := auth.NewEdDSAIssuer(priv)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := iss.AdminToken(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r := request(method, target, body)
		r.Header.Set("Authorization", "Bearer "+tok)
		return sign(t, r, body, "admin", priv)
	}
	// rotation is the entry of the admin key priv's rotation to pub, accepted by this node
	// (priv is its admin key now) and committed through another one: it applies here only
	// when the test applies it.
	rotation := func(priv ed25519.PrivateKey, pub ed25519.PublicKey) *state.Submit {
		t.Helper()
		body := mustJSON(map[string]string{"public_key": hex.EncodeToString(pub)})
		return h.submitOf(h.mustCheck(adminAs(priv, "PUT", "/v1/admin/admin-key", body), state.OpAdminKeyRotate).signed, nil)
	}
	rotate := func(sub *state.Submit, pub ed25519.PublicKey) {
		t.Helper()
		if res := h.apply(state.TypeSubmit, sub); !res.OK() {
			t.Fatalf("rotation: %+v", res)
		}
		if _, cur := h.fsm.AdminKeys(); !bytes.Equal(cur, pub) {
			t.Fatal("the rotation did not change the admin key")
		}
	}

	// The new key's request reaches this node before the rotation applied here: it waits,
	// and passes (early check and FSM) once the entry applies.
	newPub, newPriv, _ := ed25519.GenerateKey(rand.Reader)
	toNew := rotation(h.adminSK, newPub)
	done := h.serve(adminAs(newPriv, "GET", "/v1/admin/users", nil))
	waited()
	rotate(toNew, newPub)
	v := decode(t, answer(t, done), http.StatusOK)
	if users, _ := v["users"].([]any); len(users) != 1 || users[0].(map[string]any)["name"] != "alice" {
		t.Fatalf("users listed with the new admin key: %v", v)
	}

	// A user token minted with a newer admin key (by an admin SDK that learnt of the
	// rotation through another node) waits as well, and passes once the rotation applies.
	nextPub, nextPriv, _ := ed25519.GenerateKey(rand.Reader)
	toNext := rotation(newPriv, nextPub)
	nextIss, err := auth.NewEdDSAIssuer(nextPriv)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := nextIss.UserToken(h.userID, hex.EncodeToString(h.userKey.Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ur := request("GET", "/v1/keys", nil)
	ur.Header.Set("Authorization", "Bearer "+tok)
	done = h.serve(sign(t, ur, nil, "user:"+itoa(h.userID), h.userKey))
	waited()
	rotate(toNext, nextPub)
	decode(t, answer(t, done), http.StatusOK)
	newPriv = nextPriv

	// The old key, after the rotation applied, and a key the state never held are refused
	// within the bound, also when the admin key changes again while they wait (they are
	// verified again against it).
	type verdict struct {
		err  *apiError
		took time.Duration
	}
	checkLater := func(r *http.Request) <-chan verdict {
		out := make(chan verdict, 1)
		go func() {
			start := time.Now()
			_, err := h.check(r, state.OpUserList)
			out <- verdict{err, time.Since(start)}
		}()
		return out
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	thirdPub, _, _ := ed25519.GenerateKey(rand.Reader)
	toThird := rotation(newPriv, thirdPub)
	old := checkLater(adminAs(h.adminSK, "GET", "/v1/admin/users", nil))
	never := checkLater(adminAs(stranger, "GET", "/v1/admin/users", nil))
	waited()
	waited()
	rotate(toThird, thirdPub)
	for name, ch := range map[string]<-chan verdict{"the old key": old, "a key the state never held": never} {
		select {
		case v := <-ch:
			if v.err == nil || v.err.Code != api.CodeAuthTokenInvalid {
				t.Fatalf("%s: %v, want %s", name, v.err, api.CodeAuthTokenInvalid)
			}
			if v.took < accessKeyCatchUp/2 || v.took > accessKeyCatchUp+2*time.Second {
				t.Fatalf("%s answered after %v, want the catch-up bound %v", name, v.took, accessKeyCatchUp)
			}
		case <-time.After(guard):
			t.Fatalf("%s: checkAuth did not return", name)
		}
	}

	// With every waiting slot taken, a request is answered at once.
	h.s.akWaits <- struct{}{}
	h.s.akWaits <- struct{}{}
	start := time.Now()
	if _, err := h.check(adminAs(stranger, "GET", "/v1/admin/users", nil), state.OpUserList); err == nil || err.Code != api.CodeAuthTokenInvalid || time.Since(start) > accessKeyCatchUp/2 {
		t.Fatalf("with no free slot: %v after %v", err, time.Since(start))
	}
	if len(waiting) != 0 {
		t.Fatal("waited although every waiting slot was taken")
	}
	<-h.s.akWaits
	<-h.s.akWaits
}

// FuzzCheckAuth feeds arbitrary credential headers and bodies to the authentication
// pipeline (token, RFC 9421 and X-Auth-Token parsing, grant bodies, the FSM's request
// parser): it must answer an API error or a caller, never panic, and never authenticate
// garbage.
func FuzzCheckAuth(f *testing.F) {
	f.Add("GET", "/v1/keys", "", `sig1=("@method" "@path" "@query");created=1;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="ak_00000000000000000000000000000000";alg="ed25519"`, "sig1=:AAAA:", "", []byte(nil))
	f.Add("POST", "/v1/access-keys", "Bearer x.y.z", "", "", "", []byte(`{"scheme":"ed25519"}`))
	f.Add("GET", "/v1/keys", "", "", "", "02"+strings.Repeat("11", 32)+"|bsm|2026-01-01T00:00:00.000Z|/v1/keys|AAAA", []byte(nil))
	f.Add("POST", "/v1/keys/k/sign", "Bearer a.b.c", `sig1=("@method");keyid="user:1"`, "sig1=:AAAA:", "", []byte(`{"message":"00"}`))
	h := newAuthHarness(f, false)
	f.Fuzz(func(t *testing.T, method, target, authz, sigIn, sigVal, xauth string, body []byte) {
		if method == "" || !strings.HasPrefix(target, "/") || strings.ContainsAny(method+target, " \r\n\t") {
			return
		}
		r, err := http.NewRequest(method, "http://node"+target, bytes.NewReader(body))
		if err != nil {
			return
		}
		r.RequestURI = target
		for k, v := range map[string]string{"Authorization": authz, "Signature-Input": sigIn, "Signature": sigVal, "X-Auth-Token": xauth} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		x := &exchange{w: httptest.NewRecorder(), r: r, route: state.OpAccessCreate}
		if aerr := h.s.checkAuth(x); aerr == nil {
			t.Fatalf("garbage authenticated as %+v", x.caller)
		}
		_, _ = state.ParseGrantBody(body)
		path, query, _ := strings.Cut(target, "?")
		_ = state.ParseRequest(&state.SignedForm{Method: method, Path: path, RawQuery: query, Body: body})
	})
}
