package baseline

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewRefuses covers New's refusals, which stop before any ceremony (a real keygen
// takes seconds: the benchmark itself exercises the rest).
func TestNewRefuses(t *testing.T) {
	fixtures := filepath.Join("..", "..", "test", "fixtures", "preparams")
	tests := []struct {
		name, dir string
		n, k      int
		want      string
	}{
		{"k above n", fixtures, 3, 4, "2 <= k <= n"},
		{"k below 2", fixtures, 3, 1, "2 <= k <= n"},
		{"one party", fixtures, 1, 1, "2 <= k <= n"},
		{"no fixtures", t.TempDir(), 3, 2, "pre-parameter fixture"},
	}
	for _, tc := range tests {
		b, err := New(context.Background(), tc.dir, tc.n, tc.k)
		if err == nil || b != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, %v; want an error with %q", tc.name, b, err, tc.want)
		}
	}
}

// BenchmarkReshareECDSA is the tss-lib reference for protocol's BenchmarkReshareECDSA:
// a 2-of-3 refresh, every node running its old and its new party, in one process.
func BenchmarkReshareECDSA(b *testing.B) {
	ctx := context.Background()
	base, err := New(ctx, filepath.Join("..", "..", "test", "fixtures", "preparams"), 3, 2)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := base.ReshareECDSA(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
