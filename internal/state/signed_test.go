package state

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
)

// signedHarness is a strict FSM driven by signed entries only, as the nodes write them:
// clients' requests signed by their callers and vouched for by an entry node, reports
// signed by the reporting member's identity key.
type signedHarness struct {
	t      testing.TB
	f      *FSM
	index  uint64
	stamp  int64 // unix ms
	ids    map[string]crypto.PrivKey
	nodes  []string
	iss    *auth.Issuer
	user   uint64
	userSK ed25519.PrivateKey
	// log records every entry applied, as raft would replay it.
	log []*raft.Log
}

func newSignedHarness(t testing.TB, nodes, threshold int) *signedHarness {
	t.Helper()
	return newSignedHarnessEvents(t, nodes, threshold, true)
}

// newSignedHarnessEvents is newSignedHarness with the event log on or off from the first
// entry (off: a log the frozen oracle, which predates events, can apply).
func newSignedHarnessEvents(t testing.TB, nodes, threshold int, events bool) *signedHarness {
	t.Helper()
	key := bytes.Repeat([]byte{9}, 32)
	an, err := authn.New(authn.Config{HMACKey: key, Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := auth.NewHS256Issuer(key)
	h := &signedHarness{t: t, f: openTestFSM(t, okVerifier{}, an, nil), stamp: time.Now().UnixMilli(), ids: map[string]crypto.PrivKey{}, iss: iss}
	ci := &ClusterInit{Name: "test", Threshold: threshold, Strict: true, Events: events}
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := peer.IDFromPrivateKey(sk)
		h.ids[id] = sk
		h.nodes = append(h.nodes, id)
		ci.Members = append(ci.Members, Member{ID: id, PeerID: pid.String()})
	}
	if r := h.apply(TypeClusterInit, ci); !r.OK() {
		t.Fatal(r)
	}
	_, h.userSK, _ = ed25519.GenerateKey(rand.Reader)
	res := h.submit("n1", h.admin("POST", "/v1/admin/users", `{"name":"alice"}`), nil)
	if !res.OK() {
		t.Fatalf("create user: %+v", res)
	}
	h.user = res.UserID
	return h
}

func (h *signedHarness) apply(typ string, payload any) Result {
	h.t.Helper()
	b, err := Encode(typ, h.stamp, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.applyRaw(b)
}

func (h *signedHarness) applyRaw(b []byte) Result {
	h.t.Helper()
	h.index++
	h.stamp++
	l := &raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}
	h.log = append(h.log, l)
	res, ok := h.f.Apply(l).(Result)
	if !ok {
		h.t.Fatal("no result")
	}
	return res
}

// form turns a client's signed HTTP request into the form the entry node logs.
func form(r *http.Request, body []byte) *SignedForm {
	parts := auth.RequestPartsFromHTTP(r, body)
	return &SignedForm{Method: r.Method, Path: parts.Path, RawQuery: parts.RawQuery, Authorization: r.Header.Get("Authorization"),
		ContentDigest: r.Header.Get("Content-Digest"), SignatureInput: r.Header.Get("Signature-Input"), Signature: r.Header.Get("Signature"),
		XAuthToken: r.Header.Get("X-Auth-Token"), Body: body}
}

// admin is a shared-key admin request (bearer token with a jti), made now.
func (h *signedHarness) admin(method, target, body string) *SignedForm {
	h.t.Helper()
	tok, err := h.iss.AdminToken(time.UnixMilli(h.stamp))
	if err != nil {
		h.t.Fatal(err)
	}
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+tok)
	return form(r, []byte(body))
}

// userReq is alice's signed request, created at the harness's stamp plus skew.
func (h *signedHarness) userReq(method, target, body string, skew time.Duration) *SignedForm {
	h.t.Helper()
	now := time.UnixMilli(h.stamp).Add(skew)
	tok, err := h.iss.UserToken(h.user, hex.EncodeToString(h.userSK.Public().(ed25519.PublicKey)), time.Hour, "", now)
	if err != nil {
		h.t.Fatal(err)
	}
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+tok)
	if err := (auth.Signer{KeyID: auth.UserKeyID(h.user), Key: h.userSK}).Sign(r, []byte(body), now); err != nil {
		h.t.Fatal(err)
	}
	return form(r, []byte(body))
}

// submitBody builds a Submit from origin, signed by signer's identity.
func (h *signedHarness) submitAs(origin, signer string, f *SignedForm, proposal string, s *Schedule) *Submit {
	h.t.Helper()
	body, _ := json.Marshal(&SubmitBody{Signed: f, ProposalID: proposal})
	sig, err := authn.SignNode(h.ids[signer], authn.DomainRequest, body)
	if err != nil {
		h.t.Fatal(err)
	}
	return &Submit{Origin: origin, Body: body, OriginSig: sig, Schedule: s}
}

func (h *signedHarness) submit(origin string, f *SignedForm, s *Schedule) Result {
	h.t.Helper()
	return h.apply(TypeSubmit, h.submitAs(origin, origin, f, randHex(), s))
}

// report is a report by node about node inner's state, signed by signer.
func (h *signedHarness) reportAs(node, signer, kind string, payload any) Result {
	h.t.Helper()
	body, _ := json.Marshal(payload)
	sig, err := authn.SignNode(h.ids[signer], authn.DomainReport, ReportMessage(kind, body))
	if err != nil {
		h.t.Fatal(err)
	}
	return h.apply(TypeReport, &Report{Node: node, Kind: kind, Body: body, Sig: sig})
}

func randHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keygen submits alice's keygen of curve over every member and returns its request.
func (h *signedHarness) keygen(curve string, k int) *Request {
	h.t.Helper()
	s := &Schedule{RequestID: "req_" + randHex(), KeyID: "key_" + randHex(), Committee: h.nodes, Nonce: freshNonce(), ChainCode: freshNonce()}
	res := h.submit("n1", h.userReq("POST", "/v1/keys", fmt.Sprintf(`{"curve":%q,"threshold":%d}`, curve, k), 0), s)
	if !res.OK() {
		h.t.Fatalf("keygen: %+v", res)
	}
	return h.f.Request(res.RequestID)
}

// activeKey runs a keygen to the end with honest reports.
func (h *signedHarness) activeKey() *Key {
	h.t.Helper()
	r := h.keygen(CurveEd25519, 2)
	pub := bytes.Repeat([]byte{0x42}, 32)
	for _, n := range h.nodes {
		if res := h.reportAs(n, n, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n, PublicKey: pub}); !res.OK() {
			h.t.Fatalf("share report: %+v", res)
		}
	}
	k := h.f.Key(r.KeyID)
	if k.Status != KeyActive {
		h.t.Fatalf("key %s", k.Status)
	}
	return k
}

// auditBy returns the audit entries whose actor is actor and action is action.
func (h *signedHarness) auditBy(actor, action string) []AuditEntry {
	entries, _ := h.f.Audit(0, 100000)
	var out []AuditEntry
	for _, e := range entries {
		if e.Actor == actor && e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

func TestKeySubstitutionByForgedShareReports(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	r := h.keygen(CurveSecp256k1, 2)
	honest := append([]byte{2}, bytes.Repeat([]byte{0x11}, 32)...)
	attacker := append([]byte{3}, bytes.Repeat([]byte{0x66}, 32)...)
	// n3 is compromised: it reports for n1 and n2 with its own public key, in its own
	// name and in theirs.
	for _, victim := range []string{"n1", "n2"} {
		res := h.reportAs("n3", "n3", TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: victim, PublicKey: attacker})
		if res.Code != "auth.signature_invalid" {
			t.Fatalf("report for %s in n3's name: %+v", victim, res)
		}
		res = h.reportAs(victim, "n3", TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: victim, PublicKey: attacker})
		if res.Code != "auth.signature_invalid" {
			t.Fatalf("report signed by n3 as %s: %+v", victim, res)
		}
	}
	if k := h.f.Key(r.KeyID); len(k.Reports) != 0 || k.Status != KeyGenerating {
		t.Fatalf("forged reports were recorded: %+v", k)
	}
	if got := len(h.auditBy("node:n3", "report.refused")); got != 2 {
		t.Fatalf("audit names the forging node %d times, want 2", got)
	}
	// The honest reports are not refused as conflicts.
	for _, n := range []string{"n1", "n2"} {
		if res := h.reportAs(n, n, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n, PublicKey: honest}); !res.OK() {
			t.Fatalf("honest report of %s: %+v", n, res)
		}
	}
	// n3's own report with its key: the nodes disagree, the key fails — it never
	// becomes active with the attacker's key.
	h.reportAs("n3", "n3", TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n3", PublicKey: attacker})
	if k := h.f.Key(r.KeyID); k.Status != KeyFailed || len(k.PublicKey) != 0 {
		t.Fatalf("key %s with public key %x", k.Status, k.PublicKey)
	}
}

func TestForgedAdminAndUserCallsRefused(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	if r := h.submit("n1", h.admin("POST", fmt.Sprintf("/v1/admin/users/%d/disable", h.user), ""), nil); !r.OK() {
		t.Fatal(r)
	}
	cases := []struct {
		name string
		f    *SignedForm
		code string
	}{
		{"admin call without a token", &SignedForm{Method: "POST", Path: fmt.Sprintf("/v1/admin/users/%d/enable", h.user)}, "auth.missing"},
		{"admin call with a token signed by another key", func() *SignedForm {
			other, _ := auth.NewHS256Issuer(bytes.Repeat([]byte{1}, 32))
			tok, _ := other.AdminToken(time.UnixMilli(h.stamp))
			return &SignedForm{Method: "POST", Path: fmt.Sprintf("/v1/admin/users/%d/enable", h.user), Authorization: "Bearer " + tok}
		}(), "auth.token_invalid"},
		{"user call with a forged signature", func() *SignedForm {
			f := h.userReq("POST", "/v1/access-keys", `{"scheme":"ed25519","public_key":"`+strings.Repeat("ab", 32)+`","permissions":["keys:read"]}`, 0)
			// One base64 character of the signature itself ("sig1=:" is 6), changed to
			// another: it flips bits of R. (Replacing the first occurrence of that
			// character, then turning an 'A' into a 'B', gave back the original signature
			// whenever it was a 'B', about one run in forty.)
			c := byte('A')
			if f.Signature[10] == c {
				c = 'B'
			}
			f.Signature = f.Signature[:10] + string(c) + f.Signature[11:]
			return f
		}(), "auth.signature_invalid"},
		{"user request with a swapped body", func() *SignedForm {
			f := h.userReq("PUT", "/v1/admin/users/1/permissions", `{"permissions":["keys:read"]}`, 0)
			f.Body = []byte(`{"permissions":["keys:sign"]}`)
			return f
		}(), "auth.signature_invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.submit("n3", tc.f, nil)
			if res.Code != tc.code {
				t.Fatalf("got %+v, want %s", res, tc.code)
			}
		})
	}
	if u := h.f.User(h.user); u.Status != UserDisabled {
		t.Fatal("a forged call changed the user")
	}
	// Only the audit grew: one entry per refusal, naming the member that proposed it.
	if got := len(h.auditBy("node:n3", "request.refused")); got != len(cases) {
		t.Fatalf("%d refusals audited against node:n3, want %d", got, len(cases))
	}
	// A legacy, unsigned call in the admin's name is refused outright on a strict cluster.
	res := h.apply(TypeCall, &Call{Caller: Caller{Kind: CallerAdmin}, Op: OpUserEnable, TargetUserID: h.user})
	if res.Code != "auth.signature_invalid" || h.f.User(h.user).Status != UserDisabled {
		t.Fatalf("legacy call: %+v", res)
	}
	// A Submit that smuggles a caller field is not decoded at all: it would be a newer
	// binary's entry, so the FSM halts rather than read part of it (the propose gate
	// refuses it from members, see TestNewerEntriesHalt).
	sub := h.submitAs("n3", "n3", &SignedForm{Method: "POST", Path: "/v1/admin/users/1/enable"}, randHex(), nil)
	raw, _ := json.Marshal(sub)
	raw = append(raw[:len(raw)-1], []byte(`,"caller":{"kind":"admin"}}`)...)
	env, _ := json.Marshal(Envelope{Type: TypeSubmit, Version: 1, Stamp: h.stamp, Payload: raw})
	if res := h.applyRaw(env); res.OK() || h.f.Halted() == "" || h.f.User(h.user).Status != UserDisabled {
		t.Fatalf("submit with a caller field: %+v", res)
	}
}

func TestOriginSignatureAttributesTheEntry(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	// n3 proposes a request claiming n1 as its entry node: the origin signature fails.
	f := h.userReq("GET", "/v1/keys", "", 0)
	res := h.apply(TypeSubmit, h.submitAs("n1", "n3", f, randHex(), nil))
	if res.Code != "auth.signature_invalid" {
		t.Fatalf("got %+v", res)
	}
	// The caller's nonce was not consumed by the forgery: the real request still works.
	if res := h.submit("n1", f, nil); !res.OK() {
		t.Fatalf("the genuine request: %+v", res)
	}
	// A stranger (not a member) cannot propose either.
	res = h.apply(TypeSubmit, h.submitAs("mallory", "n3", h.userReq("GET", "/v1/keys", "", 0), randHex(), nil))
	if res.Code != "auth.signature_invalid" {
		t.Fatalf("non-member origin: %+v", res)
	}
}

func TestReplayWithFreshProposalRefused(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	f := h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"68656c6c6f"}`, 0)
	sched := func() *Schedule {
		return &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()}
	}
	if res := h.submit("n1", f, sched()); !res.OK() {
		t.Fatalf("sign: %+v", res)
	}
	// A member re-proposes the stored signed request with a new proposal id.
	res := h.apply(TypeSubmit, h.submitAs("n2", "n2", f, randHex(), sched()))
	if res.Code != "auth.nonce_reused" {
		t.Fatalf("replay: %+v", res)
	}
	if n := len(h.f.OpenRequests()); n != 1 {
		t.Fatalf("%d sign requests, want 1", n)
	}
	// Once the nonce is forgotten, the signature's window has long passed.
	h.stamp += NonceRetentionMs + 2*pruneEveryMs
	res = h.apply(TypeSubmit, h.submitAs("n2", "n2", f, randHex(), sched()))
	if res.Code != "auth.signature_expired" {
		t.Fatalf("late replay: %+v", res)
	}
}

func TestRevokedGrantCannotBeRecreated(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	body := `{"scheme":"ed25519","public_key":"` + strings.Repeat("cd", 32) + `","permissions":["keys:read"]}`
	grant := h.userReq("POST", "/v1/access-keys", body, 0)
	res := h.submit("n1", grant, &Schedule{AccessKeyID: "ak_" + randHex()})
	if !res.OK() {
		t.Fatalf("grant: %+v", res)
	}
	if r := h.submit("n1", h.userReq("DELETE", "/v1/access-keys/"+res.AccessKeyID, "", 0), nil); !r.OK() {
		t.Fatalf("revoke: %+v", r)
	}
	// The stored grant proposed again, with a fresh access key id.
	again := h.apply(TypeSubmit, h.submitAs("n2", "n2", grant, randHex(), &Schedule{AccessKeyID: "ak_" + randHex()}))
	if again.Code != "auth.nonce_reused" {
		t.Fatalf("re-created grant: %+v", again)
	}
	if ak := h.f.AccessKeyByPublicKey(SchemeEd25519, bytes.Repeat([]byte{0xcd}, 32)); ak == nil || ak.RevokedAt == 0 {
		t.Fatalf("the live access key is %+v", ak)
	}
}

func TestHeldRequestNotExecutedLate(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	// A request created 301 s before the entry that carries it (a leader held it).
	f := h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"00"}`, -301*time.Second)
	res := h.submit("n1", f, &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()})
	if res.Code != "auth.signature_expired" {
		t.Fatalf("held request: %+v", res)
	}
	// A request scheduled in time, then rescheduled after its window: it fails.
	res = h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"01"}`, 0), &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()})
	if !res.OK() {
		t.Fatal(res)
	}
	r := h.f.Request(res.RequestID)
	h.stamp += (SignatureWindowS + 1) * 1000
	h.reportAs("n1", "n1", TypeReschedule, &Reschedule{RequestID: r.ID, Attempt: 1, Committee: []string{"n2", "n3"}, Nonce: freshNonce()})
	if r = h.f.Request(r.ID); r.Status != StatusFailed || r.Attempt != 1 {
		t.Fatalf("late reschedule: %s attempt %d", r.Status, r.Attempt)
	}
}

func TestReportsSpeakOnlyForTheirNode(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", `{"message":"02"}`, 0), &Schedule{RequestID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: freshNonce()})
	r := h.f.Request(res.RequestID)
	// n3 blames n1 in n2's name.
	bad := h.reportAs("n3", "n3", TypeCeremonyFailed, &CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Code: "ceremony.failed", Culprits: []string{"n1"}})
	if bad.Code != "auth.signature_invalid" {
		t.Fatalf("failure in another's name: %+v", bad)
	}
	bad = h.reportAs("n2", "n3", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signature: Signature{Sig: make([]byte, 64)}})
	if bad.Code != "auth.signature_invalid" {
		t.Fatalf("result signed as another: %+v", bad)
	}
	if r = h.f.Request(r.ID); len(r.Failures) != 0 || r.Status != StatusScheduled {
		t.Fatalf("forged reports changed the request: %+v", r)
	}
	// A genuine failure report is attributed to its signer.
	if res := h.reportAs("n2", "n2", TypeCeremonyFailed, &CeremonyFailed{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Code: "ceremony.failed", Culprits: []string{"n1"}}); !res.OK() {
		t.Fatal(res)
	}
	if r = h.f.Request(r.ID); len(r.Failures) != 1 || r.Failures[0].Node != "n2" {
		t.Fatalf("failures %+v", r.Failures)
	}
	// The leader's decisions are named after the member that signed them.
	h.reportAs("n3", "n3", TypeFail, &Fail{RequestID: r.ID, Code: "cluster.unavailable", Detail: "x"})
	if len(h.auditBy("node:n3", "sign.failed")) != 1 {
		t.Fatal("the fail is not attributed to its signer")
	}
}

// TestTwoColludingMembers: 5 nodes, k = 3; n4 and n5 are compromised and collude.
func TestTwoColludingMembers(t *testing.T) {
	h := newSignedHarness(t, 5, 3)
	r := h.keygen(CurveEd25519, 3)
	attacker := bytes.Repeat([]byte{0x66}, 32)
	honest := bytes.Repeat([]byte{0x11}, 32)
	for _, liar := range []string{"n4", "n5"} {
		for _, victim := range []string{"n1", "n2", "n3"} {
			h.reportAs(liar, liar, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: victim, PublicKey: attacker})
			h.reportAs(victim, liar, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: victim, PublicKey: attacker})
		}
	}
	if k := h.f.Key(r.KeyID); len(k.Reports) != 0 {
		t.Fatalf("forged reports recorded: %v", k.Reports)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		h.reportAs(n, n, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n, PublicKey: honest})
	}
	h.reportAs("n4", "n4", TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n4", PublicKey: attacker})
	h.reportAs("n5", "n5", TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: "n5", PublicKey: attacker})
	if k := h.f.Key(r.KeyID); k.Status != KeyFailed {
		t.Fatalf("key %s with %x", k.Status, k.PublicKey)
	}
	// Together they cannot forge an admin change or replay a user's request either.
	if res := h.submit("n4", &SignedForm{Method: "POST", Path: "/v1/admin/users", Body: []byte(`{"name":"mallory"}`)}, nil); res.OK() {
		t.Fatal("admin call without a token accepted")
	}
	f := h.userReq("GET", "/v1/keys", "", 0)
	h.submit("n1", f, nil)
	if res := h.apply(TypeSubmit, h.submitAs("n5", "n5", f, randHex(), nil)); res.Code != "auth.nonce_reused" {
		t.Fatalf("replay by n5: %+v", res)
	}
}

func signNodeForTest(h *signedHarness, node, kind string, body []byte) ([]byte, error) {
	return authn.SignNode(h.ids[node], authn.DomainReport, ReportMessage(kind, body))
}

// TestAdminTokensWithoutJTI: API.md's admin token is an HS256 JWT with iat and exp at most
// 300 s apart and no user_id; role and jti are optional. One without a jti — {iat,exp},
// {role,iat,exp} — is accepted once: its SHA-256 is its replay key, so a copy of it is
// refused for as long as it is valid.
func TestAdminTokensWithoutJTI(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	key := bytes.Repeat([]byte{9}, 32) // the harness's shared admin key
	for i, claims := range []string{`{"iat":%d,"exp":%d}`, `{"role":"admin","iat":%d,"exp":%d}`} {
		now := time.UnixMilli(h.stamp).Unix()
		var mc jwt.MapClaims
		if err := json.Unmarshal([]byte(fmt.Sprintf(claims, now, now+60)), &mc); err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, mc).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		call := func() Result {
			r := httptest.NewRequest("GET", "/v1/admin/users", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			return h.submit("n1", form(r, nil), nil)
		}
		if res := call(); !res.OK() {
			t.Fatalf("token %d %s: %+v", i, claims, res)
		}
		if res := call(); res.Code != "auth.nonce_reused" {
			t.Fatalf("token %d %s used again: %+v, want auth.nonce_reused", i, claims, res)
		}
		h.stamp += 1000
	}
}
