package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxEncodedSize caps the bytes ParseShare and ParsePreParams read. An
// ECDSA share of a MaxCommittee-party key is about 150 KiB; a pre-parameter
// set about 3 KiB.
const maxEncodedSize = 4 << 20

// maxDigits caps every run of decimal digits in the JSON: the largest number
// in a share or a pre-parameter set is below 4096 bits (1234 digits), and
// math/big converts decimal in quadratic time, so a megabyte-long number
// would take seconds.
const maxDigits = 2500

// encodingVersion is the version of the pre-parameter encoding this build
// writes and reads, and of the share encoding of generation-0 shares.
const encodingVersion = 1

// shareVersionGen is the share encoding that records a generation (shares
// made by resharing); it is the newest share version this build reads.
const shareVersionGen = 2

// isJSONObject reports whether b looks like a bare JSON object (the legacy,
// unversioned form): '{' after optional JSON whitespace. A versioned
// encoding starts with a magic string of printable ASCII, never with these.
func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// decodeStrict decodes exactly one JSON value from b into v: unknown fields
// and trailing data are refused. Its errors never quote b (a decoder's own
// error may quote the bytes it choked on, and those are secret), which is why
// they describe the failure instead of wrapping the decoder's error.
func decodeStrict(b []byte, v any) (err error) {
	run := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			run = 0
		} else if run++; run > maxDigits {
			return fmt.Errorf("a number longer than %d digits", maxDigits)
		}
	}
	defer func() {
		// tss-lib's UnmarshalJSON methods run here; none is known to panic,
		// but outside bytes must never crash the node.
		if r := recover(); r != nil {
			err = errors.New("malformed value (the decoder panicked)")
		}
	}()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// describeJSONError says what went wrong without quoting the input.
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "truncated JSON"
	case errors.As(err, &syntax):
		return fmt.Sprintf("not valid JSON (syntax error at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		// Field is the path of Go struct field names, never input.
		return fmt.Sprintf("field %s has the wrong JSON type", typ.Field)
	default:
		return "unknown field or malformed value"
	}
}

// splitVersioned checks b's magic and version and returns what follows the
// version byte. ok is false when b does not start with magic (it may then be
// legacy JSON). A known magic with a version outside 1..newest is
// ErrUnsupportedVersion.
func splitVersioned(b []byte, magic string, invalid error, newest byte) (rest []byte, version byte, ok bool, err error) {
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, 0, false, nil
	}
	b = b[len(magic):]
	if len(b) == 0 {
		return nil, 0, true, fmt.Errorf("%w: truncated after its header", invalid)
	}
	if v := b[0]; v < 1 || v > newest {
		return nil, 0, true, fmt.Errorf("%w: %w: version %d (this build reads versions 1 to %d; was it written by a newer custos?)", invalid, ErrUnsupportedVersion, v, newest)
	}
	return b[1:], b[0], true, nil
}
