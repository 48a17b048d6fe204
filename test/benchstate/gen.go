package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http/httptest"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/ids"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

// clusterName is the benchmark cluster's name, also the tokens' audience.
const clusterName = "bench"

// entryGapMs is how far apart (in the entries' stamps) consecutive entries are: 1 ms,
// as in internal/state's BenchmarkApplySignLifecycle. 2 M entries span about 33 min of
// log time, so nonces (15 min) are pruned but finished requests (24 h) are not.
const entryGapMs = 1

// tokenRefresh is how often (in stamp time) the caller mints a new user token, as an SDK
// caller holding a one-hour token does.
const tokenRefresh = 30 * time.Minute

// thresholdKey is the secp256k1 key the benchmark's keygen "creates": a real key pair
// and chain code, so that each lifecycle's ceremony.result carries a real signature,
// under the key derived for its path, that the FSM verifies with the verifier custosd
// uses (internal/ceremony): a threshold signature is an ordinary ECDSA signature, so
// one made with the whole private key is what a committee's would be.
type thresholdKey struct {
	sk        *btcec.PrivateKey
	pub       []byte // compressed
	chainCode []byte
	// children are the derived private keys by path (m/0/i, i < 1000), so that making
	// entries derives each once; the FSM derives the public key anew for every result,
	// as it must.
	children map[string]*btcec.PrivateKey
}

func newThresholdKey() (*thresholdKey, error) {
	sk, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, fmt.Errorf("secp256k1 key: %w", err)
	}
	return &thresholdKey{sk: sk, pub: sk.PubKey().SerializeCompressed(), chainCode: randBytes(32), children: map[string]*btcec.PrivateKey{}}, nil
}

// sign signs digest with the key derived for path, as a committee would, in the form a
// ceremony.result carries (r, s, recovery id, DER).
func (k *thresholdKey) sign(path []uint32, digest []byte) (state.Signature, error) {
	at := fmt.Sprint(path)
	child, ok := k.children[at]
	if !ok {
		childPub, _, delta, err := protocol.DeriveECDSA(k.pub, k.chainCode, path)
		if err != nil {
			return state.Signature{}, fmt.Errorf("derive %v: %w", path, err)
		}
		var d btcec.ModNScalar
		if d.SetByteSlice(new(big.Int).Mod(delta, btcec.S256().N).Bytes()) {
			return state.Signature{}, fmt.Errorf("derive %v: delta out of range", path)
		}
		d.Add(&k.sk.Key)
		child = btcec.PrivKeyFromScalar(&d)
		if !bytes.Equal(child.PubKey().SerializeCompressed(), childPub) {
			return state.Signature{}, fmt.Errorf("derive %v: private and public derivations disagree", path)
		}
		k.children[at] = child
	}
	compact := btcecdsa.SignCompact(child, digest, true) // RFC 6979, low S
	var r, s btcec.ModNScalar
	r.SetByteSlice(compact[1:33])
	s.SetByteSlice(compact[33:])
	return state.Signature{R: compact[1:33], S: compact[33:], RecoveryID: int(compact[0] - 27 - 4), DER: btcecdsa.NewSignature(&r, &s).Serialize()}, nil
}

// cluster holds the secrets a real cluster's nodes and caller hold, and writes the
// entries they would write: callers' requests signed with internal/auth (the SDK's
// signer), vouched for by the entry node's libp2p identity (authn.SignNode), and
// members' reports signed with their identity.
type cluster struct {
	an     *authn.Verifier
	iss    *auth.Issuer
	ids    map[string]crypto.PrivKey
	nodes  []string
	stamp  int64 // unix ms of the last entry written
	user   uint64
	userSK ed25519.PrivateKey
	token  string
	tokAt  int64 // stamp the token was minted at
	keyID  string
	key    *thresholdKey
}

// newCluster makes three members with real libp2p Ed25519 identities and the shared
// admin key (shared-key mode, as the dev cluster runs).
func newCluster(start time.Time) (*cluster, error) {
	adminKey := make([]byte, 32)
	if _, err := rand.Read(adminKey); err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	an, err := authn.New(authn.Config{HMACKey: adminKey, Audience: clusterName})
	if err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	iss, err := auth.NewHS256Issuer(adminKey)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	c := &cluster{an: an, iss: iss, ids: map[string]crypto.PrivKey{}, stamp: start.UnixMilli()}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", id, err)
		}
		c.ids[id] = sk
		c.nodes = append(c.nodes, id)
	}
	if _, c.userSK, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, fmt.Errorf("user key: %w", err)
	}
	if c.key, err = newThresholdKey(); err != nil {
		return nil, err
	}
	return c, nil
}

// next advances the stamp by one entry and returns it.
func (c *cluster) next() int64 {
	c.stamp += entryGapMs
	return c.stamp
}

// clusterInit is the first entry: ClusterInit v2 (strict), 2 of 3, real peer ids.
func (c *cluster) clusterInit() ([]byte, error) {
	ci := &state.ClusterInit{Name: clusterName, Threshold: 2, Strict: true, Events: true}
	for _, id := range c.nodes {
		pid, err := peer.IDFromPrivateKey(c.ids[id])
		if err != nil {
			return nil, fmt.Errorf("peer id %s: %w", id, err)
		}
		ci.Members = append(ci.Members, state.Member{ID: id, PeerID: pid.String()})
	}
	return encode(state.TypeClusterInit, c.next(), ci)
}

// request builds an HTTP request as the caller sends it (Authorization set, then signed
// with auth.Signer when key is set) and returns the entry node's signed form of it.
func (c *cluster) request(method, target string, body []byte, bearer string, signer *auth.Signer, now time.Time) (*state.SignedForm, error) {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+bearer)
	if signer != nil {
		if err := signer.Sign(r, body, now); err != nil {
			return nil, fmt.Errorf("sign request: %w", err)
		}
	}
	parts := auth.RequestPartsFromHTTP(r, body)
	return &state.SignedForm{
		Method: parts.Method, Path: parts.Path, RawQuery: parts.RawQuery,
		Authorization: r.Header.Get("Authorization"), ContentDigest: r.Header.Get("Content-Digest"),
		SignatureInput: r.Header.Get("Signature-Input"), Signature: r.Header.Get("Signature"),
		XAuthToken: r.Header.Get("X-Auth-Token"), Body: body,
	}, nil
}

// submit wraps a signed form in a Submit entry vouched for by origin.
func (c *cluster) submit(origin string, stamp int64, f *state.SignedForm, s *state.Schedule) ([]byte, error) {
	body, err := json.Marshal(&state.SubmitBody{Signed: f, ProposalID: ids.At(time.UnixMilli(stamp))})
	if err != nil {
		return nil, fmt.Errorf("submit body: %w", err)
	}
	sig, err := authn.SignNode(c.ids[origin], authn.DomainRequest, body)
	if err != nil {
		return nil, fmt.Errorf("origin signature: %w", err)
	}
	return encode(state.TypeSubmit, stamp, &state.Submit{Origin: origin, Body: body, OriginSig: sig, Schedule: s})
}

// report is node's signed report of kind.
func (c *cluster) report(node, kind string, stamp int64, payload any) ([]byte, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("report body: %w", err)
	}
	sig, err := authn.SignNode(c.ids[node], authn.DomainReport, state.ReportMessage(kind, body))
	if err != nil {
		return nil, fmt.Errorf("report signature: %w", err)
	}
	return encode(state.TypeReport, stamp, &state.Report{Node: node, Kind: kind, Body: body, Sig: sig})
}

// createUser is the admin's POST /v1/admin/users through n1.
func (c *cluster) createUser() ([]byte, error) {
	stamp := c.next()
	now := time.UnixMilli(stamp)
	tok, err := c.iss.AdminTokenFor(clusterName, now)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	f, err := c.request("POST", "/v1/admin/users", []byte(`{"name":"alice"}`), tok, nil, now)
	if err != nil {
		return nil, err
	}
	return c.submit("n1", stamp, f, nil)
}

// userRequest is alice's request signed as the SDK signs it, with a token she refreshes
// every tokenRefresh.
func (c *cluster) userRequest(method, target string, body []byte, stamp int64) (*state.SignedForm, error) {
	now := time.UnixMilli(stamp)
	if c.token == "" || stamp-c.tokAt > tokenRefresh.Milliseconds() {
		tok, err := c.iss.UserToken(c.user, hex.EncodeToString(c.userSK.Public().(ed25519.PublicKey)), time.Hour, clusterName, now)
		if err != nil {
			return nil, fmt.Errorf("user token: %w", err)
		}
		c.token, c.tokAt = tok, stamp
	}
	return c.request(method, target, body, c.token, &auth.Signer{KeyID: auth.UserKeyID(c.user), Key: c.userSK}, now)
}

// keygen is alice's secp256k1 2-of-3 keygen through n1 as the leader schedules it.
func (c *cluster) keygen() (entry []byte, sched *state.Schedule, err error) {
	stamp := c.next()
	f, err := c.userRequest("POST", "/v1/keys", []byte(`{"curve":"secp256k1","threshold":2,"label":"bench"}`), stamp)
	if err != nil {
		return nil, nil, err
	}
	sched = &state.Schedule{RequestID: "req_" + ids.At(time.UnixMilli(stamp)), KeyID: "key_" + ids.At(time.UnixMilli(stamp)), Committee: c.nodes,
		Nonce: randBytes(32), ChainCode: c.key.chainCode}
	entry, err = c.submit("n1", stamp, f, sched)
	return entry, sched, err
}

// sharesStored are every member's share.stored reports for the keygen sched.
func (c *cluster) sharesStored(sched *state.Schedule) ([][]byte, error) {
	var out [][]byte
	for _, n := range c.nodes {
		e, err := c.report(n, state.TypeShareStored, c.next(), &state.ShareStored{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: n, PublicKey: c.key.pub})
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// pendingResult is a lifecycle's ceremony.result, made into an entry (signed and
// stamped) when its turn in the log comes.
type pendingResult struct {
	node string
	body *state.CeremonyResult
}

// lifecycle is sign lifecycle i: alice's signed sign request entering through one node
// (round robin), scheduled on a 2-member committee, and one member's ceremony.result,
// to be logged later (result).
func (c *cluster) lifecycle(i int) (submit []byte, result pendingResult, err error) {
	origin := c.nodes[i%len(c.nodes)]
	other := c.nodes[(i+1)%len(c.nodes)]
	stamp := c.next()
	digest, path := randBytes(32), []uint32{0, uint32(i % 1000)}
	body, err := json.Marshal(&api.SignBody{Message: hex.EncodeToString(digest), DerivationPath: fmt.Sprintf("m/0/%d", path[1])})
	if err != nil {
		return nil, pendingResult{}, fmt.Errorf("sign body: %w", err)
	}
	f, err := c.userRequest("POST", "/v1/keys/"+c.keyID+"/sign", body, stamp)
	if err != nil {
		return nil, pendingResult{}, err
	}
	sched := &state.Schedule{RequestID: "req_" + ids.At(time.UnixMilli(stamp)), Committee: []string{origin, other}, Nonce: randBytes(32)}
	if submit, err = c.submit(origin, stamp, f, sched); err != nil {
		return nil, pendingResult{}, err
	}
	sig, err := c.key.sign(path, digest)
	if err != nil {
		return nil, pendingResult{}, err
	}
	return submit, pendingResult{node: other, body: &state.CeremonyResult{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: other, Signature: sig}}, nil
}

// result is p's entry: the member's signed report, stamped now.
func (c *cluster) result(p pendingResult) ([]byte, error) {
	return c.report(p.node, state.TypeCeremonyResult, c.next(), p.body)
}

// setup applies the cluster's first entries to f through apply: the ClusterInit, the
// user and the active secp256k1 key. It returns how many entries it applied.
func (c *cluster) setup(apply func([]byte) (state.Result, error)) (int, error) {
	n := 0
	step := func(what string, e []byte, err error) (state.Result, error) {
		if err != nil {
			return state.Result{}, fmt.Errorf("%s: %w", what, err)
		}
		n++
		res, err := apply(e)
		if err != nil {
			return res, fmt.Errorf("%s: %w", what, err)
		}
		return res, nil
	}
	e, err := c.clusterInit()
	if _, err := step("cluster init", e, err); err != nil {
		return n, err
	}
	e, err = c.createUser()
	res, err := step("create user", e, err)
	if err != nil {
		return n, err
	}
	c.user = res.UserID
	e, sched, err := c.keygen()
	if _, err := step("keygen", e, err); err != nil {
		return n, err
	}
	reports, err := c.sharesStored(sched)
	if err != nil {
		return n, fmt.Errorf("share reports: %w", err)
	}
	for _, r := range reports {
		if _, err := step("share stored", r, nil); err != nil {
			return n, err
		}
	}
	c.keyID = sched.KeyID
	return n, nil
}

// applyOne applies entry data at index through raft's interface and checks its result.
func applyOne(f *state.FSM, index uint64, data []byte) (state.Result, error) {
	res, ok := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(state.Result)
	if !ok {
		return res, fmt.Errorf("entry %d: apply returned no result", index)
	}
	if !res.OK() {
		return res, fmt.Errorf("entry %d refused: %s: %s", index, res.Code, res.Detail)
	}
	return res, nil
}

// applyBatch applies entries from index first on, as raft hands them to the FSM.
func applyBatch(f *state.FSM, first uint64, entries [][]byte) error {
	logs := make([]*raft.Log, len(entries))
	for i, data := range entries {
		logs[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: data}
	}
	for i, r := range f.ApplyBatch(logs) {
		res, ok := r.(state.Result)
		if !ok {
			return fmt.Errorf("entry %d: apply returned no result", first+uint64(i))
		}
		if !res.OK() {
			return fmt.Errorf("entry %d refused: %s: %s", first+uint64(i), res.Code, res.Detail)
		}
	}
	return nil
}

func encode(typ string, stamp int64, payload any) ([]byte, error) {
	b, err := state.Encode(typ, stamp, payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	return b, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
