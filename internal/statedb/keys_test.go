package statedb

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"strings"
	"testing"
)

type tuple struct {
	table string
	u     uint64
	i     int64
	s     string
}

func (t tuple) encode() []byte {
	k := AppendTable(nil, t.table)
	k = AppendUint64(k, t.u)
	k = AppendInt64(k, t.i)
	return AppendString(k, t.s)
}

func decodeTuple(k []byte) (tuple, error) {
	d := NewKeyDecoder(k)
	t := tuple{table: d.Table(), u: d.Uint64(), i: d.Int64(), s: d.Text()}
	return t, d.Done()
}

func compareTuple(a, b tuple) int {
	return cmp.Or(strings.Compare(a.table, b.table), cmp.Compare(a.u, b.u), cmp.Compare(a.i, b.i), strings.Compare(a.s, b.s))
}

func TestKeyOrder(t *testing.T) {
	// Each row must sort strictly before the next, as tuples and as bytes.
	rows := []tuple{
		{"a", 0, math.MinInt64, ""},
		{"a", 0, -1, ""},
		{"a", 0, 0, ""},
		{"a", 0, 0, "\x00"},
		{"a", 0, 0, "\x00\x00"},
		{"a", 0, 0, "\x00\x01"},
		{"a", 0, 0, "\x01"},
		{"a", 0, 0, "a"},
		{"a", 0, 0, "a\x00"},
		{"a", 0, 0, "ab"},
		{"a", 0, 0, "a\xff"},
		{"a", 0, math.MaxInt64, ""},
		{"a", 1, math.MinInt64, ""},
		{"a", math.MaxUint64, 0, ""},
		{"a\x00", 0, 0, ""},
		{"a\x01", 0, 0, ""},
		{"aa", 0, 0, ""},
		{"b", 0, 0, ""},
		{"\xff", 0, 0, ""},
	}
	for i := range rows {
		got, err := decodeTuple(rows[i].encode())
		if err != nil || got != rows[i] {
			t.Fatalf("row %d: round trip gave %+v, %v", i, got, err)
		}
		if i == 0 {
			continue
		}
		if compareTuple(rows[i-1], rows[i]) >= 0 {
			t.Fatalf("test table not sorted at %d", i)
		}
		if bytes.Compare(rows[i-1].encode(), rows[i].encode()) >= 0 {
			t.Errorf("encoding of %+v does not sort before %+v", rows[i-1], rows[i])
		}
	}
}

func TestTablePrefixIsolation(t *testing.T) {
	// No key of table "a" falls in table "ab"'s range or "a\x00"'s, and back.
	tables := []string{"a", "ab", "a\x00", "a\x01", "b"}
	for _, ta := range tables {
		for _, tb := range tables {
			if ta == tb {
				continue
			}
			pb := TablePrefix(tb)
			for _, s := range []string{"", "\x00", "b", "\xff\xff"} {
				k := AppendString(AppendTable(nil, ta), s)
				if bytes.HasPrefix(k, pb) {
					t.Errorf("key of table %q (segment %q) has the prefix of table %q", ta, s, tb)
				}
			}
		}
	}
}

func TestKeyDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		read func(d *KeyDecoder)
	}{
		{"short integer", []byte{1, 2, 3}, func(d *KeyDecoder) { d.Uint64() }},
		{"unterminated string", []byte("abc"), func(d *KeyDecoder) { d.Text() }},
		{"string ending in escape", []byte("abc\x00"), func(d *KeyDecoder) { d.Text() }},
		{"bad escape", []byte("a\x00\x02"), func(d *KeyDecoder) { d.Text() }},
		{"trailing bytes", AppendUint64(nil, 1), func(d *KeyDecoder) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewKeyDecoder(tt.key)
			tt.read(d)
			if err := d.Done(); !errors.Is(err, ErrBadKey) {
				t.Fatalf("Done() = %v, want ErrBadKey", err)
			}
		})
	}
}

func TestAppendTablePanics(t *testing.T) {
	for _, name := range []string{"", "\x00x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AppendTable(%q) did not panic", name)
				}
			}()
			AppendTable(nil, name)
		}()
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ in, want []byte }{
		{[]byte("a"), []byte("b")},
		{[]byte{1, 0xFF}, []byte{2}},
		{[]byte{0xFF, 0xFF}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := PrefixEnd(tt.in); !bytes.Equal(got, tt.want) {
			t.Errorf("PrefixEnd(%x) = %x, want %x", tt.in, got, tt.want)
		}
	}
}

func FuzzKeyOrder(f *testing.F) {
	f.Add("a", uint64(1), int64(-1), "x", "a", uint64(1), int64(-1), "x\x00")
	f.Add("t", uint64(0), int64(0), "", "t\x00", uint64(math.MaxUint64), int64(math.MinInt64), "\xff")
	f.Fuzz(func(t *testing.T, ta string, ua uint64, ia int64, sa string, tb string, ub uint64, ib int64, sb string) {
		if ta == "" || ta[0] == 0 || tb == "" || tb[0] == 0 {
			t.Skip()
		}
		a, b := tuple{ta, ua, ia, sa}, tuple{tb, ub, ib, sb}
		ka, kb := a.encode(), b.encode()
		if got, want := bytes.Compare(ka, kb), compareTuple(a, b); got != want {
			t.Fatalf("bytes.Compare = %d, tuple compare = %d for %+v vs %+v", got, want, a, b)
		}
		for _, x := range []tuple{a, b} {
			got, err := decodeTuple(x.encode())
			if err != nil || got != x {
				t.Fatalf("round trip of %+v gave %+v, %v", x, got, err)
			}
		}
		// A table's keys are exactly its prefix range.
		if ta != tb && bytes.HasPrefix(ka, TablePrefix(tb)) {
			t.Fatalf("key of table %q in table %q's range", ta, tb)
		}
	})
}
