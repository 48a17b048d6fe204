package keystore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FuzzOpenRecord feeds arbitrary stored bytes to the record decoder: it must
// never panic, every failure must wrap ErrCorrupt, and only a genuine
// record for that key opens.
func FuzzOpenRecord(f *testing.F) {
	aead, err := newAEAD(testKey(1))
	if err != nil {
		f.Fatal(err)
	}
	good, err := sealRecord(aead, []byte("s/a"), []byte("share"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("s/a"), good)
	f.Add([]byte("s/b"), good)
	f.Add([]byte("s/a"), good[:recordOverhead])
	f.Add([]byte("s/a"), []byte{})
	f.Add([]byte(""), []byte{recordVersion})
	f.Add([]byte("chk"), bytes.Repeat([]byte{2}, 64))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		pt, err := openRecord(aead, key, value)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		// The only record ever sealed under this key (by any fuzz worker,
		// each with its own nonce) is "share" at "s/a".
		if string(key) != "s/a" || string(pt) != "share" {
			t.Fatalf("forged record opened: key %q, plaintext %q", key, pt)
		}
	})
}

// FuzzSealOpen checks the round trip and that a record opens only under its
// own key.
func FuzzSealOpen(f *testing.F) {
	aead, err := newAEAD(testKey(2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("s/a"), []byte("s/b"), []byte("x"))
	f.Add([]byte("m/identity"), []byte("m/identity2"), []byte{})
	f.Fuzz(func(t *testing.T, key, other, pt []byte) {
		v, err := sealRecord(aead, key, pt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := openRecord(aead, key, v)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("round trip = %q, %v", got, err)
		}
		if !bytes.Equal(key, other) {
			if _, err := openRecord(aead, other, v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("record for %q opened under %q: %v", key, other, err)
			}
		}
	})
}

// FuzzParsePreParamsKey: stored keys must never panic the parser, and a key
// that parses is exactly the canonical key of its sequence number.
func FuzzParsePreParamsKey(f *testing.F) {
	f.Add([]byte("pp/0000000000000000"))
	f.Add([]byte("pp/ffffffffffffffff"))
	f.Add([]byte("pp/FFFFFFFFFFFFFFFF"))
	f.Add([]byte("pp/"))
	f.Add([]byte("pp/00000000000000000"))
	f.Fuzz(func(t *testing.T, k []byte) {
		seq, err := parsePreParamsKey(k)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(preParamsKey(seq), k) {
			t.Fatalf("%q parsed to %d, whose key is %q", k, seq, preParamsKey(seq))
		}
	})
}

// FuzzMasterKeyFromHex: environment values must never panic the parser; a
// value that parses is 64 hex digits after trimming white space.
func FuzzMasterKeyFromHex(f *testing.F) {
	f.Add(sampleHex)
	f.Add(" " + sampleHex + "\n")
	f.Add("")
	f.Add(sampleHex[:63] + "g")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := MasterKeyFromHex(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidMasterKey) {
				t.Fatalf("error %v does not wrap ErrInvalidMasterKey", err)
			}
			if trimmed := strings.TrimSpace(s); len(trimmed) > 8 && strings.Contains(err.Error(), trimmed) {
				t.Fatal("error echoes the input")
			}
			return
		}
		if len(k) != MasterKeySize || !strings.EqualFold(hex.EncodeToString(k), strings.TrimSpace(s)) {
			t.Fatalf("%q decoded to %x", s, k)
		}
	})
}

// FuzzValidateName: an accepted name is short, non-empty and cannot escape
// its prefix or collide with another namespace.
func FuzzValidateName(f *testing.F) {
	f.Add("key_a")
	f.Add("a/b")
	f.Add("")
	f.Add("ünïcode")
	f.Fuzz(func(t *testing.T, name string) {
		if err := validateName("key id", name); err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if name == "" || len(name) > MaxNameLen || strings.ContainsAny(name, "/ \x00\n") {
			t.Fatalf("accepted %q", name)
		}
		for _, c := range []byte(name) {
			if c < 0x21 || c > 0x7e {
				t.Fatalf("accepted byte %#x in %q", c, name)
			}
		}
	})
}

// FuzzStoredRecords writes arbitrary bytes as stored values in a real
// (in-memory) Pebble store and reads them through the public API: nothing
// may panic, and nothing forged may decrypt.
func FuzzStoredRecords(f *testing.F) {
	s, err := Open("db", testKey(5), Options{FS: vfs.NewMem(), Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	if err := s.PutShare("seed", []byte("seed share")); err != nil {
		f.Fatal(err)
	}
	dk, sh := rawGet(f, s, "dk/seed"), rawGet(f, s, "s/seed")
	f.Add(dk, sh, sh, sh)
	f.Add(dk, []byte{}, []byte{1}, []byte{recordVersion, 0, 0})
	f.Add([]byte{}, sh, dk, dk)
	f.Fuzz(func(t *testing.T, dkVal, shareVal, metaVal, ppVal []byte) {
		rawSet(t, s, "dk/x", dkVal)
		rawSet(t, s, "s/x", shareVal)
		rawSet(t, s, "m/x", metaVal)
		rawSet(t, s, "pp/0000000000000007", ppVal)
		if got, err := s.GetShare("x"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("GetShare of forged records = %q, %v", got, err)
		}
		if got, err := s.GetMeta("x"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("GetMeta of forged record = %q, %v", got, err)
		}
		if _, got, err := s.TakePreParams(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("TakePreParams of forged record = %q, %v", got, err)
		}
		if got, err := s.GetShare("seed"); err != nil || string(got) != "seed share" {
			t.Fatalf("genuine share = %q, %v", got, err)
		}
	})
}

// FuzzImport feeds arbitrary bytes to Import as a backup stream: nothing may panic; a
// stream is either imported whole or refused with nothing created; and every stream
// that imports exports again to a stream that imports.
func FuzzImport(f *testing.F) {
	src, err := Open("src", testKey(6), Options{FS: vfs.NewMem(), Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = src.Close() })
	var empty bytes.Buffer
	if err := src.Export(&empty); err != nil {
		f.Fatal(err)
	}
	f.Add(empty.Bytes())
	if err := src.PutShare("key_a", []byte("share a")); err != nil {
		f.Fatal(err)
	}
	if err := src.PutMeta("identity", []byte("id")); err != nil {
		f.Fatal(err)
	}
	var full bytes.Buffer
	if err := src.Export(&full); err != nil {
		f.Fatal(err)
	}
	f.Add(full.Bytes())
	f.Add(full.Bytes()[:len(full.Bytes())-1])
	f.Add([]byte(backupMagic))
	f.Fuzz(func(t *testing.T, stream []byte) {
		fs := vfs.NewMem()
		err := Import("dst", testKey(7), bytes.NewReader(stream), Options{FS: fs, Logger: quietLogger()})
		if err != nil {
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("error %v does not wrap ErrBadBackup", err)
			}
			for _, p := range []string{"dst", "dst.partial-import"} {
				if _, serr := fs.Stat(p); serr == nil {
					t.Fatalf("refused stream left %s behind", p)
				}
			}
			return
		}
		s, err := Open("dst", testKey(7), Options{FS: fs, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("imported store does not open: %v", err)
		}
		defer s.Close()
		var out bytes.Buffer
		if err := s.Export(&out); err != nil {
			t.Fatalf("imported store does not export: %v", err)
		}
		if err := Import("again", testKey(8), bytes.NewReader(out.Bytes()), Options{FS: fs, Logger: quietLogger()}); err != nil {
			t.Fatalf("the export of an imported store does not import: %v", err)
		}
	})
}
