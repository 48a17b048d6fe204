package auth

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// This file is a strict parser for the subset of RFC 8941 structured fields that
// Signature-Input, Signature and Content-Digest use: dictionaries whose members are an
// inner list of strings or a byte sequence, with parameters whose values are integers or
// strings. Tokens, decimals and booleans are refused (RFC 9421 defines no use for them
// in custos's profile), and so are duplicate keys, which RFC 8941 would silently merge.

const (
	maxSFMembers = 8
	maxSFItems   = 32
	maxSFParams  = 16
	maxSFString  = 1024
)

type sfKind int

const (
	sfInteger sfKind = iota + 1
	sfString
	sfBytes
)

// sfBare is a bare item: an integer, a string or a byte sequence.
type sfBare struct {
	kind sfKind
	i    int64
	s    string
	b    []byte
}

type sfParam struct {
	key string
	val sfBare
}

type sfItem struct {
	bare   sfBare
	params []sfParam
}

// sfMember is one dictionary member: an item, or an inner list when inner is true.
type sfMember struct {
	key    string
	inner  bool
	item   sfBare
	items  []sfItem
	params []sfParam
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skipSP() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func errSF(format string, args ...any) error {
	return fmt.Errorf("structured field: "+format, args...)
}

// parseSFDictionary parses an RFC 8941 dictionary (§4.2.2), refusing duplicate keys.
func parseSFDictionary(s string) ([]sfMember, error) {
	p := &sfParser{s: s}
	p.skipSP()
	var out []sfMember
	seen := map[string]bool{}
	for !p.eof() {
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, errSF("duplicate member %q", key)
		}
		seen[key] = true
		if len(out) == maxSFMembers {
			return nil, errSF("too many members")
		}
		m := sfMember{key: key}
		if p.peek() != '=' {
			return nil, errSF("member %q has no value", key)
		}
		p.i++
		if p.peek() == '(' {
			m.inner = true
			if m.items, err = p.parseInnerList(); err != nil {
				return nil, err
			}
		} else if m.item, err = p.parseBare(); err != nil {
			return nil, err
		}
		if m.params, err = p.parseParams(); err != nil {
			return nil, err
		}
		out = append(out, m)
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, errSF("expected ',' after member %q", key)
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, errSF("trailing comma")
		}
	}
	if len(out) == 0 {
		return nil, errSF("empty dictionary")
	}
	return out, nil
}

func (p *sfParser) parseKey() (string, error) {
	start := p.i
	c := p.peek()
	if !(c >= 'a' && c <= 'z') && c != '*' {
		return "", errSF("bad key at offset %d", p.i)
	}
	p.i++
	for !p.eof() {
		c = p.s[p.i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' || c == '*' {
			p.i++
			continue
		}
		break
	}
	if p.i-start > 64 {
		return "", errSF("key too long")
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) parseInnerList() ([]sfItem, error) {
	p.i++ // '('
	var items []sfItem
	for !p.eof() {
		p.skipSP()
		if p.peek() == ')' {
			p.i++
			return items, nil
		}
		if len(items) == maxSFItems {
			return nil, errSF("too many items in inner list")
		}
		bare, err := p.parseBare()
		if err != nil {
			return nil, err
		}
		params, err := p.parseParams()
		if err != nil {
			return nil, err
		}
		items = append(items, sfItem{bare: bare, params: params})
		if c := p.peek(); c != ' ' && c != ')' {
			return nil, errSF("expected ' ' or ')' in inner list")
		}
	}
	return nil, errSF("unterminated inner list")
}

func (p *sfParser) parseParams() ([]sfParam, error) {
	var out []sfParam
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		key, err := p.parseKey()
		if err != nil {
			return nil, err
		}
		for _, q := range out {
			if q.key == key {
				return nil, errSF("duplicate parameter %q", key)
			}
		}
		if len(out) == maxSFParams {
			return nil, errSF("too many parameters")
		}
		if p.peek() != '=' {
			return nil, errSF("parameter %q has no value", key)
		}
		p.i++
		v, err := p.parseBare()
		if err != nil {
			return nil, err
		}
		if v.kind == sfBytes {
			return nil, errSF("parameter %q: byte sequences are not accepted here", key)
		}
		out = append(out, sfParam{key: key, val: v})
	}
	return out, nil
}

func (p *sfParser) parseBare() (sfBare, error) {
	switch c := p.peek(); {
	case c == '-' || (c >= '0' && c <= '9'):
		return p.parseInteger()
	case c == '"':
		return p.parseString()
	case c == ':':
		return p.parseBytes()
	default:
		return sfBare{}, errSF("unsupported item at offset %d", p.i)
	}
}

func (p *sfParser) parseInteger() (sfBare, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits := p.i
	for !p.eof() && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	if n == 0 || n > 15 {
		return sfBare{}, errSF("bad integer")
	}
	if p.peek() == '.' {
		return sfBare{}, errSF("decimals are not accepted")
	}
	v, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil {
		return sfBare{}, errSF("bad integer")
	}
	return sfBare{kind: sfInteger, i: v}, nil
}

func (p *sfParser) parseString() (sfBare, error) {
	p.i++ // '"'
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.eof() {
				return sfBare{}, errSF("bad escape")
			}
			n := p.s[p.i]
			p.i++
			if n != '"' && n != '\\' {
				return sfBare{}, errSF("bad escape")
			}
			b.WriteByte(n)
		case c == '"':
			return sfBare{kind: sfString, s: b.String()}, nil
		case c < 0x20 || c > 0x7e:
			return sfBare{}, errSF("bad character in string")
		default:
			b.WriteByte(c)
		}
		if b.Len() > maxSFString {
			return sfBare{}, errSF("string too long")
		}
	}
	return sfBare{}, errSF("unterminated string")
}

func (p *sfParser) parseBytes() (sfBare, error) {
	p.i++ // ':'
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return sfBare{}, errSF("unterminated byte sequence")
	}
	enc := p.s[p.i : p.i+end]
	p.i += end + 1
	if len(enc) > maxSFString {
		return sfBare{}, errSF("byte sequence too long")
	}
	b, err := decodeStdBase64(enc)
	if err != nil {
		return sfBare{}, errSF("bad base64 in byte sequence")
	}
	return sfBare{kind: sfBytes, b: b}, nil
}

// decodeStdBase64 decodes standard base64 with or without "=" padding (RFC 8941 §4.2.7
// asks parsers to tolerate missing padding), refusing anything outside the alphabet
// (Go's decoder would otherwise skip CR and LF) and non-zero trailing bits.
func decodeStdBase64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=') {
			return nil, fmt.Errorf("bad base64 character")
		}
	}
	if strings.HasSuffix(s, "=") || len(s)%4 == 0 {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// serializeSFString writes s as an RFC 8941 string (s must be printable ASCII).
func serializeSFString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// validSFString reports whether s can be serialized as an RFC 8941 string.
func validSFString(s string) bool {
	if len(s) > maxSFString {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func serializeSFParams(b *strings.Builder, params []sfParam) {
	for _, p := range params {
		b.WriteByte(';')
		b.WriteString(p.key)
		b.WriteByte('=')
		switch p.val.kind {
		case sfInteger:
			b.WriteString(strconv.FormatInt(p.val.i, 10))
		case sfString:
			serializeSFString(b, p.val.s)
		}
	}
}
