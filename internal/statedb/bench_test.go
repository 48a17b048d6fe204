package statedb

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkBatchCommit commits batches shaped like one applied sign
// lifecycle step: about 6 writes of 200–2000 bytes each.
func BenchmarkBatchCommit(b *testing.B) {
	d := openTest(b, "")
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([][]byte, 64)
	for i := range vals {
		vals[i] = make([]byte, 200+rng.IntN(1801))
		for j := range vals[i] {
			vals[i][j] = byte(rng.Uint32())
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var idx uint64
	var bytesWritten int64
	for b.Loop() {
		idx++
		batch, err := d.NewBatch()
		if err != nil {
			b.Fatal(err)
		}
		for w := range 6 {
			v := vals[(int(idx)*6+w)%len(vals)]
			bytesWritten += int64(len(v))
			if err := batch.Set(k("bench", idx*8+uint64(w)), v); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(idx, int64(idx)); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(bytesWritten / int64(max(idx, 1)))
}

// bigState fills d with 100 000 records of 1 KiB and flushes it.
func bigState(b *testing.B, d *DB) {
	b.Helper()
	val := bytes.Repeat([]byte{0xAB}, 1024)
	const n, per = 100_000, 1000
	var idx uint64
	for i := 0; i < n; i += per {
		batch, _ := d.NewBatch()
		for j := i; j < i+per; j++ {
			_ = batch.Set(k("r", uint64(j)), val)
		}
		idx++
		if err := batch.Commit(idx, 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSnapshotStream streams a 100 000-record state (1 KiB values).
func BenchmarkSnapshotStream(b *testing.B) {
	d := openTest(b, "")
	bigState(b, d)
	b.ReportAllocs()
	b.ResetTimer()
	var size int64
	for b.Loop() {
		s, err := d.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		size, err = s.WriteTo(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
	b.SetBytes(size)
	b.ReportMetric(float64(size)/(1<<20), "MiB/snapshot")
}

// BenchmarkRestore streams the 100 000-record state through a pipe into
// Restore (no whole-snapshot buffer on either side).
func BenchmarkRestore(b *testing.B) {
	src := openTest(b, "")
	bigState(b, src)
	dst := openTest(b, "")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, err := src.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() {
			_, err := s.WriteTo(pw)
			pw.CloseWithError(err)
		}()
		if err := dst.Restore(pr); err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
}
