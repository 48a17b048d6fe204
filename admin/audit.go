package admin

import (
	"bytes"
	"context"
	"encoding/json"
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
	// Reason says what is wrong, e.g. that prev_hash does not match the entry before.
	Reason string
}

// Error implements the error interface.
func (b *AuditBreak) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", b.Seq, b.Reason)
}

// AuditVerification is what VerifyAudit found.
type AuditVerification struct {
	// Entries is how many entries verified (hash recomputed, linked to the one before,
	// seq one more than the one before), from seq 1 on.
	Entries uint64
	// HeadSeq and HeadHash are the last verified entry's seq and hash (0 and
	// AuditGenesisHash when the log is empty).
	HeadSeq  uint64
	HeadHash string
	// Broken is the first broken link, nil when the whole chain verified.
	Broken *AuditBreak
}

// AuditChain checks audit entries one after another, from seq 1: each entry's hash is
// SHA-256 of its RFC 8785 canonical JSON without the hash field, its prev_hash is the
// previous entry's hash (AuditGenesisHash for the first), and seq increases by one. It
// works on the entries exactly as the node sent them, so fields it does not know are
// covered too. The zero value is ready to use.
type AuditChain struct {
	n      uint64
	seq    uint64
	head   string
	broken *AuditBreak
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
	return &AuditVerification{Entries: c.n, HeadSeq: c.seq, HeadHash: head, Broken: c.broken}
}

// VerifyAudit reads the node's whole audit log (GET /v1/audit, pageSize entries a page,
// MaxAuditPage when pageSize <= 0) and verifies the chain itself with AuditChain. A
// broken chain is reported in the result's Broken (and reading stops there); the error is
// for failures to read the log. Reading the log is itself audited, so the log may grow by
// an entry per page while it is read: the result covers what the node had served.
func (a *Admin) VerifyAudit(ctx context.Context, pageSize int) (*AuditVerification, error) {
	if pageSize <= 0 || pageSize > MaxAuditPage {
		pageSize = MaxAuditPage
	}
	var chain AuditChain
	after := uint64(0)
	for i := 0; i < maxAuditPages; i++ {
		q := url.Values{}
		q.Set("after", strconv.FormatUint(after, 10))
		q.Set("limit", strconv.Itoa(pageSize))
		var page struct {
			Entries []json.RawMessage `json:"entries"`
			Next    json.RawMessage   `json:"next"`
		}
		if err := a.c.Do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		for _, raw := range page.Entries {
			if chain.Add(raw) != nil {
				return chain.Result(), nil
			}
		}
		res := chain.Result()
		// The end: an empty page, or a short one without "next". (A full page, or one
		// with "next", may have more after it.)
		next := string(bytes.TrimSpace(page.Next))
		if len(page.Entries) == 0 || (len(page.Entries) < pageSize && (next == "" || next == "null")) {
			return res, nil
		}
		after = res.HeadSeq
	}
	return nil, fmt.Errorf("admin: audit log longer than %d pages", maxAuditPages)
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
