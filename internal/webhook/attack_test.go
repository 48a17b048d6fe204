package webhook

import (
	"net/netip"
	"testing"
)

// TestAttackMetadataAddressesMissed: cloud metadata addresses that the guard must refuse
// even when link-local addresses are allowed: GCP's IPv6 metadata server, and the IPv4
// metadata address behind a local-use NAT64 prefix (RFC 8215).
func TestAttackMetadataAddressesMissed(t *testing.T) {
	for _, g := range []Guard{{}, {AllowLoopback: true, AllowLinkLocal: true}} {
		for _, ip := range []string{"fd20:ce::254", "64:ff9b:1::a9fe:a9fe", "64:ff9b:1:2::7f00:1"} {
			err := g.CheckIP(netip.MustParseAddr(ip))
			if err == nil && !(ip == "64:ff9b:1:2::7f00:1" && g.AllowLoopback) {
				t.Errorf("%+v: %s accepted", g, ip)
			}
		}
	}
}
