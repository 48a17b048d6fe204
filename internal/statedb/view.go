package statedb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ErrStop, returned by a scan callback, ends the scan early without error.
var ErrStop = errors.New("statedb: stop scan")

// MaxPageLimit bounds View.Page, so an API page never loads an unbounded
// number of records (invariant 7).
const MaxPageLimit = 1000

// View is a consistent, read-only view of the committed state at the moment
// it was taken (a Pebble snapshot): batches committed later are invisible to
// it. Taking one is O(1) and does not block commits. A View is safe for
// concurrent use; Close it when done (it keeps old versions of records from
// being compacted away).
type View struct {
	g    *generation
	snap *pebble.Snapshot
}

// View returns a consistent view of the committed state.
func (d *DB) View() (*View, error) {
	g, err := d.acquire()
	if err != nil {
		return nil, err
	}
	return &View{g: g, snap: g.db.NewSnapshot()}, nil
}

// Record is one key and value, both owned by the caller.
type Record struct {
	Key, Value []byte
}

// Get returns a copy of the value under key in this view, or ErrNotFound.
func (v *View) Get(key []byte) ([]byte, error) {
	if v.snap == nil {
		return nil, fmt.Errorf("%w: view", ErrClosed)
	}
	return get(v.snap, key)
}

// AppliedIndex returns the raft index and stamp this view reflects.
func (v *View) AppliedIndex() (index uint64, stamp int64, err error) {
	if v.snap == nil {
		return 0, 0, fmt.Errorf("%w: view", ErrClosed)
	}
	return readApplied(v.snap)
}

// Scan calls fn for every key in [lower, upper) in key order. A nil bound is
// open (an unbounded scan also meets the package's reserved 0x00 records). key and value are valid only during the call. fn may return ErrStop
// to end the scan early; Scan then returns nil.
func (v *View) Scan(lower, upper []byte, fn func(key, value []byte) error) error {
	if v.snap == nil {
		return fmt.Errorf("%w: view", ErrClosed)
	}
	return scan(v.snap, lower, upper, fn)
}

// ScanPrefix is Scan over every key starting with prefix.
func (v *View) ScanPrefix(prefix []byte, fn func(key, value []byte) error) error {
	return v.Scan(prefix, PrefixEnd(prefix), fn)
}

// Page returns up to limit records with the given prefix whose keys sort
// after the key after (nil: from the start), and next, the key to pass as
// after for the following page (nil when there is none). limit must be in
// [1, MaxPageLimit].
func (v *View) Page(prefix, after []byte, limit int) (recs []Record, next []byte, err error) {
	if limit < 1 || limit > MaxPageLimit {
		return nil, nil, fmt.Errorf("statedb: page limit %d outside [1, %d]", limit, MaxPageLimit)
	}
	lower := prefix
	if after != nil {
		if !bytes.HasPrefix(after, prefix) {
			return nil, nil, fmt.Errorf("statedb: page cursor does not start with the prefix")
		}
		lower = append(append([]byte{}, after...), 0x00) // smallest key above after
	}
	err = v.Scan(lower, PrefixEnd(prefix), func(k, val []byte) error {
		if len(recs) == limit {
			next = recs[len(recs)-1].Key
			return ErrStop
		}
		recs = append(recs, Record{Key: append([]byte{}, k...), Value: append([]byte{}, val...)})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return recs, next, nil
}

// contentHashDomain separates ContentHash from any other SHA-256 use.
const contentHashDomain = "custos/statedb/content-hash/v1\x00"

// ContentHash returns the SHA-256 of every record in this view, in key
// order, except those for which exclude returns true (per-node records such
// as the applied index, see AppliedKey; exclude may be nil). Each record is
// framed as uvarint(len key) key uvarint(len value) value, after a domain
// tag and followed by the record count, so no two different contents hash
// alike by shifting bytes between records. Equal contents give equal hashes
// whatever order they were written in: this is the state hash the nodes sign
// in their checkpoints.
func (v *View) ContentHash(exclude func(key []byte) bool) ([32]byte, error) {
	if v.snap == nil {
		return [32]byte{}, fmt.Errorf("%w: view", ErrClosed)
	}
	h := sha256.New()
	h.Write([]byte(contentHashDomain))
	var n uint64
	var hdr [2 * binary.MaxVarintLen64]byte
	err := scan(v.snap, nil, nil, func(k, val []byte) error {
		if exclude != nil && exclude(k) {
			return nil
		}
		b := binary.AppendUvarint(hdr[:0], uint64(len(k)))
		h.Write(b)
		h.Write(k)
		b = binary.AppendUvarint(hdr[:0], uint64(len(val)))
		h.Write(b)
		h.Write(val)
		n++
		return nil
	})
	if err != nil {
		return [32]byte{}, err
	}
	h.Write(binary.BigEndian.AppendUint64(hdr[:0], n))
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

// Close releases the view. Idempotent.
func (v *View) Close() error {
	if v.snap == nil {
		return nil
	}
	err := v.snap.Close()
	v.snap = nil
	if rerr := v.g.release(); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("statedb: close view: %w", err)
	}
	return nil
}

// scan iterates r over [lower, upper).
func scan(r reader, lower, upper []byte, fn func(key, value []byte) error) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("statedb: scan: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("statedb: scan: %w", cerr)
		}
	}()
	for ok := it.First(); ok; ok = it.Next() {
		val, verr := it.ValueAndErr()
		if verr != nil {
			return fmt.Errorf("statedb: scan: %w", verr)
		}
		if ferr := fn(it.Key(), val); ferr != nil {
			if errors.Is(ferr, ErrStop) {
				return nil
			}
			return ferr
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("statedb: scan: %w", err)
	}
	return nil
}
