package statedb

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Key encoding. A key is a table prefix followed by segments; each encoding is
// order-preserving (bytes.Compare on encoded keys orders them as the decoded
// tuples) and self-delimiting, so the keys of one table, or of one prefix of
// segments, form exactly the range [prefix, PrefixEnd(prefix)) and no other
// table's keys fall in it.
//
//   - table name and string/bytes segments: every 0x00 byte is escaped as
//     0x00 0xFF and the segment ends with 0x00 0x01. The terminator sorts below
//     any escaped or ordinary byte, so "a" < "a\x00" < "ab" is preserved and no
//     segment is a prefix of another's encoding.
//   - uint64: 8 bytes big-endian.
//   - int64: 8 bytes big-endian with the sign bit flipped, so negative values
//     sort before positive ones.

const (
	escByte  = 0x00
	escEsc   = 0xFF // 0x00 inside a segment
	escTerm  = 0x01 // end of segment
	sizeWord = 8
)

// ErrBadKey reports a key that does not decode as the segments asked for.
var ErrBadKey = errors.New("statedb: malformed key")

// AppendTable appends the prefix of table name to dst. Every key of the table
// starts with it. Table names are program constants: an empty name, or one
// starting with 0x00 (which would fall in the package's reserved range), is a
// programming error and panics.
func AppendTable(dst []byte, name string) []byte {
	if name == "" || name[0] == 0x00 {
		panic("statedb: table name must be non-empty and must not start with 0x00")
	}
	return AppendString(dst, name)
}

// TablePrefix returns the prefix of table name (see AppendTable), suitable
// for View.ScanPrefix and View.Page.
func TablePrefix(name string) []byte { return AppendTable(nil, name) }

// AppendString appends an escaped, terminated string segment to dst.
func AppendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == escByte {
			dst = append(dst, escByte, escEsc)
			continue
		}
		dst = append(dst, s[i])
	}
	return append(dst, escByte, escTerm)
}

// AppendBytes appends b as a segment, encoded exactly like AppendString.
func AppendBytes(dst, b []byte) []byte { return AppendString(dst, string(b)) }

// AppendUint64 appends v as 8 big-endian bytes.
func AppendUint64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// AppendInt64 appends v as 8 big-endian bytes with the sign bit flipped, so
// that encoded values sort as the integers do.
func AppendInt64(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v)^(1<<63))
}

// PrefixEnd returns the smallest key greater than every key starting with
// prefix (the exclusive upper bound of a prefix scan), or nil when there is
// none (prefix is empty or all 0xFF), meaning "no upper bound".
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// KeyDecoder reads segments back from an encoded key, in the order they were
// appended. The first error sticks: later calls return zero values and Err
// (or Done) reports it, so a caller decodes a whole key and checks once.
type KeyDecoder struct {
	rest []byte
	err  error
}

// NewKeyDecoder returns a decoder over key. It does not copy key.
func NewKeyDecoder(key []byte) *KeyDecoder { return &KeyDecoder{rest: key} }

// Table reads a table prefix and returns its name.
func (d *KeyDecoder) Table() string { return d.Text() }

// Text reads a string segment (named Text, not String, so a decoder is not
// a fmt.Stringer that consumes its key when printed).
func (d *KeyDecoder) Text() string { return string(d.Bytes()) }

// Bytes reads a string/bytes segment into a new slice.
func (d *KeyDecoder) Bytes() []byte {
	if d.err != nil {
		return nil
	}
	var out []byte
	for i := 0; i < len(d.rest); i++ {
		c := d.rest[i]
		if c != escByte {
			out = append(out, c)
			continue
		}
		if i+1 >= len(d.rest) {
			break
		}
		switch d.rest[i+1] {
		case escEsc:
			out = append(out, escByte)
			i++
		case escTerm:
			d.rest = d.rest[i+2:]
			if out == nil {
				out = []byte{}
			}
			return out
		default:
			d.err = fmt.Errorf("%w: bad escape 0x00 0x%02x", ErrBadKey, d.rest[i+1])
			return nil
		}
	}
	d.err = fmt.Errorf("%w: unterminated string segment", ErrBadKey)
	return nil
}

// Uint64 reads a uint64 segment.
func (d *KeyDecoder) Uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.rest) < sizeWord {
		d.err = fmt.Errorf("%w: %d bytes left, want 8 for an integer", ErrBadKey, len(d.rest))
		return 0
	}
	v := binary.BigEndian.Uint64(d.rest)
	d.rest = d.rest[sizeWord:]
	return v
}

// Int64 reads an int64 segment.
func (d *KeyDecoder) Int64() int64 {
	u := d.Uint64()
	if d.err != nil {
		return 0
	}
	return int64(u ^ (1 << 63)) //nolint:gosec // bit reinterpretation is the point
}

// Rest returns the bytes not yet decoded.
func (d *KeyDecoder) Rest() []byte { return d.rest }

// Err returns the first decoding error.
func (d *KeyDecoder) Err() error { return d.err }

// Done returns the first decoding error, or ErrBadKey if bytes remain: the
// key was not exactly the segments read.
func (d *KeyDecoder) Done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadKey, len(d.rest))
	}
	return nil
}
