//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/custos/custos/internal/api"
	testcluster "github.com/custos/custos/test/cluster"
)

// receiver is a webhook receiver that verifies every delivery with the Standard Webhooks
// project's own Go library (an implementation independent of custos's) and records what
// it accepted. While down it answers 503.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	wh     *standardwebhooks.Webhook
	down   bool
	slow   time.Duration
	got    []delivered // every accepted delivery, duplicates included
	forged int         // deliveries whose signature did not verify
}

type delivered struct {
	id  string // webhook-id: the event id
	seq uint64
	typ string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setSecret(secret string) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		r.t.Fatalf("the secret custos gave is not a Standard Webhooks secret: %v", err)
	}
	r.mu.Lock()
	r.wh = wh
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	down, slow, wh := r.down, r.slow, r.wh
	r.mu.Unlock()
	time.Sleep(slow)
	if down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if wh == nil || wh.Verify(body, req.Header) != nil {
		r.mu.Lock()
		r.forged++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p api.WebhookPayload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	var seq uint64
	fmt.Sscanf(strings.TrimPrefix(id, "evt_"), "%x", &seq)
	r.mu.Lock()
	r.got = append(r.got, delivered{id: id, seq: seq, typ: p.Type})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) set(down bool, slow time.Duration) {
	r.mu.Lock()
	r.down, r.slow = down, slow
	r.mu.Unlock()
}

// firsts returns the first delivery of each event, in the order received, and checks
// that they came in order of seq (a duplicate may repeat an earlier one; a new event never
// comes before an older one).
func (r *receiver) firsts() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []delivered
	for _, d := range r.got {
		if seen[d.id] {
			continue
		}
		seen[d.id] = true
		if n := len(out); n > 0 && d.seq < out[n-1].seq {
			r.t.Fatalf("event %d delivered after event %d: out of order", d.seq, out[n-1].seq)
		}
		out = append(out, d)
	}
	return out
}

// TestWebhooksDeliverEveryEventInOrder: an admin's webhook receives, signed per Standard
// Webhooks (verified by the project's own library), every event of a scripted flow —
// keygen, signing, a blocked signing, an approval requested and decided, an access key
// granted and revoked — at least once and in order; a receiver down for a while gets the
// backlog once back (the failed attempts in the delivery log with their next try); the
// leader killed while deliveries are in flight loses nothing. Bad URLs, unknown event
// types and metadata addresses are refused; a receiver that redirects is not followed.
func TestWebhooksDeliverEveryEventInOrder(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"rate":     noRateLimit(),
		"webhooks": map[string]any{"allow_loopback": true, "timeout": "2s"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adm := c.Admin()
	rcv := newReceiver(t)

	for _, bad := range []api.WebhookBody{
		{URL: "ftp://example.com/hook", Events: []string{"*"}},
		{URL: "http://169.254.169.254/latest/meta-data", Events: []string{"*"}},
		{URL: "http://user:pw@example.com/", Events: []string{"*"}},
		{URL: rcv.srv.URL, Events: []string{"request.teleported"}},
	} {
		if _, err := adm.CreateWebhook(ctx, bad); apiCode(err) != "request.malformed" {
			t.Errorf("webhook %+v: %v", bad, err)
		}
	}
	// No event types: the node refuses it too (the SDK already does).
	if err := adm.Do(ctx, http.MethodPost, "/v1/admin/webhooks", map[string]any{"url": rcv.srv.URL, "events": []string{}}, nil); apiCode(err) != "request.malformed" {
		t.Errorf("webhook without events: %v", err)
	}
	hook, err := adm.CreateWebhook(ctx, api.WebhookBody{URL: rcv.srv.URL + "/custos", Events: []string{"*"}, Description: "all"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hook.Secret, "whsec_") {
		t.Fatalf("secret %q", hook.Secret)
	}
	rcv.setSecret(hook.Secret)
	hooks, err := adm.ListWebhooks(ctx)
	if err != nil || len(hooks) != 1 || hooks[0].Secret != "" {
		t.Fatalf("list shows the secret or not the hook: %v %+v", err, hooks)
	}

	alice := c.newUser(ctx, "alice")
	bob := c.newUser(ctx, "bob", "approvals:decide")
	carol := c.newUser(ctx, "carol", "approvals:decide")
	key, _, err := alice.Clients[0].CreateKey(ctx, "ed25519", 2, "hooks", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Clients[1].Sign(ctx, key.KeyID, []byte("one"), "", ""); err != nil {
		t.Fatal(err)
	}
	block, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "no 'blocked'", Activity: "sign", Rule: api.PolicyRule{Kind: "always"},
		Filters: &api.PolicyFilters{KeyIDs: []string{key.KeyID}}, Action: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Clients[2].Sign(ctx, key.KeyID, []byte("two"), "", ""); apiCode(err) != "policy.blocked" {
		t.Fatalf("blocked: %v", err)
	}
	if _, _, err := adm.ArchivePolicy(ctx, block.PolicyID); err != nil {
		t.Fatal(err)
	}
	approval, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "bob or carol", Activity: "sign", Rule: api.PolicyRule{Kind: "always"},
		Filters: &api.PolicyFilters{KeyIDs: []string{key.KeyID}}, Action: "require_approval",
		ApprovalGroups: []api.ApprovalGroup{{Name: "ops", Members: []uint64{bob.ID, carol.ID}, Quorum: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := alice.Clients[0].Sign(ctx, key.KeyID, []byte("three"), "", "")
	if err != nil || pending.ApprovalID == "" {
		t.Fatalf("pending: %v %+v", err, pending)
	}
	if _, err := bob.Clients[1].Approve(ctx, pending.ApprovalID, "ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Clients[0].WaitRequest(ctx, pending.RequestID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ak := c.grantEd25519(ctx, t, alice, []string{"keys:read"}, nil, time.Time{})
	if err := alice.Clients[1].RevokeAccessKey(ctx, ak.ID); err != nil {
		t.Fatal(err)
	}
	want := []string{api.EventRequestSubmitted, api.EventKeyCreated, api.EventRequestSigned, api.EventPolicyChanged,
		api.EventRequestBlocked, api.EventRequestPendingApproval, api.EventApprovalDecided, api.EventRequestApproved,
		api.EventAccessKeyGranted, api.EventAccessKeyRevoked}
	waitFor := func(what string, ok func([]delivered) bool) []delivered {
		t.Helper()
		var got []delivered
		err := testcluster.Until(ctx, func() bool { got = rcv.firsts(); return ok(got) })
		if err != nil {
			t.Fatalf("%s: %v; received %d events: %v", what, err, len(got), got)
		}
		return got
	}
	got := waitFor("the scripted flow", func(got []delivered) bool {
		for _, typ := range want {
			if !slices.ContainsFunc(got, func(d delivered) bool { return d.typ == typ }) {
				return false
			}
		}
		return true
	})
	// Every event from the webhook's creation on, in order, each at least once.
	all, err := adm.EventPage(ctx, hook.DeliveredThrough, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all.Events {
		if e.Seq > got[len(got)-1].seq {
			break
		}
		if !slices.ContainsFunc(got, func(d delivered) bool { return d.id == e.ID }) {
			t.Fatalf("event %d (%s) never delivered", e.Seq, e.Type)
		}
	}

	if _, _, err := adm.ArchivePolicy(ctx, approval.PolicyID); err != nil {
		t.Fatal(err)
	}
	// The receiver is down: signings go on; once back, the backlog arrives.
	rcv.set(true, 0)
	for i := range 3 {
		if _, err := alice.Clients[i].Sign(ctx, key.KeyID, []byte(fmt.Sprintf("down %d", i)), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	var failed bool
	_ = testcluster.Until(ctx, func() bool {
		ds, err := adm.WebhookDeliveries(ctx, hook.WebhookID)
		if err != nil {
			return false
		}
		for _, d := range ds {
			if d.StatusCode == http.StatusServiceUnavailable && d.NextTry != nil {
				failed = true
			}
		}
		return failed
	})
	if !failed {
		t.Fatal("no failed attempt with a next try in the delivery log while the receiver was down")
	}
	before := len(rcv.firsts())
	rcv.set(false, 0)
	waitFor("the backlog", func(got []delivered) bool { return len(got) >= before+6 })

	// Deliveries in flight (a slow receiver) when the leader is killed: nothing is lost.
	rcv.set(false, 300*time.Millisecond)
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := (leader + 1) % c.N()
	for i := range 2 {
		if _, err := alice.Clients[other].Sign(ctx, key.KeyID, []byte(fmt.Sprintf("kill %d", i)), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	c.kill(leader)
	rcv.set(false, 0)
	c.waitReady(other)
	admOther, err := c.AdminFor(other)
	if err != nil {
		t.Fatal(err)
	}
	last, err := admOther.EventPage(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	final := last.Events[len(last.Events)-1].Seq
	waitFor("every event after the leader was killed", func(got []delivered) bool {
		seen := map[uint64]bool{}
		for _, d := range got {
			seen[d.seq] = true
		}
		for _, e := range last.Events {
			if e.Seq > hook.DeliveredThrough && e.Seq <= final && !seen[e.Seq] {
				return false
			}
		}
		return true
	})
	c.start(leader)
	rcv.mu.Lock()
	forged := rcv.forged
	rcv.mu.Unlock()
	if forged != 0 {
		t.Fatalf("%d deliveries did not verify", forged)
	}
}

// TestWebhookReceiversThatMisbehave: a receiver that redirects (not followed: a failed
// attempt naming the status), one that hangs (the delivery times out), and one that
// answers 10 MiB (delivered; the node reads a few KiB of it) — while a well-behaved
// webhook keeps receiving.
func TestWebhookReceiversThatMisbehave(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"rate":     noRateLimit(),
		"webhooks": map[string]any{"allow_loopback": true, "timeout": "2s"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adm := c.Admin()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("a redirect was followed")
	}))
	defer target.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	defer redirect.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the delivery, then answer nothing until the node gives up (the server
		// notices the closed connection once the body is read).
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer hang.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 10<<20))
	}))
	defer huge.Close()
	good := newReceiver(t)
	hooks := map[string]string{}
	for name, url := range map[string]string{"redirect": redirect.URL, "hang": hang.URL, "huge": huge.URL, "good": good.srv.URL} {
		h, err := adm.CreateWebhook(ctx, api.WebhookBody{URL: url, Events: []string{api.EventRequestSigned}})
		if err != nil {
			t.Fatal(err)
		}
		hooks[name] = h.WebhookID
		if name == "good" {
			good.setSecret(h.Secret)
		}
	}
	alice := c.newUser(ctx, "alice")
	key, _, err := alice.Clients[0].CreateKey(ctx, "ed25519", 2, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := alice.Clients[i].Sign(ctx, key.KeyID, []byte(fmt.Sprintf("m%d", i)), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := testcluster.Until(ctx, func() bool { return len(good.firsts()) == 2 }); err != nil {
		t.Fatalf("the good receiver: %v (%d)", err, len(good.firsts()))
	}
	attempt := func(name string, ok func(api.Delivery) bool) {
		t.Helper()
		err := testcluster.Until(ctx, func() bool {
			ds, err := adm.WebhookDeliveries(ctx, hooks[name])
			return err == nil && slices.ContainsFunc(ds, ok)
		})
		if err != nil {
			ds, _ := adm.WebhookDeliveries(ctx, hooks[name])
			t.Fatalf("%s: %v; deliveries %+v", name, err, ds)
		}
	}
	attempt("redirect", func(d api.Delivery) bool {
		return d.StatusCode == http.StatusFound && d.Error != "" && d.NextTry != nil
	})
	attempt("hang", func(d api.Delivery) bool { return d.Error != "" && d.StatusCode == 0 })
	attempt("huge", func(d api.Delivery) bool { return d.StatusCode == http.StatusOK && d.Error == "" })
	// Deleted, a webhook receives nothing more and is gone from the list.
	if err := adm.DeleteWebhook(ctx, hooks["hang"]); err != nil {
		t.Fatal(err)
	}
	if err := adm.DeleteWebhook(ctx, hooks["hang"]); apiCode(err) != "webhook.not_found" {
		t.Fatalf("second delete: %v", err)
	}
	if hs, err := adm.ListWebhooks(ctx); err != nil || len(hs) != 3 {
		t.Fatalf("webhooks after a delete: %v %d", err, len(hs))
	}
	// The list pages as every list does (limit, after, next).
	var first, rest api.WebhookList
	if err := adm.Do(ctx, http.MethodGet, "/v1/admin/webhooks?limit=1", nil, &first); err != nil || len(first.Webhooks) != 1 || first.Next != first.Webhooks[0].WebhookID {
		t.Fatalf("first page: %v %+v", err, first)
	}
	if err := adm.Do(ctx, http.MethodGet, "/v1/admin/webhooks?limit=10&after="+first.Next, nil, &rest); err != nil || len(rest.Webhooks) != 2 || rest.Next != "" || rest.Webhooks[0].WebhookID <= first.Next {
		t.Fatalf("second page: %v %+v", err, rest)
	}
	var members api.MemberList
	if err := adm.Do(ctx, http.MethodGet, "/v1/admin/members?limit=2", nil, &members); err != nil || len(members.Members) != 2 || members.Next != members.Members[1].ID {
		t.Fatalf("members, first page: %v %+v", err, members)
	}
}
