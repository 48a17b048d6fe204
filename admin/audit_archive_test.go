package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/node/nodetest"
)

// archiveOf is a JSON Lines archive of es, as ExportAudit writes it.
func archiveOf(t testing.TB, es []state.AuditEntry) []string {
	t.Helper()
	lines := make([]string, len(es))
	for i, raw := range rawOf(t, es) {
		lines[i] = string(raw)
	}
	return lines
}

func TestAuditChainStartAfter(t *testing.T) {
	es := chainOf(8)
	raw := rawOf(t, es)
	var c AuditChain
	if err := c.StartAfter(3, es[2].Hash); err != nil {
		t.Fatal(err)
	}
	if r := c.Result(); r.HeadSeq != 3 || r.HeadHash != es[2].Hash || r.Entries != 0 || r.PrunedSeq != 3 {
		t.Fatalf("anchored, nothing added: %+v", r)
	}
	for _, r := range raw[3:] {
		if br := c.Add(r); br != nil {
			t.Fatal(br)
		}
	}
	r := c.Result()
	if r.Entries != 5 || r.FirstSeq != 4 || r.HeadSeq != 8 || r.HeadHash != es[7].Hash || r.PrunedSeq != 3 || r.PrunedHash != es[2].Hash {
		t.Fatalf("anchored chain: %+v", r)
	}
	if err := c.StartAfter(1, es[0].Hash); err == nil {
		t.Fatal("StartAfter after Add accepted")
	}

	tests := []struct {
		name   string
		seq    uint64
		hash   string
		from   int // index of the first entry added
		err    bool
		broken string
	}{
		{"seq 0", 0, es[0].Hash, 0, true, ""},
		{"short hash", 1, "abc", 1, true, ""},
		{"uppercase hash", 1, strings.ToUpper(es[0].Hash), 1, true, ""},
		{"wrong anchor hash", 2, es[0].Hash, 2, false, "anchor it follows (seq 2)"},
		{"gap after the anchor", 2, es[1].Hash, 3, false, "expected seq 3, found seq 4"},
		{"entry from genesis", 2, es[1].Hash, 0, false, "expected seq 3, found seq 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c AuditChain
			err := c.StartAfter(tt.seq, tt.hash)
			if tt.err {
				if err == nil {
					t.Fatal("accepted")
				}
				if r := c.Result(); r.HeadSeq != 0 || r.HeadHash != AuditGenesisHash || r.PrunedSeq != 0 {
					t.Fatalf("a refused anchor changed the chain: %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			br := c.Add(raw[tt.from])
			if br == nil || br.Seq != tt.seq+1 || !strings.Contains(br.Reason, tt.broken) {
				t.Fatalf("break %v, want seq %d with %q", br, tt.seq+1, tt.broken)
			}
		})
	}
}

func TestVerifyAuditArchive(t *testing.T) {
	es := chainOf(10)
	all := archiveOf(t, es)
	anchor := &AuditAnchor{Seq: 4, HeadHash: es[3].Hash}
	tests := []struct {
		name    string
		lines   []string
		after   *AuditAnchor
		err     string // an error, not a break
		line    int    // the broken line, 0 when intact
		reason  string
		entries uint64
	}{
		{"from genesis", all, nil, "", 0, "", 10},
		{"trailing newline kept", append(all[:3:3], ""), nil, "", 0, "", 3},
		{"after an anchor", all[4:], anchor, "", 0, "", 6},
		{"anchor of seq 0 is genesis", all, &AuditAnchor{HeadHash: AuditGenesisHash}, "", 0, "", 10},
		{"later archive without anchor", all[4:], nil, "does not start at seq 1", 0, "", 0},
		{"wrong anchor", all[4:], &AuditAnchor{Seq: 4, HeadHash: es[2].Hash}, "", 1, "anchor it follows", 0},
		{"anchor too far back", all[4:], &AuditAnchor{Seq: 3, HeadHash: es[2].Hash}, "", 1, "expected seq 4, found seq 5", 0},
		{"invalid anchor", all[4:], &AuditAnchor{Seq: 4, HeadHash: "x"}, "64 lowercase hex", 0, "", 0},
		{"tampered line", append(append(all[:6:6], strings.Replace(all[6], `"keys.sign"`, `"keys.list"`, 1)), all[7:]...), nil, "", 7, "altered", 6},
		{"missing line", append(all[:2:2], all[3:]...), nil, "", 3, "expected seq 3, found seq 4", 2},
		{"garbage line", append(all[:2:2], "not json", all[2]), nil, "", 3, "not a JSON object", 2},
		{"two entries on a line", append(all[:2:2], all[2]+" "+all[3]), nil, "", 3, "not a JSON object", 2},
		{"empty line", append(all[:2:2], "", all[2]), nil, "", 3, "empty line", 2},
		{"overlong line", append(all[:1:1], `{"seq":2,"pad":"`+strings.Repeat("a", MaxAuditArchiveLine)+`"}`), nil, "", 2, "longer than", 1},
		{"empty archive", nil, nil, "empty", 0, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Join(tt.lines, "\n")
			if len(tt.lines) > 0 && tt.lines[len(tt.lines)-1] != "" {
				data += "\n"
			}
			res, err := VerifyAuditArchive(strings.NewReader(data), tt.after)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				if tt.name == "later archive without anchor" && !errors.Is(err, ErrAuditArchiveAnchorNeeded) {
					t.Fatalf("error %v is not ErrAuditArchiveAnchorNeeded", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Entries != tt.entries {
				t.Fatalf("entries %d, want %d", res.Entries, tt.entries)
			}
			if tt.line == 0 {
				last := es[res.HeadSeq-1]
				if res.Broken != nil || res.HeadHash != last.Hash {
					t.Fatalf("intact archive: %+v %v", res, res.Broken)
				}
				return
			}
			if res.Broken == nil || res.Broken.Line != tt.line || !strings.Contains(res.Broken.Reason, tt.reason) ||
				!strings.Contains(res.Broken.Error(), "line "+strconv.Itoa(tt.line)) {
				t.Fatalf("break %v, want line %d with %q", res.Broken, tt.line, tt.reason)
			}
		})
	}
}

// TestExportAuditStopsAtBreak exports from a node that serves an altered entry: only
// the verified entries before it are written, and the break is the error.
func TestExportAuditStopsAtBreak(t *testing.T) {
	node := &tamperingNode{es: chainOf(1500), tamper: 1200}
	srv := httptest.NewServer(node)
	defer srv.Close()
	a, err := New(make([]byte, 32), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := a.ExportAudit(context.Background(), 1400, &buf, 500)
	var br *AuditBreak
	if !errors.As(err, &br) || br.Seq != 1200 || res == nil || res.Entries != 1199 {
		t.Fatalf("export over a break: %v %+v", err, res)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1199 {
		t.Fatalf("%d lines written, want the 1199 verified ones", n)
	}
	ver, err := VerifyAuditArchive(&buf, nil)
	if err != nil || ver.Broken != nil || ver.HeadSeq != 1199 {
		t.Fatalf("the written prefix: %+v %v", ver, err)
	}
}

// TestAuditArchiveAndPrune exports, verifies, prunes and verifies again on a cluster of
// its own (a prune would change the shared cluster's log under the other tests).
func TestAuditArchiveAndPrune(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2})
	a, err := New(cl.AdminKey(), cl.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 6 {
		if _, err := a.CreateUser(ctx, "archived "+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := a.AuditPruned(ctx); err != nil || p != nil {
		t.Fatalf("pruned anchor before any prune: %+v %v", p, err)
	}

	// Export entries 1..5 in pages of 2 and check them against what the node serves.
	const before = 6
	var arch bytes.Buffer
	exp, err := a.ExportAudit(ctx, before, &arch, 2)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Entries != 5 || exp.FirstSeq != 1 || exp.HeadSeq != 5 || exp.PrunedSeq != 0 {
		t.Fatalf("export: %+v", exp)
	}
	served, err := a.Audit(ctx, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(arch.String(), "\n"), "\n")
	for i, l := range lines {
		want, _ := json.Marshal(served[i])
		if l != string(want) {
			t.Fatalf("line %d\n got %s\nwant %s", i+1, l, want)
		}
	}
	ver, err := VerifyAuditArchive(bytes.NewReader(arch.Bytes()), nil)
	if err != nil || ver.Broken != nil || ver.HeadSeq != 5 || ver.HeadHash != exp.HeadHash || ver.HeadHash != served[4].Hash {
		t.Fatalf("archive: %+v %v", ver, err)
	}

	// Refused prunes change nothing.
	refused := []struct {
		name   string
		before uint64
		hash   string
		status int
		code   string
	}{
		{"wrong head hash", before, strings.Repeat("ab", 32), http.StatusConflict, "request.conflict"},
		{"hash of another entry", before, served[3].Hash, http.StatusConflict, "request.conflict"},
		{"past the end", 1 << 40, exp.HeadHash, http.StatusConflict, "request.conflict"},
		{"uppercase hash", before, strings.ToUpper(exp.HeadHash), http.StatusBadRequest, "request.malformed"},
		{"short hash", before, "abcd", http.StatusBadRequest, "request.malformed"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.PruneAudit(ctx, tt.before, tt.hash)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("prune: %v, want %d %s", err, tt.status, tt.code)
			}
		})
	}
	if _, err := a.PruneAudit(ctx, 1, exp.HeadHash); err == nil {
		t.Fatal("prune before seq 1 accepted")
	}
	if p, err := a.AuditPruned(ctx); err != nil || p != nil {
		t.Fatalf("a refused prune pruned: %+v %v", p, err)
	}

	anchor, err := a.PruneAudit(ctx, before, exp.HeadHash)
	if err != nil {
		t.Fatal(err)
	}
	if anchor.Seq != 5 || anchor.HeadHash != exp.HeadHash {
		t.Fatalf("anchor %+v, want the archive's head", anchor)
	}
	if _, err := a.PruneAudit(ctx, before, exp.HeadHash); err == nil {
		t.Fatal("a second prune of the same range accepted")
	}

	// The rest verifies from the anchor, and the prune is in it.
	res, err := a.VerifyAudit(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Broken != nil || res.PrunedSeq != 5 || res.PrunedHash != exp.HeadHash || res.FirstSeq != 6 || res.Entries != res.HeadSeq-5 {
		t.Fatalf("pruned log: %+v %v", res, res.Broken)
	}
	if p, err := a.AuditPruned(ctx); err != nil || p == nil || *p != *anchor {
		t.Fatalf("pruned anchor %+v %v, want %+v", p, err, anchor)
	}
	es, err := a.Audit(ctx, 0, MaxAuditPage)
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Seq != 6 || es[0].PrevHash != exp.HeadHash {
		t.Fatalf("first entry kept: %+v", es[0])
	}
	found := false
	for _, e := range es {
		found = found || (e.Action == "audit.prune" && e.Object == "audit:5" && e.Outcome == "allowed")
	}
	if !found {
		t.Fatal("the prune is not in the audit log")
	}

	// A second archive continues the first.
	if _, err := a.ExportAudit(ctx, before, &bytes.Buffer{}, 0); err == nil || !strings.Contains(err.Error(), "already pruned") {
		t.Fatalf("export of a pruned range: %v", err)
	}
	if _, err := a.ExportAudit(ctx, 1<<40, &bytes.Buffer{}, 0); err == nil || !strings.Contains(err.Error(), "ends at seq") {
		t.Fatalf("export past the end: %v", err)
	}
	if _, err := a.ExportAudit(ctx, 1, &bytes.Buffer{}, 0); err == nil {
		t.Fatal("export before seq 1 accepted")
	}
	var arch2 bytes.Buffer
	exp2, err := a.ExportAudit(ctx, 9, &arch2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if exp2.Entries != 3 || exp2.FirstSeq != 6 || exp2.HeadSeq != 8 || exp2.PrunedSeq != 5 || exp2.PrunedHash != exp.HeadHash {
		t.Fatalf("second export: %+v", exp2)
	}
	if _, err := VerifyAuditArchive(bytes.NewReader(arch2.Bytes()), nil); !errors.Is(err, ErrAuditArchiveAnchorNeeded) {
		t.Fatalf("second archive without an anchor: %v", err)
	}
	ver2, err := VerifyAuditArchive(bytes.NewReader(arch2.Bytes()), &AuditAnchor{Seq: ver.HeadSeq, HeadHash: ver.HeadHash})
	if err != nil || ver2.Broken != nil || ver2.HeadSeq != 8 || ver2.HeadHash != exp2.HeadHash {
		t.Fatalf("second archive after the first: %+v %v", ver2, err)
	}
}

// prunedNode serves GET /v1/audit from a chain pruned up to pruned (0: not pruned).
// stale makes the first page hold pruned entries too (the node read its entries before a
// prune and its anchor after it); pruneAt prunes up to that seq after the first page.
type prunedNode struct {
	mu      sync.Mutex
	es      []state.AuditEntry
	pruned  uint64
	hash    string // the anchor's hash served, when not the entry's
	stale   bool
	pruneAt uint64
	pages   int
}

func (n *prunedNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	defer n.mu.Unlock()
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	first := n.pruned
	if n.stale && n.pages == 0 {
		first = 0
	}
	if n.pages == 1 && n.pruneAt != 0 {
		n.pruned = n.pruneAt
	}
	n.pages++
	page := api.AuditList{Entries: []api.AuditEntry{}}
	for _, e := range n.es {
		if e.Seq > after && e.Seq > first && len(page.Entries) < limit {
			page.Entries = append(page.Entries, api.AuditEntry(e))
		}
	}
	if n.pruned != 0 {
		h := n.es[n.pruned-1].Hash
		if n.hash != "" {
			h = n.hash
		}
		page.Pruned = &AuditAnchor{Seq: n.pruned, HeadHash: h}
	}
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	_ = json.NewEncoder(w).Encode(page)
}

func TestVerifyAuditPrunedLog(t *testing.T) {
	es := chainOf(20)
	tests := []struct {
		name   string
		node   *prunedNode
		err    string
		broken string
	}{
		{"pruned", &prunedNode{pruned: 7}, "", ""},
		{"anchor read after a prune", &prunedNode{pruned: 7, stale: true}, "", ""},
		{"pruned while read", &prunedNode{pruneAt: 12}, "pruned up to seq 12 while it was read", ""},
		{"anchor of another entry", &prunedNode{pruned: 7, hash: es[3].Hash}, "", "anchor it follows (seq 7)"},
		{"invalid anchor", &prunedNode{pruned: 7, hash: "nothex"}, "pruned anchor", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.node.es = es
			srv := httptest.NewServer(tt.node)
			defer srv.Close()
			a, err := New(make([]byte, 32), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.VerifyAudit(context.Background(), 5)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.broken != "" {
				if res.Broken == nil || res.Broken.Seq != 8 || !strings.Contains(res.Broken.Reason, tt.broken) {
					t.Fatalf("break %v, want seq 8 with %q", res.Broken, tt.broken)
				}
				return
			}
			if res.Broken != nil || res.PrunedSeq != 7 || res.PrunedHash != es[6].Hash || res.FirstSeq != 8 || res.Entries != 13 ||
				res.HeadSeq != 20 || res.HeadHash != es[19].Hash {
				t.Fatalf("pruned log: %+v %v", res, res.Broken)
			}
		})
	}
}
