package auditchain

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		// RFC 8785 §3.2.2.3 numbers and §3.2.3 sorting.
		{`{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001,-0,1e21,1e20,1e-6,1e-7,-12.5e2]}`,
			`{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27,0,1e+21,100000000000000000000,0.000001,1e-7,-1250]}`},
		{`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew","1":"One","\ud83d\ude00":"Emoji","\u0080":"Control","\u00f6":"o"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"\u00f6\":\"o\",\"\u20ac\":\"Euro Sign\",\"\U0001F600\":\"Emoji\",\"\ufb33\":\"Hebrew\"}"},
		{`{"s":"\u0000\u001f\u007f\"\\\/\b\f\n\r\t","l":[true,false,null,{"z":{},"y":[]}]}`,
			`{"l":[true,false,null,{"y":[],"z":{}}],"s":"\u0000\u001f` + "\u007f" + `\"\\/\b\f\n\r\t"}`},
		// encoding/json's escapes of HTML characters, U+2028/9 and invalid UTF-8 come out raw.
		{`{"h":"\u003c\u0026\u003e","l":"\u2028\u2029","r":"\ufffd"}`, "{\"h\":\"<&>\",\"l\":\"\u2028\u2029\",\"r\":\"\ufffd\"}"},
		{" \n{ \"b\" : 2 ,\t\"a\":1 }\n", `{"a":1,"b":2}`},
		{`{"hash":"x"}`, `{"hash":"x"}`}, // Canonical keeps "hash"; EntryCanonical leaves it out
	}
	for _, tt := range tests {
		got, err := Canonical([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("Canonical(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

func TestRefused(t *testing.T) {
	for _, bad := range []string{
		``, `[]`, `"x"`, `1`, `null`, ` [{"a":1}]`,
		`{"a":1,"a":2}`, `{"a":{"b":1,"b":1}}`, `{"a":1,"\u0061":2}`, // repeated names
		`{"a":1} {}`, `{"a":1}x`, `{`, `{"a":1,"b`, `{"a":1 2}`, `{"a":01}`, `{"a":+1}`, `{"a":.5}`,
		`{"a":NaN}`, `{"a":1e400}`, `{"a":-1e400}`,
		"{\"a\":\"\xff\"}", "{\"a\":\"a\xc3\"}", "{\"\xff\":1}", "{\"a\":\"\xed\xa0\x80\"}", // invalid UTF-8
		`{"a":"\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud800\u0041"}`, `{"a":"\ud800x"}`, `{"a":"\ud800\ud800"}`, `{"a":"\udc00\ud800"}`,
		strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1),
		`{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`,
	} {
		if c, err := Canonical([]byte(bad)); err == nil {
			t.Errorf("Canonical accepted %q as %s", bad, c)
		}
		if c, err := EntryCanonical([]byte(bad)); err == nil {
			t.Errorf("EntryCanonical accepted %q as %s", bad, c)
		}
	}
	// Repeated names in different objects, and MaxDepth levels, are fine.
	for _, ok := range []string{
		`{"a":{"a":1},"b":[{"a":1},{"a":2}]}`,
		strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1),
		`{"a":"\ud83d\ude00\udbff\udfff"}`,
	} {
		if _, err := Canonical([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestEntryCanonicalLeavesOutHash(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"hash":"x"}`, `{}`},
		{`{"hash":"x","a":1}`, `{"a":1}`},
		{`{"a":1,"hash":"x"}`, `{"a":1}`},
		{`{"b":2,"hash":{"hash":[1,{"hash":2}]},"a":1}`, `{"a":1,"b":2}`},
		{" { \"a\" : 1 ,\n \"hash\" : \"x\" \n} ", `{"a":1}`},
		{`{ "hash" : "x" , "a" : 1 }`, `{"a":1}`},
		{`{"h\u0061sh":"x","a":"hash"}`, `{"a":"hash"}`},
		{`{"a":{"hash":1},"hashes":2,"has":3}`, `{"a":{"hash":1},"has":3,"hashes":2}`}, // only a top-level "hash"
	}
	for _, tt := range tests {
		got, err := EntryCanonical([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("EntryCanonical(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
		h1, err1 := EntryHash([]byte(tt.in))
		h2, err2 := Hash([]byte(tt.want))
		if err1 != nil || err2 != nil || h1 != h2 || len(h1) != 64 {
			t.Errorf("%s: EntryHash %s %v, Hash of the entry without hash %s %v", tt.in, h1, err1, h2, err2)
		}
	}
	for _, bad := range []string{`{"hash":"x","hash":"y"}`, `{"hash":"x","h\u0061sh":"y","a":1}`} {
		if _, err := EntryCanonical([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestHashVector(t *testing.T) {
	// An entry as the node serves it (encoding/json writes invalid UTF-8 as \ufffd); the
	// hash was computed independently: printf '%s' "$want" | sha256sum.
	entry := `{"seq":1,"time":"2026-01-02T03:04:05.123Z","actor":"user:1","action":"keys.get","object":"\ufffd","outcome":"refused","code":"key.not_found","prev_hash":"` + GenesisHash + `","hash":"ignored"}`
	c, err := EntryCanonical([]byte(entry))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"action":"keys.get","actor":"user:1","code":"key.not_found","object":"` + "\ufffd" + `","outcome":"refused","prev_hash":"` + GenesisHash + `","seq":1,"time":"2026-01-02T03:04:05.123Z"}`
	if string(c) != want {
		t.Fatalf("canonical\n got %s\nwant %s", c, want)
	}
	const wantHash = "c39977a37a34654480eebe253dcfdee2b8f6ca61a05253e5e0b51c50d22ccc5f"
	if h, err := EntryHash([]byte(entry)); err != nil || h != wantHash {
		t.Fatalf("EntryHash %s %v, want %s", h, err, wantHash)
	}
}

// FuzzEntryCanonical: never panics, the canonical form is a fixed point, and it is valid
// JSON that means what the input meant (less its "hash").
func FuzzEntryCanonical(f *testing.F) {
	f.Add([]byte(`{"a":[1.5e300,-0.0,{"b":null}],"\ud83d\ude00":"\u0000","hash":"x"}`))
	f.Add([]byte(`{"a":1,"a":1}`))
	f.Add([]byte("{\"a\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := EntryCanonical(data)
		if err != nil {
			return
		}
		c2, err := Canonical(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("canonical form is not a fixed point:\n%s\n%s (%v)", c, c2, err)
		}
		var in, out map[string]any
		if json.Unmarshal(data, &in) != nil || json.Unmarshal(c, &out) != nil {
			t.Fatalf("%q or %q does not decode", data, c)
		}
		delete(in, "hash")
		if !reflect.DeepEqual(in, out) { // numbers compare as float64, so -0 == 0
			t.Fatalf("meaning changed:\n%q\n%q", data, c)
		}
	})
}

// BenchmarkAuditHash hashes a typical entry as the node does when it appends one.
func BenchmarkAuditHash(b *testing.B) {
	entry := []byte(`{"seq":123456,"time":"2026-01-02T03:04:05.123Z","actor":"user:42","action":"keys.sign","object":"req_01JH8Z3K4Q5R6S7T8V9W0XYZAB","outcome":"allowed","code":"","prev_hash":"` + GenesisHash + `","hash":""}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EntryHash(entry); err != nil {
			b.Fatal(err)
		}
	}
}
