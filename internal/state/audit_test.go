package state

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/custos/custos/admin"
)

// TestAuditHashMatchesVerifier appends entries through the node's own append function and
// checks that each stored hash is what admin.AuditEntryHash recomputes from the entry as
// GET /v1/audit serves it (encoding/json of the stored entry), and that the whole chain
// verifies with admin.AuditChain.
func TestAuditHashMatchesVerifier(t *testing.T) {
	tests := []struct {
		name   string
		object string
		stored string // the object as stored and served
	}{
		{"ascii", "key_0123abcd", "key_0123abcd"},
		{"empty", "", ""},
		{"non-ascii", "clé é", "clé é"},
		{"emoji", "key 😀", "key 😀"},
		{"line separators", "a\u2028b\u2029c", "a\u2028b\u2029c"},
		{"control characters", "\x00\x01\x1f\x7f\b\f\n\r\t", "\x00\x01\x1f\x7f\b\f\n\r\t"},
		{"quotes and backslashes", `"q" \ \\ \" /`, `"q" \ \\ \" /`},
		{"html characters", "<a href='x'>&amp;</a>", "<a href='x'>&amp;</a>"},
		{"invalid byte", "\xff", "\uFFFD"},
		{"truncated sequence", "a\xc3", "a\uFFFD"},
		{"run of invalid bytes", "k\xff\xfe\xfdey", "k\uFFFDey"},
		{"surrogate half in UTF-8", "\xed\xa0\x80", "\uFFFD"},
		{"mixed", "é\xff😀\xc3\"\\\x01", "é\uFFFD😀\uFFFD\"\\\x01"},
	}
	a := memApplier(1767322245123)
	var chain admin.AuditChain
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The odd strings go into every string field the callers pass.
			a.audit("user:"+tt.object, "keys.get"+tt.object, tt.object, "refused", "key.not_found"+tt.object)
			all := auditEntries(t, a)
			e := all[len(all)-1]
			if e.Object != tt.stored || e.Actor != "user:"+tt.stored || e.Code != "key.not_found"+tt.stored {
				t.Fatalf("stored %q %q %q, want object %q", e.Actor, e.Object, e.Code, tt.stored)
			}
			served, err := json.Marshal(e) // what GET /v1/audit serves (internal/httpapi)
			if err != nil {
				t.Fatal(err)
			}
			if !utf8.Valid(served) {
				t.Fatalf("served entry is not UTF-8: %q", served)
			}
			got, err := admin.AuditEntryHash(served)
			if err != nil {
				t.Fatalf("verifier refuses %s: %v", served, err)
			}
			if got != e.Hash {
				t.Fatalf("node stored %s, verifier recomputes %s from %s", e.Hash, got, served)
			}
			// The same through a client's own decoding and re-encoding of the page.
			var back AuditEntry
			if err := json.Unmarshal(served, &back); err != nil || back != e {
				t.Fatalf("served entry decodes to %+v (%v), stored %+v", back, err, e)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(back); err != nil {
				t.Fatal(err)
			}
			if h, err := admin.AuditEntryHash(buf.Bytes()); err != nil || h != e.Hash {
				t.Fatalf("re-encoded entry %s hashes to %s (%v), want %s", buf.Bytes(), h, err, e.Hash)
			}
			if b := chain.Add(served); b != nil {
				t.Fatalf("chain: %v", b)
			}
		})
	}
	all := auditEntries(t, a)
	if i := VerifyChain(GenesisHash, all); i != -1 {
		t.Fatalf("VerifyChain: broken at %d", i)
	}
	if r := chain.Result(); r.Entries != uint64(len(tests)) || r.HeadHash != all[len(all)-1].Hash {
		t.Fatalf("chain result %+v", r)
	}
}

// TestAuditHashUnchangedForValidUTF8 pins hashes computed by the node's previous
// hand-written canonicaliser: for valid UTF-8 the canonical form is unchanged, so chains
// written before keep verifying. (For invalid UTF-8 the previous node hashed a \ufffd escape
// that no verifier could reproduce; such strings are now stored as U+FFFD first.)
func TestAuditHashUnchangedForValidUTF8(t *testing.T) {
	for i, tt := range []struct{ object, hash string }{
		{"key_abc", "0e1a426e168dc023c204ee5be0480885b786a27f20a729b45240649e96c38fcd"},
		{"é😀\u2028\u2029", "c948c1b58db1f5f4c392074ec1e7489ca1162dc2e80b64b35a337d6bbfdb6a08"},
		{"ctl \x00\x01\x1f\x7f\b\f\n\r\t", "27d33e30253fca278616392fc113af07badd78d50263b42a1a06c95acdf151d2"},
		{`q"b\s/<>&`, "91acc9666b4b0039d9866de5cfdfa53640796c1e8013abb267b45dff613bc265"},
	} {
		e := AuditEntry{Seq: uint64(i + 1), Time: "2026-01-02T03:04:05.123Z", Actor: "user:1", Action: "keys.get",
			Object: tt.object, Outcome: "refused", Code: "key.not_found", PrevHash: GenesisHash}
		if got := AuditHash(&e); got != tt.hash {
			t.Errorf("%q: hash %s, was %s", tt.object, got, tt.hash)
		}
	}
}

func TestAuditCanonical(t *testing.T) {
	e := AuditEntry{Seq: 3, Time: "2026-01-02T03:04:05.123Z", Actor: "user:1", Action: "keys.get",
		Object: "\xff<é>", Outcome: "refused", Code: "key.not_found", PrevHash: GenesisHash, Hash: "left out"}
	want := `{"action":"keys.get","actor":"user:1","code":"key.not_found","object":"` + "\uFFFD<é>" +
		`","outcome":"refused","prev_hash":"` + GenesisHash + `","seq":3,"time":"2026-01-02T03:04:05.123Z"}`
	if got := string(AuditCanonical(&e)); got != want {
		t.Fatalf("canonical\n got %s\nwant %s", got, want)
	}
}

// benchEntry is a typical audit entry: a user's signing call on a request.
func benchEntry() AuditEntry {
	return AuditEntry{Seq: 123456, Time: "2026-01-02T03:04:05.123Z", Actor: "user:42", Action: "keys.sign",
		Object: "req_01JH8Z3K4Q5R6S7T8V9W0XYZAB", Outcome: "allowed", PrevHash: GenesisHash}
}

// BenchmarkAuditHash measures hashing one entry, which raft Apply does for every audited
// call (twice per signature).
func BenchmarkAuditHash(b *testing.B) {
	e := benchEntry()
	b.ReportAllocs()
	for b.Loop() {
		e.Hash = AuditHash(&e)
	}
}

// BenchmarkAuditAppend measures the whole append (stamp formatting, hashing, append).
func BenchmarkAuditAppend(b *testing.B) {
	a := memApplier(1767322245123)
	b.ReportAllocs()
	for b.Loop() {
		if a.m.AuditSeq == 4096 {
			a = memApplier(1767322245123)
		}
		a.audit("user:42", "keys.sign", "req_01JH8Z3K4Q5R6S7T8V9W0XYZAB", "allowed", "")
	}
}
