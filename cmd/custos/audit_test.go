package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/node/client"
)

// prune is POST /v1/admin/audit/prune, with the node's checks: it drops the entries before
// "before" when head_hash is the hash of entry before-1, and audits itself.
func (f *fakeNode) prune(w http.ResponseWriter, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	refuse := func(status int, code, detail string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "detail": detail})
	}
	var b api.AuditPruneBody
	if err := json.Unmarshal(body, &b); err != nil || b.Before < 2 {
		refuse(400, "request.malformed", "before must be at least 2")
		return
	}
	if _, err := hex.DecodeString(b.HeadHash); err != nil || len(b.HeadHash) != 64 || b.HeadHash != strings.ToLower(b.HeadHash) {
		refuse(400, "request.malformed", "head_hash must be 64 lowercase hex characters")
		return
	}
	last, end := b.Before-1, f.audit[len(f.audit)-1]
	switch {
	case last > end.Seq:
		refuse(409, "request.conflict", "the audit log ends at seq "+strconv.FormatUint(end.Seq, 10))
		return
	case f.pruned != nil && last <= f.pruned.Seq:
		refuse(409, "request.conflict", "already pruned")
		return
	}
	i := int(last - f.audit[0].Seq)
	if f.audit[i].Hash != b.HeadHash {
		refuse(409, "request.conflict", "head_hash is not the hash of entry "+strconv.FormatUint(last, 10)+": export the range again")
		return
	}
	f.pruned = &api.AuditAnchor{Seq: last, HeadHash: b.HeadHash}
	f.audit = f.audit[i+1:]
	e := state.AuditEntry{Seq: end.Seq + 1, Time: end.Time, Actor: "admin", Action: "audit.prune", Object: "audit:" + strconv.FormatUint(last, 10),
		Outcome: "allowed", PrevHash: end.Hash}
	e.Hash = state.AuditHash(&e)
	f.audit = append(f.audit, e)
	_ = json.NewEncoder(w).Encode(f.pruned)
}

func TestAuditArchiveCLI(t *testing.T) {
	adminKey := bytes.Repeat([]byte{5}, 32)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	node := &fakeNode{t: t, verifier: v, audit: auditChain(30)}
	srv := httptest.NewServer(node)
	defer srv.Close()
	orig := append([]state.AuditEntry(nil), node.audit...)
	audit := func(args ...string) (string, error) {
		return runCLI(t, append(append([]string{"audit"}, args...), "--url", srv.URL, "--admin-key-file", keyFile)...)
	}
	export := func(before int, name string) (archiveReport, error) {
		out, err := audit("export", "--before", strconv.Itoa(before), "--out", filepath.Join(dir, name), "--page-size", "4")
		var rep archiveReport
		if err == nil {
			err = json.Unmarshal([]byte(out), &rep)
		}
		return rep, err
	}
	verify := func(archives ...string) (auditReport, error) {
		args := []string{"verify", "--page-size", "7"}
		for _, a := range archives {
			args = append(args, "--archive", filepath.Join(dir, a))
		}
		out, err := audit(args...)
		var rep auditReport
		if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
			t.Fatalf("verify %v printed %q (%v): %v", archives, out, err, jerr)
		}
		return rep, err
	}
	prune := func(archive string) (map[string]any, error) {
		out, err := audit("prune", "--archive", filepath.Join(dir, archive))
		var rep map[string]any
		if err == nil {
			err = json.Unmarshal([]byte(out), &rep)
		}
		return rep, err
	}
	noFile := func(name string) {
		t.Helper()
		for _, p := range []string{name, name + ".tmp"} {
			if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s left behind: %v", p, err)
			}
		}
	}

	// Export entries 1..10: a verified file of mode 0600, nothing else left.
	a1, err := export(11, "a1.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if a1.Entries != 10 || a1.FirstSeq != 1 || a1.LastSeq != 10 || a1.HeadHash != orig[9].Hash {
		t.Fatalf("export: %+v", a1)
	}
	st, err := os.Stat(filepath.Join(dir, "a1.jsonl"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive mode: %v %v", st, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "a1.jsonl"))
	if lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); len(lines) != 10 || !strings.HasPrefix(lines[9], `{"seq":10,`) {
		t.Fatalf("archive holds %q", b)
	}
	noFile("a1.jsonl.tmp")

	refused := []struct {
		name string
		args []string
		want string
	}{
		{"overwrite", []string{"export", "--before", "5", "--out", filepath.Join(dir, "a1.jsonl")}, "already exists"},
		{"past the end", []string{"export", "--before", "100", "--out", filepath.Join(dir, "long.jsonl")}, "ends at seq"},
		{"before 1", []string{"export", "--before", "1", "--out", filepath.Join(dir, "one.jsonl")}, "--before"},
		{"no out", []string{"export", "--before", "5"}, "--out"},
		{"prune without archive", []string{"prune"}, "--archive"},
		{"prune of a missing file", []string{"prune", "--archive", filepath.Join(dir, "none.jsonl")}, "no such file"},
		{"unknown", []string{"frobnicate"}, "unknown audit command"},
		{"stray argument", []string{"verify", "extra"}, "no arguments"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := audit(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: %v, want %q", tt.args, err, tt.want)
			}
		})
	}
	noFile("long.jsonl")
	noFile("one.jsonl")

	// Before the prune, the archive checks against the live log.
	if rep, err := verify("a1.jsonl"); err != nil || !rep.Verified || len(rep.Archives) != 1 || rep.Archives[0].LastSeq != 10 || rep.PrunedSeq != 0 {
		t.Fatalf("verify before prune: %v %+v", err, rep)
	}
	pr, err := prune("a1.jsonl")
	if err != nil || pr["pruned_seq"] != 10.0 || pr["pruned_hash"] != orig[9].Hash {
		t.Fatalf("prune: %v %v", err, pr)
	}
	if node.pruned == nil || node.pruned.Seq != 10 || node.audit[0].Seq != 11 {
		t.Fatalf("node after prune: %+v, first %d", node.pruned, node.audit[0].Seq)
	}
	rep, err := verify()
	if err != nil || !rep.Verified || rep.PrunedSeq != 10 || rep.PrunedHash != orig[9].Hash || rep.Entries != 21 || !strings.Contains(rep.Archived, "1..10") {
		t.Fatalf("verify of the pruned log: %v %+v", err, rep)
	}
	if _, err := prune("a1.jsonl"); err == nil || !strings.Contains(err.Error(), "already pruned up to seq 10") {
		t.Fatalf("second prune: %v", err)
	}

	// A second archive continues the first; prune it too.
	a2, err := export(21, "a2.jsonl")
	if err != nil || a2.FirstSeq != 11 || a2.LastSeq != 20 || a2.Entries != 10 {
		t.Fatalf("second export: %v %+v", err, a2)
	}
	if rep, err := verify("a1.jsonl", "a2.jsonl"); err != nil || !rep.Verified || len(rep.Archives) != 2 {
		t.Fatalf("verify with an unpruned archive: %v %+v", err, rep)
	}
	if _, err := prune("a2.jsonl"); err != nil {
		t.Fatal(err)
	}

	// A tampered copy of the first archive, and an archive of another log.
	tampered := strings.Replace(string(b), `"object":"user:4"`, `"object":"user:666"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "bad.jsonl"), []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	other := auditChain(25)
	other[0].Object = "user:other"
	var ob bytes.Buffer
	prev := state.GenesisHash
	for i := range other {
		other[i].PrevHash = prev
		other[i].Hash = state.AuditHash(&other[i])
		prev = other[i].Hash
		line, _ := json.Marshal(other[i])
		ob.Write(append(line, '\n'))
	}
	if err := os.WriteFile(filepath.Join(dir, "other.jsonl"), ob.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	verifies := []struct {
		name     string
		archives []string
		ok       bool
		file     string
		line     int
		reason   string
	}{
		{"all archives", []string{"a1.jsonl", "a2.jsonl"}, true, "", 0, ""},
		{"pruned log alone", nil, true, "", 0, ""},
		{"missing the second", []string{"a1.jsonl"}, false, "", 0, "give the archives of entries 11..20"},
		{"second alone", []string{"a2.jsonl"}, false, "", 0, "first one starting at seq 1"},
		{"out of order", []string{"a2.jsonl", "a1.jsonl"}, false, "", 0, "first one starting at seq 1"},
		{"twice the first", []string{"a1.jsonl", "a1.jsonl"}, false, "a1.jsonl", 1, "are the archives in order"},
		{"tampered", []string{"bad.jsonl", "a2.jsonl"}, false, "bad.jsonl", 4, "altered"},
		{"another log", []string{"other.jsonl"}, false, "", 0, "not of this log"},
	}
	for _, tt := range verifies {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := verify(tt.archives...)
			if tt.ok {
				if err != nil || !rep.Verified || rep.PrunedSeq != 20 || rep.HeadSeq != node.audit[len(node.audit)-1].Seq {
					t.Fatalf("%v %+v", err, rep)
				}
				return
			}
			if err == nil || rep.Verified || !strings.Contains(rep.Reason, tt.reason) {
				t.Fatalf("%v %+v, want %q", err, rep, tt.reason)
			}
			if tt.file != "" && (filepath.Base(rep.BrokenFile) != tt.file || rep.BrokenLine != tt.line || !strings.Contains(err.Error(), tt.file) ||
				!strings.Contains(err.Error(), "line "+strconv.Itoa(tt.line))) {
				t.Fatalf("break in %s line %d (%v), want %s line %d", rep.BrokenFile, rep.BrokenLine, err, tt.file, tt.line)
			}
		})
	}

	// Nothing that is not a verified archive of this log is pruned.
	if _, err := prune("bad.jsonl"); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("prune with a tampered archive: %v", err)
	}
	_, err = prune("other.jsonl")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != "request.conflict" {
		t.Fatalf("prune with another log's archive: %v", err)
	}
	if node.pruned.Seq != 20 {
		t.Fatalf("pruned up to %d", node.pruned.Seq)
	}
	calls := strings.Join(node.calls, "\n")
	if n := strings.Count(calls, "POST /v1/admin/audit/prune"); n != 3 {
		t.Fatalf("%d prune calls, want 3 (a1, a2, other):\n%s", n, calls)
	}
}

// forgedChain is auditChain(n) with entry at's object changed and the chain re-hashed
// from there: a log that verifies on its own.
func forgedChain(n int, at uint64) []state.AuditEntry {
	out := auditChain(n)
	prev := state.GenesisHash
	for i := range out {
		out[i].PrevHash = prev
		if out[i].Seq == at {
			out[i].Object = "user:999"
		}
		out[i].Hash = state.AuditHash(&out[i])
		prev = out[i].Hash
	}
	return out
}

// TestAuditVerifyConfirmed mounts a compromised node that serves a forged audit log,
// complete and re-hashed, so that it verifies on its own: custos audit verify asks the
// other nodes for the entry at the verified head and the pruned anchor, and says
// "verified" only when k nodes (every node named with --url) agree; a disagreement or
// too few answers fail it with a reason. A node that serves only a prefix of its log
// (every entry genuine, its newest hidden) fails too: the others hold entries after its
// head that it does not serve.
func TestAuditVerifyConfirmed(t *testing.T) {
	adminKey := bytes.Repeat([]byte{3}, 32)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: adminKey})
	honest, forged := auditChain(25), forgedChain(25, 5)
	hidden := auditChain(25)[9:] // a prefix hidden behind a pruned anchor nobody set
	serveNode := func(node *fakeNode) string {
		node.t, node.verifier = t, v
		srv := httptest.NewServer(node)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	serve := func(log []state.AuditEntry, pruned *api.AuditAnchor) string {
		return serveNode(&fakeNode{audit: log, pruned: pruned})
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	forgedURL := serve(forged, nil)
	tests := []struct {
		name     string
		verified string   // the node verified
		others   []string // --confirm-with
		want     []string // statuses, in order
		fails    string   // "" when verified
	}{
		{"all agree", serve(honest, nil), []string{serve(honest, nil), serve(honest, nil)}, []string{"agrees", "agrees"}, ""},
		{"the verified node forged its log", serve(forged, nil), []string{serve(honest, nil), serve(honest, nil)}, []string{"differs", "differs"}, "disagree"},
		{"another node differs", serve(honest, nil), []string{serve(forged, nil), serve(honest, nil)}, []string{"differs", "agrees"}, "disagree"},
		{"a prefix hidden behind a pruned anchor", serve(hidden, &api.AuditAnchor{Seq: 9, HeadHash: honest[8].Hash}), []string{serve(honest, nil)}, []string{"differs"}, "pruned anchor"},
		{"the verified node hides its newest entries", serve(honest[:20], nil), []string{serve(honest, nil), serve(honest, nil)}, []string{"ahead", "ahead"}, "hides its newest entries"},
		{"the verified node a little behind", serveNode(&fakeNode{audit: honest[:20], catchUp: honest[20:]}), []string{serve(honest, nil), serve(honest, nil)}, []string{"agrees", "agrees"}, ""},
		{"the verified node's newer entries forged", serveNode(&fakeNode{audit: honest[:20], catchUp: forgedChain(25, 23)[20:]}), []string{serve(honest, nil)}, []string{"differs"}, "disagree"},
		{"the verified node rewrote entries after its head", serveNode(&fakeNode{audit: honest[:20], catchUp: honest[20:], tamper: 22}), []string{serve(honest, nil)}, []string{"differs"}, "disagree"},
		{"another node's entries after the head do not chain", serve(honest[:20], nil), []string{serve(append(slices.Clone(honest[:20]), forgedChain(25, 5)[20:]...), nil)}, []string{"differs"}, "do not chain"},
		{"a node unreachable", serve(honest, nil), []string{serve(honest, nil), down.URL}, []string{"agrees", "unreachable"}, "only 2 node(s)"},
		{"the verified node named again", forgedURL, []string{forgedURL + "/", forgedURL}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"audit", "verify", "--url", tt.verified, "--admin-key-file", keyFile}
			for _, o := range tt.others {
				args = append(args, "--confirm-with", o)
			}
			out, err := runCLI(t, args...)
			var rep auditReport
			if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
				t.Fatalf("output %q: %v (%v)", out, jerr, err)
			}
			var got []string
			for _, c := range rep.Confirmations {
				got = append(got, c.Status)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("confirmations %v, want %v (%+v)", got, tt.want, rep.Confirmations)
			}
			if tt.fails == "" {
				// (the peers named, each once, never the verified node itself)
				if err != nil || !rep.Verified || (len(tt.want) > 0 && rep.Quorum != 1+len(tt.want)) || (len(tt.want) == 0 && rep.Unconfirmed == "") {
					t.Fatalf("%v %+v", err, rep)
				}
				return
			}
			if err == nil || rep.Verified || !strings.Contains(err.Error()+rep.Reason+rep.Confirmations[0].Detail, tt.fails) {
				t.Fatalf("want a failure naming %q: %v %+v", tt.fails, err, rep)
			}
		})
	}

	// With a cluster file: its other nodes are asked, and k of them (the verified one
	// included) suffice; a single node alone is said to be unconfirmed.
	cdir := filepath.Join(t.TempDir(), ".devcluster")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		t.Fatal(err)
	}
	cl := map[string]any{"name": "t", "threshold": 2, "admin_key_file": keyFile, "nodes": []map[string]string{
		{"id": "node1", "api": serve(honest, nil)}, {"id": "node2", "api": serve(honest, nil)}, {"id": "node3", "api": down.URL}}}
	b, _ := json.Marshal(cl)
	if err := os.WriteFile(filepath.Join(cdir, "cluster.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "audit", "verify", "--cluster", filepath.Join(cdir, "cluster.json"))
	var rep auditReport
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil || err != nil || !rep.Verified || rep.Quorum != 2 || len(rep.Confirmations) != 2 {
		t.Fatalf("cluster file, one node down: %v %v %+v", jerr, err, rep)
	}
	out, err = runCLI(t, "audit", "verify", "--url", serve(honest, nil), "--admin-key-file", keyFile)
	rep = auditReport{}
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil || err != nil || !rep.Verified || rep.Unconfirmed == "" {
		t.Fatalf("one node alone: %v %v %+v", jerr, err, rep)
	}
}
