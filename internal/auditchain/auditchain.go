// Package auditchain owns the hash of an audit-log entry (API.md, GET /v1/audit): SHA-256
// (lowercase hex) of the entry's RFC 8785 canonical JSON without its "hash" member, and the
// genesis prev_hash. It is the one canonicaliser of the project: the node hashes the entries
// it appends with it (internal/state) and the admin SDK recomputes them with it
// (admin.AuditEntryHash, `custos audit verify`), so that writer and verifier cannot drift
// apart. Canonicalisation itself is github.com/gowebpki/jcs; this package adds the checks
// that library leaves out (strict JSON syntax, a single object, nesting depth, well-formed
// Unicode), so that one canonical form stands for exactly one entry.
package auditchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// GenesisHash is the prev_hash of the first entry: 64 zeros.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxDepth bounds the nesting of objects and arrays in an entry (the entry itself is 1).
const MaxDepth = 32

// hashMember is the member an entry's hash is stored in, left out of what is hashed.
const hashMember = "hash"

// Hash returns SHA-256 (lowercase hex) of the RFC 8785 canonical form of entry, a JSON
// object without its "hash" member. It fails where Canonical does; a "hash" member is not
// left out here (use EntryHash for an entry that carries one).
func Hash(entryJSONWithoutHash []byte) (string, error) {
	c, err := Canonical(entryJSONWithoutHash)
	if err != nil {
		return "", err
	}
	return sum(c), nil
}

// EntryHash returns the hash an entry must carry: Hash of the entry (a JSON object, as the
// API serves it) with its top-level "hash" member, if any, left out.
func EntryHash(entry []byte) (string, error) {
	c, err := EntryCanonical(entry)
	if err != nil {
		return "", err
	}
	return sum(c), nil
}

// EntryCanonical is the RFC 8785 canonical form of entry with its top-level "hash" member,
// if any, left out: the bytes EntryHash hashes.
func EntryCanonical(entry []byte) ([]byte, error) {
	b, hash, err := check(entry)
	if err != nil {
		return nil, err
	}
	switch len(hash) {
	case 0:
	case 1:
		b = hash[0].cut(b)
	default:
		return nil, errors.New("auditchain: entry repeats member \"hash\"")
	}
	return transform(b)
}

// Canonical returns the RFC 8785 canonical form of v, which must be a JSON object: valid
// JSON (RFC 8259) with nothing after it, at most MaxDepth levels deep, whose strings are
// well-formed Unicode (valid UTF-8, no lone surrogate escapes) and whose objects repeat no
// member name (I-JSON, RFC 7493, as RFC 8785 requires). Strings come out as UTF-8 with only
// the escapes ECMAScript's JSON.stringify writes (\" \\ \b \f \n \r \t, \u00xx for other
// control characters), numbers as ECMAScript writes the double they denote, and members
// sorted by the UTF-16 code units of their names.
func Canonical(v []byte) ([]byte, error) {
	b, _, err := check(v)
	if err != nil {
		return nil, err
	}
	return transform(b)
}

func sum(c []byte) string {
	s := sha256.Sum256(c)
	return hex.EncodeToString(s[:])
}

// transform runs jcs on input check has accepted.
func transform(v []byte) ([]byte, error) {
	c, err := jcs.Transform(v)
	if err != nil {
		// jcs refuses repeated member names and numbers that are no finite double.
		return nil, fmt.Errorf("auditchain: %w", err)
	}
	return c, nil
}

// span is a top-level member of an object: it starts just after the separator before it
// (',' or the object's '{', at start-1) and ends at the ',' or '}' after its value (end).
type span struct{ start, end int }

// cut returns b without the member (and one comma next to it).
func (s span) cut(b []byte) []byte {
	from, to := s.start, s.end
	switch {
	case b[to] == ',':
		to++ // the member and the comma after it
	case b[from-1] == ',':
		from-- // the last member and the comma before it
	}
	out := make([]byte, 0, len(b)-(to-from))
	return append(append(out, b[:from]...), b[to:]...)
}

// check accepts what Canonical documents, except repeated member names (jcs refuses
// those), and returns v without leading white space and the top-level members named
// "hash" in it. jcs itself is lenient: it does not check the syntax of numbers, stops
// quietly at a broken member name, copies invalid UTF-8 and replaces unpaired surrogates,
// so that different inputs could share one canonical form.
func check(v []byte) (b []byte, hash []span, err error) {
	if !json.Valid(v) {
		// Valid says nothing of why; Unmarshal does.
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return nil, nil, fmt.Errorf("auditchain: not JSON: %w", err)
		}
		return nil, nil, errors.New("auditchain: not JSON")
	}
	b = bytes.TrimLeft(v, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return nil, nil, errors.New("auditchain: entry is not a JSON object")
	}
	// b is valid JSON from here on, so a plain walk over its bytes suffices.
	depth := 0
	sep := -1    // the '{' or ',' before the next top-level member name, -1 when none is next
	member := -1 // start of the current top-level member (just after its separator)
	isHash := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			depth++
			if depth > MaxDepth {
				return nil, nil, fmt.Errorf("auditchain: entry nested deeper than %d", MaxDepth)
			}
			if depth == 1 {
				sep = i
			}
		case '}', ']', ',':
			if depth == 1 && member >= 0 {
				if isHash {
					hash = append(hash, span{member, i})
				}
				member, isHash = -1, false
			}
			if c == ',' {
				if depth == 1 {
					sep = i
				}
			} else {
				depth--
			}
		case '"':
			end, plain, err := endOfString(b, i)
			if err != nil {
				return nil, nil, err
			}
			if depth == 1 && sep >= 0 {
				member, sep = sep+1, -1
				isHash = nameIs(b[i:end+1], plain, hashMember)
			}
			i = end
		}
	}
	return b, hash, nil
}

// nameIs reports whether the JSON string lit (quotes included) is name. plain says lit has
// no escapes.
func nameIs(lit []byte, plain bool, name string) bool {
	if plain {
		return string(lit[1:len(lit)-1]) == name
	}
	var s string
	return json.Unmarshal(lit, &s) == nil && s == name
}

// endOfString checks the string that starts with the quote at b[q] and returns the index of
// its closing quote, and whether it has no escapes. Raw bytes must be valid UTF-8, and a
// \u escape of a surrogate must be half of a pair (json.Valid has checked the rest).
func endOfString(b []byte, q int) (end int, plain bool, err error) {
	plain = true
	for i := q + 1; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i, plain, nil
		case c == '\\':
			plain = false
			if b[i+1] != 'u' {
				i += 2
				continue
			}
			r := hex4(b[i+2 : i+6])
			i += 6
			switch {
			case utf16.IsSurrogate(r) && r < 0xdc00:
				// A high surrogate: a low one must follow.
				if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if lo := hex4(b[i+2 : i+6]); lo >= 0xdc00 && lo <= 0xdfff {
						i += 6
						continue
					}
				}
				return 0, false, fmt.Errorf("auditchain: unpaired surrogate \\u%04x in a string", r)
			case utf16.IsSurrogate(r):
				return 0, false, fmt.Errorf("auditchain: unpaired surrogate \\u%04x in a string", r)
			}
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, fmt.Errorf("auditchain: invalid UTF-8 byte %#x in a string", c)
			}
			i += size
		}
	}
	return 0, false, errors.New("auditchain: unterminated string") // json.Valid rules this out
}

// hex4 decodes four hex digits (json.Valid has checked they are).
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
