package state

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/auditchain"
)

// AuditEntry is one link of the hash-chained audit log: the wire API's type
// (internal/api), stored as served, so that its hash covers exactly what GET /v1/audit
// returns.
type AuditEntry = api.AuditEntry

// GenesisHash is the prev_hash of the first audit entry.
const GenesisHash = auditchain.GenesisHash

// AuditCanonical returns the RFC 8785 canonical JSON of the entry without its hash field, the
// bytes its hash is SHA-256 of: auditchain's canonical form of the entry as encoding/json
// writes it, which is what GET /v1/audit serves.
func AuditCanonical(e *AuditEntry) []byte {
	c, err := auditchain.EntryCanonical(auditJSON(e))
	if err != nil {
		panic(err) // see auditJSON
	}
	return c
}

// AuditHash returns the entry's hash: SHA-256 (hex) of its canonical form, computed by
// auditchain exactly as admin.AuditEntryHash recomputes it from the served entry.
func AuditHash(e *AuditEntry) string {
	h, err := auditchain.EntryHash(auditJSON(e))
	if err != nil {
		panic(err) // see auditJSON
	}
	return h
}

// auditJSON is the entry as the API serves it. auditchain refuses only what encoding/json never
// writes for this struct (bad syntax, invalid UTF-8 — written as \ufffd —, unpaired
// surrogates, repeated names, deep nesting, numbers past float64), so hashing it cannot fail.
func auditJSON(e *AuditEntry) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("state: audit entry %d: %v", e.Seq, err))
	}
	return b
}

// VerifyChain checks a run of audit entries: each hash is right and links to the one
// before. prev is the hash the first entry must link to (GenesisHash for seq 1). It
// returns the index of the first broken entry, or -1.
func VerifyChain(prev string, entries []AuditEntry) int {
	for i := range entries {
		e := &entries[i]
		if e.PrevHash != prev || AuditHash(e) != e.Hash {
			return i
		}
		prev = e.Hash
	}
	return -1
}

// audit appends an entry; time comes from the entry's stamp. Strings are made valid UTF-8
// first (each run of invalid bytes becomes U+FFFD, e.g. a key id from GET /v1/keys/%FF), so
// that the entry the node stores, the one GET /v1/audit serves and the one a verifier
// re-canonicalises are the same.
func (a *applier) audit(actor, action, object, outcome, code string) {
	e := AuditEntry{
		Seq:      a.m.AuditSeq + 1,
		Time:     time.UnixMilli(a.stamp).UTC().Format("2006-01-02T15:04:05.000Z"),
		Actor:    validUTF8(actor),
		Action:   validUTF8(action),
		Object:   validUTF8(object),
		Outcome:  validUTF8(outcome),
		Code:     validUTF8(code),
		PrevHash: a.m.AuditHead,
	}
	e.Hash = AuditHash(&e)
	a.appendAudit(&e)
}

// validUTF8 replaces each run of invalid UTF-8 bytes in s with U+FFFD.
func validUTF8(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

// pruneAudit drops the audit entries before p.Before (the admin exported them first and
// names the last one's hash, so that exactly the range it holds is dropped); the first
// entry kept links to that hash, which the state keeps (AuditPruned), so the chain stays
// verifiable from there and the exported range from genesis. At most every entry before
// the current head is dropped; the prune's own audit entry follows.
func (a *applier) pruneAudit(p *AuditPruneBody) Result {
	if p == nil || p.Before < 2 {
		return refuse("request.malformed", "before must be the seq of the first entry to keep (at least 2)")
	}
	if _, err := hex.DecodeString(p.HeadHash); err != nil || len(p.HeadHash) != 64 || p.HeadHash != strings.ToLower(p.HeadHash) {
		return refuse("request.malformed", "head_hash must be 64 lowercase hex characters: the hash of entry before-1")
	}
	last := p.Before - 1
	switch {
	case last > a.m.AuditSeq:
		return refuse("request.conflict", fmt.Sprintf("the audit log ends at seq %d", a.m.AuditSeq))
	case last <= a.m.AuditPrunedSeq:
		return refuse("request.conflict", fmt.Sprintf("the audit log is already pruned up to seq %d", a.m.AuditPrunedSeq))
	}
	e, ok := load[AuditEntry](a.t, keyU64(tAudit, last))
	if !ok || e.Hash != p.HeadHash {
		return refuse("request.conflict", fmt.Sprintf("head_hash is not the hash of entry %d: export the range again", last))
	}
	a.t.delRange(keyU64(tAudit, a.m.AuditPrunedSeq+1), keyU64(tAudit, p.Before))
	a.m.AuditPrunedSeq, a.m.AuditPrunedHash = last, e.Hash
	return Result{}
}
