package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

// TestBatchBoundariesDoNotMatter: raft hands each node its committed entries in batches
// of its own making (what arrived together), so what an entry does must not depend on
// which entries share its batch. A log where an access key is granted and used at once,
// a key made and used, a grant revoked and tried — applied one entry per batch, and in
// batches of every size up to the whole log at once — gives every node the same results
// and the same state. (Found by an independent client against make run: a grant and its
// first use in one batch on one node only; the verifier's directory read the database
// under the batch's unflushed objects, refused the request there, and that node's state
// diverged.)
func TestBatchBoundariesDoNotMatter(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	k := h.activeKey()
	akPub, akSK, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 2 {
		g := h.submit("n1", h.userReq("POST", "/v1/access-keys", fmt.Sprintf(`{"scheme":"ed25519","public_key":%q,"permissions":["keys:read","keys:sign"],"label":"l%d"}`, hex.EncodeToString(akPub), i), 0),
			&Schedule{AccessKeyID: "ak_" + randHex()})
		if !g.OK() {
			t.Fatalf("grant %d: %+v", i, g)
		}
		// Used at once: the entry right after the grant.
		req := httptest.NewRequest("GET", "/v1/keys", nil)
		if err := (auth.Signer{KeyID: g.AccessKeyID, Key: akSK}).Sign(req, nil, time.UnixMilli(h.stamp)); err != nil {
			t.Fatal(err)
		}
		if res := h.submit("n1", form(req, nil), nil); !res.OK() {
			t.Fatalf("use of grant %d: %+v", i, res)
		}
		// Revoked, then tried again at once.
		if res := h.submit("n1", h.userReq("DELETE", "/v1/access-keys/"+g.AccessKeyID, "", 0), nil); !res.OK() {
			t.Fatalf("revoke %d: %+v", i, res)
		}
		req = httptest.NewRequest("GET", "/v1/keys/"+k.ID, nil)
		if err := (auth.Signer{KeyID: g.AccessKeyID, Key: akSK}).Sign(req, nil, time.UnixMilli(h.stamp)); err != nil {
			t.Fatal(err)
		}
		if res := h.submit("n1", form(req, nil), nil); res.OK() {
			t.Fatalf("use of revoked grant %d accepted", i)
		}
	}
	// A key made and signed with at once.
	k2 := h.activeKey()
	s := &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:2], Nonce: freshNonce()}
	if res := h.submit("n1", h.userReq("POST", "/v1/keys/"+k2.ID+"/sign", `{"message":"02"}`, 0), s); !res.OK() {
		t.Fatalf("sign: %+v", res)
	}

	_, want := h.f.Hash()
	wantResults := make([]any, len(h.log))
	{
		g := openTestFSM(t, okVerifier{}, h.f.authn, nil)
		for i, l := range h.log {
			wantResults[i] = g.Apply(l)
		}
		if _, got := g.Hash(); got != want {
			t.Fatalf("one entry per batch: state %s, the harness's %s", got, want)
		}
	}
	for _, size := range []int{2, 3, 4, 5, 8, len(h.log)} {
		g := openTestFSM(t, okVerifier{}, h.f.authn, nil)
		var got []any
		for i := 0; i < len(h.log); i += size {
			got = append(got, g.ApplyBatch(h.log[i:min(i+size, len(h.log))])...)
		}
		for i := range got {
			if fmt.Sprint(got[i]) != fmt.Sprint(wantResults[i]) {
				t.Errorf("batches of %d: entry %d (index %d): %v, one per batch: %v", size, i, h.log[i].Index, got[i], wantResults[i])
			}
		}
		if _, hash := g.Hash(); hash != want {
			t.Errorf("batches of %d: state %s, one per batch %s", size, hash, want)
		}
	}
}
