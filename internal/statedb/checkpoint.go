package statedb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a copy of the live state into dir, which must not exist: Pebble's
// checkpoint, whose table files are hard links to the database's own, so it costs a
// memtable flush and a link per file whatever the state's size (a stream of the whole
// state, at 1 M lifecycles, reads and writes over a gigabyte). It returns the applied
// index the copy holds: the state after some commit at or after the moment Checkpoint
// was called (commits go on meanwhile; the copy never holds part of a batch).
//
// The database keeps no write-ahead log, so the memtables are flushed first: the copy
// holds what was flushed when Pebble took its version. That also makes the live state
// durable up to at least the returned index (as Sync does).
//
// A checkpoint keeps the files it links alive after compactions replace them in the
// database: remove it once it is no longer needed.
func (d *DB) Checkpoint(dir string) (uint64, error) {
	g, err := d.acquire()
	if err != nil {
		return 0, err
	}
	defer g.release()
	if err := g.db.Flush(); err != nil {
		return 0, fmt.Errorf("statedb: checkpoint: flush: %w", err)
	}
	if err := g.db.Checkpoint(dir); err != nil {
		return 0, fmt.Errorf("statedb: checkpoint to %s: %w", dir, err)
	}
	cp, err := openCheckpoint(dir, d.log)
	if err != nil {
		return 0, err
	}
	idx, _, err := readApplied(cp)
	if cerr := cp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("statedb: close checkpoint %s: %w", dir, cerr)
	}
	if err != nil {
		return 0, err
	}
	return idx, nil
}

// StreamCheckpoint writes the state in a checkpoint directory (Checkpoint) to w as a
// snapshot stream (the format in snapshot.go; Restore reads it) and returns the bytes
// written and the applied index the stream carries. Memory use is bounded as for
// Snapshot.WriteTo. The checkpoint is opened read-only and left as it was.
func (d *DB) StreamCheckpoint(dir string, w io.Writer) (n int64, index uint64, err error) {
	cp, err := openCheckpoint(dir, d.log)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := cp.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("statedb: close checkpoint %s: %w", dir, cerr)
		}
	}()
	index, _, err = readApplied(cp)
	if err != nil {
		return 0, 0, err
	}
	n, err = writeStream(w, func(fn func(k, v []byte) error) error { return scan(cp, nil, nil, fn) })
	return n, index, err
}

// openCheckpoint opens a checkpoint directory read-only (with its own small caches: it
// is read once, front to back).
func openCheckpoint(dir string, log *slog.Logger) (*pebble.DB, error) {
	db, err := pebble.Open(dir, &pebble.Options{
		ReadOnly: true,
		Logger:   pebbleLogger{log: log.With("engine", "pebble", "checkpoint", dir)},
	})
	if err != nil {
		return nil, fmt.Errorf("statedb: open checkpoint %s: %w", dir, err)
	}
	return db, nil
}

// errFirstRecord ends StreamAppliedIndex's read after the first record.
var errFirstRecord = errors.New("first record read")

// StreamAppliedIndex reads the applied index a snapshot stream carries (its first
// record) without reading the rest: nothing past that record is verified. It fails on
// anything but a stream of this package's format.
func StreamAppliedIndex(r io.Reader) (uint64, error) {
	var (
		index uint64
		found bool
	)
	err := decodeStream(r, defaultMaxValue, func(key, val []byte) error {
		if AppliedKey(key) && len(val) == 16 {
			index, found = binary.BigEndian.Uint64(val), true
		}
		return errFirstRecord
	})
	if err != nil && !errors.Is(err, errFirstRecord) {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: the stream carries no applied index", ErrBadSnapshot)
	}
	return index, nil
}
