package state

import (
	"errors"

	"github.com/custos/custos/internal/btc"
)

// MaxPathDepth is the deepest derivation path accepted.
const MaxPathDepth = btc.MaxPathDepth

// ParsePath parses a non-hardened BIP32 path such as "m/0/7" ("m" alone is the empty
// path). Every index is below 2^31 and the depth is at most 16.
//
// It is custos's one path parser (internal/btc holds it; the FSM imports that leaf
// package for PSBTs too): Apply uses it, so which strings it accepts and the
// messages it refuses the others with are part of the FSM's verdicts, replicated and
// hashed — changing either is a new command version, never an edit here. (It lives here
// and not in protocol, which links tss-lib, because state must not import protocol.)
// Only canonical paths pass: steps are decimal numbers without sign, leading zero,
// hardened marker or other characters, so that printing the result gives back the input
// (FuzzParsePath checks this).
func ParsePath(s string) ([]uint32, error) {
	if s == "" {
		// internal/btc reads "" as the key itself (a PSBT input of the key); a request's
		// derivation path is "m", or absent.
		return nil, errors.New(`derivation path must start with "m/"`)
	}
	return btc.ParsePath(s)
}
