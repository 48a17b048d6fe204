package protocol

import (
	"crypto/elliptic"
	"math/big"
	"testing"

	"github.com/bnb-chain/tss-lib/v2/tss"
)

func TestCheckDecommitment(t *testing.T) {
	for _, curve := range []elliptic.Curve{tss.S256(), tss.Edwards()} {
		p := curve.Params()
		g := []*big.Int{p.Gx, p.Gy}
		x2, y2 := curve.Double(p.Gx, p.Gy)
		good := []*big.Int{big.NewInt(42), g[0], g[1], x2, y2} // r, then two points
		tests := []struct {
			name   string
			d      []*big.Int
			points int
			ok     bool
		}{
			{"two points", good, 2, true},
			{"one point short (tss-lib #291)", good[:3], 2, false},
			{"one point too many", good, 1, false},
			{"odd length", good[:4], 2, false},
			{"empty", nil, 1, false},
			{"off the curve", []*big.Int{big.NewInt(1), p.Gx, new(big.Int).Add(p.Gy, big.NewInt(1))}, 1, false},
			{"non-canonical x", []*big.Int{big.NewInt(1), new(big.Int).Add(p.Gx, p.P), p.Gy}, 1, false},
			{"nil coordinate", []*big.Int{big.NewInt(1), nil, p.Gy}, 1, false},
		}
		for _, tc := range tests {
			err := checkDecommitment(tc.d, tc.points, curve)
			if (err == nil) != tc.ok {
				t.Errorf("%s/%s: got %v", p.Name, tc.name, err)
			}
		}
	}
}
