package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
)

func TestEd25519KeygenAndSign(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	ctx := context.Background()

	k := createKey(t, u.c, CurveEd25519, "agent")
	if k.Curve != CurveEd25519 || k.Threshold != 2 || k.Parties != cl.N() || k.Label != "agent" || k.Status != api.KeyActive ||
		len(k.PublicKey) != 64 || k.ChainCode != "" || time.Since(k.CreatedAt).Abs() > time.Minute {
		t.Fatalf("key %+v", k)
	}
	// Any node serves the same key.
	got, err := u.client(t, 1).GetKey(ctx, k.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyID != k.KeyID || got.PublicKey != k.PublicKey || !got.CreatedAt.Equal(k.CreatedAt) || got.Status != k.Status {
		t.Fatalf("GetKey on node 2: %+v, keygen answered %+v", got, k)
	}
	pub, _ := hex.DecodeString(k.PublicKey)

	for _, msg := range [][]byte{[]byte("hello"), {}} {
		r := signed(t, u.c, k.KeyID, msg, "")
		if r.Kind != api.KindSign || r.KeyID != k.KeyID || r.Message != hex.EncodeToString(msg) || r.Signature == nil ||
			r.Signature.RecoveryID != nil || r.Signature.R != "" || r.Error != nil {
			t.Fatalf("sign %q: %+v", msg, r)
		}
		sig, _ := hex.DecodeString(r.Signature.Signature)
		if !ed25519.Verify(pub, msg, sig) {
			t.Fatalf("signature over %q does not verify", msg)
		}
		// The request object reads the same from another node.
		again, err := u.client(t, 2).GetRequest(ctx, r.RequestID)
		if err != nil || again.Status != StatusSigned || again.Signature == nil || again.Signature.Signature != r.Signature.Signature || again.Message != r.Message {
			t.Fatalf("GetRequest: %+v %v", again, err)
		}
		// WaitRequest on a final request returns at once.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		w, err := u.c.WaitRequest(wctx, r.RequestID, time.Hour)
		cancel()
		if err != nil || w.RequestID != r.RequestID {
			t.Fatalf("WaitRequest: %+v %v", w, err)
		}
	}

	// A derivation path on an Ed25519 key is a field error.
	_, err = u.c.Sign(ctx, k.KeyID, []byte("x"), "m/0", "")
	wantAPIError(t, err, api.CodeRequestMalformed)
}

// signed signs and returns the request once final, which must be signed.
func signed(t *testing.T, c *Client, keyID string, msg []byte, path string) *Request {
	t.Helper()
	r, err := c.Sign(context.Background(), keyID, msg, path, "")
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	r = settle(t, c, r)
	if r.Status != StatusSigned {
		t.Fatalf("sign ended %+v", r)
	}
	return r
}

func TestECDSAKeygenAndSign(t *testing.T) {
	f := ecdsaKey(t)
	ctx := context.Background()
	k := f.key
	if k.Curve != CurveSecp256k1 || k.Status != api.KeyActive || len(k.PublicKey) != 66 || len(k.ChainCode) != 64 || k.Label != "treasury" {
		t.Fatalf("key %+v", k)
	}
	if f.accepted != nil {
		// The keygen answered 202 with the request to poll; sent again with its
		// idempotency key it answers the same request (or, once done, the key).
		if f.accepted.Kind != api.KindKeygen || f.accepted.KeyID != k.KeyID || f.accepted.Message != "" || Final(f.accepted.Status) {
			t.Fatalf("202 answer %+v", f.accepted)
		}
		if (f.replayed == nil || f.replayed.RequestID != f.accepted.RequestID) && (f.replayedKey == nil || f.replayedKey.KeyID != k.KeyID) {
			t.Fatalf("idempotent replay answered %+v %+v", f.replayed, f.replayedKey)
		}
	} else {
		t.Log("the keygen answered 201 within the wait: the 202 path was not exercised")
	}
	got, err := f.owner.c.GetKey(ctx, k.KeyID)
	if err != nil || got.ChainCode != k.ChainCode || got.PublicKey != k.PublicKey {
		t.Fatalf("GetKey: %+v %v", got, err)
	}

	digest := sha256.Sum256([]byte("pay 1 BTC"))
	r := signed(t, f.owner.c, k.KeyID, digest[:], "")
	if r.Message != hex.EncodeToString(digest[:]) || r.DerivationPath != "" || r.SessionID == "" {
		t.Fatalf("sign %+v", r)
	}
	verifyECDSA(t, k.PublicKey, digest[:], r.Signature)

	r = signed(t, f.owner.client(t, 2), k.KeyID, digest[:], "m/0/7")
	if r.DerivationPath != "m/0/7" {
		t.Fatalf("sign with path %+v", r)
	}
	verifyECDSA(t, childKey(t, k.PublicKey, k.ChainCode, 0, 7), digest[:], r.Signature)

	// secp256k1 signs 32-byte digests only.
	_, err = f.owner.c.Sign(ctx, k.KeyID, digest[:31], "", "")
	wantAPIError(t, err, api.CodeRequestMalformed)
}

// verifyECDSA checks r, s (low-S), DER and the recovery id against the public key.
func verifyECDSA(t *testing.T, pubHex string, digest []byte, sig *Signature) {
	t.Helper()
	if sig == nil || sig.RecoveryID == nil || sig.Signature != "" {
		t.Fatalf("signature %+v", sig)
	}
	pub, _ := hex.DecodeString(pubHex)
	pk, err := btcec.ParsePubKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := hex.DecodeString(sig.DER)
	parsed, err := btcecdsa.ParseDERSignature(der)
	if err != nil || !parsed.Verify(digest, pk) {
		t.Fatalf("DER signature does not verify: %v", err)
	}
	r, _ := hex.DecodeString(sig.R)
	s, _ := hex.DecodeString(sig.S)
	var sc btcec.ModNScalar
	sc.SetByteSlice(s)
	if len(r) != 32 || len(s) != 32 || sc.IsOverHalfOrder() {
		t.Fatalf("r/s malformed or high-S: %+v", sig)
	}
	compact := append([]byte{byte(27 + 4 + *sig.RecoveryID)}, append(r, s...)...)
	rec, _, err := btcecdsa.RecoverCompact(compact, digest)
	if err != nil || !rec.IsEqual(pk) {
		t.Fatal("the recovery id does not recover the key")
	}
}

// childKey derives a non-hardened BIP32 child with btcutil's hdkeychain.
func childKey(t *testing.T, pubHex, chainCodeHex string, path ...uint32) string {
	t.Helper()
	pub, _ := hex.DecodeString(pubHex)
	cc, _ := hex.DecodeString(chainCodeHex)
	k := hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPublicKeyID[:], pub, cc, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, i := range path {
		var err error
		if k, err = k.Derive(i); err != nil {
			t.Fatal(err)
		}
	}
	pk, err := k.ECPubKey()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(pk.SerializeCompressed())
}

func TestListKeysAndCluster(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	ctx := context.Background()
	keys, err := u.c.ListKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("a new user's keys: %+v %v", keys, err)
	}
	a := createKey(t, u.c, CurveEd25519, "a")
	b := createKey(t, u.client(t, 1), CurveEd25519, "b")
	keys, err = u.c.ListKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListKeys: %+v %v", keys, err)
	}
	ids := []string{keys[0].KeyID, keys[1].KeyID}
	if !slices.Contains(ids, a.KeyID) || !slices.Contains(ids, b.KeyID) {
		t.Fatalf("ListKeys %v, made %s and %s", ids, a.KeyID, b.KeyID)
	}
	// Pages of one, through the "next" cursor.
	var paged []string
	err = u.c.ListAll(ctx, "/v1/keys", 1, func(data json.RawMessage) (json.RawMessage, error) {
		var page api.KeyList
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, err
		}
		for _, k := range page.Keys {
			paged = append(paged, k.KeyID)
		}
		next, _ := json.Marshal(page.Next)
		return next, nil
	})
	if err != nil || !slices.Equal(paged, ids) {
		t.Fatalf("paged %v %v, want %v", paged, err, ids)
	}
	// Another user sees none of them.
	other := newUser(t)
	if keys, err := other.c.ListKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("other user's keys: %+v %v", keys, err)
	}
	_, err = other.c.GetKey(ctx, a.KeyID)
	wantAPIError(t, err, api.CodeKeyNotFound)

	c, err := u.c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != cl.Name() || c.Threshold != cl.Threshold() || c.Parties != cl.N() || len(c.Members) != cl.N() {
		t.Fatalf("cluster %+v", c)
	}
	var leaders []string
	for _, m := range c.Members {
		if !slices.Contains(cl.URLs(), m.API) || m.PeerID == "" {
			t.Fatalf("member %+v", m)
		}
		if m.Leader {
			leaders = append(leaders, m.ID)
		}
	}
	if len(leaders) != 1 || leaders[0] != c.Leader {
		t.Fatalf("leader %q, members marked leader %v", c.Leader, leaders)
	}
}

func TestAPIErrors(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	ctx := context.Background()

	// 404s, the API's own and the router's.
	_, err := u.c.GetKey(ctx, "key_nope")
	if ae := wantAPIError(t, err, api.CodeKeyNotFound); ae.Detail != "no such key" || !strings.HasPrefix(ae.RequestID, "rq_") {
		t.Fatalf("%#v", ae)
	}
	// Ids are path-escaped: "a/b" is one (unknown) key, not another route.
	_, err = u.c.GetKey(ctx, "a/b")
	wantAPIError(t, err, api.CodeKeyNotFound)
	_, err = u.c.GetRequest(ctx, "req_nope")
	wantAPIError(t, err, api.CodeRequestNotFound)
	_, err = u.c.Sign(ctx, "key_nope", make([]byte, 32), "", "")
	wantAPIError(t, err, api.CodeKeyNotFound)
	wantAPIError(t, u.c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil), api.CodeRouteNotFound)

	// 403: a permission the user lacks.
	reader := newUser(t, PermKeysRead)
	_, _, err = reader.c.CreateKey(ctx, CurveEd25519, 2, "", "")
	wantAPIError(t, err, api.CodePermDenied)

	// 400: field values.
	_, _, err = u.c.CreateKey(ctx, "rsa", 2, "", "")
	wantAPIError(t, err, api.CodeRequestMalformed)
	_, _, err = u.c.CreateKey(ctx, CurveEd25519, cl.N()+1, "", "")
	wantAPIError(t, err, api.CodeRequestMalformed)

	// 413: the access-key grant is bounded well below the general body limit.
	wantAPIError(t, u.c.Do(ctx, http.MethodPost, "/v1/access-keys", map[string]string{"label": strings.Repeat("x", 100<<10)}, nil), api.CodeRequestTooLarge)
}

func TestAuthenticationErrors(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	ctx := context.Background()
	now := time.Now()
	call := func(tok string, key ed25519.PrivateKey) error {
		c, err := New(cl.URL(1), tok, key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Cluster(ctx)
		return err
	}
	if err := call(u.token(t, now, time.Hour, ""), u.priv); err != nil {
		t.Fatalf("a token without aud: %v", err)
	}
	wantAPIError(t, call(u.token(t, now, time.Hour, cl.Name()), newUser(t).priv), api.CodeAuthSignatureInvalid)
	wantAPIError(t, call(u.token(t, now.Add(-2*time.Hour), time.Hour, ""), u.priv), api.CodeAuthTokenExpired)
	wantAPIError(t, call(u.token(t, now, time.Hour, "another-cluster"), u.priv), api.CodeAuthWrongAudience)
	ghost := &testUser{id: 1 << 40, priv: u.priv, iss: u.iss, cl: cl}
	wantAPIError(t, call(ghost.token(t, now, time.Hour, ""), u.priv), api.CodeAuthTokenInvalid)

	// A disabled user is refused at once, on every node.
	adm := adminCaller(t, cl, 2)
	path := "/v1/admin/users/" + strconv.FormatUint(u.id, 10)
	if err := adm.Do(ctx, http.MethodPost, path+"/disable", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := u.c.Cluster(ctx)
	wantAPIError(t, err, api.CodeAuthUserDisabled)
	if err := adm.Do(ctx, http.MethodPost, path+"/enable", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := u.c.Cluster(ctx); err != nil {
		t.Fatalf("enabled again: %v", err)
	}
}

// TestEveryCallIsSignedAfresh: the node accepts each nonce once, so repeated calls only
// pass with a fresh signature each; a replayed one is refused.
func TestEveryCallIsSignedAfresh(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	k := createKey(t, u.c, CurveEd25519, "")
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := u.client(t, i%cl.N()).GetKey(ctx, k.KeyID); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// A client that sends its first signature again.
	tok := u.token(t, time.Now(), time.Hour, "")
	signer := auth.Signer{KeyID: auth.UserKeyID(u.id), Key: u.priv}
	var mu sync.Mutex
	var first http.Header
	replayer, err := NewCustom(cl.URL(0), func(req *http.Request, body []byte, now time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		if first != nil {
			for _, h := range []string{"Authorization", "Signature-Input", "Signature"} {
				req.Header.Set(h, first.Get(h))
			}
			return nil
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if err := signer.Sign(req, body, now); err != nil {
			return err
		}
		first = req.Header.Clone()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replayer.GetKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	// Replayed to another node too: nonces are cluster-wide.
	other, err := replayer.WithBaseURL(cl.URL(1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.GetKey(ctx, k.KeyID)
	wantAPIError(t, err, api.CodeAuthNonceReused)
}

func TestRateLimited(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	c := u.client(t, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range cap(errs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Cluster(context.Background())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	limited := 0
	for err := range errs {
		if err == nil {
			continue
		}
		ae := wantAPIError(t, err, api.CodeRateLimited)
		if ae.RetryAfter < time.Second {
			t.Fatalf("429 without Retry-After: %#v", ae)
		}
		limited++
	}
	if limited == 0 {
		t.Fatalf("100 concurrent calls by one caller on one node: none limited (%s)", cl.URL(1))
	}
}

// TestAPIErrorParsing decodes answers the nodes do not send here (a problem carrying its
// request, an answer that is no problem at all): the client's own parsing.
func TestAPIErrorParsing(t *testing.T) {
	blocked := api.Request{RequestID: "req_1", Kind: api.KindSign, Status: StatusBlocked, Error: &RequestError{Code: api.CodePolicyBlocked, Detail: "velocity"}}
	body, _ := json.Marshal(api.Problem{Type: api.ProblemTypeBlank, Title: api.Title(api.CodePolicyBlocked), Status: 403, Code: api.CodePolicyBlocked, Detail: "velocity", RequestID: "rq_1", Request: &blocked})
	e := parseAPIError(&http.Response{StatusCode: 403, Header: http.Header{}}, body)
	if e.Code != api.CodePolicyBlocked || e.Request == nil || e.Request.Status != StatusBlocked || e.Request.Error.Code != api.CodePolicyBlocked || e.RequestID != "rq_1" {
		t.Fatalf("%#v", e)
	}
	// A problem without a title gets the code's; an unknown code the HTTP status text.
	e = parseAPIError(&http.Response{StatusCode: 404, Header: http.Header{"X-Request-Id": {"rq_2"}}}, []byte(`{"code":"key.not_found"}`))
	if e.Title != "key not found" || e.RequestID != "rq_2" {
		t.Fatalf("%#v", e)
	}
	e = parseAPIError(&http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"3"}}}, []byte(`{"code":"x.y"}`))
	if e.Title != "Too Many Requests" || e.RetryAfter != 3*time.Second {
		t.Fatalf("%#v", e)
	}
	e = parseAPIError(&http.Response{StatusCode: 502, Header: http.Header{}}, []byte("bad gateway\n"))
	if e.Code != "" || e.Detail != "bad gateway" || !strings.Contains(e.Error(), "HTTP 502") {
		t.Fatalf("%#v %s", e, e.Error())
	}
}

func TestConstructorsAndLimits(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))
	iss, _ := auth.NewHS256Issuer(bytes.Repeat([]byte{7}, 32))
	tok, _ := iss.UserToken(42, hex.EncodeToString(key.Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	adminTok, _ := iss.AdminToken(time.Now())
	bad := []struct {
		name string
		f    func() error
	}{
		{"empty token", func() error { _, err := New("http://x", "", key); return err }},
		{"admin token", func() error { _, err := New("http://x", adminTok, key); return err }},
		{"garbage token", func() error { _, err := New("http://x", "abc", key); return err }},
		{"short key", func() error { _, err := New("http://x", tok, key[:32]); return err }},
		{"ftp url", func() error { _, err := New("ftp://x", tok, key); return err }},
		{"no host", func() error { _, err := New("http://", tok, key); return err }},
		{"query in base", func() error { _, err := New("http://x/?a=1", tok, key); return err }},
		{"empty access key id", func() error { _, err := NewAccessKey("http://x", "", key); return err }},
		{"nil authenticator", func() error { _, err := NewCustom("http://x", nil); return err }},
	}
	for _, b := range bad {
		if b.f() == nil {
			t.Errorf("%s accepted", b.name)
		}
	}
	c, err := New("http://127.0.0.1:1/", tok, key)
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "http://127.0.0.1:1" {
		t.Fatal(c.BaseURL())
	}
	if err := c.Do(context.Background(), "POST", "/v1/keys", make([]byte, MaxRequestBody+1), nil); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversized body: %v", err)
	}
	if err := c.Do(context.Background(), "GET", "v1/keys", nil, nil); err == nil {
		t.Fatal("relative path accepted")
	}
	if _, err := c.GetKey(context.Background(), ""); err == nil || errors.As(err, new(*APIError)) {
		t.Fatalf("empty key id: %v", err)
	}
	if _, err := c.Sign(context.Background(), "", nil, "", ""); err == nil || errors.As(err, new(*APIError)) {
		t.Fatalf("empty key id: %v", err)
	}
}

func TestCursorsAndFinal(t *testing.T) {
	for in, want := range map[string]string{`"k2"`: "k2", `17`: "17", `null`: "", ``: ""} {
		if got := NextCursor(json.RawMessage(in)); got != want {
			t.Errorf("NextCursor(%s) = %q", in, got)
		}
	}
	// The SDK's statuses and Final are internal/api's.
	for _, s := range []string{StatusSubmitted, StatusPendingApproval, StatusScheduled, StatusSigning, StatusSigned, StatusActive, StatusBlocked, StatusDenied, StatusFailed} {
		if Final(s) != api.Final(s) {
			t.Errorf("Final(%s)", s)
		}
	}
	if !Final(StatusDenied) || Final(StatusSigning) || Final(StatusPendingApproval) {
		t.Fatal("Final")
	}
}

// TestWaitRequestPolling checks the client's own polling against a scripted answerer:
// answers that say "later" (503, 429) are waited out, other errors end the wait, and so
// does the context.
func TestWaitRequestPolling(t *testing.T) {
	var mu sync.Mutex
	script := map[string][]string{
		"req_flaky": {"503", "429", "signing", "signed"},
		"req_gone":  {"signing", "404"},
		"req_slow":  {"signing"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/v1/requests/")
		mu.Lock()
		steps := script[id]
		step := steps[0]
		if len(steps) > 1 {
			script[id] = steps[1:]
		}
		mu.Unlock()
		switch step {
		case "503", "429", "404":
			code := map[string]string{"503": api.CodeClusterUnavailable, "429": api.CodeRateLimited, "404": api.CodeRequestNotFound}[step]
			w.Header().Set("Content-Type", api.ContentTypeProblem)
			w.WriteHeader(api.StatusOf(code))
			_ = json.NewEncoder(w).Encode(api.Problem{Type: api.ProblemTypeBlank, Title: api.Title(code), Status: api.StatusOf(code), Code: code, Detail: "scripted", RequestID: "rq_1"})
		default:
			_ = json.NewEncoder(w).Encode(api.Request{RequestID: id, Kind: api.KindSign, Status: step})
		}
	}))
	t.Cleanup(srv.Close)
	c, err := NewCustom(srv.URL, func(*http.Request, []byte, time.Time) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if r, err := c.WaitRequest(ctx, "req_flaky", time.Millisecond); err != nil || r.Status != StatusSigned {
		t.Fatalf("through 503 and 429: %+v %v", r, err)
	}
	if _, err := c.WaitRequest(ctx, "req_gone", time.Millisecond); CodeOf(err) != api.CodeRequestNotFound {
		t.Fatalf("a 404 must end the wait: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitRequest(cctx, "req_slow", 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRequest must stop with its context: %v", err)
	}
}
