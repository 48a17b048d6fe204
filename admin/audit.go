package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Audit-chain constants (API.md: GET /v1/audit).
const (
	// AuditGenesisHash is the prev_hash of the first audit entry.
	AuditGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"
	// MaxAuditPage is the largest page GET /v1/audit returns (larger limits are clamped).
	MaxAuditPage = 1000
	// maxAuditPages bounds how many pages VerifyAudit reads (a billion entries).
	maxAuditPages = 1_000_000
	// maxJSONDepth bounds nesting in an audit entry.
	maxJSONDepth = 32
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
// node sent it.
func AuditEntryHash(raw json.RawMessage) (string, error) {
	c, err := canonicalEntry(raw)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

// canonicalEntry is the RFC 8785 canonical JSON of the object raw without its "hash".
func canonicalEntry(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("admin: audit entry: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("admin: audit entry: trailing data")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("admin: audit entry is not a JSON object")
	}
	if err := checkNoDuplicateKeys(raw); err != nil {
		return nil, err
	}
	delete(obj, "hash")
	var b strings.Builder
	if err := writeCanonical(&b, obj, 0); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// checkNoDuplicateKeys refuses objects with a repeated member name, which RFC 8785
// (I-JSON) does not allow and encoding/json would silently merge.
func checkNoDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		obj  bool
		seen map[string]bool
		key  bool // the next string token is a member name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("admin: audit entry: %w", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.obj {
					top.key = true
				}
				if len(stack) >= maxJSONDepth {
					return errors.New("admin: audit entry nested too deeply")
				}
				stack = append(stack, &frame{obj: t == '{', seen: map[string]bool{}, key: t == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.obj && top.key {
				if top.seen[t] {
					return fmt.Errorf("admin: audit entry repeats member %q", t)
				}
				top.seen[t] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.obj {
			top.key = true
		}
	}
}

// writeCanonical writes v (decoded with UseNumber) as RFC 8785 canonical JSON.
func writeCanonical(b *strings.Builder, v any, depth int) error {
	if depth > maxJSONDepth {
		return errors.New("admin: audit entry nested too deeply")
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		writeCanonicalString(b, x)
	case json.Number:
		s, err := canonicalNumber(x)
		if err != nil {
			return err
		}
		b.WriteString(s)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, e, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// RFC 8785 §3.2.3: members sorted by their names' UTF-16 code units.
		slices.SortFunc(keys, func(p, q string) int { return slices.Compare(utf16.Encode([]rune(p)), utf16.Encode([]rune(q))) })
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonicalString(b, k)
			b.WriteByte(':')
			if err := writeCanonical(b, x[k], depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("admin: audit entry holds an unexpected %T", v)
	}
	return nil
}

// writeCanonicalString writes s as ECMAScript's JSON.stringify does (RFC 8785 §3.2.2.2):
// the two-character escapes for \b \t \n \f \r " \, \u00xx (lowercase) for the other
// control characters, everything else as UTF-8.
func writeCanonicalString(b *strings.Builder, s string) {
	const hexdigits = "0123456789abcdef"
	b.WriteByte('"')
	for _, r := range s {
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
				b.WriteByte(hexdigits[r>>4])
				b.WriteByte(hexdigits[r&0xf])
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// canonicalNumber formats a JSON number as ECMAScript's Number.prototype.toString does
// for the IEEE 754 double it denotes (RFC 8785 §3.2.2.3).
func canonicalNumber(n json.Number) (string, error) {
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("admin: audit entry number %q is not a finite double", n.String())
	}
	if f == 0 {
		return "0", nil
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// Shortest round-trip digits d1d2…dk and exponent: f = 0.d1…dk × 10^e.
	sci := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±xx
	mant, expStr, _ := strings.Cut(sci, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(expStr)
	k, e := len(digits), x+1
	var out string
	switch {
	case k <= e && e <= 21:
		out = digits + strings.Repeat("0", e-k)
	case 0 < e && e <= 21:
		out = digits[:e] + "." + digits[e:]
	case -6 < e && e <= 0:
		out = "0." + strings.Repeat("0", -e) + digits
	default:
		m := digits[:1]
		if k > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if e-1 < 0 {
			es = "-"
		}
		out = m + "e" + es + strconv.Itoa(abs(e-1))
	}
	return sign + out, nil
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
