package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/durable"
)

const auditUsage = `usage: custos audit verify [--archive FILE ...] [--page-size N] [--confirm-with URL ...]
       custos audit export --before SEQ --out FILE [--page-size N]
       custos audit prune --archive FILE`

// auditReport is what `custos audit verify` prints.
type auditReport struct {
	Verified bool   `json:"verified"`
	Entries  uint64 `json:"entries_checked"`
	HeadSeq  uint64 `json:"head_seq"`
	HeadHash string `json:"head_hash"`
	// PrunedSeq and PrunedHash are the node's pruned anchor: entries 1..PrunedSeq were
	// archived, and the live log was verified from there.
	PrunedSeq  uint64 `json:"pruned_seq,omitempty"`
	PrunedHash string `json:"pruned_hash,omitempty"`
	// Archived says what to do about the pruned range when no archive was given.
	Archived string `json:"archived,omitempty"`
	// Archives are the archives verified (--archive), in order.
	Archives []archiveReport `json:"archives,omitempty"`
	// BrokenSeq and Reason describe the first broken link; BrokenFile and BrokenLine
	// name it when it is in an archive.
	BrokenSeq  uint64 `json:"broken_seq,omitempty"`
	BrokenFile string `json:"broken_file,omitempty"`
	BrokenLine int    `json:"broken_line,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Node       string `json:"node"`
	// Confirmations are the other nodes asked whether they hold the same entry at
	// head_seq and the same pruned anchor (the cluster file's other nodes, or
	// --confirm-with); Quorum is how many nodes, the verified one included, must agree:
	// the cluster's k with a cluster file, else every node named. A node that serves a
	// forged log verifies on its own (the chain is only SHA-256 links); it cannot make k
	// nodes agree with it.
	Confirmations []confirmation `json:"confirmations,omitempty"`
	Quorum        int            `json:"quorum,omitempty"`
	// Unconfirmed says that no other node was asked.
	Unconfirmed string `json:"unconfirmed,omitempty"`
}

// confirmation is what another node said of the verified log's head.
type confirmation struct {
	Node string `json:"node"`
	// Status is "agrees", "differs" (another entry at head_seq or another pruned
	// anchor), "ahead" (it holds entries after head_seq that the verified node does not
	// serve within 10 s: that node is behind or hides its newest entries) or
	// "unreachable" (no answer, or behind the head for 10 s).
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// auditPeer is another node to confirm the verified log with.
type auditPeer struct {
	url string
	a   *admin.Admin
}

// archiveReport describes one archive: what `custos audit export` wrote, or what
// `custos audit verify --archive` verified.
type archiveReport struct {
	File     string `json:"file"`
	Entries  uint64 `json:"entries"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	HeadHash string `json:"head_hash"`
	Next     string `json:"next,omitempty"`
}

// fileList is a flag that may be given several times.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }

func (l *fileList) Set(s string) error {
	if s == "" {
		return errors.New("empty file name")
	}
	*l = append(*l, s)
	return nil
}

func cmdAudit(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(auditUsage)
	}
	sub := args[0]
	switch sub {
	case "verify", "export", "prune":
	default:
		return fmt.Errorf("unknown audit command %q\n%s", sub, auditUsage)
	}
	fset := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	var c conn
	c.register(fset)
	pageSize := fset.Int("page-size", 1000, "entries per page (at most 1000)")
	before := fset.Uint64("before", 0, "export: the first seq not exported (entries 1..SEQ-1, or from the node's first kept entry)")
	out := fset.String("out", "", "export: the archive file to create (never overwritten)")
	var archives, confirmWith fileList
	fset.Var(&archives, "archive", "verify: an archive, from the oldest on (repeat the flag); prune: the archive whose range to prune")
	fset.Var(&confirmWith, "confirm-with", "verify: another node's API URL that must hold the same log head (repeat the flag; default with a cluster file: its other nodes)")
	pos, err := parse(fset, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("audit %s takes no arguments, got %q\n%s", sub, pos[0], auditUsage)
	}
	switch sub {
	case "export":
		if *out == "" || *before < 2 {
			return errors.New("audit export needs --before SEQ (at least 2: entries before it are exported) and --out FILE")
		}
	case "prune":
		if len(archives) != 1 {
			return errors.New("audit prune needs exactly one --archive FILE (written by custos audit export)")
		}
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	u, _ := c.baseURL()
	cx, cancel := ctx()
	defer cancel()
	switch sub {
	case "export":
		return auditExport(cx, a, *before, *out, *pageSize, stdout)
	case "prune":
		return auditPrune(cx, a, archives[0], stdout)
	default:
		peers, quorum, err := c.auditPeers(u, confirmWith)
		if err != nil {
			return err
		}
		return auditVerify(cx, a, u, *pageSize, archives, peers, quorum, stdout)
	}
}

// auditPeers are the nodes other than self that verify asks to confirm the log's head,
// and how many nodes must agree: with --url, the --confirm-with nodes, all of them; with
// a cluster file, its other nodes (and any --confirm-with), k of the cluster.
func (c *conn) auditPeers(self string, confirmWith []string) ([]auditPeer, int, error) {
	self = strings.TrimRight(self, "/")
	var urls []string
	add := func(u string) {
		// The verified node never confirms itself, nor does a node count twice.
		if u = strings.TrimRight(u, "/"); u != self && !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	for _, u := range confirmWith {
		add(u)
	}
	quorum := 1 + len(urls)
	if c.url == "" {
		cl, _, err := c.clusterFile()
		if err != nil {
			return nil, 0, err
		}
		for _, n := range cl.Nodes {
			add(n.API)
		}
		quorum = max(cl.Threshold, 1)
	}
	peers := make([]auditPeer, 0, len(urls))
	for _, u := range urls {
		a, err := c.adminFor(u)
		if err != nil {
			return nil, 0, err
		}
		peers = append(peers, auditPeer{url: u, a: a})
	}
	return peers, quorum, nil
}

// confirmHead asks peer whether it holds the entry seq with hash and the pruned anchor
// (prunedSeq, prunedHash), waiting up to 10 s for a peer behind seq.
func confirmHead(cx context.Context, p auditPeer, seq uint64, hash string, prunedSeq uint64, prunedHash string) confirmation {
	cf := confirmation{Node: p.url}
	anchor, err := p.a.AuditPruned(cx)
	if err != nil {
		cf.Status, cf.Detail = "unreachable", err.Error()
		return cf
	}
	var aSeq uint64
	var aHash string
	if anchor != nil {
		aSeq, aHash = anchor.Seq, anchor.HeadHash
	}
	if aSeq != prunedSeq || aHash != prunedHash {
		cf.Status, cf.Detail = "differs", fmt.Sprintf("its pruned anchor is seq %d hash %q, the verified node's seq %d hash %q", aSeq, aHash, prunedSeq, prunedHash)
		return cf
	}
	if seq == prunedSeq {
		cf.Status = "agrees" // nothing kept past the anchor: the anchor is the head
		return cf
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		es, err := p.a.Audit(cx, seq-1, 1)
		switch {
		case err != nil:
			cf.Status, cf.Detail = "unreachable", err.Error()
			return cf
		case len(es) == 1 && es[0].Seq == seq && es[0].Hash == hash:
			cf.Status = "agrees"
			return cf
		case len(es) == 1:
			cf.Status, cf.Detail = "differs", fmt.Sprintf("its entry %d has hash %s, the verified node's %s", es[0].Seq, es[0].Hash, hash)
			return cf
		case time.Now().After(deadline):
			cf.Status, cf.Detail = "unreachable", fmt.Sprintf("its log has not reached seq %d", seq)
			return cf
		}
		select {
		case <-cx.Done():
			cf.Status, cf.Detail = "unreachable", cx.Err().Error()
			return cf
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// confirmTail checks that the verified log (read from a) does not end before peer's,
// which agreed on its head (seq, hash): a node that serves a prefix of its log, every
// entry genuine, verifies and has its head confirmed, while hiding what follows. The
// peer's entries after the head (up to a page) must chain from it — else it "differs" —
// and a must serve the same entries, chained from the head, up to the peer's last one,
// waiting until deadline for a node a little behind: else "ahead" (a serves less) or
// "differs" (another entry). The error is a's failure to answer.
func confirmTail(cx context.Context, a *admin.Admin, p auditPeer, seq uint64, hash string, deadline time.Time, cf confirmation) (confirmation, error) {
	tail, err := p.a.VerifyAuditAfter(cx, seq, hash, seq+admin.MaxAuditPage, admin.MaxAuditPage)
	if err != nil {
		cf.Status, cf.Detail = "unreachable", err.Error()
		return cf, nil
	}
	if b := tail.Broken; b != nil {
		cf.Status, cf.Detail = "differs", fmt.Sprintf("its entries after the verified head do not chain from it: %v", b)
		return cf, nil
	}
	if tail.HeadSeq == seq {
		return cf, nil
	}
	for {
		got, err := a.VerifyAuditAfter(cx, seq, hash, tail.HeadSeq, admin.MaxAuditPage)
		switch {
		case err != nil:
			return cf, fmt.Errorf("read the verified node's entries %d..%d: %w", seq+1, tail.HeadSeq, err)
		case got.Broken != nil:
			cf.Status, cf.Detail = "differs", fmt.Sprintf("its entries %d..%d chain from the verified head; the verified node's do not: %v", seq+1, tail.HeadSeq, got.Broken)
			return cf, nil
		case got.HeadSeq == tail.HeadSeq && got.HeadHash == tail.HeadHash:
			return cf, nil
		case got.HeadSeq == tail.HeadSeq:
			cf.Status, cf.Detail = "differs", fmt.Sprintf("its entry %d, after the verified head, has hash %s, the verified node's %s", tail.HeadSeq, tail.HeadHash, got.HeadHash)
			return cf, nil
		case time.Now().After(deadline):
			cf.Status, cf.Detail = "ahead", fmt.Sprintf("it holds entries %d..%d after the verified head, chained from it; the verified node serves them up to %d", seq+1, tail.HeadSeq, got.HeadSeq)
			return cf, nil
		}
		select {
		case <-cx.Done():
			return cf, cx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// auditExport writes entries before `before` to path.tmp, verifies what it wrote, and
// only then gives it its name path (never replacing a file).
func auditExport(cx context.Context, a *admin.Admin, before uint64, path string, pageSize int, stdout io.Writer) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists: an archive is never overwritten; choose another --out", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists, left by an interrupted export: make sure no export is running, remove it and export again", tmp)
	}
	if err != nil {
		return fmt.Errorf("create the archive: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	res, err := a.ExportAudit(cx, before, f, pageSize)
	if err != nil {
		return fmt.Errorf("export failed, nothing written to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	// Read back what is on disk and verify it as `audit prune` will.
	var after *admin.AuditAnchor
	if res.PrunedSeq != 0 {
		after = &admin.AuditAnchor{Seq: res.PrunedSeq, HeadHash: res.PrunedHash}
	}
	check, err := verifyArchiveFile(tmp, after)
	if err == nil && (check.Broken != nil || check.HeadSeq != res.HeadSeq || check.HeadHash != res.HeadHash) {
		err = fmt.Errorf("it reads back as %d entries up to seq %d (%v)", check.Entries, check.HeadSeq, check.Broken)
	}
	if err != nil {
		return fmt.Errorf("the archive written does not verify, nothing written to %s: %w", path, err)
	}
	if err := publish(tmp, path); err != nil {
		return err
	}
	done = true
	return printJSON(stdout, archiveReport{File: path, Entries: res.Entries, FirstSeq: res.FirstSeq, LastSeq: res.HeadSeq, HeadHash: res.HeadHash,
		Next: "keep " + path + " safe; custos audit prune --archive " + path + " drops these entries from the nodes"})
}

// publish gives the finished file tmp its name path, without ever replacing a file there
// (a hard link fails when path exists), and syncs the directory.
func publish(tmp, path string) error {
	err := os.Link(tmp, path)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s appeared during the export: an archive is never overwritten; the export is in %s", path, tmp)
	case err != nil:
		// No hard links here (some file systems): rename, after checking again.
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("%s appeared during the export: an archive is never overwritten; the export is in %s", path, tmp)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
		}
	default:
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("remove %s: %w", tmp, err)
		}
	}
	_ = durable.SyncDir(filepath.Dir(path)) // best effort: some filesystems cannot
	return nil
}

// verifyArchiveFile verifies the archive in path (admin.VerifyAuditArchive).
func verifyArchiveFile(path string, after *admin.AuditAnchor) (*admin.AuditVerification, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the archive: %w", err)
	}
	defer f.Close()
	res, err := admin.VerifyAuditArchive(f, after)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

// auditPrune prunes the node's log up to the last entry of a verified archive.
func auditPrune(cx context.Context, a *admin.Admin, path string, stdout io.Writer) error {
	anchor, err := a.AuditPruned(cx)
	if err != nil {
		return err
	}
	res, err := verifyArchiveFile(path, nil)
	if errors.Is(err, admin.ErrAuditArchiveAnchorNeeded) {
		if anchor == nil {
			return fmt.Errorf("%w; the node's log was never pruned: prune with the archive that starts at seq 1 first", err)
		}
		res, err = verifyArchiveFile(path, anchor)
	}
	if err != nil {
		return fmt.Errorf("nothing pruned: %w", err)
	}
	if res.Broken != nil {
		hint := "export the range again"
		if res.PrunedSeq != 0 && res.Broken.Line == 1 {
			hint = fmt.Sprintf("it must continue the node's pruned range, which ends at seq %d", res.PrunedSeq)
		}
		return fmt.Errorf("nothing pruned: %s does not verify: %w (%s)", path, res.Broken, hint)
	}
	if anchor != nil && res.HeadSeq <= anchor.Seq {
		return fmt.Errorf("nothing to prune: the node's log is already pruned up to seq %d and %s ends at seq %d", anchor.Seq, path, res.HeadSeq)
	}
	pr, err := a.PruneAudit(cx, res.HeadSeq+1, res.HeadHash)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"pruned_seq": pr.Seq, "pruned_hash": pr.HeadHash, "archive": path,
		"next": fmt.Sprintf("keep %s: the nodes no longer hold entries %d..%d; custos audit verify --archive FILE ... checks every archive against the log", path, res.FirstSeq, res.HeadSeq)})
}

// auditVerify verifies the archives in order, ties the last one to the node's log, and
// verifies the node's log; it prints one report and fails at the first break.
func auditVerify(cx context.Context, a *admin.Admin, node string, pageSize int, archives []string, peers []auditPeer, quorum int, stdout io.Writer) error {
	rep := auditReport{Node: node}
	fail := func(err error) error {
		rep.Verified = false
		if rep.Reason == "" {
			rep.Reason = err.Error()
		}
		if perr := printJSON(stdout, rep); perr != nil {
			return perr
		}
		return err
	}
	var head *admin.AuditAnchor
	for i, path := range archives {
		res, err := verifyArchiveFile(path, head)
		if errors.Is(err, admin.ErrAuditArchiveAnchorNeeded) {
			rep.BrokenFile = path
			return fail(fmt.Errorf("%w: give every archive with --archive, in order, the first one starting at seq 1", err))
		}
		if err != nil {
			return fail(err)
		}
		rep.Archives = append(rep.Archives, archiveReport{File: path, Entries: res.Entries, FirstSeq: res.FirstSeq, LastSeq: res.HeadSeq, HeadHash: res.HeadHash})
		if b := res.Broken; b != nil {
			rep.BrokenFile, rep.BrokenLine, rep.BrokenSeq, rep.Reason = path, b.Line, b.Seq, b.Reason
			if i > 0 && b.Line == 1 {
				rep.Reason += fmt.Sprintf(" (it must continue %s, which ends at seq %d: are the archives in order?)", archives[i-1], head.Seq)
			}
			return fail(fmt.Errorf("%s: %w", path, b))
		}
		head = &admin.AuditAnchor{Seq: res.HeadSeq, HeadHash: res.HeadHash}
	}
	res, err := a.VerifyAudit(cx, pageSize)
	if err != nil {
		return err
	}
	rep.Verified = res.Broken == nil
	rep.Entries, rep.HeadSeq, rep.HeadHash = res.Entries, res.HeadSeq, res.HeadHash
	rep.PrunedSeq, rep.PrunedHash = res.PrunedSeq, res.PrunedHash
	if res.Broken != nil {
		rep.BrokenSeq, rep.Reason = res.Broken.Seq, res.Broken.Reason
		return fail(res.Broken)
	}
	switch {
	case head == nil && res.PrunedSeq > 0:
		rep.Archived = fmt.Sprintf("entries 1..%d were archived and pruned: verify them with --archive FILE (every archive, oldest first)", res.PrunedSeq)
	case head == nil:
	case head.Seq < res.PrunedSeq:
		rep.BrokenSeq = head.Seq + 1
		return fail(fmt.Errorf("the archives end at seq %d but the node's log is pruned up to seq %d: give the archives of entries %d..%d too",
			head.Seq, res.PrunedSeq, head.Seq+1, res.PrunedSeq))
	case head.Seq == res.PrunedSeq:
		if head.HeadHash != res.PrunedHash {
			rep.BrokenSeq = head.Seq
			return fail(fmt.Errorf("the last archive's head hash %s (seq %d) is not the node's pruned anchor %s: these archives are not of this log",
				head.HeadHash, head.Seq, res.PrunedHash))
		}
	case head.Seq > res.HeadSeq:
		rep.BrokenSeq = res.HeadSeq + 1
		return fail(fmt.Errorf("the archives end at seq %d, past the node's log (seq %d): these archives are not of this log", head.Seq, res.HeadSeq))
	default:
		// The archives reach into the live log (exported, not yet pruned): the entry at
		// their head must be the node's. Both chains are verified, so equal hashes there
		// mean equal entries up to it, the pruned anchor included.
		es, err := a.Audit(cx, head.Seq-1, 1)
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Seq != head.Seq || es[0].Hash != head.HeadHash {
			rep.BrokenSeq = head.Seq
			return fail(fmt.Errorf("the last archive's entry %d differs from the node's (head hash %s): these archives are not of this log", head.Seq, head.HeadHash))
		}
	}
	if len(peers) == 0 {
		rep.Unconfirmed = "checked against this node only, whose log could be forged as a whole: give --confirm-with URL for the other nodes (or use a cluster file) to have them confirm its head"
		return printJSON(stdout, rep)
	}
	rep.Quorum = quorum
	agree := 1
	var differs []string
	var ahead []string
	for _, p := range peers {
		rep.Confirmations = append(rep.Confirmations, confirmHead(cx, p, rep.HeadSeq, rep.HeadHash, rep.PrunedSeq, rep.PrunedHash))
	}
	// Then the tails: one wait for all the peers, which the heads' waits do not use up.
	tailDeadline := time.Now().Add(10 * time.Second)
	for i, p := range peers {
		cf := rep.Confirmations[i]
		if cf.Status == "agrees" {
			if cf, err = confirmTail(cx, a, p, rep.HeadSeq, rep.HeadHash, tailDeadline, cf); err != nil {
				return err
			}
			rep.Confirmations[i] = cf
		}
		switch cf.Status {
		case "agrees":
			agree++
		case "differs":
			differs = append(differs, p.url)
		case "ahead":
			ahead = append(ahead, p.url)
		}
	}
	switch {
	case len(ahead) > 0:
		return fail(fmt.Errorf("the verified node's log ends at seq %d, but %s %s entries after it that the verified node does not serve (see confirmations): the verified node is behind the cluster or hides its newest entries, or the other serves entries the cluster does not hold; verify again, then each node on its own (--url), and investigate the one that differs from the others",
			rep.HeadSeq, strings.Join(ahead, ", "), map[bool]string{true: "holds", false: "hold"}[len(ahead) == 1]))
	case len(differs) > 0:
		return fail(fmt.Errorf("the nodes disagree on the audit log: %s %s at seq %d (see confirmations); verify each node on its own (--url) and investigate the one that differs from the others",
			strings.Join(differs, ", "), map[bool]string{true: "differs", false: "differ"}[len(differs) == 1], rep.HeadSeq))
	case agree < quorum:
		return fail(fmt.Errorf("only %d node(s), this one included, confirmed the log's head at seq %d; %d are needed (see confirmations): try again once the others are reachable", agree, rep.HeadSeq, quorum))
	}
	return printJSON(stdout, rep)
}
