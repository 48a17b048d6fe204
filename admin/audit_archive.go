package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/custos/custos/internal/api"
)

// AuditAnchor is a point of the audit chain, an entry's seq and hash: the node's pruned
// anchor (the last entry it dropped, to which the first entry it keeps links), or the head
// of an archive.
type AuditAnchor = api.AuditAnchor

// MaxAuditArchiveLine bounds one line of an audit archive (one entry, without its
// newline): VerifyAuditArchive refuses longer lines, and ExportAudit never writes one.
const MaxAuditArchiveLine = 1 << 20

// ErrAuditArchiveAnchorNeeded is the error of VerifyAuditArchive for an archive that does
// not start at seq 1 when no anchor was given: it continues an earlier archive, whose head
// (last seq and hash) it must be verified after.
var ErrAuditArchiveAnchorNeeded = errors.New("the archive does not start at seq 1: verify it after the head of the archive before it (its last seq and hash), or after the node's pruned anchor")

// ExportAudit writes the node's audit entries with seq < before to w as an archive: JSON
// Lines, each entry exactly as the node served it (its JSON object, compacted) followed by
// "\n", in seq order. It reads from the first entry the node serves (seq 1, or the one
// after the node's pruned anchor), pageSize entries a page (MaxAuditPage when <= 0), and
// verifies the chain while reading (from genesis, or after that anchor): only verified
// entries are written, so at a break nothing past it is written and the break is returned
// (as the error and in the result's Broken). It fails when before < 2, when the entries
// before `before` were already pruned, and when the node's log does not reach before-1.
// The result counts the entries written (Entries, FirstSeq, HeadSeq = before-1) and holds
// the archive's head hash (HeadHash, the hash of entry before-1: the head_hash of
// PruneAudit) and, for an archive that does not start at seq 1, the anchor it follows
// (PrunedSeq, PrunedHash), which VerifyAuditArchive needs. On an error, w may hold a
// verified prefix of the range: discard it.
func (a *Admin) ExportAudit(ctx context.Context, before uint64, w io.Writer, pageSize int) (*AuditVerification, error) {
	if before < 2 {
		return nil, fmt.Errorf("admin: export before seq %d: before must be at least 2 (the first seq not exported)", before)
	}
	last := before - 1
	bw := bufio.NewWriter(w)
	var line bytes.Buffer
	emit := func(raw json.RawMessage) error {
		line.Reset()
		if err := json.Compact(&line, raw); err != nil {
			return fmt.Errorf("admin: compact audit entry: %w", err)
		}
		if line.Len() > MaxAuditArchiveLine {
			return fmt.Errorf("admin: an audit entry of %d bytes exceeds the archive's line bound of %d bytes", line.Len(), MaxAuditArchiveLine)
		}
		line.WriteByte('\n')
		if _, err := bw.Write(line.Bytes()); err != nil {
			return fmt.Errorf("admin: write audit archive: %w", err)
		}
		return nil
	}
	res, err := a.readAudit(ctx, pageSize, last, emit)
	if ferr := bw.Flush(); ferr != nil && err == nil {
		err = fmt.Errorf("admin: write audit archive: %w", ferr)
	}
	if err != nil {
		return res, err
	}
	switch {
	case res.Broken != nil:
		return res, res.Broken
	case res.PrunedSeq >= last:
		return res, fmt.Errorf("admin: the node's audit log is already pruned up to seq %d: entries before seq %d are in an earlier archive, nothing to export", res.PrunedSeq, before)
	case res.HeadSeq < last:
		return res, fmt.Errorf("admin: the node's audit log ends at seq %d, before seq %d: nothing to export up to there (choose a smaller --before)", res.HeadSeq, last)
	}
	return res, nil
}

// VerifyAuditArchive verifies an audit archive offline (as ExportAudit writes it: JSON
// Lines, one entry a line, in seq order): each entry's hash is recomputed and its link to
// the entry before checked, with AuditChain. With after nil the archive must start at seq
// 1 and is verified from genesis (an archive that starts later fails with
// ErrAuditArchiveAnchorNeeded; an anchor of seq 0 is genesis too); otherwise it must
// continue after: its first entry is
// after.Seq+1 with prev_hash after.HeadHash (the head of the archive before, or the
// node's pruned anchor). A line longer than MaxAuditArchiveLine, an empty line or one that
// is not an entry is a break at that line. As with VerifyAudit, a broken chain is
// reported in the result's Broken (whose Line names the line); the error is for failures
// to read, an empty archive, an invalid anchor and the missing anchor. The result's
// HeadSeq and HeadHash are the archive's head: the anchor of the next archive, and the
// node's pruned anchor once pruned up to it.
func VerifyAuditArchive(r io.Reader, after *AuditAnchor) (*AuditVerification, error) {
	var chain AuditChain
	if after != nil && after.Seq != 0 {
		if err := chain.StartAfter(after.Seq, after.HeadHash); err != nil {
			return nil, err
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxAuditArchiveLine+1)
	n := 0
	breakAt := func(b *AuditBreak) (*AuditVerification, error) {
		b.Line = n
		return chain.Result(), nil
	}
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if n == 1 && chain.anchorSeq == 0 {
			var first struct {
				Seq json.Number `json:"seq"`
			}
			if json.Unmarshal(b, &first) == nil && first.Seq != "" && first.Seq != "1" {
				if _, err := strconv.ParseUint(first.Seq.String(), 10, 64); err == nil {
					return nil, fmt.Errorf("admin: audit archive starts at seq %s: %w", first.Seq, ErrAuditArchiveAnchorNeeded)
				}
			}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			chain.broken = &AuditBreak{Seq: chain.seq + 1, Reason: "empty line (an archive holds one entry a line, nothing else)"}
			return breakAt(chain.broken)
		}
		if br := chain.Add(b); br != nil {
			return breakAt(br)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			n++
			chain.broken = &AuditBreak{Seq: chain.seq + 1, Reason: fmt.Sprintf("line longer than %d bytes: not an audit entry", MaxAuditArchiveLine)}
			return breakAt(chain.broken)
		}
		return nil, fmt.Errorf("admin: read audit archive after line %d: %w", n, err)
	}
	if n == 0 {
		return nil, errors.New("admin: the audit archive is empty")
	}
	return chain.Result(), nil
}

// AuditPruned returns the node's pruned anchor (the last entry dropped by a prune, to
// which its first entry links), nil when its audit log was never pruned. It reads one
// audit page (GET /v1/audit), which is itself audited.
func (a *Admin) AuditPruned(ctx context.Context) (*AuditAnchor, error) {
	var page auditPage
	if err := a.c.Do(ctx, http.MethodGet, "/v1/audit?after=0&limit=1", nil, &page); err != nil {
		return nil, err
	}
	return page.Pruned, nil
}

// PruneAudit drops the node's audit entries with seq < before (POST
// /v1/admin/audit/prune): headHash must be the hash of entry before-1, the head of the
// archive that holds them (ExportAudit's HeadHash, checked with VerifyAuditArchive), so
// that exactly that range is dropped. Prune only what a verified archive holds: the node
// keeps no copy. It returns the node's new pruned anchor (before-1, headHash). The node
// refuses (a *client.APIError) with request.conflict when headHash is not the hash of
// entry before-1, when before-1 is past the log's end or already pruned, and with
// request.malformed for before < 2 or a malformed hash.
func (a *Admin) PruneAudit(ctx context.Context, before uint64, headHash string) (*AuditAnchor, error) {
	if before < 2 {
		return nil, fmt.Errorf("admin: prune before seq %d: before must be at least 2 (the first seq kept)", before)
	}
	var out AuditAnchor
	if err := a.c.Do(ctx, http.MethodPost, "/v1/admin/audit/prune", api.AuditPruneBody{Before: before, HeadHash: headHash}, &out); err != nil {
		return nil, err
	}
	if out.Seq < before-1 || (out.Seq == before-1 && out.HeadHash != headHash) {
		return &out, fmt.Errorf("admin: the node answered the prune with anchor seq %d hash %s, not seq %d hash %s: check GET /v1/audit", out.Seq, out.HeadHash, before-1, headHash)
	}
	return &out, nil
}
