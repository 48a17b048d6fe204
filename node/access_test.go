package node

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
)

// authHarness is a node without raft, p2p or keystore: enough for the HTTP
// authentication pipeline and the ceremony re-verification, over a real FSM whose entries
// the test applies itself (as the leader would).
type authHarness struct {
	t       testing.TB
	n       *Node
	iss     *auth.Issuer
	adminSK ed25519.PrivateKey // key-pair mode only
	index   uint64
	stamp   int64

	userID  uint64
	userKey ed25519.PrivateKey
	keyID   string // an active secp256k1 key of the user
}

func newAuthHarness(t testing.TB, keyPair bool) *authHarness {
	t.Helper()
	h := &authHarness{t: t, stamp: time.Now().UnixMilli()}
	cfg := &config.Config{}
	cfg.API.MaxBody = 1 << 20
	cfg.Cluster.Name = "test"
	vc := auth.VerifierConfig{Audience: "test"}
	if keyPair {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		h.adminSK = priv
		cfg.Admin.PublicKey = hex.EncodeToString(pub)
		vc.AdminPublicKey = pub
		iss, err := auth.NewEdDSAIssuer(priv)
		if err != nil {
			t.Fatal(err)
		}
		h.iss = iss
	} else {
		key := bytes.Repeat([]byte{7}, 32)
		vc.HMACKey = key
		iss, err := auth.NewHS256Issuer(key)
		if err != nil {
			t.Fatal(err)
		}
		h.iss = iss
	}
	tv, err := auth.NewTokenVerifier(vc)
	if err != nil {
		t.Fatal(err)
	}
	h.n = &Node{cfg: cfg, tokens: tv, adminPub: vc.AdminPublicKey, fsm: state.NewFSM(sigVerifier{}, nil)}
	h.apply(state.TypeClusterInit, &state.ClusterInit{Name: "test", Threshold: 2, Members: []state.Member{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}}})
	res := h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerAdmin}, Op: state.OpUserCreate, UserName: "alice"})
	h.userID = res.UserID
	_, h.userKey, _ = ed25519.GenerateKey(rand.Reader)
	h.keyID = h.activeKey()
	return h
}

func (h *authHarness) apply(typ string, payload any) state.Result {
	h.t.Helper()
	h.index++
	h.stamp++
	b, err := state.Encode(typ, h.stamp, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	res, ok := h.n.fsm.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}).(state.Result)
	if !ok {
		h.t.Fatal("no result")
	}
	return res
}

func (h *authHarness) activeKey() string {
	h.t.Helper()
	res := h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpKeyCreate,
		Curve: state.CurveSecp256k1, Threshold: 2, Schedule: &state.Schedule{RequestID: newID("req_"), KeyID: newID("key_"),
			Committee: []string{"n1", "n2", "n3"}, Nonce: randomBytes(32), ChainCode: randomBytes(32)}})
	if !res.OK() {
		h.t.Fatalf("keygen: %+v", res)
	}
	r := h.n.fsm.Request(res.RequestID)
	for _, m := range []string{"n1", "n2", "n3"} {
		h.apply(state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: m, PublicKey: []byte{2, 9}})
	}
	return res.KeyID
}

func (h *authHarness) userToken() string {
	tok, err := h.iss.UserToken(h.userID, hex.EncodeToString(h.userKey.Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// request builds an HTTP request as a client would send it.
func request(method, target string, body []byte) *http.Request {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	if len(body) > 0 {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

func sign(t testing.TB, r *http.Request, body []byte, keyID string, key ed25519.PrivateKey) *http.Request {
	t.Helper()
	if err := (auth.Signer{KeyID: keyID, Key: key}).Sign(r, body, time.Now()); err != nil {
		t.Fatal(err)
	}
	return r
}

// check runs the node's authentication on r.
func (h *authHarness) check(r *http.Request, route string) (*exchange, *apiError) {
	x := &exchange{w: httptest.NewRecorder(), r: r, route: route}
	return x, h.n.checkAuth(x)
}

// commit applies what the handler would commit for x (the leader's part included).
func (h *authHarness) commit(x *exchange, c *state.Call) state.Result {
	h.t.Helper()
	c.Caller = x.caller
	if c.Signed == nil {
		c.Signed = x.signed
	}
	return h.apply(state.TypeCall, c)
}

// grant creates an access key through the real pipeline: the user's signed request,
// authenticated and committed as the handler does.
func (h *authHarness) grant(body map[string]any) *state.AccessKey {
	h.t.Helper()
	raw, _ := json.Marshal(body)
	r := request("POST", "/v1/access-keys", raw)
	r.Header.Set("Authorization", "Bearer "+h.userToken())
	sign(h.t, r, raw, auth.UserKeyID(h.userID), h.userKey)
	x, err := h.check(r, state.OpAccessCreate)
	if err != nil {
		h.t.Fatalf("grant request: %v", err)
	}
	fields, bad := grantFromBody(x.body)
	if bad != "" {
		h.t.Fatal(bad)
	}
	res := h.commit(x, &state.Call{Op: state.OpAccessCreate, Grant: fields, Schedule: &state.Schedule{AccessKeyID: newID("ak_")}})
	if !res.OK() {
		h.t.Fatalf("grant: %+v", res)
	}
	return h.n.fsm.AccessKey(res.AccessKeyID)
}

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

	xauth := func(t *testing.T, r *http.Request, priv *btcec.PrivateKey, path string, body []byte, brc77 bool) *http.Request {
		var tok string
		var err error
		if brc77 {
			tok, err = auth.SignXAuthTokenBRC77(priv, path, body, time.Now())
		} else {
			tok, err = auth.SignXAuthTokenBSM(priv, path, body, time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("X-Auth-Token", tok)
		return r
	}
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
			if x.signed.ContentDigest == "" || !bytes.Equal(x.signed.Body, body) {
				t.Fatalf("signed form %+v", x.signed)
			}
		}},
		{"unknown access key", func(t *testing.T) *http.Request {
			return sign(t, request("GET", "/v1/keys", nil), nil, "ak_"+strings.Repeat("0", 32), edKey)
		}, "auth.token_invalid", nil},
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
			r.Body = httptest.NewRequest("POST", signPath, bytes.NewReader(other)).Body
			r.ContentLength = int64(len(other))
			return r
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token bsm GET", func(t *testing.T) *http.Request {
			return xauth(t, request("GET", "/v1/keys?after=k", nil), secpKey, "/v1/keys?after=k", nil, false)
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
			return xauth(t, request("POST", signPath, body), secpKey, signPath, body, true)
		}, "", nil},
		{"X-Auth-Token with a matching Content-Digest", func(t *testing.T) *http.Request {
			r := xauth(t, request("POST", signPath, body), secpKey, signPath, body, false)
			r.Header.Set("Content-Digest", auth.ContentDigest(body))
			return r
		}, "", nil},
		{"X-Auth-Token with a wrong Content-Digest", func(t *testing.T) *http.Request {
			r := xauth(t, request("POST", signPath, body), secpKey, signPath, body, false)
			r.Header.Set("Content-Digest", auth.ContentDigest([]byte("x")))
			return r
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token on DELETE", func(t *testing.T) *http.Request {
			return xauth(t, request("DELETE", "/v1/access-keys/"+secpAK.ID, nil), secpKey, "/v1/access-keys/"+secpAK.ID, nil, false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token for another path", func(t *testing.T) *http.Request {
			return xauth(t, request("GET", "/v1/keys/"+h.keyID, nil), secpKey, "/v1/keys", nil, false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token for another body", func(t *testing.T) *http.Request {
			return xauth(t, request("POST", signPath, body), secpKey, signPath, []byte(`{}`), false)
		}, "auth.signature_invalid", nil},
		{"X-Auth-Token of an unknown key", func(t *testing.T) *http.Request {
			return xauth(t, request("GET", "/v1/keys", nil), strangerSecp, "/v1/keys", nil, false)
		}, "auth.token_invalid", nil},
		{"X-Auth-Token mixed with a token", func(t *testing.T) *http.Request {
			r := xauth(t, request("GET", "/v1/keys", nil), secpKey, "/v1/keys", nil, false)
			r.Header.Set("Authorization", "Bearer "+h.userToken())
			return r
		}, "auth.missing", nil},
		{"X-Auth-Token twice", func(t *testing.T) *http.Request {
			r := xauth(t, request("GET", "/v1/keys", nil), secpKey, "/v1/keys", nil, false)
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
		})
	}
}

func TestAccessKeyLifecycleThroughThePipeline(t *testing.T) {
	h := newAuthHarness(t, false)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	other := h.activeKey()
	ak := h.grant(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(edPub), "permissions": []string{"keys:read"},
		"key_ids": []string{h.keyID}, "label": "reader"})
	use := func(op, target string) (*exchange, state.Result) {
		x, err := h.check(sign(t, request("GET", target, nil), nil, ak.ID, edKey), op)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		return x, h.commit(x, &state.Call{Op: op, KeyID: strings.TrimPrefix(target, "/v1/keys/")})
	}
	if _, res := use(state.OpKeyGet, "/v1/keys/"+h.keyID); !res.OK() {
		t.Fatalf("in scope: %+v", res)
	}
	if _, res := use(state.OpKeyGet, "/v1/keys/"+other); res.Code != "key.not_found" {
		t.Fatalf("out of scope: %+v", res)
	}
	x, res := use(state.OpKeyList, "/v1/keys")
	if !res.OK() {
		t.Fatal(res)
	}
	owner, only, aerr := h.n.keyScope(x)
	if aerr != nil || owner != h.userID || len(only) != 1 {
		t.Fatalf("scope %d %v %v", owner, only, aerr)
	}
	if keys := h.n.fsm.KeysIn(owner, only, "", 100); len(keys) != 1 || keys[0].ID != h.keyID {
		t.Fatalf("listed %d keys", len(keys))
	}
	// A replayed request is refused by the FSM (nonce), then revocation applies at once.
	replay := sign(t, request("GET", "/v1/keys", nil), nil, ak.ID, edKey)
	rx, _ := h.check(replay, state.OpKeyList)
	h.commit(rx, &state.Call{Op: state.OpKeyList})
	if res := h.commit(rx, &state.Call{Op: state.OpKeyList}); res.Code != "auth.nonce_reused" {
		t.Fatalf("replay: %+v", res)
	}
	h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpAccessRevoke, AccessKeyID: ak.ID})
	if _, res := use(state.OpKeyList, "/v1/keys"); res.Code != "auth.key_revoked" {
		t.Fatalf("after revocation: %+v", res)
	}
	entries, _ := h.n.fsm.AccessLog(ak.ID, 0, 100)
	if len(entries) != 6 || entries[1].Code != "key.not_found" || entries[5].Code != "auth.key_revoked" {
		t.Fatalf("log %+v", entries)
	}
	v := accessKeyView(h.n.fsm.AccessKey(ak.ID))
	if v["revoked_at"] == nil || v["expires_at"] != nil || v["label"] != "reader" || len(v["key_ids"].([]string)) != 1 {
		t.Fatalf("view %v", v)
	}
}

func TestAdminKeyPairMode(t *testing.T) {
	h := newAuthHarness(t, true)
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
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"role": "admin", "iat": time.Now().Unix(), "exp": time.Now().Unix() + 60}).SignedString(bytes.Repeat([]byte{7}, 32))
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
			x, err := h.check(tt.req(t), state.OpUserList)
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
			}
		})
	}
	// The jti and the signature nonce are each accepted once, cluster-wide.
	x, err := h.check(adminReq(t, tok(), h.adminSK, "admin"), state.OpUserList)
	if err != nil {
		t.Fatal(err)
	}
	if res := h.commit(x, &state.Call{Op: state.OpUserList}); !res.OK() {
		t.Fatal(res)
	}
	if res := h.commit(x, &state.Call{Op: state.OpUserList}); res.Code != "auth.nonce_reused" {
		t.Fatalf("replayed admin request: %+v", res)
	}
	resigned := x.r.Clone(x.r.Context())
	sign(t, resigned, nil, "admin", h.adminSK)
	y, err := h.check(resigned, state.OpUserList)
	if err != nil {
		t.Fatal(err)
	}
	if res := h.commit(y, &state.Call{Op: state.OpUserList}); res.Code != "auth.nonce_reused" {
		t.Fatalf("the same token with a fresh signature: %+v", res)
	}
}

// TestVerifyScheduledAccessKey is DESIGN.md invariant 2 for access keys: a committee
// member re-verifies a sign request made by an access key — and the access key's grant
// — from the replicated log, and refuses whatever the caller or the grantor did not sign.
func TestVerifyScheduledAccessKey(t *testing.T) {
	h := newAuthHarness(t, false)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	secpKey, _ := btcec.NewPrivateKey()
	edAK := h.grant(map[string]any{"scheme": "ed25519", "public_key": hex.EncodeToString(edPub), "permissions": []string{"keys:read", "keys:sign"}, "key_ids": []string{h.keyID}})
	secpAK := h.grant(map[string]any{"scheme": "secp256k1", "public_key": hex.EncodeToString(secpKey.PubKey().SerializeCompressed()), "permissions": []string{"keys:sign"},
		"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	signPath := "/v1/keys/" + h.keyID + "/sign"
	digest := strings.Repeat("ab", 32)
	body := []byte(`{"message":"` + digest + `","derivation_path":"m/0/7"}`)

	submit := func(t *testing.T, r *http.Request) *state.Request {
		t.Helper()
		x, err := h.check(r, state.OpKeySign)
		if err != nil {
			t.Fatal(err)
		}
		res := h.commit(x, &state.Call{Op: state.OpKeySign, KeyID: h.keyID, MessageHex: digest, Path: "m/0/7",
			Schedule: &state.Schedule{RequestID: newID("req_"), Committee: []string{"n1", "n2"}, Nonce: randomBytes(32)}})
		if !res.OK() {
			t.Fatalf("sign: %+v", res)
		}
		return h.n.fsm.Request(res.RequestID)
	}
	edReq := submit(t, sign(t, request("POST", signPath, body), body, edAK.ID, edKey))
	tok, _ := auth.SignXAuthTokenBRC77(secpKey, signPath, body, time.Now())
	xr := request("POST", signPath, body)
	xr.Header.Set("X-Auth-Token", tok)
	secpReq := submit(t, xr)
	key := h.n.fsm.Key(h.keyID)

	if err := h.n.verifyScheduled(edReq, key); err != nil {
		t.Fatalf("honest ed25519 access-key request refused: %v", err)
	}
	if err := h.n.verifyScheduled(secpReq, key); err != nil {
		t.Fatalf("honest X-Auth-Token request refused: %v", err)
	}
	tests := []struct {
		name   string
		req    *state.Request
		tamper func(r *state.Request)
	}{
		{"swapped digest", edReq, func(r *state.Request) { r.Message[0] ^= 0xff }},
		{"swapped derivation path", secpReq, func(r *state.Request) { r.Path = "m/0/8" }},
		{"corrupted request signature", edReq, func(r *state.Request) { r.Signed.Signature = corruptForTest(r.Signed.Signature) }},
		{"corrupted X-Auth-Token", secpReq, func(r *state.Request) {
			i := strings.LastIndexByte(r.Signed.XAuthToken, '|')
			r.Signed.XAuthToken = r.Signed.XAuthToken[:i+1] + corruptForTest(r.Signed.XAuthToken[i+1:])
		}},
		{"X-Auth-Token judged at another time", secpReq, func(r *state.Request) { r.CreatedAt += 10 * 60 * 1000 }},
		{"attributed to another access key", edReq, func(r *state.Request) { r.AccessKeyID = secpAK.ID }},
		{"attributed to nobody", secpReq, func(r *state.Request) { r.AccessKeyID = "" }},
		{"retried after expiry", secpReq, func(r *state.Request) { r.ScheduledAt = time.Now().Add(2 * time.Hour).UnixMilli() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.n.fsm.Request(tt.req.ID)
			tt.tamper(r)
			err := h.n.verifyScheduled(r, key)
			if err == nil {
				t.Fatal("a request the caller did not sign was accepted")
			}
			t.Log(err)
		})
	}

	// A grant the grantor never signed (a leader making up an access key) is refused.
	forgedPub, forgedKey, _ := ed25519.GenerateKey(rand.Reader)
	res := h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpAccessCreate,
		Grant:    &state.GrantFields{Scheme: "ed25519", PublicKey: hex.EncodeToString(forgedPub), Permissions: []string{"keys:sign"}},
		Schedule: &state.Schedule{AccessKeyID: newID("ak_")}})
	if !res.OK() {
		t.Fatal(res)
	}
	forgedReq := submit(t, sign(t, request("POST", signPath, body), body, res.AccessKeyID, forgedKey))
	if err := h.n.verifyScheduled(forgedReq, key); err == nil || !strings.Contains(err.Error(), "grant") {
		t.Fatalf("access key without a signed grant: %v", err)
	}
	// A grant whose stored fields differ from what the grantor signed is refused.
	t.Run("widened grant", func(t *testing.T) {
		ak := h.n.fsm.AccessKey(edAK.ID)
		ak.KeyIDs = nil
		if err := h.n.verifyGrant(ak); err == nil {
			t.Fatal("a grant widened after signing verified")
		}
	})

	// The grantor losing keys:sign, or revoking the key, stops the ceremony.
	h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerAdmin}, Op: state.OpUserPermissions, TargetUserID: h.userID, Permissions: []string{"keys:read", "access:manage"}})
	if err := h.n.verifyScheduled(h.n.fsm.Request(edReq.ID), key); err == nil {
		t.Fatal("signed although the grantor lost keys:sign")
	}
	h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerAdmin}, Op: state.OpUserPermissions, TargetUserID: h.userID, Permissions: state.DefaultPermissions()})
	if err := h.n.verifyScheduled(h.n.fsm.Request(edReq.ID), key); err != nil {
		t.Fatalf("permission restored: %v", err)
	}
	h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpAccessRevoke, AccessKeyID: edAK.ID})
	if err := h.n.verifyScheduled(h.n.fsm.Request(edReq.ID), key); err == nil {
		t.Fatal("signed with a revoked access key")
	}
}

func corruptForTest(s string) string {
	mid := len(s) / 2
	ch := byte('A')
	if s[mid] == 'A' {
		ch = 'B'
	}
	return s[:mid] + string(ch) + s[mid+1:]
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
		g, bad := grantFromBody([]byte(tt.body))
		if (bad != "") != tt.bad {
			t.Errorf("%s: malformed=%q", tt.body, bad)
			continue
		}
		if !tt.bad && g.ExpiresAt != tt.exp {
			t.Errorf("%s: expires %q", tt.body, g.ExpiresAt)
		}
	}
	for _, op := range []string{state.OpKeyList, state.OpKeyGet, state.OpKeySign, state.OpRequestGet, state.OpAccessLog} {
		if r := opRoute(op); !strings.Contains(r, " /v1/") {
			t.Errorf("opRoute(%s) = %q", op, r)
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
	h.n.akWaits = make(chan struct{}, 1)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	id := newID("ak_")
	done := make(chan *state.AccessKey, 1)
	go func() {
		done <- h.n.findAccessKey(t.Context(), true, func() *state.AccessKey { return h.n.fsm.AccessKey(id) })
	}()
	time.Sleep(50 * time.Millisecond)
	h.apply(state.TypeCall, &state.Call{Caller: state.Caller{Kind: state.CallerUser, UserID: h.userID}, Op: state.OpAccessCreate,
		Grant:    &state.GrantFields{Scheme: "ed25519", PublicKey: hex.EncodeToString(pub), Permissions: []string{"keys:read"}},
		Schedule: &state.Schedule{AccessKeyID: id}})
	select {
	case ak := <-done:
		if ak == nil || ak.ID != id {
			t.Fatalf("found %+v", ak)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("findAccessKey did not return")
	}
	start := time.Now()
	if ak := h.n.findAccessKey(t.Context(), false, func() *state.AccessKey { return nil }); ak != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatal("an id that cannot exist was waited for")
	}
}

func TestVerifyScheduledUser(t *testing.T) {
	h := newAuthHarness(t, false)
	signPath := "/v1/keys/" + h.keyID + "/sign"
	digest := strings.Repeat("cd", 32)
	body := []byte(`{"message":"` + digest + `"}`)
	r := request("POST", signPath, body)
	r.Header.Set("Authorization", "Bearer "+h.userToken())
	sign(t, r, body, auth.UserKeyID(h.userID), h.userKey)
	x, err := h.check(r, state.OpKeySign)
	if err != nil {
		t.Fatal(err)
	}
	res := h.commit(x, &state.Call{Op: state.OpKeySign, KeyID: h.keyID, MessageHex: digest,
		Schedule: &state.Schedule{RequestID: newID("req_"), Committee: []string{"n1", "n3"}, Nonce: randomBytes(32)}})
	if !res.OK() {
		t.Fatal(res)
	}
	key := h.n.fsm.Key(h.keyID)
	req := h.n.fsm.Request(res.RequestID)
	if err := h.n.verifyScheduled(req, key); err != nil {
		t.Fatalf("honest user request refused: %v", err)
	}
	for name, tamper := range map[string]func(*state.Request){
		"swapped digest":              func(r *state.Request) { r.Message[31] ^= 1 },
		"judged long after":           func(r *state.Request) { r.CreatedAt += 10 * 60 * 1000 },
		"claimed by an access key":    func(r *state.Request) { r.AccessKeyID = newID("ak_") },
		"corrupted request signature": func(r *state.Request) { r.Signed.Signature = corruptForTest(r.Signed.Signature) },
	} {
		r := h.n.fsm.Request(req.ID)
		tamper(r)
		if err := h.n.verifyScheduled(r, key); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzCheckAuth feeds arbitrary credential headers and bodies to the authentication
// pipeline (token, RFC 9421 and X-Auth-Token parsing, grant bodies): it must answer an
// API error or a caller, never panic, and never authenticate garbage.
func FuzzCheckAuth(f *testing.F) {
	f.Add("GET", "/v1/keys", "", `sig1=("@method" "@path" "@query");created=1;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="ak_00000000000000000000000000000000";alg="ed25519"`, "sig1=:AAAA:", "", []byte(nil))
	f.Add("POST", "/v1/access-keys", "Bearer x.y.z", "", "", "", []byte(`{"scheme":"ed25519"}`))
	f.Add("GET", "/v1/keys", "", "", "", "02"+strings.Repeat("11", 32)+"|bsm|2026-01-01T00:00:00.000Z|/v1/keys|AAAA", []byte(nil))
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
		if aerr := h.n.checkAuth(x); aerr == nil {
			t.Fatalf("garbage authenticated as %+v", x.caller)
		}
		_, _ = grantFromBody(body)
	})
}
