//go:build linux

package hostile

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzReadFrame: the hostile peer's parser of the frames honest nodes send it never
// panics, never returns more than the limit, and reads back what frameBytes wrote.
func FuzzReadFrame(f *testing.F) {
	f.Add(frameBytes([]byte("hello")))
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<31))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 16
		frame, err := readFrame(bytes.NewReader(b), limit)
		if err != nil {
			return
		}
		if len(frame) > limit {
			t.Fatalf("frame of %d bytes above the limit %d", len(frame), limit)
		}
		again, err := readFrame(bytes.NewReader(frameBytes(frame)), limit)
		if err != nil || !bytes.Equal(again, frame) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzParseMetrics: the parser of the nodes' Prometheus text never panics and every
// series it returns is a non-empty line prefix without a newline.
func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte("# HELP x y\ncustos_p2p_dropped_messages_total{reason=\"malformed\"} 3\n"))
	f.Add([]byte("a 1e3\nb NaN\n"))
	f.Add([]byte("novalue\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMetrics(b)
		if err != nil {
			return
		}
		for series := range m {
			if series == "" || bytes.ContainsAny([]byte(series), "\n") {
				t.Fatalf("bad series %q", series)
			}
		}
	})
}

func TestParseMetrics(t *testing.T) {
	body := []byte("# HELP custos_p2p_dropped_messages_total x\n# TYPE custos_p2p_dropped_messages_total counter\n" +
		"custos_p2p_dropped_messages_total{reason=\"malformed\"} 24\ncustos_p2p_dropped_messages_total{reason=\"not_member\"} 1\ngo_goroutines 51\n")
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{`custos_p2p_dropped_messages_total{reason="malformed"}`: 24, `custos_p2p_dropped_messages_total{reason="not_member"}`: 1, "go_goroutines": 51} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}
	for _, bad := range []string{"novalue", "x notanumber"} {
		if _, err := parseMetrics([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
