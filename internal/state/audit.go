package state

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEntry is one link of the hash-chained audit log (API.md shape).
type AuditEntry struct {
	Seq      uint64 `json:"seq"`
	Time     string `json:"time"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Object   string `json:"object"`
	Outcome  string `json:"outcome"`
	Code     string `json:"code"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// GenesisHash is the prev_hash of the first audit entry.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Canonical returns the RFC 8785 canonical JSON of the entry without its hash field.
func (e *AuditEntry) Canonical() []byte {
	// RFC 8785 sorts members by their UTF-16 code units; every name here is ASCII, so
	// byte order is the same. Numbers here are integers below 2^53.
	var b strings.Builder
	b.WriteString(`{"action":`)
	writeJCSString(&b, e.Action)
	b.WriteString(`,"actor":`)
	writeJCSString(&b, e.Actor)
	b.WriteString(`,"code":`)
	writeJCSString(&b, e.Code)
	b.WriteString(`,"object":`)
	writeJCSString(&b, e.Object)
	b.WriteString(`,"outcome":`)
	writeJCSString(&b, e.Outcome)
	b.WriteString(`,"prev_hash":`)
	writeJCSString(&b, e.PrevHash)
	b.WriteString(`,"seq":`)
	b.WriteString(strconv.FormatUint(e.Seq, 10))
	b.WriteString(`,"time":`)
	writeJCSString(&b, e.Time)
	b.WriteString("}")
	return []byte(b.String())
}

// ComputeHash returns the entry's hash: SHA-256 (hex) of its canonical form.
func (e *AuditEntry) ComputeHash() string {
	sum := sha256.Sum256(e.Canonical())
	return hex.EncodeToString(sum[:])
}

// writeJCSString writes s as RFC 8785 (ECMAScript JSON.stringify) serialises a string.
func writeJCSString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(`\ufffd`)
			i++
			continue
		}
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				b.WriteString(`\u00`)
				b.WriteString(hex.EncodeToString([]byte{byte(r)}))
			} else {
				b.WriteString(s[i : i+size])
			}
		}
		i += size
	}
	b.WriteByte('"')
}

// VerifyChain checks a run of audit entries: each hash is right and links to the one
// before. prev is the hash the first entry must link to (GenesisHash for seq 1). It
// returns the index of the first broken entry, or -1.
func VerifyChain(prev string, entries []AuditEntry) int {
	for i := range entries {
		e := &entries[i]
		if e.PrevHash != prev || e.ComputeHash() != e.Hash {
			return i
		}
		prev = e.Hash
	}
	return -1
}

// audit appends an entry; time comes from the entry's stamp.
func (a *applier) audit(actor, action, object, outcome, code string) {
	prev := GenesisHash
	if n := len(a.d.Audit); n > 0 {
		prev = a.d.Audit[n-1].Hash
	}
	e := AuditEntry{
		Seq:      uint64(len(a.d.Audit)) + 1,
		Time:     time.UnixMilli(a.stamp).UTC().Format("2006-01-02T15:04:05.000Z"),
		Actor:    actor,
		Action:   action,
		Object:   object,
		Outcome:  outcome,
		Code:     code,
		PrevHash: prev,
	}
	e.Hash = e.ComputeHash()
	a.d.Audit = append(a.d.Audit, e)
}
