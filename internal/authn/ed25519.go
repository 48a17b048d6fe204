package authn

import (
	"crypto/ed25519"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Ed25519 verification.
//
// The Ed25519 signatures this package checks itself — callers' and access keys' RFC 9421
// request signatures, members' signed statements — go through KeyCache.Verify:
// curve25519-voi's implementation with the options of its VerifyOptionsStdLib preset,
// which accepts exactly the signatures crypto/ed25519 accepts (the cofactorless equation
// RFC 8032 permits, S and R canonical, any encoding of A that decodes, small-order points
// allowed). That equivalence is what keeps verdicts the same on every node and across
// versions; it is pinned by TestEd25519MatchesStdlib (the edge cases of "Taming the many
// EdDSAs", ZIP-215's vectors and C2SP's ed25519vectors), TestKeyCacheEncodingsOfOnePoint
// and FuzzEd25519MatchesStdlib. (EdDSA tokens are checked by golang-jwt, and threshold
// signatures by internal/ceremony, with crypto/ed25519 itself.)
//
// Why not crypto/ed25519: Apply verifies up to three of these per sign request on every
// node, and they were the largest part of its CPU (make bench-state's profile). voi
// verifies in about 70 % of crypto/ed25519's time, and with a key expanded once (its
// table of multiples of A) in about 60 %: members' identities and a caller's key sign
// thousands of entries, so KeyCache keeps keys expanded. Batch verification (voi's,
// ed25519consensus's) would be faster still, but exists only for the cofactored
// equation (ZIP-215), which accepts signatures crypto/ed25519 refuses: the HTTP layer
// and the FSM, or a node of this version and one of the last, would reach different
// verdicts on a crafted signature.

// stdlibOptions makes voi verify as crypto/ed25519 does. The fields are voi's
// VerifyOptionsStdLib preset, copied: the preset is an exported variable anything in the
// binary could change.
var stdlibOptions = &voi.Options{Verify: &voi.VerifyOptions{
	AllowSmallOrderA:   true,
	AllowSmallOrderR:   true,
	AllowNonCanonicalA: true,
	CofactorlessVerify: true,
}}

// maxCachedKeys bounds a KeyCache: an expanded key is about 1.5 KiB, so 1.5 MiB in all.
const maxCachedKeys = 1024

// KeyCache verifies Ed25519 signatures, keeping up to maxCachedKeys public keys
// expanded for the next signature by the same key. What it keeps changes only how fast
// a verdict comes, never the verdict: a key is cached under its own 32 bytes, which are
// also the bytes hashed, so two encodings of one point stay two keys. A nil *KeyCache
// verifies without keeping anything; the zero value is an empty cache. It is safe for
// concurrent use.
type KeyCache struct {
	mu   sync.Mutex
	keys map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey // guarded by mu; values never change
}

// NewKeyCache returns an empty cache.
func NewKeyCache() *KeyCache {
	return &KeyCache{keys: make(map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey)}
}

// Verify reports whether sig is pub's Ed25519 signature of msg, as crypto/ed25519.Verify
// does; a public key of the wrong length fails (crypto/ed25519.Verify would panic).
func (c *KeyCache) Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	if c == nil {
		return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlibOptions)
	}
	k := [ed25519.PublicKeySize]byte(pub)
	c.mu.Lock()
	ek := c.keys[k]
	c.mu.Unlock()
	if ek == nil {
		var err error
		// Expanded from the copy the cache is keyed on, not from the caller's slice.
		if ek, err = voi.NewExpandedPublicKey(voi.PublicKey(k[:])); err != nil {
			return false // A does not decode to a point: crypto/ed25519 refuses it too
		}
		c.mu.Lock()
		if c.keys == nil {
			c.keys = make(map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey)
		}
		if len(c.keys) >= maxCachedKeys {
			for old := range c.keys { // one arbitrary key makes room
				delete(c.keys, old)
				break
			}
		}
		c.keys[k] = ek
		c.mu.Unlock()
	}
	return voi.VerifyExpandedWithOptions(ek, msg, sig, stdlibOptions)
}
