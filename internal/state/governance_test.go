package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
)

// person is a user of a governance test with its own signing key.
type person struct {
	id uint64
	sk ed25519.PrivateKey
}

// newPerson creates a user with perms through the admin.
func (h *signedHarness) newPerson(name string, perms ...string) person {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "permissions": perms})
	res := h.submit("n1", h.admin("POST", "/v1/admin/users", string(b)), nil)
	if !res.OK() {
		h.t.Fatalf("create %s: %+v", name, res)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	return person{id: res.UserID, sk: sk}
}

// as is p's signed request, made now, with its token naming p's key.
func (h *signedHarness) as(p person, method, target, body string) *SignedForm {
	h.t.Helper()
	now := time.UnixMilli(h.stamp)
	tok, err := h.iss.UserToken(p.id, hex.EncodeToString(p.sk.Public().(ed25519.PublicKey)), time.Hour, "", now)
	if err != nil {
		h.t.Fatal(err)
	}
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+tok)
	if err := (auth.Signer{KeyID: auth.UserKeyID(p.id), Key: p.sk}).Sign(r, []byte(body), now); err != nil {
		h.t.Fatal(err)
	}
	return form(r, []byte(body))
}

// policy creates a policy through the admin and returns its id.
func (h *signedHarness) policy(body string) string {
	h.t.Helper()
	res := h.submit("n1", h.admin("POST", "/v1/admin/policies", body), nil)
	if !res.OK() || res.PolicyID == "" {
		h.t.Fatalf("create policy: %+v", res)
	}
	return res.PolicyID
}

// sign submits alice's sign of a digest with key k, scheduled by the leader.
func (h *signedHarness) sign(k *Key, msg string) Result {
	h.t.Helper()
	s := &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:k.Threshold], Nonce: randNonce()}
	return h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, msg), 0), s)
}

func (h *signedHarness) decide(p person, approvalID, decision string) Result {
	h.t.Helper()
	return h.submit("n2", h.as(p, "POST", "/v1/approvals/"+approvalID+"/decisions", fmt.Sprintf(`{"decision":%q,"reason":"r"}`, decision)), nil)
}

// release is the leader's run of an approved request (its attempt 0).
func (h *signedHarness) release(requestID string, committee []string) Result {
	h.t.Helper()
	return h.reportAs("n1", "n1", TypeReschedule, &Reschedule{RequestID: requestID, Attempt: 0, Committee: committee, Nonce: randNonce()})
}

var digest = strings.Repeat("ab", 32)

func randNonce() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func TestPolicyBlockNamesThePolicyAndKeepsTheRequest(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	id := h.policy(fmt.Sprintf(`{"name":"freeze","activity":"sign","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, k.ID))
	res := h.sign(k, digest)
	if res.Code != api.CodePolicyBlocked || !strings.Contains(res.Detail, id) || !strings.Contains(res.Detail, `"freeze"`) || !strings.Contains(res.Detail, "always") {
		t.Fatalf("blocked sign: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	if r == nil || r.Status != StatusBlocked || r.Error.Code != api.CodePolicyBlocked || r.Attempt != 0 || len(r.Committee) != 0 {
		t.Fatalf("blocked request: %+v", r)
	}
	if len(h.f.OpenRequests()) != 0 {
		t.Fatal("a blocked request is open")
	}
	if len(h.auditBy(fmt.Sprintf("user:%d", h.user), "policy.block")) != 1 {
		t.Fatal("the blocking policy is not in the audit")
	}
	// A policy filtered to another key does not apply.
	other := h.activeKey()
	if res := h.sign(other, digest); !res.OK() {
		t.Fatalf("sign with another key: %+v", res)
	}
	// Archived, it no longer blocks.
	if r := h.submit("n1", h.admin("DELETE", "/v1/admin/policies/"+id, ""), nil); !r.OK() {
		t.Fatal(r)
	}
	if p := h.f.Policy(id); p.Status != api.PolicyArchived || p.Version != 2 {
		t.Fatalf("archived policy: %+v", p)
	}
	if res := h.sign(k, digest); !res.OK() {
		t.Fatalf("sign after archiving: %+v", res)
	}
}

func TestAmountRulesFailClosedOnADigest(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	h.policy(`{"name":"limit","activity":"sign","rule":{"kind":"amount_limit","max_sats":1000},"action":"block"}`)
	res := h.sign(k, digest)
	if res.Code != api.CodePolicyBlocked || !strings.Contains(res.Detail, "fail closed") {
		t.Fatalf("digest under an amount rule: %+v", res)
	}
}

// approvalSetup is a cluster with alice's key, approvers b, c, d (approvals:decide) and
// a require_approval policy of quorum 2 over them.
func approvalSetup(t *testing.T, extra string) (*signedHarness, *Key, []person) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	// alice (the initiator) may decide approvals too, and is in the group.
	if r := h.submit("n1", h.admin("PUT", fmt.Sprintf("/v1/admin/users/%d/permissions", h.user),
		`{"permissions":["keys:create","keys:read","keys:sign","approvals:decide"]}`), nil); !r.OK() {
		t.Fatal(r)
	}
	var ps []person
	for _, n := range []string{"b", "c", "d"} {
		ps = append(ps, h.newPerson(n, PermApprovalDecide, PermKeysSign, PermKeysRead))
	}
	h.policy(fmt.Sprintf(`{"name":"two of treasury","activity":"sign","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"treasury","members":[%d,%d,%d,%d],"quorum":2}]%s}`, ps[0].id, ps[1].id, ps[2].id, h.user, extra))
	return h, k, ps
}

func TestApprovalQuorumRunsTheRequest(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	res := h.sign(k, digest)
	if !res.OK() || res.ApprovalID == "" {
		t.Fatalf("sign needing approval: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	if r.Status != StatusPendingApproval || r.ApprovalID != res.ApprovalID || len(r.Committee) != 0 {
		t.Fatalf("pending request: %+v", r)
	}
	ap := h.f.Approval(res.ApprovalID)
	if ap.Status != api.ApprovalPending || len(ap.Groups) != 1 || ap.Groups[0].Quorum != 2 || ap.Summary.Message != digest || ap.Summary.KeyID != k.ID {
		t.Fatalf("approval: %+v", ap)
	}
	// alice is in the group but initiated: no self-approval.
	alice := person{id: h.user, sk: h.userSK}
	if d := h.decide(alice, ap.ID, "approve"); d.Code != api.CodeApprovalSelfApproval {
		t.Fatalf("self-approval: %+v", d)
	}
	if d := h.decide(ps[0], ap.ID, "approve"); !d.OK() {
		t.Fatalf("first approval: %+v", d)
	}
	if d := h.decide(ps[0], ap.ID, "approve"); d.Code != api.CodeApprovalAlreadyDecided {
		t.Fatalf("second decision of one user: %+v", d)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusPendingApproval {
		t.Fatalf("one of two approvals ran the request: %s", r.Status)
	}
	if d := h.decide(ps[1], ap.ID, "approve"); !d.OK() {
		t.Fatalf("second approval: %+v", d)
	}
	if ap := h.f.Approval(res.ApprovalID); ap.Status != api.ApprovalApproved || ap.DecidedAt == 0 {
		t.Fatalf("approval after quorum: %+v", ap)
	}
	r = h.f.Request(res.RequestID)
	if r.Status != StatusScheduled || r.Attempt != 0 {
		t.Fatalf("approved request: %+v", r)
	}
	if d := h.decide(ps[2], ap.ID, "deny"); d.Code != api.CodeApprovalClosed {
		t.Fatalf("decision on a closed approval: %+v", d)
	}
	// The leader runs it: a committee and a session, judged like any scheduling.
	if rr := h.release(r.ID, []string{"n1", "n1"}); rr.OK() {
		t.Fatal("a committee with a repeated member was accepted")
	}
	if rr := h.release(r.ID, h.nodes[:2]); !rr.OK() {
		t.Fatalf("release: %+v", rr)
	}
	r = h.f.Request(res.RequestID)
	if r.Status != StatusScheduled || r.Attempt != 1 || len(r.Committee) != 2 || len(r.Nonce) != 32 {
		t.Fatalf("released request: %+v", r)
	}
	sig := &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signature: Signature{Sig: []byte("good")}}
	if rr := h.reportAs("n1", "n1", TypeCeremonyResult, sig); !rr.OK() {
		t.Fatalf("result: %+v", rr)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusSigned {
		t.Fatalf("after the result: %s", r.Status)
	}
}

func TestApprovalDenialExpiryAndCancel(t *testing.T) {
	h, k, ps := approvalSetup(t, `,"approval_timeout":"1m","delay":"1h"`)
	// One deny denies.
	res := h.sign(k, digest)
	if d := h.decide(ps[2], res.ApprovalID, "deny"); !d.OK() {
		t.Fatal(d)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusDenied || r.Error.Code != api.CodeApprovalDenied || !strings.Contains(r.Error.Detail, "denied by user") {
		t.Fatalf("denied: %+v", r)
	}
	if ap := h.f.Approval(res.ApprovalID); ap.Status != api.ApprovalDenied {
		t.Fatalf("approval: %s", ap.Status)
	}
	// Expiry: past the timeout, the next entry closes it.
	res = h.sign(k, digest)
	h.stamp += 61_000
	h.submit("n1", h.userReq("GET", "/v1/keys", "", 0), nil)
	if r := h.f.Request(res.RequestID); r.Status != StatusDenied || r.Error.Code != api.CodeApprovalExpired {
		t.Fatalf("expired: %+v", r)
	}
	if ap := h.f.Approval(res.ApprovalID); ap.Status != api.ApprovalExpired {
		t.Fatalf("approval: %s", ap.Status)
	}
	if d := h.decide(ps[0], res.ApprovalID, "approve"); d.Code != api.CodeApprovalClosed {
		t.Fatalf("decision after expiry: %+v", d)
	}
	// A leader's fail report cannot end a pending request early.
	res = h.sign(k, digest)
	if rr := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: res.RequestID, Code: "approval.expired", Detail: "x"}); rr.OK() {
		t.Fatalf("fail report on a pending request: %+v", rr)
	}
	// Delay: approved, it waits an hour; the leader cannot run it earlier; the initiator
	// cancels it meanwhile.
	h.decide(ps[0], res.ApprovalID, "approve")
	h.decide(ps[1], res.ApprovalID, "approve")
	r := h.f.Request(res.RequestID)
	if r.Status != StatusScheduled || r.NotBefore < h.stamp+3500_000 {
		t.Fatalf("approved with a delay: %+v", r)
	}
	if rr := h.release(r.ID, h.nodes[:2]); rr.OK() || rr.Code != api.CodeRequestConflict {
		t.Fatalf("release before the delay: %+v", rr)
	}
	if c := h.submit("n1", h.as(ps[2], "POST", "/v1/requests/"+r.ID+"/cancel", ""), nil); !c.OK() {
		t.Fatalf("cancel by an approver: %+v", c)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusDenied || r.Error.Code != api.CodeRequestCancelled {
		t.Fatalf("cancelled: %+v", r)
	}
	// Someone who is neither initiator nor approver cannot see it to cancel it.
	res = h.sign(k, digest)
	stranger := h.newPerson("e", PermKeysSign)
	if c := h.submit("n1", h.as(stranger, "POST", "/v1/requests/"+res.RequestID+"/cancel", ""), nil); c.Code != api.CodeRequestNotFound {
		t.Fatalf("cancel by a stranger: %+v", c)
	}
	// One who may decide approvals but is in none of this one's groups: 403 (API.md:
	// "not a member → 403 perm.denied"), not 404; an unknown approval is 404.
	decider := h.newPerson("f", PermApprovalDecide)
	if d := h.decide(decider, res.ApprovalID, "approve"); d.Code != api.CodePermDenied {
		t.Fatalf("decision by a non-member: %+v", d)
	}
	if d := h.decide(decider, "apr_"+randHex(), "approve"); d.Code != api.CodeApprovalNotFound {
		t.Fatalf("decision on an unknown approval: %+v", d)
	}
	if c := h.submit("n1", h.userReq("POST", "/v1/requests/"+res.RequestID+"/cancel", "", 0), nil); !c.OK() {
		t.Fatalf("cancel by the initiator: %+v", c)
	}
}

func TestApprovalCountsOnlyApproversStillEntitled(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	res := h.sign(k, digest)
	h.decide(ps[0], res.ApprovalID, "approve")
	// b loses approvals:decide before quorum: its approval no longer counts.
	if r := h.submit("n1", h.admin("PUT", fmt.Sprintf("/v1/admin/users/%d/permissions", ps[0].id), `{"permissions":["keys:read"]}`), nil); !r.OK() {
		t.Fatal(r)
	}
	h.decide(ps[1], res.ApprovalID, "approve")
	if r := h.f.Request(res.RequestID); r.Status != StatusPendingApproval {
		t.Fatalf("quorum with a decision of a user who lost approvals:decide: %s", r.Status)
	}
	// d disabled after deciding: same.
	h.decide(ps[2], res.ApprovalID, "approve")
	if r := h.f.Request(res.RequestID); r.Status != StatusScheduled {
		t.Fatalf("c and d approved: %s", r.Status)
	}
}

func TestForgedAndReplayedDecisionsChangeNothing(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	res := h.sign(k, digest)
	// A compromised member (n3) forges b's decision: it can sign the entry, not b's
	// request.
	f := h.as(ps[0], "POST", "/v1/approvals/"+res.ApprovalID+"/decisions", `{"decision":"approve"}`)
	forged := *f
	_, mallory, _ := ed25519.GenerateKey(rand.Reader)
	impostor := person{id: ps[0].id, sk: mallory}
	other := h.as(impostor, "POST", "/v1/approvals/"+res.ApprovalID+"/decisions", `{"decision":"approve"}`)
	forged.Signature = other.Signature // b's token, another key's signature
	if r := h.apply(TypeSubmit, h.submitAs("n3", "n3", &forged, randHex(), nil)); r.Code != api.CodeAuthSignatureInvalid {
		t.Fatalf("forged decision: %+v", r)
	}
	// The real one counts once; replayed by n3 under a new proposal id it is refused.
	if r := h.apply(TypeSubmit, h.submitAs("n2", "n2", f, randHex(), nil)); !r.OK() {
		t.Fatalf("b's decision: %+v", r)
	}
	if r := h.apply(TypeSubmit, h.submitAs("n3", "n3", f, randHex(), nil)); r.Code != api.CodeAuthNonceReused {
		t.Fatalf("replayed decision: %+v", r)
	}
	if ap := h.f.Approval(res.ApprovalID); ap.Status != api.ApprovalPending || len(ap.Groups[0].Decisions) != 1 {
		t.Fatalf("approval after forgery and replay: %+v", ap)
	}
	// Whoever mints tokens (the admin, any node in shared-key mode) cannot decide as c
	// with its own key once c decided with hers: the key is pinned at the first decision.
	res2 := h.sign(k, digest)
	h.decide(ps[1], res2.ApprovalID, "approve")
	if r := h.decide(person{id: ps[1].id, sk: mallory}, res.ApprovalID, "approve"); r.Code != api.CodeAuthSignatureInvalid {
		t.Fatalf("decision with another key than the pinned one: %+v", r)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusPendingApproval {
		t.Fatalf("request after a decision with a foreign key: %s", r.Status)
	}
}

func TestPolicyChangesGovernedByAPolicyModifyPolicy(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	b := h.newPerson("b", PermApprovalDecide)
	c := h.newPerson("c", PermApprovalDecide)
	block := h.policy(fmt.Sprintf(`{"name":"freeze","activity":"sign","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, k.ID))
	h.policy(fmt.Sprintf(`{"name":"guard","activity":"policy.modify","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"board","members":[%d,%d],"quorum":2}]}`, b.id, c.id))
	// The admin alone cannot loosen the rules: archiving waits for the board.
	res := h.submit("n1", h.admin("DELETE", "/v1/admin/policies/"+block, ""), nil)
	if !res.OK() || res.ApprovalID == "" || res.PolicyID != "" {
		t.Fatalf("archive under a policy.modify policy: %+v", res)
	}
	if p := h.f.Policy(block); p.Status != api.PolicyActive {
		t.Fatal("archived without approval")
	}
	if r := h.sign(k, digest); r.Code != api.CodePolicyBlocked {
		t.Fatalf("sign while the change waits: %+v", r)
	}
	h.decide(b, res.ApprovalID, "approve")
	if p := h.f.Policy(block); p.Status != api.PolicyActive {
		t.Fatal("archived with one of two approvals")
	}
	h.decide(c, res.ApprovalID, "approve")
	if p := h.f.Policy(block); p.Status != api.PolicyArchived {
		t.Fatalf("not archived after the board approved: %+v", p)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusActive || r.Kind != KindPolicyModify || r.Made != block {
		t.Fatalf("the change's request: %+v", r)
	}
	if r := h.sign(k, digest); !r.OK() {
		t.Fatalf("sign after the approved change: %+v", r)
	}
}

func TestVelocityCountsAdmittedRequestsWithinTheWindow(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	h.policy(`{"name":"two an hour","activity":"sign","rule":{"kind":"count_velocity","window":"1h","max_count":2},"action":"block"}`)
	var ids []string
	for i := range 2 {
		r := h.sign(k, digest)
		if !r.OK() {
			t.Fatalf("sign %d: %+v", i, r)
		}
		ids = append(ids, r.RequestID)
	}
	if r := h.sign(k, digest); r.Code != api.CodePolicyBlocked || !strings.Contains(r.Detail, "request 3 within 1h") {
		t.Fatalf("third sign: %+v", r)
	}
	// A request whose ceremony ran keeps counting when it is reported failed: a member
	// of its committee could otherwise take the signature, report a failure and free the
	// slot (the attack test TestAttackLeaderFailFreesVelocitySlotOfARequestThatRan).
	if r := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: ids[0], Code: "ceremony.failed", Detail: "x"}); !r.OK() {
		t.Fatal(r)
	}
	if r := h.sign(k, digest); r.Code != api.CodePolicyBlocked {
		t.Fatalf("sign after a failure: %+v", r)
	}
	// An hour later the window is empty again.
	h.stamp += 3600_001
	for i := range 2 {
		if r := h.sign(k, digest); !r.OK() {
			t.Fatalf("sign %d an hour later: %+v", i, r)
		}
	}
}

func TestEvaluateIsADryRun(t *testing.T) {
	h, k, _ := approvalSetup(t, "")
	body := fmt.Sprintf(`{"route":"POST /v1/keys/%s/sign","body":{"message":%q}}`, k.ID, digest)
	before := len(h.f.OpenRequests())
	res := h.submit("n1", h.userReq("POST", "/v1/policies/evaluate", body, 0), nil)
	if !res.OK() || res.Evaluation == nil {
		t.Fatalf("evaluate: %+v", res)
	}
	e := res.Evaluation
	if e.Decision != api.ActionRequireApproval || len(e.Matched) != 1 || e.Matched[0].Name != "two of treasury" || e.Matched[0].Why == "" {
		t.Fatalf("evaluation: %+v", e)
	}
	if len(h.f.OpenRequests()) != before {
		t.Fatal("evaluate opened a request")
	}
	for _, bad := range []string{`{"route":"GET /v1/keys"}`, `{"route":"nonsense"}`, `{"route":"POST /v1/keys/nokey/sign","body":{"message":"00"}}`} {
		if r := h.submit("n1", h.userReq("POST", "/v1/policies/evaluate", bad, 0), nil); r.OK() {
			t.Fatalf("evaluate %s: %+v", bad, r)
		}
	}
}

func TestMalformedPoliciesRefusedNamingTheField(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	cases := []struct{ body, field string }{
		{`{"name":"x","activity":"sign","rule":{"kind":"sometimes"},"action":"block"}`, "rule.kind"},
		{`{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"maybe"}`, "action"},
		{`{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"require_approval","approval_groups":[{"name":"g","members":[99],"quorum":1}]}`, "approval_groups[0].members"},
		{`{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"require_approval","approval_groups":[{"name":"g","members":[1],"quorum":2}]}`, "approval_groups[0].quorum"},
		{`{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"require_approval","approval_groups":[]}`, "approval_groups"},
		{`{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"block","surprise":1}`, "unknown field"},
	}
	for _, c := range cases {
		r := h.submit("n1", h.admin("POST", "/v1/admin/policies", c.body), nil)
		if r.Code != api.CodeRequestMalformed || !strings.Contains(r.Detail, c.field) {
			t.Errorf("%s: %+v", c.body, r)
		}
	}
	// A user cannot create policies, nor read them without policies:read.
	if r := h.submit("n1", h.userReq("POST", "/v1/admin/policies", `{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"block"}`, 0), nil); r.Code != api.CodePermDenied {
		t.Fatalf("user creates a policy: %+v", r)
	}
	if r := h.submit("n1", h.userReq("GET", "/v1/admin/policies", "", 0), nil); r.Code != api.CodePermDenied {
		t.Fatalf("user lists policies: %+v", r)
	}
}

func TestGovernanceSurvivesRestartAndSnapshot(t *testing.T) {
	h, k, _ := approvalSetup(t, "")
	res := h.sign(k, digest)
	g := restoredFSM(t, snapshotOf(t, h.f))
	if g.policies.Load().Len() != 1 {
		t.Fatalf("restored policies: %d", g.policies.Load().Len())
	}
	if ap := g.Approval(res.ApprovalID); ap == nil || ap.Status != api.ApprovalPending {
		t.Fatalf("restored approval: %+v", ap)
	}
	if a, b := h.f.Checkpoint(), g.Checkpoint(); a.StateHash != b.StateHash {
		t.Fatalf("state hash differs after restore: %s vs %s", a.StateHash, b.StateHash)
	}
}

func TestVelocityLedgerTotalsFollowTheWindow(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	body := `{"name":"per minute","activity":"sign","rule":{"kind":"count_velocity","window":"1m","max_count":%d},"action":"block"}`
	id := h.policy(fmt.Sprintf(body, 100000))
	// More than one drop batch of signed requests in the window, spread over it.
	n := velocityDropBatch + 10
	for i := range n {
		h.stamp += 40 // all within 42 s
		res := h.sign(k, digest)
		if !res.OK() {
			t.Fatalf("sign %d: %+v", i, res)
		}
		r := h.f.Request(res.RequestID)
		if rr := h.reportAs("n1", "n1", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signature: Signature{Sig: []byte("good")}}); !rr.OK() {
			t.Fatal(rr)
		}
	}
	// The replaced policy keeps its ledger: the next one is request n+1 in the minute.
	if r := h.submit("n1", h.admin("PUT", "/v1/admin/policies/"+id, fmt.Sprintf(body, 10)), nil); !r.OK() {
		t.Fatal(r)
	}
	if r := h.sign(k, digest); r.Code != api.CodePolicyBlocked || !strings.Contains(r.Detail, fmt.Sprintf("request %d within 1m", n+1)) {
		t.Fatalf("sign with %d in the window: %+v", n, r)
	}
	// A minute later every one left the window, more than one drop batch at once: that
	// evaluation sums the window itself, the next ones drop the rest.
	h.stamp += 61_000
	for range 3 {
		if r := h.sign(k, digest); !r.OK() {
			t.Fatalf("sign after the window: %+v", r)
		}
	}
	h.f.read(func(r readKV, _ *meta) {
		tot := loadTotal(r, id)
		s, c := windowSum(r, id, 0)
		if tot.Count != c || tot.Sats != s || c != 3 {
			t.Fatalf("total %+v, entries %d (%d sats), want 3", tot, c, s)
		}
	})
}
