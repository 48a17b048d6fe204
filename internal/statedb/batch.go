package statedb

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects the writes of one or more raft entries and commits them
// atomically together with the applied index. It reads its own writes: Get
// and Scan see the batch's pending writes over the committed state. A Batch
// is not safe for concurrent use. Close discards an uncommitted batch; a
// batch never committed leaves nothing behind.
//
// Get reads the committed state as of its first call in the batch (its iterator
// keeps that view; Scan takes the latest): the same state, as long as batches
// are opened and committed one at a time — Apply is this database's only writer.
type Batch struct {
	d  *DB
	g  *generation // nil once committed or closed
	b  *pebble.Batch
	it *pebble.Iterator // Get's point iterator, made on first use
}

// pointReads are Get's iterator options. Apply looks up many keys that are not there
// (a fresh nonce, session, proposal or request id), and almost all of the state sits in
// the bottom level, L6, whose Bloom filters Pebble's own Get never reads (they are large,
// and it assumes a key looked up is likely there): each such miss read an L6 index and
// data block, and became the largest cost of applying a sign request as the state grew
// (make bench-state: 37 % of Apply's time at 100 k lifecycles). A prefix seek that may
// read L6 filters answers a miss from the filter.
var pointReads = pebble.IterOptions{UseL6Filters: true}

// NewBatch opens a batch over the current state. Close it (Commit does).
func (d *DB) NewBatch() (*Batch, error) {
	g, err := d.acquire()
	if err != nil {
		return nil, err
	}
	return &Batch{d: d, g: g, b: g.db.NewIndexedBatch()}, nil
}

func (b *Batch) usable() error {
	if b.g == nil {
		return fmt.Errorf("%w: batch already committed or closed", ErrClosed)
	}
	return nil
}

// Get returns a copy of the value under key as this batch sees it (its own
// writes over the committed state), or ErrNotFound.
func (b *Batch) Get(key []byte) ([]byte, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	it, err := b.pointIter()
	if err != nil {
		return nil, err
	}
	// The default comparer's prefix of a key is the whole key: the seek finds key or
	// nothing.
	if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
		if err := it.Error(); err != nil {
			return nil, fmt.Errorf("statedb: get: %w", err)
		}
		return nil, ErrNotFound
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return nil, fmt.Errorf("statedb: get: %w", err)
	}
	return append([]byte{}, v...), nil
}

// pointIter returns Get's iterator, showing the batch's writes so far: one iterator is
// made per batch and refreshed (SetOptions) before each read, rather than one per read,
// which would open every level's files again each time.
func (b *Batch) pointIter() (*pebble.Iterator, error) {
	if b.it != nil {
		b.it.SetOptions(&pointReads)
		return b.it, nil
	}
	it, err := b.b.NewIter(&pointReads)
	if err != nil {
		return nil, fmt.Errorf("statedb: get: %w", err)
	}
	b.it = it
	return it, nil
}

// closeIter closes Get's iterator, if one was made.
func (b *Batch) closeIter() error {
	if b.it == nil {
		return nil
	}
	err := b.it.Close()
	b.it = nil
	if err != nil {
		return fmt.Errorf("statedb: close batch iterator: %w", err)
	}
	return nil
}

// Set writes value under key. Both are copied.
func (b *Batch) Set(key, value []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := checkWritable(key); err != nil {
		return err
	}
	if err := b.b.Set(key, value, nil); err != nil {
		return fmt.Errorf("statedb: set: %w", err)
	}
	return nil
}

// Delete removes key (a no-op if absent).
func (b *Batch) Delete(key []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := checkWritable(key); err != nil {
		return err
	}
	if err := b.b.Delete(key, nil); err != nil {
		return fmt.Errorf("statedb: delete: %w", err)
	}
	return nil
}

// DeleteRange removes every key in [start, end) — with PrefixEnd, a whole
// table or prefix — in O(1) batch space (retention pruning). Both bounds are
// required and start must sort below end.
func (b *Batch) DeleteRange(start, end []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := checkWritable(start); err != nil {
		return err
	}
	if end == nil || bytes.Compare(start, end) >= 0 {
		return fmt.Errorf("statedb: delete range: end must be given and sort above start")
	}
	if err := b.b.DeleteRange(start, end, nil); err != nil {
		return fmt.Errorf("statedb: delete range: %w", err)
	}
	return nil
}

// Scan calls fn for every key in [lower, upper) in key order as this batch
// sees it (pending writes over committed state). A nil bound is open. key
// and value are valid only during the call. fn may return ErrStop to end the
// scan early; Scan then returns nil.
func (b *Batch) Scan(lower, upper []byte, fn func(key, value []byte) error) error {
	if err := b.usable(); err != nil {
		return err
	}
	return scan(b.b, lower, upper, fn)
}

// ScanPrefix is Scan over every key starting with prefix.
func (b *Batch) ScanPrefix(prefix []byte, fn func(key, value []byte) error) error {
	return b.Scan(prefix, PrefixEnd(prefix), fn)
}

// Size returns the bytes the batch holds so far (its encoded writes).
func (b *Batch) Size() int { return b.b.Len() }

// Commit records appliedIndex (the last raft index this batch covers: with
// hashicorp/raft's BatchingFSM several entries share one batch) and its stamp
// in the same batch and commits it atomically, without fsync (see the package
// doc). appliedIndex must be above the recorded one. The batch is closed
// afterwards, whatever the outcome.
func (b *Batch) Commit(appliedIndex uint64, stamp int64) error {
	if err := b.usable(); err != nil {
		return err
	}
	defer b.Close()
	d := b.d
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.cur == nil {
		return ErrClosed
	}
	if d.cur != b.g {
		return ErrStaleBatch
	}
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	if prev := b.g.applied.Load(); appliedIndex <= prev {
		return fmt.Errorf("%w: %d after %d", ErrIndexNotIncreasing, appliedIndex, prev)
	}
	if err := b.closeIter(); err != nil {
		return err
	}
	if err := b.b.Set(appliedKey, encodeApplied(appliedIndex, stamp), nil); err != nil {
		return fmt.Errorf("statedb: commit: %w", err)
	}
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("statedb: commit index %d: %w", appliedIndex, err)
	}
	b.g.applied.Store(appliedIndex)
	return nil
}

// Close discards the batch if it was not committed. Idempotent.
func (b *Batch) Close() error {
	if b.g == nil {
		return nil
	}
	g := b.g
	b.g = nil
	err := b.closeIter()
	if cerr := b.b.Close(); err == nil {
		err = cerr
	}
	if rerr := g.release(); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("statedb: close batch: %w", err)
	}
	return nil
}
