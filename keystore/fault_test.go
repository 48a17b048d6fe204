package keystore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// syncOps fails only the fsync family: data reaches the file but is never
// made durable.
func syncOps(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return errorfs.ErrInjected
	}
	return nil
}

func TestWriteFaults(t *testing.T) {
	tests := []struct {
		name     string
		injector errorfs.Injector
	}{
		{"every write fails", errorfs.ErrInjected.If(errorfs.Writes)},
		{"only syncs fail", errorfs.InjectorFunc(syncOps)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			toggle := &errorfs.Toggle{Injector: tc.injector}
			key := testKey(4)
			s, err := Open("db", key, Options{FS: errorfs.Wrap(mem, toggle), Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.PutShare("before", []byte("acknowledged share")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddPreParams([]byte("acknowledged set")); err != nil {
				t.Fatal(err)
			}
			// The disk state a crash right now would leave behind.
			crashes := []*vfs.MemFS{}

			toggle.On()
			// Small enough not to rotate the WAL: Pebble panics outright
			// (no Fatalf, not recoverable) when closing the old WAL fails
			// during a rotation, which stops the process instead.
			half := bytes.Repeat([]byte{0x5a}, 1<<10)
			err = s.PutShare("during", half)
			if err == nil {
				t.Fatal("PutShare succeeded while every write failed")
			}
			if !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("PutShare error = %v, want ErrStoreFailed", err)
			}
			t.Logf("PutShare under faults: %v", err)
			// The failed store answers nothing, not even the record it
			// could not make durable.
			if _, err := s.GetShare("during"); !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("GetShare after failure = %v, want ErrStoreFailed", err)
			}
			if _, err := s.GetShare("before"); !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("GetShare(before) after failure = %v, want ErrStoreFailed", err)
			}
			if _, err := s.AddPreParams([]byte("x")); !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("AddPreParams after failure = %v, want ErrStoreFailed", err)
			}

			crashes = append(crashes, mem.CrashClone(vfs.CrashCloneCfg{}))
			for seed := range uint64(4) {
				crashes = append(crashes, mem.CrashClone(vfs.CrashCloneCfg{
					UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, seed)),
				}))
			}
			crashes = append(crashes, mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(9, 9))}))
			if err := s.Close(); !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("Close of a failed store = %v, want ErrStoreFailed", err)
			}

			for i, fs := range crashes {
				r, err := Open("db", key, Options{FS: fs, Logger: quietLogger()})
				if err != nil {
					t.Fatalf("crash image %d: reopen: %v", i, err)
				}
				if got, err := r.GetShare("before"); err != nil || string(got) != "acknowledged share" {
					t.Fatalf("crash image %d: acknowledged share = %q, %v", i, got, err)
				}
				if n, err := r.CountPreParams(); err != nil || n != 1 {
					t.Fatalf("crash image %d: CountPreParams = %d, %v", i, n, err)
				}
				// The failed write is either absent or whole, never partial
				// or garbage.
				got, err := r.GetShare("during")
				switch {
				case errors.Is(err, ErrNotFound):
					t.Logf("crash image %d: failed share absent", i)
				case err == nil && bytes.Equal(got, half):
					t.Logf("crash image %d: failed share present and whole", i)
				default:
					t.Fatalf("crash image %d: unacknowledged share = %d bytes, %v", i, len(got), err)
				}
				if i == 0 && !errors.Is(err, ErrNotFound) {
					t.Fatalf("crash image with only synced data holds the failed share")
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestOpenFaults(t *testing.T) {
	// Creating a store on a filesystem that refuses writes fails cleanly.
	mem := vfs.NewCrashableMem()
	_, err := Open("db", testKey(1), Options{FS: errorfs.Wrap(mem, errorfs.ErrInjected.If(errorfs.Writes)), Logger: quietLogger()})
	if err == nil {
		t.Fatal("Open succeeded on a filesystem that refuses writes")
	}
}
