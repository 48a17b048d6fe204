package oracle

import (
	"errors"
	"strconv"
	"strings"
)

// MaxPathDepth is the deepest derivation path accepted.
const MaxPathDepth = 16

// ParsePath parses a non-hardened BIP32 path such as "m/0/7" ("m" alone is the empty
// path). Every index is below 2^31 and the depth is at most 16.
//
// It is custos's one path parser: Apply uses it, so which strings it accepts and the
// messages it refuses the others with are part of the FSM's verdicts, replicated and
// hashed — changing either is a new command version, never an edit here. (It lives here
// and not in protocol, which links tss-lib, because state must not import protocol.)
// Only canonical paths pass: steps are decimal numbers without sign, leading zero,
// hardened marker or other characters, so that printing the result gives back the input
// (FuzzParsePath checks this).
func ParsePath(s string) ([]uint32, error) {
	if s == "m" {
		return []uint32{}, nil
	}
	if !strings.HasPrefix(s, "m/") {
		return nil, errors.New(`derivation path must start with "m/"`)
	}
	parts := strings.Split(s[2:], "/")
	if len(parts) > MaxPathDepth {
		return nil, errors.New("derivation path deeper than 16")
	}
	out := make([]uint32, len(parts))
	for i, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') || strings.ContainsAny(p, "+-'hH") {
			return nil, errors.New("derivation path steps must be plain decimal numbers (no hardened steps)")
		}
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil || v >= 1<<31 {
			return nil, errors.New("derivation path step must be below 2^31")
		}
		out[i] = uint32(v)
	}
	return out, nil
}
