package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/custos/custos/internal/auditchain"
)

// Audit-chain constants (API.md: GET /v1/audit).
const (
	// AuditGenesisHash is the prev_hash of the first audit entry.
	AuditGenesisHash = auditchain.GenesisHash
	// MaxAuditPage is the largest page GET /v1/audit returns (larger limits are clamped).
	MaxAuditPage = 1000
	// maxAuditPages bounds how many pages VerifyAudit reads (a billion entries).
	maxAuditPages = 1_000_000
)

// AuditBreak is the first place an audit chain is broken.
type AuditBreak struct {
	// Seq is the seq of the first entry that does not verify (the one expected there when
	// the entry has no usable seq).
	Seq uint64
	// Line is the archive line that holds it (VerifyAuditArchive, 1-based); 0 for the
	// node's log.
	Line int
	// Reason says what is wrong, e.g. that prev_hash does not match the entry before.
	Reason string
}

// Error implements the error interface.
func (b *AuditBreak) Error() string {
	if b.Line > 0 {
		return fmt.Sprintf("audit archive broken at line %d (seq %d): %s", b.Line, b.Seq, b.Reason)
	}
	return fmt.Sprintf("audit chain broken at seq %d: %s", b.Seq, b.Reason)
}

// AuditVerification is what VerifyAudit found.
type AuditVerification struct {
	// Entries is how many entries verified (hash recomputed, linked to the one before,
	// seq one more than the one before), from seq 1 on, or from PrunedSeq+1 when the
	// chain started after an anchor. Only what was checked is counted.
	Entries uint64
	// FirstSeq is the first verified entry's seq, 0 when none verified.
	FirstSeq uint64
	// HeadSeq and HeadHash are the last verified entry's seq and hash (0 and
	// AuditGenesisHash when the log is empty; the anchor's when the chain started after
	// one and nothing after it verified).
	HeadSeq  uint64
	HeadHash string
	// PrunedSeq and PrunedHash are the anchor the chain started after (AuditChain.
	// StartAfter): for VerifyAudit and ExportAudit the node's pruned anchor, for
	// VerifyAuditArchive the head of the archive before. Entries 1..PrunedSeq were
	// archived: verify them with their archive. 0 and "" when the chain started at
	// genesis.
	PrunedSeq  uint64
	PrunedHash string
	// Broken is the first broken link, nil when the whole chain verified.
	Broken *AuditBreak
}

// AuditChain checks audit entries one after another, from seq 1: each entry's hash is
// SHA-256 of its RFC 8785 canonical JSON without the hash field, its prev_hash is the
// previous entry's hash (AuditGenesisHash for the first), and seq increases by one. It
// works on the entries exactly as the node sent them, so fields it does not know are
// covered too. The zero value is ready to use and starts at genesis; StartAfter makes it
// start after an anchor instead (a pruned log, a later archive).
type AuditChain struct {
	n          uint64
	first      uint64
	seq        uint64
	head       string
	anchorSeq  uint64
	anchorHash string
	broken     *AuditBreak
}

// StartAfter makes the chain start after an anchor instead of genesis: the first entry
// expected is seq+1, and its prev_hash must be hash (the anchor's: the node's pruned
// anchor, or the last entry of the archive before). Call it before the first Add. It
// returns an error, and changes nothing, when the chain has already started, when seq is
// 0 (start at genesis instead: do not call StartAfter) or when hash is not 64 lowercase
// hex characters.
func (c *AuditChain) StartAfter(seq uint64, hash string) error {
	switch {
	case c.n > 0 || c.broken != nil || c.anchorSeq != 0:
		return errors.New("admin: StartAfter after the audit chain has started")
	case seq == 0:
		return errors.New("admin: audit anchor seq 0: a chain from genesis needs no anchor")
	case !isAuditHash(hash):
		return fmt.Errorf("admin: audit anchor hash %q is not 64 lowercase hex characters", hash)
	}
	c.anchorSeq, c.anchorHash = seq, hash
	c.seq, c.head = seq, hash
	return nil
}

// isAuditHash reports whether s is a SHA-256 as the audit chain writes it: 64 lowercase
// hex characters.
func isAuditHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// Add checks the next entry. After the first broken entry it does nothing and returns
// that break again.
func (c *AuditChain) Add(raw json.RawMessage) *AuditBreak {
	if c.broken != nil {
		return c.broken
	}
	prev := c.head
	if prev == "" {
		prev = AuditGenesisHash
	}
	want := c.seq + 1
	fail := func(seq uint64, format string, args ...any) *AuditBreak {
		c.broken = &AuditBreak{Seq: seq, Reason: fmt.Sprintf(format, args...)}
		return c.broken
	}
	var e struct {
		Seq      *json.Number `json:"seq"`
		PrevHash *string      `json:"prev_hash"`
		Hash     *string      `json:"hash"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return fail(want, "entry is not a JSON object with seq, prev_hash and hash: %v", err)
	}
	if e.Seq == nil || e.PrevHash == nil || e.Hash == nil {
		return fail(want, "entry lacks seq, prev_hash or hash")
	}
	seq, err := strconv.ParseUint(e.Seq.String(), 10, 64)
	if err != nil {
		return fail(want, "seq %q is not a whole number", e.Seq.String())
	}
	if seq != want {
		return fail(want, "expected seq %d, found seq %d (an entry is missing, repeated or out of order)", want, seq)
	}
	if *e.PrevHash != prev {
		if c.n == 0 && c.anchorSeq != 0 {
			return fail(seq, "prev_hash %s of the first entry does not match the hash %s of the anchor it follows (seq %d)", *e.PrevHash, prev, c.anchorSeq)
		}
		if c.n == 0 {
			return fail(seq, "prev_hash %s of the first entry is not the genesis hash (64 zeros)", *e.PrevHash)
		}
		return fail(seq, "prev_hash %s does not match the hash %s of seq %d", *e.PrevHash, prev, c.seq)
	}
	got, err := AuditEntryHash(raw)
	if err != nil {
		return fail(seq, "cannot canonicalise the entry: %v", err)
	}
	if got != *e.Hash {
		return fail(seq, "hash %s differs from the recomputed %s (the entry was altered)", *e.Hash, got)
	}
	if c.n == 0 {
		c.first = seq
	}
	c.n++
	c.seq = seq
	c.head = got
	return nil
}

// Result reports what the chain has verified so far.
func (c *AuditChain) Result() *AuditVerification {
	head := c.head
	if head == "" {
		head = AuditGenesisHash
	}
	return &AuditVerification{Entries: c.n, FirstSeq: c.first, HeadSeq: c.seq, HeadHash: head,
		PrunedSeq: c.anchorSeq, PrunedHash: c.anchorHash, Broken: c.broken}
}

// VerifyAudit reads the node's whole audit log (GET /v1/audit, pageSize entries a page,
// MaxAuditPage when pageSize <= 0) and verifies the chain itself with AuditChain: from
// genesis, or, when the log was pruned, after the node's pruned anchor, which the result
// reports in PrunedSeq and PrunedHash (entries 1..PrunedSeq were archived: verify them
// with their archive, VerifyAuditArchive). A broken chain is reported in the result's
// Broken (and reading stops there); the error is for failures to read the log, and for
// a prune of entries not yet read while the log was read (verify again then). Reading
// the log is itself audited, so the log may grow by an entry per page while it is read:
// the result covers what the node had served.
func (a *Admin) VerifyAudit(ctx context.Context, pageSize int) (*AuditVerification, error) {
	return a.readAudit(ctx, pageSize, 0, nil)
}

// VerifyAuditAfter reads the node's audit entries after seq, whose entry has hash hash
// (seq 0: from genesis), up to seq last at most, pageSize a page, and verifies that they
// chain from it: the result's HeadSeq and HeadHash are how far they do (seq and hash when
// the node serves nothing after seq), and Broken the first link that does not. custos
// audit verify checks with it that a node's log goes on after a head other nodes
// confirmed, as theirs do.
func (a *Admin) VerifyAuditAfter(ctx context.Context, seq uint64, hash string, last uint64, pageSize int) (*AuditVerification, error) {
	if pageSize <= 0 || pageSize > MaxAuditPage {
		pageSize = MaxAuditPage
	}
	var chain AuditChain
	if seq > 0 {
		if err := chain.StartAfter(seq, hash); err != nil {
			return nil, err
		}
	}
	for after := seq; after < last; {
		limit := min(uint64(pageSize), last-after)
		page, err := a.auditPage(ctx, after, int(limit))
		if err != nil {
			return nil, err
		}
		for _, raw := range page.Entries {
			if chain.Add(raw) != nil || chain.Result().HeadSeq >= last {
				return chain.Result(), nil
			}
		}
		res := chain.Result()
		if page.last(int(limit)) || res.HeadSeq == after {
			return res, nil
		}
		after = res.HeadSeq
	}
	return chain.Result(), nil
}

// auditPage is one answer of GET /v1/audit, with each entry exactly as the node sent it.
type auditPage struct {
	Entries []json.RawMessage `json:"entries"`
	Next    json.RawMessage   `json:"next"`
	Pruned  *AuditAnchor      `json:"pruned"`
}

// auditPage reads the entries after seq after, at most limit.
func (a *Admin) auditPage(ctx context.Context, after uint64, limit int) (*auditPage, error) {
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	q.Set("limit", strconv.Itoa(limit))
	var page auditPage
	if err := a.c.Do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// last reports whether the page, asked with limit, ends the log as the node served it: an
// empty page, or a short one without "next" (a full page, or one with "next", may have
// more after it). Every read is itself audited, so asking again after the last page
// always finds the entry of that read: a reader stops here.
func (p *auditPage) last(limit int) bool {
	next := string(bytes.TrimSpace(p.Next))
	return len(p.Entries) == 0 || (len(p.Entries) < limit && (next == "" || next == "null"))
}

// readAudit reads the node's audit log from the first entry it serves, pageSize entries
// a page, and verifies the chain: from genesis, or after the pruned anchor of the first
// page. It stops after seq last (when last > 0), at the end of the log or at the first
// break (in the result's Broken). emit, when not nil, gets each entry after it verified.
// The error is for failures to read, a prune of entries not yet read while reading, and
// emit's errors.
func (a *Admin) readAudit(ctx context.Context, pageSize int, last uint64, emit func(raw json.RawMessage) error) (*AuditVerification, error) {
	if pageSize <= 0 || pageSize > MaxAuditPage {
		pageSize = MaxAuditPage
	}
	var chain AuditChain
	after := uint64(0)
	for i := 0; i < maxAuditPages; i++ {
		limit := pageSize
		if last > 0 && last-after < uint64(limit) {
			limit = int(last - after)
		}
		page, err := a.auditPage(ctx, after, limit)
		if err != nil {
			return nil, err
		}
		if p := page.Pruned; p != nil {
			switch {
			case i == 0:
				if err := chain.StartAfter(p.Seq, p.HeadHash); err != nil {
					return nil, fmt.Errorf("admin: the node's pruned anchor (seq %d, head_hash %q) is invalid: %w", p.Seq, p.HeadHash, err)
				}
			case p.Seq > after:
				return nil, fmt.Errorf("admin: the audit log was pruned up to seq %d while it was read (up to seq %d): read it again", p.Seq, after)
			}
		}
		for _, raw := range page.Entries {
			if last > 0 && chain.Result().HeadSeq >= last {
				return chain.Result(), nil
			}
			if i == 0 && page.Pruned != nil && seqAtOrBefore(raw, page.Pruned.Seq) {
				// The node read the entries before a prune and the anchor after it:
				// these entries are in the pruned range, which is not verified here.
				continue
			}
			if chain.Add(raw) != nil {
				return chain.Result(), nil
			}
			if emit != nil {
				if err := emit(raw); err != nil {
					return chain.Result(), err
				}
			}
		}
		res := chain.Result()
		if (last > 0 && res.HeadSeq >= last) || page.last(limit) {
			return res, nil
		}
		after = res.HeadSeq
	}
	return nil, fmt.Errorf("admin: audit log longer than %d pages", maxAuditPages)
}

// seqAtOrBefore reports whether raw is an entry whose seq is a whole number <= seq.
func seqAtOrBefore(raw json.RawMessage, seq uint64) bool {
	var e struct {
		Seq json.Number `json:"seq"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return false
	}
	n, err := strconv.ParseUint(e.Seq.String(), 10, 64)
	return err == nil && n <= seq
}

// AuditEntryHash is the hash an audit entry must carry: SHA-256 (lowercase hex) of the
// entry's RFC 8785 canonical JSON with its "hash" member removed. raw is the entry as the
// node sent it. The canonical form is the node's own (internal/auditchain, which the node
// hashes with when it appends an entry). Entries that are not a JSON object, repeat a member
// name, nest deeper than 32 levels, hold a number that is no finite double, or hold a string
// that is not well-formed Unicode (invalid UTF-8, unpaired surrogate escapes) are refused:
// RFC 8785 does not define a canonical form for them. The node never serves such an entry.
func AuditEntryHash(raw json.RawMessage) (string, error) {
	return auditchain.EntryHash(raw)
}
