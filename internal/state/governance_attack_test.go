package state

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
)

// Attacks on the governance layer by a compromised leader or member, a malicious user,
// approver or admin. Each test mounts one attack and fails while it works.

var digestB = strings.Repeat("cd", 32)

// A compromised leader gives a sign request it schedules the id the FSM will derive for
// a later entry ("req_" + that entry's index). The later request, one that waits for
// approval and has no schedule, gets that derived id and overwrites the first: the
// approval the approvers granted for the first request (its summary shows digest A) now
// runs the second one (digest B), which no one approved.
func TestAttackDerivedIDCollisionTransfersApproval(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	// Request A: the next entry's own index is h.index+1; B will be the one after.
	stolen := fmt.Sprintf("req_%016x", h.index+2)
	sA := &Schedule{RequestID: stolen, Committee: h.nodes[:2], Nonce: randNonce()}
	resA := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, digest), 0), sA)
	if resA.Code == "cluster.unavailable" && strings.Contains(resA.Detail, "another form") {
		// Refused at the source: a leader's ids have another form than the FSM's own
		// (validLeaderID). (Behind it, freshRequestID refuses a taken id.)
		return
	}
	if !resA.OK() || resA.RequestID != stolen || resA.ApprovalID == "" {
		t.Fatalf("request A: %+v", resA)
	}
	// Request B, proposed without a schedule (the leader's choice).
	resB := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, digestB), 0), nil)
	if resB.OK() && resB.RequestID == stolen {
		t.Errorf("request B took request A's id %s: A's record is overwritten", stolen)
	}
	// The approvers approve A, as its approval's summary shows it.
	if ap := h.f.Approval(resA.ApprovalID); ap.Summary.Message != digest {
		t.Fatalf("approval A summary: %+v", ap.Summary)
	}
	h.decide(ps[0], resA.ApprovalID, "approve")
	h.decide(ps[1], resA.ApprovalID, "approve")
	r := h.f.Request(stolen)
	if r.Status == StatusScheduled && hex.EncodeToString(r.Message) != digest {
		t.Fatalf("approval of A (digest %s…) scheduled digest %x…, approved by no one", digest[:8], r.Message[:4])
	}
	if rr := h.release(stolen, h.nodes[:2]); rr.OK() {
		if r := h.f.Request(stolen); hex.EncodeToString(r.Message) != digest {
			t.Fatalf("the leader released digest %x… under A's approval", r.Message[:4])
		}
	}
}

// The same collision with an admin's policy change waiting for the board: the treasury's
// approval of an ordinary sign request executes the change (archiving a freeze) that the
// board never approved.
func TestAttackDerivedIDCollisionRunsPolicyChangeWithoutTheBoard(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	board1 := h.newPerson("board1", PermApprovalDecide)
	board2 := h.newPerson("board2", PermApprovalDecide)
	freeze := h.policy(`{"name":"freeze all","activity":"keygen","rule":{"kind":"always"},"action":"block"}`)
	h.policy(fmt.Sprintf(`{"name":"guard","activity":"policy.modify","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"board","members":[%d,%d],"quorum":2}]}`, board1.id, board2.id))
	stolen := fmt.Sprintf("req_%016x", h.index+2)
	sA := &Schedule{RequestID: stolen, Committee: h.nodes[:2], Nonce: randNonce()}
	resA := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/sign", fmt.Sprintf(`{"message":%q}`, digest), 0), sA)
	if resA.Code == "cluster.unavailable" && strings.Contains(resA.Detail, "another form") {
		// Refused at the source: a leader's ids have another form than the FSM's own
		// (validLeaderID). (Behind it, freshRequestID refuses a taken id.)
		return
	}
	if !resA.OK() || resA.RequestID != stolen || resA.ApprovalID == "" {
		t.Fatalf("request A: %+v", resA)
	}
	// The admin asks to archive the freeze: it waits for the board.
	resC := h.submit("n1", h.admin("DELETE", "/v1/admin/policies/"+freeze, ""), nil)
	if !resC.OK() {
		return // refused (the derived id is taken): the attack fails here
	}
	if resC.ApprovalID == "" {
		t.Fatalf("archive: %+v", resC)
	}
	if resC.RequestID == stolen {
		t.Errorf("the policy change took request A's id %s", stolen)
	}
	// The treasury approves the sign request A; the board decides nothing.
	h.decide(ps[0], resA.ApprovalID, "approve")
	h.decide(ps[1], resA.ApprovalID, "approve")
	if p := h.f.Policy(freeze); p.Status != api.PolicyActive {
		t.Fatalf("the freeze was archived by the treasury's approval of a sign request (request %s, change %s)", stolen, resC.RequestID)
	}
}

// An approved request is released by the leader after the admin froze its key: policy is
// judged again when a ceremony is scheduled (DESIGN.md invariant 3), so it must not run.
func TestAttackApprovedRequestRunsDespiteALaterBlock(t *testing.T) {
	h, k, ps := approvalSetup(t, `,"delay":"10m"`)
	res := h.sign(k, digest)
	h.decide(ps[0], res.ApprovalID, "approve")
	h.decide(ps[1], res.ApprovalID, "approve")
	if r := h.f.Request(res.RequestID); r.Status != StatusScheduled {
		t.Fatalf("approved: %+v", r)
	}
	// During the delay an incident: the admin freezes the key.
	h.policy(fmt.Sprintf(`{"name":"incident freeze","activity":"sign","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, k.ID))
	if r := h.sign(k, digest); r.Code != api.CodePolicyBlocked {
		t.Fatalf("new sign under the freeze: %+v", r)
	}
	h.stamp += 10*60_000 + 1
	h.release(res.RequestID, h.nodes[:2])
	if r := h.f.Request(res.RequestID); r.Attempt > 0 || r.Status != StatusFailed || r.Error == nil || r.Error.Code != api.CodePolicyBlocked {
		t.Fatalf("released under a freeze: status %s attempt %d error %+v", r.Status, r.Attempt, r.Error)
	}
}

// approvedKeygen submits a keygen that a policy sends to approval (one approver, a
// minute's delay) and approves it: scheduled, not yet released by the leader.
func approvedKeygen(t *testing.T, h *signedHarness) Result {
	t.Helper()
	b := h.newPerson("b", PermApprovalDecide)
	h.policy(fmt.Sprintf(`{"name":"keygen needs b","activity":"keygen","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"g","members":[%d],"quorum":1}],"delay":"1m"}`, b.id))
	s := &Schedule{RequestID: "req_" + randHex(), KeyID: "key_" + randHex(), Committee: h.nodes, Nonce: randNonce(), ChainCode: randNonce()}
	res := h.submit("n1", h.userReq("POST", "/v1/keys", `{"curve":"secp256k1","threshold":2}`, 0), s)
	if !res.OK() || res.ApprovalID == "" {
		t.Fatalf("keygen: %+v", res)
	}
	h.decide(b, res.ApprovalID, "approve")
	return res
}

// A keygen approved before a block policy on keygen, released after it.
func TestAttackApprovedKeygenRunsDespiteALaterBlock(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	res := approvedKeygen(t, h)
	h.policy(`{"name":"no more keys","activity":"keygen","rule":{"kind":"always"},"action":"block"}`)
	h.stamp += 60_001
	h.release(res.RequestID, h.nodes)
	if r := h.f.Request(res.RequestID); r.Attempt > 0 || h.f.Key(r.KeyID) != nil {
		t.Fatalf("keygen released under a block: status %s, key %+v", r.Status, h.f.Key(r.KeyID))
	}
}

// A compromised leader in the committee withholds its last message (it gets the
// signature, the honest nodes do not) and reports the request failed: the velocity
// ledger forgets it, so a count_velocity limit of 1 per hour yields any number of
// signatures.
func TestAttackLeaderFailFreesVelocitySlotOfARequestThatRan(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	h.policy(`{"name":"one an hour","activity":"sign","rule":{"kind":"count_velocity","window":"1h","max_count":1},"action":"block"}`)
	ran := 0
	for i := range 3 {
		res := h.sign(k, digest)
		if !res.OK() {
			break
		}
		ran++
		// The ceremony ran (attempt 1 with its committee); the leader says it failed.
		if r := h.f.Request(res.RequestID); r.Attempt != 1 {
			t.Fatalf("sign %d not scheduled: %+v", i, r)
		}
		h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: res.RequestID, Code: "ceremony.failed", Detail: "timeout"})
	}
	if ran > 1 {
		t.Fatalf("%d ceremonies ran within an hour under max_count 1", ran)
	}
}

// Velocity is counted at the submission stamp, not when the request runs: a request
// that waited for approval longer than the window runs, and the next request does not
// see it in the window.
func TestAttackApprovedRequestsBunchPastAVelocityLimit(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	h.policy(`{"name":"one an hour","activity":"sign","rule":{"kind":"count_velocity","window":"1h","max_count":1},"action":"block"}`)
	running := 0
	run := func(res Result) {
		h.decide(ps[0], res.ApprovalID, "approve")
		h.decide(ps[1], res.ApprovalID, "approve")
		h.release(res.RequestID, h.nodes[:2])
		if r := h.f.Request(res.RequestID); r.Attempt == 1 && r.Status == StatusScheduled {
			running++
		}
	}
	a := h.sign(k, digest)
	if !a.OK() || a.ApprovalID == "" {
		t.Fatalf("A: %+v", a)
	}
	h.stamp += 3600_001
	run(a) // A runs now, an hour after it was submitted
	if b := h.sign(k, digest); b.OK() && b.ApprovalID != "" {
		run(b)
	}
	if running > 1 {
		t.Fatalf("%d ceremonies scheduled within one second under max_count 1 per hour", running)
	}
}

// A member's ceremony result for a request still waiting for approval (with a signature
// it holds already, e.g. of an earlier request of the same digest) settles it as
// signed: nothing checks that the request was ever scheduled.
func TestAttackResultReportSettlesAPendingRequest(t *testing.T) {
	h, k, _ := approvalSetup(t, "")
	res := h.sign(k, digest)
	r := h.f.Request(res.RequestID)
	if r.Status != StatusPendingApproval {
		t.Fatalf("pending: %+v", r)
	}
	h.reportAs("n3", "n3", TypeCeremonyResult, &CeremonyResult{RequestID: r.ID, Node: "n3", Signature: Signature{Sig: []byte("good")}})
	if r := h.f.Request(res.RequestID); r.Status == StatusSigned {
		t.Fatalf("a request waiting for approval was settled signed by a member's report (approval %s)", h.f.Approval(res.ApprovalID).Status)
	}
}

// Cancelling is a denial; an "approver" who lost approvals:decide (or, in key-pair mode,
// whoever mints a token for an approver with another key than the one pinned at the
// approver's first decision) still cancels.
func TestAttackCancelByAnApproverWithoutStanding(t *testing.T) {
	h, k, ps := approvalSetup(t, "")
	res := h.sign(k, digest)
	h.decide(ps[0], res.ApprovalID, "approve") // pins b's key
	impostor := person{id: ps[0].id, sk: h.newPersonKey()}
	if c := h.submit("n1", h.as(impostor, "POST", "/v1/requests/"+res.RequestID+"/cancel", ""), nil); c.OK() {
		t.Errorf("cancel in b's name with another key than b's pinned one: %+v", c)
	}
	res = h.sign(k, digest)
	if r := h.submit("n1", h.admin("PUT", fmt.Sprintf("/v1/admin/users/%d/permissions", ps[2].id), `{"permissions":["keys:read"]}`), nil); !r.OK() {
		t.Fatal(r)
	}
	if c := h.submit("n1", h.as(ps[2], "POST", "/v1/requests/"+res.RequestID+"/cancel", ""), nil); c.OK() {
		t.Errorf("cancel by a group member without approvals:decide: %+v", c)
	}
}

func (h *signedHarness) newPersonKey() []byte {
	p := h.newPerson("k"+randHex()[:6], PermKeysRead)
	return p.sk
}

// evaluate as a user without policies:read: it reads the admin's policy.modify policies,
// and access.grant policies filtered on another user's key (a grant would be refused
// with key.not_found before any policy).
func TestAttackEvaluateLeaksPolicies(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	board := h.newPerson("board", PermApprovalDecide)
	bob := h.newPerson("bob", PermKeysCreate, PermKeysSign, PermKeysRead, PermAccessManage)
	// bob's key.
	s := &Schedule{RequestID: "req_" + randHex(), KeyID: "key_" + randHex(), Committee: h.nodes, Nonce: randNonce(), ChainCode: randNonce()}
	if r := h.submit("n1", h.as(bob, "POST", "/v1/keys", `{"curve":"ed25519","threshold":2}`), s); !r.OK() {
		t.Fatal(r)
	}
	rec := h.f.Request(s.RequestID)
	h.policy(fmt.Sprintf(`{"name":"bob's key is watched","activity":"access.grant","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, rec.KeyID))
	h.policy(fmt.Sprintf(`{"name":"secret board guard","activity":"policy.modify","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"board","members":[%d],"quorum":1}]}`, board.id))
	evaluate := func(route, body string) Result {
		b, _ := json.Marshal(map[string]any{"route": route, "body": json.RawMessage(body)})
		return h.submit("n1", h.userReq("POST", "/v1/policies/evaluate", string(b), 0), nil)
	}
	res := evaluate("POST /v1/admin/policies", `{"name":"x","activity":"sign","rule":{"kind":"always"},"action":"block"}`)
	if res.OK() && res.Evaluation != nil && len(res.Evaluation.Matched) > 0 {
		t.Errorf("alice (no policies:read) reads the admin's policy.modify policies: %+v", res.Evaluation.Matched)
	}
	// Treated like a grant for bob's key: a real grant would be key.not_found.
	res = evaluate("POST /v1/access-keys", fmt.Sprintf(`{"scheme":"ed25519","public_key":%q,"permissions":["keys:read"],"key_ids":[%q]}`, edPub(7), rec.KeyID))
	if res.OK() && res.Evaluation != nil && len(res.Evaluation.Matched) > 0 {
		t.Errorf("alice learns the policies on bob's key %s: %+v", rec.KeyID, res.Evaluation.Matched)
	}
}
