package state

import (
	"fmt"
	"slices"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		in   string
		want []uint32
		ok   bool
	}{
		{"m", []uint32{}, true},
		{"m/0", []uint32{0}, true},
		{"m/0/7", []uint32{0, 7}, true},
		{"m/2147483647", []uint32{2147483647}, true},
		{"m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, true},
		{"", nil, false},
		{"M/0", nil, false},
		{"0/1", nil, false},
		{"m/", nil, false},
		{"m//1", nil, false},
		{"m/1/", nil, false},
		{"m/0'", nil, false},
		{"m/0h", nil, false},
		{"m/0H", nil, false},
		{"m/2147483648", nil, false},
		{"m/4294967296", nil, false},
		{"m/-1", nil, false},
		{"m/+1", nil, false},
		{"m/01", nil, false},
		{"m/1a", nil, false},
		{"m/ 1", nil, false},
		{"m/0x1", nil, false},
		{"m/1_0", nil, false},
		{"m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", nil, false},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if tt.ok && !slices.Equal(got, tt.want) {
			t.Errorf("%q: got %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzParsePath: no input panics the parser, and what it accepts is exactly
// the canonical form of a non-hardened path of at most MaxPathDepth steps
// (printing the result gives back the input).
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"m", "m/0/7", "m/0'", "m//", "m/2147483647", "m/01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			return
		}
		if len(p) > MaxPathDepth {
			t.Fatalf("depth %d accepted", len(p))
		}
		out := "m"
		for _, step := range p {
			if step >= 1<<31 {
				t.Fatalf("hardened step %d accepted", step)
			}
			out += fmt.Sprintf("/%d", step)
		}
		if out != s {
			t.Fatalf("%q parsed to %v, which prints as %q", s, p, out)
		}
	})
}
