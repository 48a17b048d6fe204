package state

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
)

// This file holds the signed entry kinds: the FSM believes signatures, never proposers
// (DESIGN.md, trust model). A client's request is authenticated here, inside Apply, by
// the same verifier the entry node used for its early refusal; a node's report is
// checked against the member's identity key.

// MaxStampSkew is how far an entry's stamp may be from a node's clock for the node to
// act on it (DESIGN.md invariant 3): the runner joins no ceremony scheduled further off,
// and a node whose log is stamped further ahead is not ready. The FSM itself never reads
// a clock.
const MaxStampSkew = 30 * time.Second

// verifyNode checks that member node signed body in domain. The refusal, when there is
// one, is audited: a member whose signature does not verify is named by the id it used.
func (a *applier) verifyNode(node, domain, what string, body, sig []byte) Result {
	m := a.m.member(node)
	if m == nil {
		a.audit("cluster", what+".refused", truncate("node:"+node, 80), "refused", "auth.signature_invalid")
		return refuse("auth.signature_invalid", "entry from a node that is not a member")
	}
	if err := a.memo.VerifyNode(m.PeerID, domain, body, sig); err != nil {
		a.audit("cluster", what+".refused", "node:"+node, "refused", "auth.signature_invalid")
		return refuse("auth.signature_invalid", "the entry's node signature does not verify")
	}
	return Result{}
}

// submit applies a client's request: the entry node's signature attributes the entry,
// the caller's own signature (verified here, at the entry's stamp) authorises it, and
// everything the request asks for is derived from what the caller signed.
func (a *applier) submit(s *Submit, body *SubmitBody) Result {
	if r := a.verifyNode(s.Origin, authn.DomainRequest, "request", s.Body, s.OriginSig); !r.OK() {
		return r
	}
	b := *body
	if b.Signed == nil {
		a.audit("node:"+s.Origin, "request.refused", "", "refused", "request.malformed")
		return refuse("request.malformed", "entry carries no signed request")
	}
	if len(b.ProposalID) > 64 {
		return refuse("request.malformed", "proposal id too long")
	}
	c := ParseRequest(b.Signed)
	// A proposal id is the entry node's: keyed by origin, no member can reach another's
	// remembered results.
	if b.ProposalID != "" {
		c.ProposalID = s.Origin + "/" + b.ProposalID
	}
	c.Schedule, c.Unschedulable = s.Schedule, truncate(s.Unschedulable, 256)
	if c.ProposalID != "" {
		if p := a.proposal(c.ProposalID); p != nil {
			// A retry of a proposal that already applied: same answer, no new effect.
			return p.Result
		}
	}
	p, err := a.authn.Verify(b.Signed, time.UnixMilli(a.stamp), dirView{a.t, a.m})
	if err != nil {
		// The entry node's own check passed (or it would not have proposed), so either
		// its clock and the stamp disagree at the window's edge, or a member forged or
		// replayed the request late: refused, and attributed to the entry node.
		code := auth.CodeOf(err)
		a.audit("node:"+s.Origin, "request.refused", c.Op, "refused", code)
		return refuse(code, err.Error())
	}
	c.Caller = *p
	if c.Op == OpSigpairCreate {
		c.UserName = p.AdminName
	}
	res := a.callFresh(c)
	if res.Code == "auth.nonce_reused" {
		// A signed request proposed again under a new proposal id: the caller's entry
		// says so, and this one names the member that proposed the copy.
		a.audit("node:"+s.Origin, "request.replayed", c.Op, "refused", res.Code)
	}
	return res
}

// report applies what a node says in its own name: the signature first, then the body
// (decoded by its kind, see reportBodies), which also checks the body speaks for its
// signer.
func (a *applier) report(rp *Report, apply func(*applier, string) Result) Result {
	if r := a.verifyNode(rp.Node, authn.DomainReport, "report", ReportMessage(rp.Kind, rp.Body), rp.Sig); !r.OK() {
		return r
	}
	a.curReport = rp
	defer func() { a.curReport = nil }()
	return apply(a, rp.Node)
}

// upgrade makes a legacy cluster strict.
func (a *applier) upgrade(u *Upgrade) Result {
	events := u.Events && !a.m.EventsOn
	if events {
		a.m.EventsOn = true
		a.audit("cluster", "cluster.upgrade", "events", "allowed", "")
	}
	if a.m.Strict {
		return Result{Existing: !events}
	}
	if len(u.AdminPublicKey) != 0 && len(u.AdminPublicKey) != ed25519.PublicKeySize {
		return refuse("request.malformed", "admin public key must be 32 bytes")
	}
	a.m.Strict = true
	if len(a.m.AdminPublicKey) == 0 && len(u.AdminPublicKey) > 0 {
		a.m.AdminPublicKey = slices.Clone(u.AdminPublicKey)
		a.m.AdminKeyGenesis = slices.Clone(u.AdminPublicKey)
	}
	a.audit("cluster", "cluster.upgrade", "signed_entries", "allowed", "")
	return Result{}
}

// rotateAdminKey replaces the admin public key (key-pair mode), by the admin's own signed
// request: tokens and signatures of the old key stop working at this entry.
func (a *applier) rotateAdminKey(c *Call) Result {
	if len(a.m.AdminPublicKey) == 0 {
		return refuse("request.conflict", "this cluster uses the shared admin key; configure admin.public_key (key-pair mode) to rotate keys through the API")
	}
	pub, err := hex.DecodeString(c.AdminPublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return refuse("request.malformed", "public_key must be 64 hex characters (an Ed25519 public key)")
	}
	a.m.AdminPublicKey = pub
	return Result{}
}

// reauthorise judges again, when a sign request is scheduled after its submission (an
// approved request's run, a retry), what may have changed since it was submitted: the
// caller's status, permission, access key, the key's status and the policies (a block
// added since fails it; governance.go's rejudge), and that the request is still within
// its signature window (a leader cannot hold a signed request and run it much later).
func (a *applier) reauthorise(r *Request) Result {
	if a.stamp-r.RunnableAt() > SignatureWindowS*1000 {
		return refuse("ceremony.failed", fmt.Sprintf("not executed within %d s of its submission (or of its approval)", SignatureWindowS))
	}
	k := a.key(r.KeyID)
	if k == nil || k.Status != KeyActive {
		return refuse("key.not_active", "the key is no longer active")
	}
	u := a.user(r.Owner)
	if u == nil || u.Status != UserActive {
		return refuse("auth.user_disabled", "the request's user is disabled")
	}
	p := principal{user: u}
	if r.AccessKeyID != "" {
		ak := a.accessKey(r.AccessKeyID)
		if ak == nil || !ak.LiveAt(a.stamp) {
			return refuse("auth.key_revoked", "the request's access key was revoked or expired")
		}
		p.ak = ak
	}
	if !p.has(PermKeysSign) || !p.sees(k) {
		return refuse("perm.denied", "the caller no longer holds keys:sign on this key")
	}
	return a.rejudge(r)
}

// dirView is the verifier's view of the state: the batch being applied, or a view of
// the committed state with the committed meta.
type dirView struct {
	r readKV
	m *meta
}

func (v dirView) AccessKey(id string) (authn.AccessKey, bool) {
	ak, ok := load[AccessKey](v.r, keyStr(tAccess, id))
	if !ok {
		return authn.AccessKey{}, false
	}
	return authn.AccessKey{ID: ak.ID, Scheme: ak.Scheme, PublicKey: ak.PublicKey}, true
}

func (v dirView) AccessKeyByPublicKey(scheme string, pub []byte) (authn.AccessKey, bool) {
	id := accessKeyIDByPub(v.r, scheme, pub)
	if id == "" {
		return authn.AccessKey{}, false
	}
	return v.AccessKey(id)
}

func (v dirView) AdminPublicKey() ed25519.PublicKey { return slices.Clone(v.m.AdminPublicKey) }

// Directory returns the verifier's view of the latest applied state, for the entry
// node's early refusals.
func (f *FSM) Directory() authn.Directory { return fsmDir{f} }

type fsmDir struct{ f *FSM }

func (v fsmDir) AccessKey(id string) (authn.AccessKey, bool) {
	var ak authn.AccessKey
	var ok bool
	v.f.read(func(r readKV, m *meta) { ak, ok = dirView{r, m}.AccessKey(id) })
	return ak, ok
}

func (v fsmDir) AccessKeyByPublicKey(scheme string, pub []byte) (authn.AccessKey, bool) {
	var ak authn.AccessKey
	var ok bool
	v.f.read(func(r readKV, m *meta) { ak, ok = dirView{r, m}.AccessKeyByPublicKey(scheme, pub) })
	return ak, ok
}

func (v fsmDir) AdminPublicKey() ed25519.PublicKey {
	return slices.Clone(v.f.meta().AdminPublicKey)
}

// Strict reports whether the cluster accepts only signed entries.
func (f *FSM) Strict() bool { return f.meta().Strict }

// EventsOn reports whether the event log records changes (meta.EventsOn).
func (f *FSM) EventsOn() bool { return f.meta().EventsOn }

// AdminKeys returns the admin public key the cluster started with (what every node's
// configuration must name) and the current one; both nil in shared-key mode.
func (f *FSM) AdminKeys() (genesis, current []byte) {
	m := f.meta()
	return slices.Clone(m.AdminKeyGenesis), slices.Clone(m.AdminPublicKey)
}
