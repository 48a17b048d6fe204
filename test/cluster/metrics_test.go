package cluster

import (
	"bytes"
	"testing"
)

// FuzzParseMetrics: the parser of the nodes' Prometheus text never panics and every
// series it returns is a non-empty line prefix without a newline.
func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte("# HELP x y\ncustos_p2p_dropped_messages_total{reason=\"malformed\"} 3\n"))
	f.Add([]byte("a 1e3\nb NaN\n"))
	f.Add([]byte("novalue\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetrics(b)
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
	m, err := ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{`custos_p2p_dropped_messages_total{reason="malformed"}`: 24, `custos_p2p_dropped_messages_total{reason="not_member"}`: 1, "go_goroutines": 51} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}
	for _, bad := range []string{"novalue", "x notanumber"} {
		if _, err := ParseMetrics([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
