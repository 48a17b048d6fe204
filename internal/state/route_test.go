package state

import "testing"

func TestDecodeBody(t *testing.T) {
	var b SignBody
	for in, bad := range map[string]bool{
		`{"message":"00"}`:                    false,
		`{"message":"00","derivaton_path":1}`: true,
		`{"message":`:                         true,
		`{"message":"00"} {}`:                 true,
		``:                                    true,
		`[]`:                                  true,
	} {
		if got := DecodeBody([]byte(in), &b) != ""; got != bad {
			t.Errorf("DecodeBody(%q) malformed=%v, want %v", in, got, bad)
		}
	}
}
