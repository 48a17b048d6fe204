package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auditchain"
	"github.com/custos/custos/internal/state"
)

// chainOf builds n entries with the node's own hashing (internal/state), so that the
// verifier here is checked against the writer. Both canonicalise with internal/auditchain;
// TestCanonicalJSON checks that against RFC 8785's own examples. Every fifth object holds
// invalid UTF-8, which the node's encoding/json serves as \ufffd.
func chainOf(n int) []state.AuditEntry {
	out := make([]state.AuditEntry, 0, n)
	prev := state.GenesisHash
	for i := 1; i <= n; i++ {
		e := state.AuditEntry{Seq: uint64(i), Time: "2026-01-02T03:04:05.123Z", Actor: "user:" + strconv.Itoa(i%7),
			Action: "keys.sign", Object: fmt.Sprintf("req_%d \"quoted\" \\ é\u2028\t\x01", i), Outcome: "allowed", PrevHash: prev}
		if i%5 == 0 {
			e.Object += "\xff a\xc3"
		}
		if i%3 == 0 {
			e.Outcome, e.Code = "refused", "perm.denied"
		}
		e.Hash = state.AuditHash(&e)
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func rawOf(t testing.TB, es []state.AuditEntry) []json.RawMessage {
	t.Helper()
	out := make([]json.RawMessage, len(es))
	for i := range es {
		b, err := json.Marshal(es[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func TestAuditEntryHashMatchesTheNode(t *testing.T) {
	for _, e := range chainOf(40) {
		b, _ := json.Marshal(e)
		got, err := AuditEntryHash(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != e.Hash {
			t.Fatalf("seq %d: recomputed %s, node wrote %s", e.Seq, got, e.Hash)
		}
		c, _ := auditchain.EntryCanonical(b)
		if string(c) != string(state.AuditCanonical(&e)) {
			t.Fatalf("canonical forms differ:\n%s\n%s", c, state.AuditCanonical(&e))
		}
	}
}

// TestCanonicalJSON uses RFC 8785's own examples (§3.2.2.3 numbers, §3.2.3 sorting).
func TestCanonicalJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"b":2,"a":1,"hash":"x"}`, `{"a":1,"b":2}`},
		{`{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001,-0,1e21,1e20,1e-6,1e-7,-12.5e2]}`,
			`{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27,0,1e+21,100000000000000000000,0.000001,1e-7,-1250]}`},
		{`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew","1":"One","\ud83d\ude00":"Emoji","\u0080":"Control","\u00f6":"o"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"\u00f6\":\"o\",\"\u20ac\":\"Euro Sign\",\"\U0001F600\":\"Emoji\",\"\ufb33\":\"Hebrew\"}"},
		{`{"s":"\u0000\u001f\u007f\"\\\/\b\f\n\r\t","l":[true,false,null,{"z":{},"y":[]}]}`,
			`{"l":[true,false,null,{"y":[],"z":{}}],"s":"\u0000\u001f` + "\u007f" + `\"\\/\b\f\n\r\t"}`},
	}
	for _, tt := range tests {
		got, err := auditchain.EntryCanonical([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("canonical(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":1}}`, `{"a":1} {}`, `{"a":NaN}`, `{"a":1e400}`, `{`,
		"{\"a\":\"\xff\"}", `{"a":"\ud800"}`, `{"a":"\udc00\u0041"}`, `{"hash":"x","hash":"y"}`,
		strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)} {
		if _, err := auditchain.EntryCanonical([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	// Repeated names in different objects are fine.
	if _, err := auditchain.EntryCanonical([]byte(`{"a":{"a":1},"b":[{"a":1},{"a":2}]}`)); err != nil {
		t.Fatal(err)
	}
}

func TestAuditChain(t *testing.T) {
	good := chainOf(6)
	tests := []struct {
		name    string
		mutate  func(es []state.AuditEntry, raw []json.RawMessage) []json.RawMessage
		seq     uint64
		reason  string
		checked uint64
	}{
		{"intact", func(_ []state.AuditEntry, raw []json.RawMessage) []json.RawMessage { return raw }, 0, "", 6},
		{"altered field", func(es []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			es[3].Outcome = "refused"
			return rawOf(t, es)
		}, 4, "recomputed", 3},
		{"extra field", func(es []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			raw[2] = json.RawMessage(strings.Replace(string(raw[2]), `{`, `{"note":"added",`, 1))
			return raw
		}, 3, "recomputed", 2},
		{"rehashed but unlinked", func(es []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			es[2].Actor = "admin"
			es[2].Hash = state.AuditHash(&es[2])
			return rawOf(t, es)
		}, 4, "does not match the hash", 3},
		{"missing entry", func(_ []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			return append(raw[:2:2], raw[3:]...)
		}, 3, "expected seq 3, found seq 4", 2},
		{"bad genesis", func(es []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			es[0].PrevHash = strings.Repeat("1", 64)
			es[0].Hash = state.AuditHash(&es[0])
			return rawOf(t, es)
		}, 1, "genesis", 0},
		{"not json", func(_ []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			raw[1] = json.RawMessage(`"x"`)
			return raw
		}, 2, "not a JSON object", 1},
		{"no hash", func(_ []state.AuditEntry, raw []json.RawMessage) []json.RawMessage {
			raw[0] = json.RawMessage(`{"seq":1,"prev_hash":"` + state.GenesisHash + `"}`)
			return raw
		}, 1, "lacks", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := append([]state.AuditEntry(nil), good...)
			raw := tt.mutate(es, rawOf(t, es))
			var c AuditChain
			for _, r := range raw {
				c.Add(r)
			}
			res := c.Result()
			if res.Entries != tt.checked {
				t.Fatalf("checked %d, want %d", res.Entries, tt.checked)
			}
			if tt.seq == 0 {
				if res.Broken != nil || res.HeadSeq != 6 || res.HeadHash != good[5].Hash {
					t.Fatalf("intact chain: %+v %v", res, res.Broken)
				}
				return
			}
			if res.Broken == nil || res.Broken.Seq != tt.seq || !strings.Contains(res.Broken.Reason, tt.reason) {
				t.Fatalf("break %v, want seq %d with %q", res.Broken, tt.seq, tt.reason)
			}
			if !strings.Contains(res.Broken.Error(), "seq "+strconv.FormatUint(tt.seq, 10)) {
				t.Fatal(res.Broken.Error())
			}
		})
	}
	var empty AuditChain
	if r := empty.Result(); r.HeadHash != AuditGenesisHash || r.Entries != 0 || r.Broken != nil {
		t.Fatalf("empty chain: %+v", r)
	}
}

func TestVerifyAudit(t *testing.T) {
	a, _ := hmacAdmin(t, 1)
	ctx := context.Background()
	for i := range 3 {
		if _, err := a.CreateUser(ctx, "audited "+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, pageSize := range []int{0, 3} {
		res, err := a.VerifyAudit(ctx, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		if res.Broken != nil || res.Entries < 4 || res.HeadSeq != res.Entries {
			t.Fatalf("pages of %d: %+v %v", pageSize, res, res.Broken)
		}
		// The head is the entry the node serves at that seq.
		es, err := a.Audit(ctx, res.HeadSeq-1, 1)
		if err != nil || len(es) != 1 || es[0].Seq != res.HeadSeq || es[0].Hash != res.HeadHash {
			t.Fatalf("head seq %d hash %s, the node serves %+v %v", res.HeadSeq, res.HeadHash, es, err)
		}
	}
}

// tamperingNode serves GET /v1/audit from a chain, altering one entry after hashing, and
// like a node appends an entry for every read: VerifyAudit must find the altered entry.
type tamperingNode struct {
	mu     sync.Mutex
	es     []state.AuditEntry
	tamper uint64
}

func (n *tamperingNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	defer n.mu.Unlock()
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	last := n.es[len(n.es)-1]
	e := state.AuditEntry{Seq: last.Seq + 1, Time: last.Time, Actor: "admin", Action: "audit.list", Outcome: "allowed", PrevHash: last.Hash}
	e.Hash = state.AuditHash(&e)
	n.es = append(n.es, e)
	page := api.AuditList{Entries: []api.AuditEntry{}}
	for _, e := range n.es {
		if e.Seq > after && len(page.Entries) < limit {
			if e.Seq == n.tamper {
				e.Object = "tampered"
			}
			page.Entries = append(page.Entries, api.AuditEntry(e))
		}
	}
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	_ = json.NewEncoder(w).Encode(page)
}

// TestVerifyAuditAfterEnds: a node appends an entry for every read, so a reader that
// asks again after a short page always finds one more: VerifyAuditAfter stops at a short
// page (custos audit verify read a live node's tail a thousand times, then was rate
// limited), and verifies what it read from the head given.
func TestVerifyAuditAfterEnds(t *testing.T) {
	node := &tamperingNode{es: chainOf(20)}
	var reads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reads.Add(1)
		node.ServeHTTP(w, r)
	}))
	defer srv.Close()
	a, err := New(make([]byte, 32), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	head := node.es[9]
	res, err := a.VerifyAuditAfter(context.Background(), head.Seq, head.Hash, head.Seq+MaxAuditPage, MaxAuditPage)
	if err != nil || res.Broken != nil || res.HeadSeq < 20 {
		t.Fatalf("%+v %v", res, err)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d reads for one short page", n)
	}
	// From another head than the node's entry at that seq: the first entry does not chain.
	res, err = a.VerifyAuditAfter(context.Background(), head.Seq, node.es[8].Hash, head.Seq+MaxAuditPage, MaxAuditPage)
	if err != nil || res.Broken == nil || res.Broken.Seq != head.Seq+1 {
		t.Fatalf("from a head the node does not hold: %+v %v", res, err)
	}
}

// TestVerifyAuditFindsTampering checks what no honest node serves: an entry altered after
// it was hashed, in the second page.
func TestVerifyAuditFindsTampering(t *testing.T) {
	node := &tamperingNode{es: chainOf(1500), tamper: 1200}
	srv := httptest.NewServer(node)
	defer srv.Close()
	a, err := New(make([]byte, 32), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.VerifyAudit(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if res.Broken == nil || res.Broken.Seq != 1200 || res.Entries != 1199 || !strings.Contains(res.Broken.Reason, "altered") {
		t.Fatalf("tampered chain: %+v %v", res, res.Broken)
	}
}

// FuzzAuditEntryHash feeds arbitrary entries to the canonicaliser: it never panics, and
// canonical JSON is a fixed point.
func FuzzAuditEntryHash(f *testing.F) {
	for _, e := range rawOf(f, chainOf(3)) {
		f.Add([]byte(e))
	}
	f.Add([]byte(`{"a":[1.5e300,-0.0,{"b":null}],"\ud83d\ude00":"\u0000"}`))
	f.Add([]byte(`{"a":1,"a":1}`))
	f.Add([]byte("{\"a\":\"\xff\",\"b\":\"" + `\udc00` + "\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := auditchain.EntryCanonical(data)
		if err != nil {
			return
		}
		c2, err := auditchain.EntryCanonical(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("canonical form is not a fixed point:\n%s\n%s (%v)", c, c2, err)
		}
		var chain AuditChain
		chain.Add(data)
	})
}
