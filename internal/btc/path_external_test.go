package btc_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/internal/state/oracle"
)

// TestParsePathMatchesTheFrozenParser: btc.ParsePath is the FSM's path parser
// (state.ParsePath), so its verdicts and messages are replicated and hashed: they must stay
// those of the parser frozen with the old FSM (state/oracle), except that btc also reads
// "" as the root (state.ParsePath refuses it, as before).
func TestParsePathMatchesTheFrozenParser(t *testing.T) {
	inputs := []string{"m", "m/0", "m/0/7", "m/2147483647", "m/2147483648", "m/", "m//1", "m/01", "m/00",
		"m/1'", "m/1h", "m/1H", "m/-1", "m/+1", "M/1", "0/1", "m/ 1", "m/1/", "m/1x", "m/4294967296",
		"m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", "m/٣"}
	for _, s := range inputs {
		got, gotErr := btc.ParsePath(s)
		want, wantErr := oracle.ParsePath(s)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !slices.Equal(got, want) {
			t.Errorf("%q: btc %v %v, frozen %v %v", s, got, gotErr, want, wantErr)
		}
	}
	if p, err := btc.ParsePath(""); err != nil || len(p) != 0 {
		t.Errorf(`ParsePath("") = %v, %v`, p, err)
	}
}
