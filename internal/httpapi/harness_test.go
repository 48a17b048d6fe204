package httpapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/state/statetest"
	"github.com/custos/custos/internal/statedb"
)

// harnessMembers are the members of the harness's cluster; the harness node is n1.
var harnessMembers = []string{"n1", "n2", "n3"}

// authHarness is an API server without raft, p2p or keystore: enough for the HTTP
// authentication pipeline and the handlers, over a real strict FSM whose entries the test
// applies itself (as the leader would), signed with the members' real libp2p identities.
// Its Proposer (fakeProposer) stands in for raft: it signs the entry as n1, adds the
// leader's schedule and applies it to the FSM at once.
type authHarness struct {
	t        testing.TB
	s        *Server
	cfg      *config.Config
	fsm      *state.FSM
	prop     *fakeProposer
	reg      *prometheus.Registry
	phases   *prometheus.HistogramVec
	iss      *auth.Issuer
	adminSK  ed25519.PrivateKey        // key-pair mode only
	adminPub ed25519.PublicKey         // key-pair mode only
	ids      map[string]crypto.PrivKey // member id → libp2p identity

	mu    sync.Mutex // one entry at a time, as raft applies them
	index uint64
	stamp int64

	userID  uint64
	userKey ed25519.PrivateKey
	keyID   string // an active secp256k1 key of the user
}

func newAuthHarness(t testing.TB, keyPair bool) *authHarness {
	t.Helper()
	h := &authHarness{t: t, ids: map[string]crypto.PrivKey{}}
	cfg := &config.Config{NodeID: "n1"}
	cfg.API.MaxBody = 1 << 20
	cfg.API.WaitTimeout.Duration = 30 * time.Second
	cfg.Cluster.Name = "test"
	init := &state.ClusterInit{Name: "test", Threshold: 2, Strict: true, Events: true}
	for _, id := range harnessMembers {
		key, err := p2p.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := peer.IDFromPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		h.ids[id] = key
		init.Members = append(init.Members, state.Member{ID: id, PeerID: pid.String(), API: "http://" + id + ".test"})
		cfg.Cluster.Members = append(cfg.Cluster.Members, config.Member{ID: id, PeerID: pid.String()})
	}
	ac := authn.Config{Audience: "test"}
	if keyPair {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		h.adminSK, h.adminPub = priv, pub
		cfg.Admin.PublicKey = hex.EncodeToString(pub)
		init.AdminPublicKey = pub
		iss, err := auth.NewEdDSAIssuer(priv)
		if err != nil {
			t.Fatal(err)
		}
		h.iss = iss
	} else {
		key := bytes.Repeat([]byte{7}, 32)
		ac.HMACKey = key
		iss, err := auth.NewHS256Issuer(key)
		if err != nil {
			t.Fatal(err)
		}
		h.iss = iss
	}
	an, err := authn.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	if an.KeyPair() != keyPair {
		t.Fatalf("verifier in key-pair mode: %v", an.KeyPair())
	}
	h.cfg = cfg
	h.fsm = statetest.Open(t, testVerifier{}, an, h.onEvent)
	h.prop = &fakeProposer{h: h}
	h.reg = prometheus.NewRegistry()
	h.phases = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "custos_phase_seconds", Help: "test"}, []string{"event", "phase", "role"})
	h.s, err = New(Config{
		Config: cfg, Logger: slog.New(slog.DiscardHandler), State: h.fsm, Authn: an, Proposer: h.prop,
		Registry: h.reg, Phases: h.phases,
		IsLeader: func() bool { return true }, Leader: func() string { return "n1" },
		Live:      func(id string) bool { return id != "n3" },
		NotReady:  func() []string { return nil },
		SessionID: func(r *state.Request, k *state.Key) string { return "sess-" + r.ID + "-" + strconv.Itoa(r.Attempt) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res := h.apply(state.TypeClusterInit, init); !res.OK() {
		t.Fatalf("cluster init: %+v", res)
	}
	h.userID, h.userKey = h.newUser("alice")
	h.keyID = h.activeKey()
	return h
}

// onEvent is the FSM's event hook: as the node does, it tells the server when a request
// settled. (h.s is set before the first entry applies.)
func (h *authHarness) onEvent(e state.Event) {
	if e.Kind == state.EventSettled {
		h.s.Settled(e.RequestID)
	}
}

// applyEntry applies one entry as the leader would: the next index, a stamp that never
// decreases and follows the clock. It is safe from any goroutine.
func (h *authHarness) applyEntry(typ string, payload any) (state.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index++
	h.stamp = max(h.stamp+1, time.Now().UnixMilli())
	b, err := state.Encode(typ, h.stamp, payload)
	if err != nil {
		return state.Result{}, err
	}
	res, ok := h.fsm.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}).(state.Result)
	if !ok {
		return state.Result{}, errors.New("no result")
	}
	return res, nil
}

// apply is applyEntry from the test's goroutine.
func (h *authHarness) apply(typ string, payload any) state.Result {
	h.t.Helper()
	res, err := h.applyEntry(typ, payload)
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// newSubmit signs a client's request as n1 received it (what the node's Proposer does).
func (h *authHarness) newSubmit(b *state.SubmitBody) (*state.Submit, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	sig, err := authn.SignNode(h.ids["n1"], authn.DomainRequest, body)
	if err != nil {
		return nil, err
	}
	return &state.Submit{Origin: "n1", Body: body, OriginSig: sig}, nil
}

// fakeProposer stands in for raft and the leader: it signs the entry as n1, adds what the
// leader would schedule for it (ids, a committee of n1 and n2, a fresh nonce) and
// applies it to the harness's FSM before it returns.
type fakeProposer struct {
	h *authHarness

	mu sync.Mutex
	// err, when set, is returned instead of committing.
	err error
	// committed, when set, receives every result committed.
	committed chan state.Result
}

func (p *fakeProposer) Submit(ctx context.Context, b *state.SubmitBody) (state.Result, error) {
	p.mu.Lock()
	fail, committed := p.err, p.committed
	p.mu.Unlock()
	if fail != nil {
		return state.Result{}, fail
	}
	sub, err := p.h.newSubmit(b)
	if err != nil {
		return state.Result{}, fmt.Errorf("%w: %v", ErrNotSigned, err)
	}
	switch state.ParseRequest(b.Signed).Op {
	case state.OpAccessCreate:
		sub.Schedule = grantSchedule()
	case state.OpKeyCreate:
		sub.Schedule = keygenSchedule()
	case state.OpKeySign:
		sub.Schedule = signSchedule("n1", "n2")
	}
	res, err := p.h.applyEntry(state.TypeSubmit, sub)
	if err != nil {
		return state.Result{}, err
	}
	if committed != nil {
		committed <- res
	}
	return res, nil
}

func (p *fakeProposer) set(err error, committed chan state.Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err, p.committed = err, committed
}

// testVerifier checks threshold signatures for the harness's FSM: Ed25519, and
// secp256k1 without derivation (the node's verifier also derives children; that needs
// the protocol package, which this one must not import).
type testVerifier struct{}

func (testVerifier) VerifySignature(curve string, pub, _ []byte, path []uint32, msg []byte, sig *state.Signature) error {
	switch curve {
	case state.CurveEd25519:
		if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(ed25519.PublicKey(pub), msg, sig.Sig) {
			return errors.New("ed25519 signature does not verify")
		}
		return nil
	case state.CurveSecp256k1:
		if len(path) > 0 {
			return errors.New("derivation is not supported by the test verifier")
		}
		pk, err := btcec.ParsePubKey(pub)
		if err != nil {
			return err
		}
		var r, s btcec.ModNScalar
		if len(sig.R) != 32 || len(sig.S) != 32 || r.SetByteSlice(sig.R) || s.SetByteSlice(sig.S) {
			return errors.New("malformed ecdsa signature")
		}
		if es := btcecdsa.NewSignature(&r, &s); !es.Verify(msg, pk) || !bytes.Equal(es.Serialize(), sig.DER) {
			return errors.New("ecdsa signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("unknown curve %q", curve)
}

// newID returns prefix + 16 random bytes in hex, as the leader's ids.
func newID(prefix string) string { return prefix + hex.EncodeToString(randomBytes(16)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
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

func xauthRequest(t testing.TB, r *http.Request, priv *btcec.PrivateKey, pathAndQuery string, body []byte, brc77 bool) *http.Request {
	t.Helper()
	var tok string
	var err error
	if brc77 {
		tok, err = auth.SignXAuthTokenBRC77(priv, pathAndQuery, body, time.Now())
	} else {
		tok, err = auth.SignXAuthTokenBSM(priv, pathAndQuery, body, time.Now())
	}
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("X-Auth-Token", tok)
	return r
}

// adminRequest is an admin's request: a token with a jti, and in key-pair mode the admin
// key's RFC 9421 signature.
func (h *authHarness) adminRequest(method, target string, body []byte) *http.Request {
	h.t.Helper()
	tok, err := h.iss.AdminToken(time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	r := request(method, target, body)
	r.Header.Set("Authorization", "Bearer "+tok)
	if h.adminSK != nil {
		sign(h.t, r, body, "admin", h.adminSK)
	}
	return r
}

func (h *authHarness) tokenFor(uid uint64, key ed25519.PrivateKey) string {
	h.t.Helper()
	tok, err := h.iss.UserToken(uid, hex.EncodeToString(key.Public().(ed25519.PublicKey)), time.Hour, "", time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func (h *authHarness) userToken() string { return h.tokenFor(h.userID, h.userKey) }

// userRequestAs is user uid's request: its token and its RFC 9421 signature.
func (h *authHarness) userRequestAs(uid uint64, key ed25519.PrivateKey, method, target string, body []byte) *http.Request {
	h.t.Helper()
	r := request(method, target, body)
	r.Header.Set("Authorization", "Bearer "+h.tokenFor(uid, key))
	return sign(h.t, r, body, auth.UserKeyID(uid), key)
}

func (h *authHarness) userRequest(method, target string, body []byte) *http.Request {
	h.t.Helper()
	return h.userRequestAs(h.userID, h.userKey, method, target, body)
}

// check runs the server's authentication on r.
func (h *authHarness) check(r *http.Request, route string) (*exchange, *apiError) {
	x := &exchange{w: httptest.NewRecorder(), r: r, route: route}
	return x, h.s.checkAuth(x)
}

// mustCheck is check for a request the entry node must accept.
func (h *authHarness) mustCheck(r *http.Request, route string) *exchange {
	h.t.Helper()
	x, err := h.check(r, route)
	if err != nil {
		h.t.Fatalf("%s %s refused by the entry node: %v", r.Method, r.URL.Path, err)
	}
	return x
}

// submitOf is the entry n1 proposes for a signed form (as commit does), with the
// leader's schedule when it would add one.
func (h *authHarness) submitOf(f *state.SignedForm, sched *state.Schedule) *state.Submit {
	h.t.Helper()
	sub, err := h.newSubmit(&state.SubmitBody{Signed: f, ProposalID: newID("")})
	if err != nil {
		h.t.Fatal(err)
	}
	sub.Schedule = sched
	return sub
}

func (h *authHarness) submit(f *state.SignedForm, sched *state.Schedule) state.Result {
	h.t.Helper()
	return h.apply(state.TypeSubmit, h.submitOf(f, sched))
}

// commit applies what the handler would commit for x (the leader's schedule included).
func (h *authHarness) commit(x *exchange, sched *state.Schedule) state.Result {
	h.t.Helper()
	return h.submit(x.signed, sched)
}

// do authenticates r at the entry node and commits it; the FSM must accept it.
func (h *authHarness) do(r *http.Request, route string, sched *state.Schedule) state.Result {
	h.t.Helper()
	res := h.commit(h.mustCheck(r, route), sched)
	if !res.OK() {
		h.t.Fatalf("%s %s refused by the FSM: %+v", r.Method, r.URL.Path, res)
	}
	return res
}

// report applies what member node says in its own name, signed with its identity.
func (h *authHarness) report(node, kind string, payload any) state.Result {
	h.t.Helper()
	return h.reportSignedBy(node, node, kind, payload)
}

// reportSignedBy is report with another member's signature (a forgery when signer != node).
func (h *authHarness) reportSignedBy(node, signer, kind string, payload any) state.Result {
	h.t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		h.t.Fatal(err)
	}
	sig, err := authn.SignNode(h.ids[signer], authn.DomainReport, state.ReportMessage(kind, body))
	if err != nil {
		h.t.Fatal(err)
	}
	return h.apply(state.TypeReport, &state.Report{Node: node, Kind: kind, Body: body, Sig: sig})
}

func keygenSchedule() *state.Schedule {
	return &state.Schedule{RequestID: newID("req_"), KeyID: newID("key_"), Committee: slices.Clone(harnessMembers),
		Nonce: randomBytes(32), ChainCode: randomBytes(32)}
}

func signSchedule(committee ...string) *state.Schedule {
	if len(committee) == 0 {
		committee = []string{"n1", "n2"}
	}
	return &state.Schedule{RequestID: newID("req_"), Committee: committee, Nonce: randomBytes(32)}
}

func grantSchedule() *state.Schedule { return &state.Schedule{AccessKeyID: newID("ak_")} }

// newUser creates a user through the admin's signed request and returns its id and a
// fresh Ed25519 key for it.
func (h *authHarness) newUser(name string) (uint64, ed25519.PrivateKey) {
	h.t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	res := h.do(h.adminRequest("POST", "/v1/admin/users", body), state.OpUserCreate, nil)
	if res.UserID == 0 {
		h.t.Fatalf("user create: %+v", res)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return res.UserID, key
}

// setPermissions sets the user's permissions through the admin's signed request.
func (h *authHarness) setPermissions(uid uint64, perms []string) {
	h.t.Helper()
	body, _ := json.Marshal(map[string]any{"permissions": perms})
	h.do(h.adminRequest("PUT", "/v1/admin/users/"+itoa(uid)+"/permissions", body), state.OpUserPermissions, nil)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// activeKey creates a secp256k1 key through the user's signed request and the three
// members' signed share reports.
func (h *authHarness) activeKey() string {
	h.t.Helper()
	res := h.do(h.userRequest("POST", "/v1/keys", []byte(`{"curve":"secp256k1","threshold":2}`)), state.OpKeyCreate, keygenSchedule())
	r := h.fsm.Request(res.RequestID)
	for _, m := range harnessMembers {
		if rr := h.report(m, state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: m, PublicKey: []byte{2, 9}}); !rr.OK() {
			h.t.Fatalf("share stored by %s: %+v", m, rr)
		}
	}
	if k := h.fsm.Key(res.KeyID); k == nil || k.Status != state.KeyActive || k.Owner != h.userID {
		h.t.Fatalf("key after keygen: %+v", k)
	}
	return res.KeyID
}

// grant creates an access key through the real pipeline: the user's signed request,
// authenticated by the entry node and committed with the leader's schedule.
func (h *authHarness) grant(body map[string]any) *state.AccessKey {
	h.t.Helper()
	raw, _ := json.Marshal(body)
	res := h.do(h.userRequest("POST", "/v1/access-keys", raw), state.OpAccessCreate, grantSchedule())
	return h.fsm.AccessKey(res.AccessKeyID)
}

// formOf is the signed form of r as checkAuth builds it, without checkAuth's early
// refusal: what a member could propose for a request the entry check would refuse.
func formOf(t testing.TB, r *http.Request) *state.SignedForm {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	parts := auth.RequestPartsFromHTTP(r, body)
	return &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery,
		Authorization: r.Header.Get("Authorization"), ContentDigest: strings.Join(r.Header.Values("Content-Digest"), ", "),
		SignatureInput: r.Header.Get("Signature-Input"), Signature: r.Header.Get("Signature"),
		XAuthToken: r.Header.Get("X-Auth-Token"), Body: body,
	}
}

func cloneForm(f *state.SignedForm) *state.SignedForm {
	c := *f
	c.Body = slices.Clone(f.Body)
	return &c
}

// lastAudit is the newest audit entry.
func (h *authHarness) lastAudit() state.AuditEntry {
	h.t.Helper()
	entries, _ := h.fsm.Audit(0, 1_000_000)
	if len(entries) == 0 {
		h.t.Fatal("no audit entry")
	}
	if i := state.VerifyChain(state.GenesisHash, entries); i >= 0 {
		h.t.Fatalf("audit chain broken at %d", i)
	}
	return entries[len(entries)-1]
}

func (h *authHarness) auditCount() int {
	entries, _ := h.fsm.Audit(0, 1_000_000)
	return len(entries)
}

// stateDigest is the serialised state without what every applied entry moves (stamps,
// prune time, index), what a refusal records on purpose (audit, access-key logs) and the
// remembered proposal results: what remains — users, keys, requests, nonces, sessions,
// access keys, idempotency scopes, admin key — must not change when an entry is refused.
func (h *authHarness) stateDigest() string {
	h.t.Helper()
	// The FSM may be halted (a test's last step): read its state, not a raft snapshot.
	var sink bytes.Buffer
	if _, err := h.fsm.WriteState(&sink); err != nil {
		h.t.Fatal(err)
	}
	recs, err := statedb.ReadRecords(bytes.NewReader(sink.Bytes()))
	if err != nil {
		h.t.Fatal(err)
	}
	// Everything but what every request changes: the audit, access-key logs, remembered
	// proposal results, stamps and their bookkeeping in the cluster record (with the
	// count of object records, which the proposal results are).
	var out strings.Builder
	for _, r := range recs {
		if statedb.AppliedKey(r.Key) {
			continue
		}
		switch statedb.NewKeyDecoder(r.Key).Table() {
		case "audit", "ak.log", "ak.lognext", "prop", "prop.exp":
			continue
		case "meta":
			var m map[string]json.RawMessage
			if err := json.Unmarshal(r.Value, &m); err != nil {
				h.t.Fatal(err)
			}
			for _, k := range []string{"last_stamp", "last_prune", "prune_behind", "pruned_to", "audit_seq", "audit_head", "proposals", "objects"} {
				delete(m, k)
			}
			r.Value, _ = json.Marshal(m)
		}
		fmt.Fprintf(&out, "%q=%s\n", r.Key, r.Value)
	}
	return out.String()
}

func corruptForTest(s string) string {
	mid := len(s) / 2
	ch := byte('A')
	if s[mid] == 'A' {
		ch = 'B'
	}
	return s[:mid] + string(ch) + s[mid+1:]
}
