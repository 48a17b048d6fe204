//go:build custos_testhooks

package node

import (
	"encoding/hex"
	"os"
	"strings"

	"github.com/custos/custos/internal/state"
)

// misbehaveHook plays a compromised leader in test builds only: with
// CUSTOS_TEST_MISBEHAVE=swap-digest it schedules a different digest from the one the caller
// signed; with bad-signature it corrupts the caller's stored request signature. Honest
// committee members must refuse to start their parties (DESIGN.md invariant 2).
func (n *Node) misbehaveHook(c *state.Call) {
	if c.Op != state.OpKeySign || c.Signed == nil {
		return
	}
	switch os.Getenv("CUSTOS_TEST_MISBEHAVE") {
	case "swap-digest":
		b, err := hex.DecodeString(c.MessageHex)
		if err == nil && len(b) > 0 {
			b[0] ^= 0xff
			c.MessageHex = hex.EncodeToString(b)
		}
		n.log.Warn("TEST HOOK: compromised coordinator swapped the digest")
	case "bad-signature":
		s := *c.Signed
		s.Signature = corruptMiddle(s.Signature)
		if i := strings.LastIndexByte(s.XAuthToken, '|'); i >= 0 {
			// Corrupt the X-Auth-Token's signature field only, so the token still parses.
			s.XAuthToken = s.XAuthToken[:i+1] + corruptMiddle(s.XAuthToken[i+1:])
		}
		c.Signed = &s
		n.log.Warn("TEST HOOK: compromised coordinator corrupted the request signature")
	}
}

// corruptMiddle changes one base64 character in the middle of s (long values only).
func corruptMiddle(s string) string {
	if len(s) <= 12 {
		return s
	}
	mid := len(s) / 2
	ch := byte('A')
	if s[mid] == 'A' {
		ch = 'B'
	}
	return s[:mid] + string(ch) + s[mid+1:]
}
