package state

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
)

// newNode makes a fresh identity for a node the admin adds, and its POST body.
func (h *signedHarness) newNode(id string) string {
	h.t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	pid, _ := peer.IDFromPrivateKey(sk)
	h.ids[id] = sk
	return fmt.Sprintf(`{"id":%q,"peer_id":%q,"p2p_addrs":["/ip4/127.0.0.1/tcp/7999"],"api":"http://127.0.0.1:8999"}`, id, pid.String())
}

func (h *signedHarness) memberCall(method, target, body string) Result {
	h.t.Helper()
	return h.submit("n1", h.admin(method, target, body), &Schedule{RequestID: "req_" + randHex()})
}

// reshareAll runs every reshare the change asks for, as the leader and the new parties
// would, and returns how many ran.
func (h *signedHarness) reshareAll(changeID string) int {
	h.t.Helper()
	n := 0
	for _, k := range h.f.AllKeys() {
		ch := h.f.Request(changeID).Change
		members, _, ok := NeedsReshare(k, ch)
		if !ok {
			continue
		}
		var old []string
		for _, m := range k.Members {
			if m != ch.Target && len(old) < k.Threshold {
				old = append(old, m)
			}
		}
		res := h.reportAs("n1", "n1", TypeMemberReshare, &MemberReshare{RequestID: changeID, KeyID: k.ID, ReshareID: "req_" + randHex(), Committee: old, Nonce: randNonce()})
		if !res.OK() {
			h.t.Fatalf("member reshare of %s: %+v", k.ID, res)
		}
		r := h.f.Request(res.RequestID)
		for _, m := range members {
			if rr := h.reshareReport(r, m, k.PublicKey, h.f.Key(k.ID).Resharing.Generation); !rr.OK() {
				h.t.Fatalf("report of %s: %+v", m, rr)
			}
		}
		n++
	}
	return n
}

func TestMemberAddJoinsThenEveryKeyIncludesIt(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k1, k2 := h.activeKey(), h.activeKey()
	res := h.memberCall("POST", "/v1/admin/members", h.newNode("n4"))
	if !res.OK() {
		t.Fatalf("add: %+v", res)
	}
	r := h.f.Request(res.RequestID)
	if r.Kind != KindMemberChange || r.Status != StatusScheduled || r.Change.Phase != PhaseJoining || r.Change.Member.ID != "n4" {
		t.Fatalf("change: %+v", r)
	}
	if got := strings.Join(h.f.ActiveMembers(), ","); got != "n1,n2,n3" {
		t.Fatalf("active members while n4 joins: %s", got)
	}
	// One change at a time; users cannot change members.
	if again := h.memberCall("DELETE", "/v1/admin/members/n2", ""); again.Code != api.CodeRequestConflict {
		t.Fatalf("second change: %+v", again)
	}
	if u := h.submit("n1", h.userReq("DELETE", "/v1/admin/members/n2", "", 0), &Schedule{RequestID: "req_" + randHex()}); u.Code != api.CodePermDenied {
		t.Fatalf("a user's change: %+v", u)
	}
	// Steps out of order are refused; a keygen meanwhile is over the active members.
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: r.ID, Step: "reshared"}); s.OK() {
		t.Fatalf("reshared before joined: %+v", s)
	}
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: r.ID, Step: "joined"}); !s.OK() {
		t.Fatalf("joined: %+v", s)
	}
	r = h.f.Request(r.ID)
	if r.Change.Phase != PhaseResharing || r.Change.KeysTotal != 2 {
		t.Fatalf("after joining: %+v", r.Change)
	}
	if got := strings.Join(h.f.ActiveMembers(), ","); got != "n1,n2,n3,n4" {
		t.Fatalf("active members: %s", got)
	}
	// The leader cannot claim the keys are done before they are.
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: r.ID, Step: "reshared"}); s.OK() || !strings.Contains(s.Detail, "keys still to reshare") {
		t.Fatalf("early reshared: %+v", s)
	}
	if n := h.reshareAll(r.ID); n != 2 {
		t.Fatalf("reshares: %d", n)
	}
	for _, k := range []*Key{k1, k2} {
		if got := h.f.Key(k.ID); !slices.Equal(got.Members, []string{"n1", "n2", "n3", "n4"}) || got.Threshold != 2 {
			t.Fatalf("key after the change: %+v", got)
		}
	}
	// A reshare for a key that needs none is refused.
	if rr := h.reportAs("n1", "n1", TypeMemberReshare, &MemberReshare{RequestID: r.ID, KeyID: k1.ID, ReshareID: "req_" + randHex(), Committee: []string{"n1", "n2"}, Nonce: randNonce()}); rr.OK() {
		t.Fatalf("needless reshare: %+v", rr)
	}
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: r.ID, Step: "reshared"}); !s.OK() {
		t.Fatalf("reshared: %+v", s)
	}
	r = h.f.Request(r.ID)
	if r.Status != StatusActive || r.Change.KeysDone != 2 {
		t.Fatalf("done: %+v %+v", r, r.Change)
	}
	if h.f.MemberChange() != "" {
		t.Fatal("a change still runs")
	}
}

func TestMemberRemoveAndReplace(t *testing.T) {
	h := newSignedHarness(t, 4, 2)
	k := h.activeKey() // 2 of n1..n4
	// A key that needs every member blocks removing one of them.
	r3 := h.keygen(CurveEd25519, 4)
	for _, n := range h.nodes {
		h.reportAs(n, n, TypeShareStored, &ShareStored{RequestID: r3.ID, Nonce: r3.Nonce, Node: n, PublicKey: k.PublicKey})
	}
	if res := h.memberCall("DELETE", "/v1/admin/members/n4", ""); res.Code != api.CodeRequestConflict || !strings.Contains(res.Detail, r3.KeyID) {
		t.Fatalf("remove under a 4-of-4 key: %+v", res)
	}
	if res := h.memberCall("DELETE", "/v1/admin/members/n9", ""); res.Code != api.CodeMemberNotFound {
		t.Fatalf("remove an unknown member: %+v", res)
	}
	if res := h.memberCall("POST", "/v1/admin/members/n4/replace", h.newNode("n5")); res.Code != api.CodeRequestConflict {
		t.Fatalf("replace under a 4-of-4 key: %+v", res)
	}
	// Resharing it to 3 of 4 makes room; then n4 (dead) is replaced by n5: each key goes
	// from k of the others to (the others + n5).
	if res := h.reshare(h.f.Key(r3.KeyID), `{"threshold":3}`, []string{"n1", "n2", "n3", "n4"}); !res.OK() {
		t.Fatal(res)
	} else {
		rr := h.f.Request(res.RequestID)
		for _, n := range rr.NewMembers {
			h.reshareReport(rr, n, k.PublicKey, h.f.Key(r3.KeyID).Resharing.Generation)
		}
	}
	res := h.memberCall("POST", "/v1/admin/members/n4/replace", h.newNode("n5"))
	if !res.OK() {
		t.Fatalf("replace: %+v", res)
	}
	id := res.RequestID
	if got := strings.Join(h.f.ActiveMembers(), ","); got != "n1,n2,n3" {
		t.Fatalf("active during the replace: %s", got)
	}
	h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: id, Step: "joined"})
	if n := h.reshareAll(id); n != 2 {
		t.Fatalf("reshares: %d", n)
	}
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: id, Step: "reshared"}); !s.OK() {
		t.Fatalf("reshared: %+v", s)
	}
	_, _, ms := h.f.Cluster()
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "n1,n2,n3,n5" {
		t.Fatalf("members after the replace: %v", ids)
	}
	for _, kid := range []string{k.ID, r3.KeyID} {
		if got := h.f.Key(kid); slices.Contains(got.Members, "n4") || !slices.Contains(got.Members, "n5") {
			t.Fatalf("key %s after the replace: %+v", kid, got.Members)
		}
	}
	// Remove n5 again (after resharing the 3-of-4 key to 2 of 4).
	if res := h.reshare(h.f.Key(r3.KeyID), `{"threshold":2}`, []string{"n1", "n2", "n5"}); !res.OK() {
		t.Fatal(res)
	} else {
		rr := h.f.Request(res.RequestID)
		for _, n := range rr.NewMembers {
			h.reshareReport(rr, n, k.PublicKey, h.f.Key(r3.KeyID).Resharing.Generation)
		}
	}
	res = h.memberCall("DELETE", "/v1/admin/members/n5", "")
	if !res.OK() {
		t.Fatalf("remove: %+v", res)
	}
	if r := h.f.Request(res.RequestID); r.Change.Phase != PhaseResharing || r.Change.KeysTotal != 2 {
		t.Fatalf("remove: %+v", r.Change)
	}
	// The leader gives up: n5 is active again, the keys keep their committees.
	if f := h.reportAs("n1", "n1", TypeFail, &Fail{RequestID: res.RequestID, Code: "ceremony.failed", Detail: "gave up"}); !f.OK() {
		t.Fatalf("fail: %+v", f)
	}
	if got := strings.Join(h.f.ActiveMembers(), ","); got != "n1,n2,n3,n5" {
		t.Fatalf("members after a failed removal: %s", got)
	}
}

func TestMemberAddRefusesBadNodes(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	good := h.newNode("n4")
	for _, tc := range []struct{ name, body, code string }{
		{"existing id", strings.Replace(good, `"n4"`, `"n1"`, 1), api.CodeRequestConflict},
		{"bad id", strings.Replace(good, `"n4"`, `"n 4"`, 1), api.CodeRequestMalformed},
		{"bad peer id", `{"id":"n4","peer_id":"nope","p2p_addrs":["/ip4/1.2.3.4/tcp/1"],"api":"http://x"}`, api.CodeRequestMalformed},
		// base58 that is no peer id: the gaters could not parse it, no node could admit it
		{"peer id that does not decode", `{"id":"n4","peer_id":"` + strings.Repeat("z", 52) + `","p2p_addrs":["/ip4/1.2.3.4/tcp/1"],"api":"http://x"}`, api.CodeRequestMalformed},
		{"address that is no multiaddr", strings.Replace(good, `/ip4/127.0.0.1/tcp/7999`, `/ip4/999.1.1.1/tcp/1`, 1), api.CodeRequestMalformed},
		{"address of another peer", strings.Replace(good, `/ip4/127.0.0.1/tcp/7999`, `/ip4/127.0.0.1/tcp/7999/p2p/12D3KooWHfKp3sVe7zh54bxKfHKU6uofu5XvrDY8Rpku2pKP5JZP`, 1), api.CodeRequestMalformed},
		{"no addresses", strings.Replace(good, `["/ip4/127.0.0.1/tcp/7999"]`, `[]`, 1), api.CodeRequestMalformed},
		{"bad api", strings.Replace(good, `http://127.0.0.1:8999`, `ftp://x`, 1), api.CodeRequestMalformed},
		{"unknown field", strings.Replace(good, `{`, `{"voter":true,`, 1), api.CodeRequestMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := h.memberCall("POST", "/v1/admin/members", tc.body); res.Code != tc.code {
				t.Fatalf("%+v, want %s", res, tc.code)
			}
		})
	}
	// A peer id already a member's.
	_, _, ms := h.f.Cluster()
	dup := fmt.Sprintf(`{"id":"n4","peer_id":%q,"p2p_addrs":["/ip4/127.0.0.1/tcp/7999"],"api":"http://127.0.0.1:8999"}`, ms[0].PeerID)
	if res := h.memberCall("POST", "/v1/admin/members", dup); res.Code != api.CodeRequestConflict {
		t.Fatalf("duplicate peer id: %+v", res)
	}
}

// TestMembershipApplyIsTheSameWhateverTheBatches: a node that replays the log (a new
// member catching up) applies it in other batches than the nodes that applied it live.
// The verdicts that scan every key (a change's "reshared" step, its key count) must see
// the changes made earlier in the same batch, or the replaying node's state diverges —
// which is what a plain scan of the database did (found by the e2e test of a replaced
// node: its state hash differed from the others' at the same index).
func TestMembershipApplyIsTheSameWhateverTheBatches(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	h.activeKey()
	h.activeKey()
	res := h.memberCall("POST", "/v1/admin/members", h.newNode("n4"))
	h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: res.RequestID, Step: "joined"})
	h.reshareAll(res.RequestID)
	if s := h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: res.RequestID, Step: "reshared"}); !s.OK() {
		t.Fatalf("reshared: %+v", s)
	}
	res = h.memberCall("DELETE", "/v1/admin/members/n2", "")
	h.reshareAll(res.RequestID)
	h.reportAs("n1", "n1", TypeMemberStep, &MemberStep{RequestID: res.RequestID, Step: "reshared"})
	_, want := h.f.Hash()
	var wantRes []Result
	an, err := authn.New(authn.Config{HMACKey: bytes.Repeat([]byte{9}, 32), Audience: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{len(h.log), 7, 3} {
		g := openTestFSM(t, okVerifier{}, an, nil)
		var got []Result
		for i := 0; i < len(h.log); i += size {
			for _, r := range g.ApplyBatch(h.log[i:min(i+size, len(h.log))]) {
				got = append(got, r.(Result))
			}
		}
		if _, hash := g.Hash(); hash != want {
			t.Errorf("batches of %d: state hash %s, applied one by one %s", size, hash, want)
		}
		if wantRes == nil {
			wantRes = got
		}
		for i := range got {
			if got[i].Code != wantRes[i].Code {
				t.Errorf("batches of %d: entry %d answered %q, %q in one batch", size, i+1, got[i].Code, wantRes[i].Code)
			}
		}
		if g.MemberChange() != "" || len(g.ActiveMembers()) != 3 {
			t.Errorf("batches of %d: change %q, members %v", size, g.MemberChange(), g.ActiveMembers())
		}
	}
}
