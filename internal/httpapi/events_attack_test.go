package httpapi

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/state"
)

// TestAttackStreamOutlivesRevokedToken: a stolen user token opens an event stream; the
// admin revokes the user's tokens. A request signed with that token is refused from then
// on, so the stream must not go on serving the user's events.
func TestAttackStreamOutlivesRevokedToken(t *testing.T) {
	h := newAuthHarness(t, true)
	srv := httptest.NewServer(h.s.Handler())
	defer srv.Close()

	// The stolen token, issued a while ago.
	tok, err := h.iss.UserToken(h.userID, hex.EncodeToString(h.userKey.Public().(ed25519.PublicKey)), time.Hour, "", time.Now().Add(-30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r := request("GET", "/v1/events", nil)
	r.Header.Set("Accept", "text/event-stream")
	r.Header.Set("Authorization", "Bearer "+tok)
	sign(t, r, nil, auth.UserKeyID(h.userID), h.userKey)
	out, _ := http.NewRequest("GET", srv.URL+"/v1/events", nil)
	out.Header = r.Header.Clone()
	out.Host = r.Host
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(out.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	ids := make(chan uint64, 1024)
	go func() {
		defer close(ids)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				ids <- n
			}
		}
	}()
	top := h.fsm.EventSeq()
	for seen := uint64(0); seen < top; {
		select {
		case n, ok := <-ids:
			if !ok {
				t.Fatal("stream ended early")
			}
			seen = n
		case <-time.After(5 * time.Second):
			t.Fatalf("stream: saw up to %d of %d", seen, top)
		}
	}

	h.do(h.adminRequest("POST", "/v1/admin/users/"+itoa(h.userID)+"/revoke-tokens", nil), state.OpUserRevokeTokens, nil)
	revokedAt := h.fsm.EventSeq()
	// An event about the user's keys (made with a fresh token, through an access key or
	// by the user itself): the revoked token's stream must not carry it.
	h.do(h.userRequest("POST", "/v1/keys", []byte(`{"curve":"secp256k1","threshold":2}`)), state.OpKeyCreate, keygenSchedule())
	deadline := time.After(5 * time.Second)
	for {
		select {
		case n, ok := <-ids:
			if !ok {
				return // the stream ended: good
			}
			if n > revokedAt {
				t.Fatalf("event %d was streamed to a token revoked before it", n)
			}
		case <-deadline:
			t.Fatal("the stream of a revoked token is still open")
		}
	}
}

// sparseLog is an event log of n events of which the user sees only the seqs in
// visible, with the FSM's Events semantics.
type sparseLog struct {
	EventLog
	n       uint64
	visible map[uint64]bool
}

func (l sparseLog) Events(user uint64, all bool, after uint64, limit, scan int) (out []state.EventRecord, last uint64) {
	last = after
	read := 0
	for seq := after + 1; seq <= l.n && limit > 0; seq++ {
		read++
		last = seq
		if all || l.visible[seq] {
			out = append(out, state.EventRecord{Seq: seq, Type: api.EventRequestSubmitted, Time: 1, Owner: user})
		}
		if len(out) >= limit || read >= scan {
			break
		}
	}
	return out, last
}

// TestAttackPageNextAcrossLongGap: between two events a user may see lie more than two
// scans' worth of other users' events. The JSON page must still lead to the second one
// (a client stops when next is absent).
func TestAttackPageNextAcrossLongGap(t *testing.T) {
	h := newAuthHarness(t, true)
	n := uint64(3*streamScan + 5)
	h.s.events = sparseLog{EventLog: h.fsm, n: n, visible: map[uint64]bool{1: true, n: true}}
	after := "0"
	var got []uint64
	for range 10 {
		rec := httptest.NewRecorder()
		h.s.Handler().ServeHTTP(rec, h.userRequest("GET", "/v1/events?after="+after, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("page: %d %s", rec.Code, rec.Body)
		}
		var page api.EventList
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			got = append(got, e.Seq)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(got) != 2 || got[1] != n {
		t.Fatalf("the pages led to %v, want [1 %d]", got, n)
	}
}

// TestStreamsPerCallerBounded: one caller cannot take every stream slot of a node: its
// ninth open stream is refused 429 with Retry-After, and a slot is free again once one
// of its streams closes.
func TestStreamsPerCallerBounded(t *testing.T) {
	h := newAuthHarness(t, true)
	srv := httptest.NewServer(h.s.Handler())
	defer srv.Close()
	open := func() *http.Response {
		r := h.userRequest("GET", "/v1/events", nil)
		r.Header.Set("Accept", "text/event-stream")
		sign(t, r, nil, auth.UserKeyID(h.userID), h.userKey)
		out, _ := http.NewRequest("GET", srv.URL+"/v1/events", nil)
		out.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var streams []*http.Response
	defer func() {
		for _, r := range streams {
			r.Body.Close()
		}
	}()
	for i := range maxStreamsPerCaller {
		r := open()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", i, r.StatusCode)
		}
		streams = append(streams, r)
	}
	r := open()
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("stream past the bound: %d", r.StatusCode)
	}
	r.Body.Close()
	streams[0].Body.Close()
	streams = streams[1:]
	err := func() error {
		for range 50 {
			r := open()
			if r.StatusCode == http.StatusOK {
				streams = append(streams, r)
				return nil
			}
			r.Body.Close()
			time.Sleep(100 * time.Millisecond)
		}
		return context.DeadlineExceeded
	}()
	if err != nil {
		t.Fatal("no slot after a stream closed")
	}
}
