package oracle

import (
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
	prev := GenesisHash
	if n := len(a.d.Audit); n > 0 {
		prev = a.d.Audit[n-1].Hash
	}
	e := AuditEntry{
		Seq:      uint64(len(a.d.Audit)) + 1,
		Time:     time.UnixMilli(a.stamp).UTC().Format("2006-01-02T15:04:05.000Z"),
		Actor:    validUTF8(actor),
		Action:   validUTF8(action),
		Object:   validUTF8(object),
		Outcome:  validUTF8(outcome),
		Code:     validUTF8(code),
		PrevHash: prev,
	}
	e.Hash = AuditHash(&e)
	a.d.Audit = append(a.d.Audit, e)
}

// validUTF8 replaces each run of invalid UTF-8 bytes in s with U+FFFD.
func validUTF8(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}
