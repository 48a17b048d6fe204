package state

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
)

// eventTypes lists the types of the events recorded after seq.
func (h *signedHarness) eventTypes(after uint64) []string {
	evs, _ := h.f.Events(0, true, after, 1000, 100000)
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestDeriveJudgesCallerKeyAndBody(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	priv, _ := btcec.NewPrivateKey()
	k := h.psbtKey(priv)
	ed := h.activeKey()
	for _, tc := range []struct {
		name, key, body, code string
	}{
		{"root", k.ID, `{"path":"m"}`, ""},
		{"child on testnet", k.ID, `{"path":"m/0/7","network":"testnet"}`, ""},
		{"empty path is the root", k.ID, `{}`, ""},
		{"hardened", k.ID, `{"path":"m/0'/7"}`, api.CodeRequestMalformed},
		{"too deep", k.ID, `{"path":"m` + strings.Repeat("/1", 17) + `"}`, api.CodeRequestMalformed},
		{"unknown network", k.ID, `{"path":"m/1","network":"litecoin"}`, api.CodeRequestMalformed},
		{"unknown field", k.ID, `{"path":"m/1","xpub":true}`, api.CodeRequestMalformed},
		{"ed25519", ed.ID, `{"path":"m"}`, api.CodeRequestMalformed},
		{"unknown key", "key_nope", `{"path":"m"}`, api.CodeKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.submit("n1", h.userReq("POST", "/v1/keys/"+tc.key+"/derive", tc.body, 0), nil)
			if res.Code != tc.code {
				t.Fatalf("derive: %+v, want code %q", res, tc.code)
			}
		})
	}
	// Another user's key is not found; a user without keys:read is refused.
	bob := h.newPerson("bob", PermKeysSign)
	if res := h.submit("n1", h.as(bob, "POST", "/v1/keys/"+k.ID+"/derive", `{"path":"m"}`), nil); res.Code != api.CodePermDenied {
		t.Fatalf("derive without keys:read: %+v", res)
	}
	carol := h.newPerson("carol", PermKeysRead)
	if res := h.submit("n1", h.as(carol, "POST", "/v1/keys/"+k.ID+"/derive", `{"path":"m"}`), nil); res.Code != api.CodeKeyNotFound {
		t.Fatalf("derive another user's key: %+v", res)
	}
}

func TestKeyDeletionDelayRestoreAndErasure(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	del := func(skew time.Duration) Result {
		return h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, "", skew), nil)
	}
	// Re-authentication: a signature older than 60 s is refused (though within the
	// general 300 s window), nothing changes.
	if res := del(-61 * time.Second); res.Code != api.CodeAuthSignatureExpired || !strings.Contains(res.Detail, "60 s") {
		t.Fatalf("stale delete: %+v", res)
	}
	if h.f.Key(k.ID).Status != KeyActive {
		t.Fatal("a refused delete changed the key")
	}
	seq := h.f.EventSeq()
	res := del(-30 * time.Second)
	if !res.OK() || res.RequestID == "" {
		t.Fatalf("delete: %+v", res)
	}
	got := h.f.Key(k.ID)
	if got.Status != KeyDeletionScheduled || got.DeleteAt < h.stamp+KeyDeletionDelayMs-1000 || got.DeleteRequest != res.RequestID {
		t.Fatalf("scheduled key: %+v", got)
	}
	r := h.f.Request(res.RequestID)
	if r.Kind != KindDelete || r.Status != StatusScheduled || r.NotBefore != got.DeleteAt {
		t.Fatalf("deletion request: %+v", r)
	}
	if ev := h.eventTypes(seq); !strings.Contains(strings.Join(ev, ","), api.EventKeyDeletionScheduled) {
		t.Fatalf("events: %v", ev)
	}
	// Signing is refused meanwhile; a second delete too; the leader cannot end the
	// deletion with a fail report, nor the owner with cancel (restore is the way).
	if res := h.sign(k, digest); res.Code != api.CodeKeyNotActive {
		t.Fatalf("sign during the delay: %+v", res)
	}
	if res := del(0); res.Code != api.CodeKeyNotActive || !strings.Contains(res.Detail, "restore") {
		t.Fatalf("second delete: %+v", res)
	}
	if rr := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: r.ID, Code: "x", Detail: "x"}); rr.OK() {
		t.Fatalf("leader ended a deletion: %+v", rr)
	}
	if c := h.submit("n1", h.userReq("POST", "/v1/requests/"+r.ID+"/cancel", "", 0), nil); c.Code != api.CodeRequestConflict || !strings.Contains(c.Detail, "restore") {
		t.Fatalf("cancel of a scheduled deletion: %+v", c)
	}
	// Another user cannot restore it; the owner can.
	bob := h.newPerson("bob", PermKeysDelete, PermKeysRead)
	if rr := h.submit("n1", h.as(bob, "POST", "/v1/keys/"+k.ID+"/restore", ""), nil); rr.Code != api.CodeKeyNotFound {
		t.Fatalf("restore by another user: %+v", rr)
	}
	seq = h.f.EventSeq()
	if rr := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/restore", "", 0), nil); !rr.OK() {
		t.Fatalf("restore: %+v", rr)
	}
	if got := h.f.Key(k.ID); got.Status != KeyActive || got.DeleteAt != 0 {
		t.Fatalf("restored key: %+v", got)
	}
	if r := h.f.Request(r.ID); r.Status != StatusDenied || r.Error.Code != api.CodeRequestCancelled {
		t.Fatalf("cancelled deletion: %+v", r)
	}
	if ev := strings.Join(h.eventTypes(seq), ","); !strings.Contains(ev, api.EventKeyDeletionCancelled) || !strings.Contains(ev, api.EventRequestCancelled) {
		t.Fatalf("events: %v", ev)
	}
	if res := h.sign(k, digest); !res.OK() {
		t.Fatalf("sign after restore: %+v", res)
	}
	if rr := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/restore", "", 0), nil); rr.Code != api.CodeKeyNotActive {
		t.Fatalf("restore of an active key: %+v", rr)
	}

	// A short delay (the admin's setting), then any entry past it deletes the key.
	if rr := h.submit("n1", h.admin("PUT", "/v1/admin/retention", `{"key_deletion_delay_s":0.5}`), nil); rr.Code != api.CodeRequestMalformed {
		t.Fatalf("fractional delay: %+v", rr)
	}
	if rr := h.submit("n1", h.admin("PUT", "/v1/admin/retention", `{"key_deletion_delay_s":10}`), nil); !rr.OK() {
		t.Fatalf("set the delay: %+v", rr)
	}
	if got := h.f.Retention().KeyDeletionDelayS; got != 10 {
		t.Fatalf("delay read back: %d", got)
	}
	res = del(0)
	if !res.OK() {
		t.Fatalf("delete again: %+v", res)
	}
	deleteAt := h.f.Key(k.ID).DeleteAt
	snap := snapshotOf(t, h.f)
	h.stamp = deleteAt - 2
	h.submit("n1", h.userReq("GET", "/v1/keys", "", 0), nil)
	if h.f.Key(k.ID).Status != KeyDeletionScheduled {
		t.Fatal("deleted before its delete_at")
	}
	seq = h.f.EventSeq()
	h.stamp = deleteAt
	h.submit("n1", h.userReq("GET", "/v1/keys", "", 0), nil)
	got = h.f.Key(k.ID)
	if got.Status != KeyDeleted || got.DeletedAt < deleteAt {
		t.Fatalf("key at its delete_at: %+v", got)
	}
	if r := h.f.Request(res.RequestID); r.Status != StatusActive {
		t.Fatalf("completed deletion request: %+v", r)
	}
	if ev := strings.Join(h.eventTypes(seq), ","); !strings.Contains(ev, api.EventKeyDeleted) {
		t.Fatalf("events: %v", ev)
	}
	if len(h.auditBy("cluster", "key.deleted")) != 1 {
		t.Fatal("no audit entry for the deletion")
	}
	if rr := h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/restore", "", 0), nil); rr.Code != api.CodeKeyNotActive || !strings.Contains(rr.Detail, "cannot be restored") {
		t.Fatalf("restore after deletion: %+v", rr)
	}
	if res := h.sign(k, digest); res.Code != api.CodeKeyNotActive {
		t.Fatalf("sign a deleted key: %+v", res)
	}
	// A node restored from a snapshot taken during the delay deletes at the same stamp.
	an, err := authn.New(authn.Config{HMACKey: bytes.Repeat([]byte{9}, 32), Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f2 := openTestFSM(t, okVerifier{}, an, nil)
	if err := f2.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if f2.Key(k.ID).Status != KeyDeletionScheduled {
		t.Fatal("the snapshot lost the schedule")
	}
	for _, l := range h.log[len(h.log)-2:] {
		f2.Apply(l)
	}
	if f2.Key(k.ID).Status != KeyDeleted {
		t.Fatal("the restored node did not delete the key at the same entry")
	}
}

func TestKeyDeletionRefusals(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	// An access key with keys:delete may not delete (the owner re-authenticates).
	akPub, akSK, _ := ed25519.GenerateKey(rand.Reader)
	g := h.submit("n1", h.userReq("POST", "/v1/access-keys", fmt.Sprintf(`{"scheme":"ed25519","public_key":%q,"permissions":["keys:read","keys:delete"]}`, hex.EncodeToString(akPub)), 0),
		&Schedule{AccessKeyID: "ak_" + randHex()})
	if !g.OK() {
		t.Fatalf("grant: %+v", g)
	}
	req := httptest.NewRequest("DELETE", "/v1/keys/"+k.ID, nil)
	if err := (auth.Signer{KeyID: g.AccessKeyID, Key: akSK}).Sign(req, nil, time.UnixMilli(h.stamp)); err != nil {
		t.Fatal(err)
	}
	if res := h.submit("n1", form(req, nil), nil); res.Code != api.CodePermDenied || !strings.Contains(res.Detail, "access keys") {
		t.Fatalf("delete by an access key: %+v", res)
	}
	// Without keys:delete.
	if r := h.submit("n1", h.admin("PUT", fmt.Sprintf("/v1/admin/users/%d/permissions", h.user), `{"permissions":["keys:read","keys:sign"]}`), nil); !r.OK() {
		t.Fatal(r)
	}
	if res := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, "", 0), nil); res.Code != api.CodePermDenied {
		t.Fatalf("delete without keys:delete: %+v", res)
	}
	// A body is refused.
	if r := h.submit("n1", h.admin("PUT", fmt.Sprintf("/v1/admin/users/%d/permissions", h.user), `{"permissions":["keys:create","keys:read","keys:sign","keys:delete"]}`), nil); !r.OK() {
		t.Fatal(r)
	}
	if res := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, `{"force":true}`, 0), nil); res.Code != api.CodeRequestMalformed {
		t.Fatalf("delete with a body: %+v", res)
	}
	// A generating key cannot be deleted.
	r := h.keygen(CurveEd25519, 2)
	if res := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+r.KeyID, "", 0), nil); res.Code != api.CodeKeyNotActive {
		t.Fatalf("delete a generating key: %+v", res)
	}
}

func TestKeyDeletePoliciesBlockOrWaitForApproval(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	frozen := h.activeKey()
	h.policy(fmt.Sprintf(`{"name":"never delete the vault","activity":"key.delete","rule":{"kind":"always"},"filters":{"key_ids":[%q]},"action":"block"}`, frozen.ID))
	res := h.submit("n1", h.userReq("DELETE", "/v1/keys/"+frozen.ID, "", 0), nil)
	if res.Code != api.CodePolicyBlocked || !strings.Contains(res.Detail, "never delete the vault") {
		t.Fatalf("blocked delete: %+v", res)
	}
	if h.f.Key(frozen.ID).Status != KeyActive || h.f.Request(res.RequestID).Status != StatusBlocked {
		t.Fatal("a blocked delete changed the key")
	}
	b := h.newPerson("b", PermApprovalDecide)
	c := h.newPerson("c", PermApprovalDecide)
	h.policy(fmt.Sprintf(`{"name":"two eyes","activity":"key.delete","rule":{"kind":"always"},"action":"require_approval",
		"approval_groups":[{"name":"ops","members":[%d,%d],"quorum":2}]}`, b.id, c.id))
	res = h.submit("n1", h.userReq("DELETE", "/v1/keys/"+k.ID, "", 0), nil)
	if !res.OK() || res.ApprovalID == "" {
		t.Fatalf("delete under approval: %+v", res)
	}
	if h.f.Key(k.ID).Status != KeyActive {
		t.Fatal("the key stopped before its deletion was approved")
	}
	if ap := h.f.Approval(res.ApprovalID); ap.Activity != api.ActivityKeyDelete {
		t.Fatalf("approval activity %q", ap.Activity)
	}
	h.decide(b, res.ApprovalID, "approve")
	h.decide(c, res.ApprovalID, "approve")
	if rr := h.release(res.RequestID, nil); !rr.OK() {
		t.Fatalf("release: %+v", rr)
	}
	if got := h.f.Key(k.ID); got.Status != KeyDeletionScheduled || got.DeleteRequest != res.RequestID {
		t.Fatalf("approved deletion: %+v", got)
	}
	r := h.f.Request(res.RequestID)
	if r.Status != StatusScheduled || r.Attempt != 1 {
		t.Fatalf("approved deletion request: %+v", r)
	}
	// The leader cannot release it a second time, nor end it.
	if rr := h.release(res.RequestID, nil); rr.OK() {
		t.Fatalf("second release: %+v", rr)
	}
	if rr := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: r.ID, Code: "x", Detail: "x"}); rr.OK() {
		t.Fatalf("leader ended an approved deletion: %+v", rr)
	}
}
