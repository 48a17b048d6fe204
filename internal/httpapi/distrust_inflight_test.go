package httpapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/state/statetest"
	"github.com/custos/custos/internal/statedb"
)

// TestInflightKeygenNotAnsweredFromForgedSnapshot mounts a compromised leader's attack on
// a request already past the gate at a route's start: a handler that waits for its
// request to settle (POST /v1/keys, sign, psbt: awaitRequest) reads the state again
// afterwards. The leader sees the keygen it must commit and, while the entry node's
// handler waits, installs a snapshot in which that very request is done and the key is
// active with a public key of its choosing. The answer, composed from that state, is
// judged again (exchange.answerable): 503, never the forged key.
func TestInflightKeygenNotAnsweredFromForgedSnapshot(t *testing.T) {
	h := newAuthHarness(t, true)
	h.cfg.API.WaitTimeout.Duration = 2 * time.Second
	var blocked atomic.Value
	blocked.Store("")
	h.s.distrusted = func() string { return blocked.Load().(string) }
	h.fsm.OnRestoreStart(func() error { blocked.Store("state restored from a snapshot is not yet vouched for"); return nil })

	committed := make(chan state.Result, 1)
	h.prop.set(nil, committed)
	handler := h.s.Handler()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	req := h.userRequest("POST", "/v1/keys", []byte(`{"curve":"secp256k1","threshold":2}`))
	go func() {
		defer close(done)
		handler.ServeHTTP(rec, req)
	}()
	res := <-committed
	h.prop.set(nil, nil)
	r := h.fsm.Request(res.RequestID)
	if r == nil {
		t.Fatal("no request")
	}

	// The leader's forgery: the state as it is, with the keygen done and the attacker's key.
	var buf bytes.Buffer
	if _, err := h.fsm.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	cp := statetest.Open(t, testVerifier{}, h.s.authn, nil)
	if err := cp.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	attackerPub := []byte{2, 0xee, 0xee, 0xee}
	idx, stamp := cp.AppliedIndex(), time.Now().UnixMilli()
	for _, m := range harnessMembers {
		body, _ := json.Marshal(&state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: m, PublicKey: attackerPub})
		sig, err := authn.SignNode(h.ids[m], authn.DomainReport, state.ReportMessage(state.TypeShareStored, body))
		if err != nil {
			t.Fatal(err)
		}
		idx++
		stamp++
		b, err := state.Encode(state.TypeReport, stamp, &state.Report{Node: m, Kind: state.TypeShareStored, Body: body, Sig: sig})
		if err != nil {
			t.Fatal(err)
		}
		if rr, _ := cp.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(state.Result); !rr.OK() {
			t.Fatalf("forging: %+v", rr)
		}
	}
	var forged bytes.Buffer
	if _, err := cp.WriteState(&forged); err != nil {
		t.Fatal(err)
	}
	// InstallSnapshot on the entry node while its handler waits.
	if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(forged.Bytes()))); err != nil {
		t.Fatal(err)
	}
	// New requests are refused...
	rec2 := httptest.NewRecorder()
	handler.ServeHTTP(rec2, h.userRequest("GET", "/v1/keys/"+res.KeyID, nil))
	if rec2.Code != 503 {
		t.Fatalf("a new GET of the key now: %d %s", rec2.Code, bytes.TrimSpace(rec2.Body.Bytes()))
	}
	// ... but the one in flight answers from the forged state.
	<-done
	var kv map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &kv)
	if rec.Code != 503 || kv["code"] != "cluster.unavailable" {
		t.Fatalf("the in-flight POST /v1/keys, once a forged snapshot (public key %s) was installed: %d %s", hex.EncodeToString(attackerPub), rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
	}
}

// leaderProposer is the compromised leader: before it answers the entry node's
// proposal, it has a forged snapshot installed there.
type leaderProposer struct {
	inner  *fakeProposer
	before func()
}

func (p *leaderProposer) Submit(ctx context.Context, b *state.SubmitBody) (state.Result, error) {
	if p.before != nil {
		p.before()
		p.before = nil
	}
	return p.inner.Submit(ctx, b)
}

// TestKeyReadNotAnsweredFromForgedSnapshot: every route commits through raft before it
// reads (reads included: hKeyGet calls s.commit), and the commit's round trip is the
// leader's. The gate at a route's start is passed before the leader installs its forgery
// and the read comes after: the answer must still be 503, not the forged public key.
func TestKeyReadNotAnsweredFromForgedSnapshot(t *testing.T) {
	h := newAuthHarness(t, true)
	var blocked atomic.Value
	blocked.Store("")
	h.s.distrusted = func() string { return blocked.Load().(string) }
	h.fsm.OnRestoreStart(func() error { blocked.Store("state restored from a snapshot is not yet vouched for"); return nil })

	var buf bytes.Buffer
	if _, err := h.fsm.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := statedb.ReadRecords(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	attackerPub := []byte{2, 0xee, 0xee, 0xee}
	forgedOne := false
	for i := range recs {
		var m map[string]any
		if json.Unmarshal(recs[i].Value, &m) != nil || m["key_id"] != h.keyID {
			continue
		}
		if _, ok := m["public_key"]; !ok {
			continue
		}
		m["public_key"] = attackerPub
		recs[i].Value, _ = json.Marshal(m)
		forgedOne = true
	}
	if !forgedOne {
		t.Fatal("key record not found")
	}
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, recs); err != nil {
		t.Fatal(err)
	}
	h.s.prop = &leaderProposer{inner: h.prop, before: func() {
		if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(forged.Bytes()))); err != nil {
			t.Error(err)
		}
	}}
	rec := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(rec, h.userRequest("GET", "/v1/keys/"+h.keyID, nil))
	var kv map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &kv)
	if rec.Code != 503 || kv["code"] != "cluster.unavailable" {
		t.Fatalf("GET /v1/keys/%s once a forged snapshot (public key %s) was installed: %d %s", h.keyID, hex.EncodeToString(attackerPub), rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
	}
}
