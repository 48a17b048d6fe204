package statedb

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"

	"github.com/custos/custos/internal/durable"
	"github.com/golang/snappy"
)

// Snapshot stream format, version 2. All integers big-endian unless uvarint.
//
//	header   magic "CUSTOSDB" (8 bytes) | version uint32 (= 2)
//	body     the rest, compressed as one Snappy framed stream
//	         (github.com/golang/snappy; CRC-32C per chunk):
//	record*  uvarint(len key) (>= 1) | key | uvarint(len value) | value
//	         records in strictly increasing key order
//	end      uvarint(0)                     (an empty key cannot be stored)
//	trailer  count uint64 | SHA-256 (32 bytes)
//
// The SHA-256 covers every uncompressed byte before it (header, records, end
// marker and count), so truncation, a flipped byte or a spliced stream is
// refused; nothing may follow the digest. Version 1, which earlier binaries
// wrote and this one still reads (their raft snapshots upgrade in place), is
// the same without the compression. Readers refuse another magic or version
// with ErrBadSnapshot or ErrSnapshotVersion.
//
// Why compress: the state is mostly signed forms and JSON, which Snappy
// shrinks about 2.6 times at several hundred MB/s a core; at 1 M lifecycles
// the uncompressed stream was 3.2 GB, and writing it out kept the disk busy
// enough that Apply's reads queued behind it (make bench-state's stalls over
// 50 ms). Snappy rather than zstd: zstd shrinks more (4.5 times) but costs
// four to five times the CPU, the scarcer resource on a two-core node; and
// Pebble already depends on it.
const (
	snapshotMagic = "CUSTOSDB"
	// snapshotVersion is the version this build writes; it reads it and
	// snapshotVersionPlain.
	snapshotVersion      = 2
	snapshotVersionPlain = 1
	ioBufSize            = 256 << 10
)

// Snapshot is a consistent view of the state taken for raft (FSMSnapshot):
// taking it is O(1), and WriteTo streams it without holding any lock that
// blocks commits. Release it with Close.
type Snapshot struct {
	view *View
}

// Snapshot takes a consistent view to stream. Batches committed after it
// returns are not in the stream.
func (d *DB) Snapshot() (*Snapshot, error) {
	v, err := d.View()
	if err != nil {
		return nil, err
	}
	return &Snapshot{view: v}, nil
}

// View returns the snapshot's view (for example to compute its ContentHash
// while streaming it). It is closed with the Snapshot.
func (s *Snapshot) View() *View { return s.view }

// hashWriter writes to w and a hash.
type hashWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	return hw.w.Write(p)
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteTo streams every record of the snapshot to w in the format above and
// returns the bytes written. Memory use is bounded by one buffer and one
// record, whatever the state's size. It may be called more than once.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if s.view == nil || s.view.snap == nil {
		return 0, fmt.Errorf("%w: snapshot", ErrClosed)
	}
	return writeStream(w, func(fn func(k, v []byte) error) error { return scan(s.view.snap, nil, nil, fn) })
}

// WriteRecords streams records (in strictly increasing key order, none in the reserved
// range but the applied-index record) in the snapshot format, for building a state
// outside a database — such as converting an older snapshot format — that Restore then
// reads like any snapshot.
func WriteRecords(w io.Writer, records []Record) (int64, error) {
	for i, r := range records {
		if len(r.Key) == 0 || len(r.Key) > maxKeySize || (r.Key[0] == 0x00 && !AppliedKey(r.Key)) {
			return 0, fmt.Errorf("statedb: record %d: key empty, too long or reserved", i)
		}
		if i > 0 && bytes.Compare(records[i-1].Key, r.Key) >= 0 {
			return 0, fmt.Errorf("statedb: record %d out of key order", i)
		}
	}
	return writeStream(w, func(fn func(k, v []byte) error) error {
		for _, r := range records {
			if err := fn(r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
}

// AppliedRecord is the record carrying the applied index and stamp, for WriteRecords.
func AppliedRecord(index uint64, stamp int64) Record {
	return Record{Key: append([]byte(nil), appliedKey...), Value: encodeApplied(index, stamp)}
}

// writeStream writes the records each yields in the snapshot format.
func writeStream(w io.Writer, each func(fn func(k, v []byte) error) error) (int64, error) {
	return writeStreamVersion(w, snapshotVersion, each)
}

// writeStreamVersion writes the stream in the given format version (tests write
// version 1 to check that this build still reads it).
func writeStreamVersion(w io.Writer, version uint32, each func(fn func(k, v []byte) error) error) (int64, error) {
	cw := &countingWriter{w: w}
	out := bufio.NewWriterSize(cw, ioBufSize)
	hw := &hashWriter{w: out, h: sha256.New()}
	var hdr [2 * binary.MaxVarintLen64]byte
	hw.Write([]byte(snapshotMagic))
	hw.Write(binary.BigEndian.AppendUint32(hdr[:0], version))
	// The body goes through Snappy (version 2), whose buffered writer gathers
	// records into chunks of 64 KiB, each compressed into out. Its error is sticky,
	// as bufio's is.
	var sw *snappy.Writer
	if version != snapshotVersionPlain {
		sw = snappy.NewBufferedWriter(out)
		hw.w = sw
	}
	var count uint64
	err := each(func(k, v []byte) error {
		hw.Write(binary.AppendUvarint(hdr[:0], uint64(len(k))))
		hw.Write(k)
		hw.Write(binary.AppendUvarint(hdr[:0], uint64(len(v))))
		_, err := hw.Write(v)
		count++
		return err // bufio's error is sticky: checking once per record is enough
	})
	if err != nil {
		return cw.n, fmt.Errorf("statedb: stream snapshot: %w", err)
	}
	hw.Write(binary.AppendUvarint(hdr[:0], 0))
	hw.Write(binary.BigEndian.AppendUint64(hdr[:0], count))
	sum := hw.h.Sum(nil)
	if _, err := hw.w.Write(sum); err != nil {
		return cw.n, fmt.Errorf("statedb: stream snapshot: %w", err)
	}
	if sw != nil {
		if err := sw.Close(); err != nil {
			return cw.n, fmt.Errorf("statedb: stream snapshot: %w", err)
		}
	}
	if err := out.Flush(); err != nil {
		return cw.n, fmt.Errorf("statedb: stream snapshot: %w", err)
	}
	return cw.n, nil
}

// Close releases the snapshot. Idempotent.
func (s *Snapshot) Close() error {
	if s.view == nil {
		return nil
	}
	err := s.view.Close()
	s.view = nil
	return err
}

// hashReader reads through a buffer and hashes what it returns.
// Varint bytes are hashed as read (not re-encoded), so a non-canonical
// length encoding is refused by the digest like any other change.
type hashReader struct {
	r   *bufio.Reader
	h   hash.Hash
	one [1]byte
	err error // the last error of r (uvarint tells a bad encoding from it)
}

func (hr *hashReader) ReadByte() (byte, error) {
	c, err := hr.r.ReadByte()
	if err == nil {
		hr.one[0] = c
		hr.h.Write(hr.one[:])
	}
	hr.err = err
	return c, err
}

// uvarint reads a length. A varint that overflows 64 bits is a bad stream, like any
// other encoding error; an error of the reader under it is reported as such.
func (hr *hashReader) uvarint(what string) (uint64, error) {
	hr.err = nil
	v, err := binary.ReadUvarint(hr)
	switch {
	case err == nil:
		return v, nil
	case hr.err == nil:
		return 0, fmt.Errorf("%w: %s: %v", ErrBadSnapshot, what, err)
	default:
		return 0, truncated(what, err)
	}
}

func (hr *hashReader) readFull(p []byte) error {
	if _, err := io.ReadFull(hr.r, p); err != nil {
		return err
	}
	hr.h.Write(p)
	return nil
}

// truncated turns an end of stream into ErrBadSnapshot.
func truncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream truncated in %s", ErrBadSnapshot, what)
	}
	return fmt.Errorf("statedb: read snapshot %s: %w", what, err)
}

// Restore replaces the whole state with the snapshot read from r (written by
// Snapshot.WriteTo). It streams the records into a fresh generation directory
// beside the live one, committing in batches of at most
// Options.RestoreBatchBytes, verifies the trailer, makes the new generation
// durable, and only then switches to it with an atomic rename. If anything
// fails — a truncated, corrupted or foreign stream, a disk error, a crash —
// the old state stays in place and in use. The DB stays usable: batches
// opened before the switch fail with ErrStaleBatch; Views and Snapshots
// opened before it keep reading the old state until closed.
func (d *DB) Restore(r io.Reader) error { return d.RestoreChecked(r, nil) }

// RestoreChecked is Restore with a check of the restored state before it is switched
// in: check (if not nil) reads the new state through a View and refuses it by returning
// an error, which leaves the old state in place.
func (d *DB) RestoreChecked(r io.Reader, check func(*View) error) (err error) {
	d.restoreMu.Lock()
	defer d.restoreMu.Unlock()
	old, err := d.acquire()
	if err != nil {
		return err
	}
	seq := old.seq + 1
	if err := old.release(); err != nil {
		return err
	}
	// A leftover of an earlier failed attempt with this number goes first.
	if err := os.RemoveAll(filepath.Join(d.dir, genName(seq))); err != nil {
		return fmt.Errorf("statedb: restore: clear %s: %w", genName(seq), err)
	}
	g, err := d.openGeneration(seq)
	if err != nil {
		return fmt.Errorf("statedb: restore: %w", err)
	}
	defer func() {
		if err != nil {
			g.retired.Store(true)
			_ = g.release()
		}
	}()
	if err := fill(g.db, r, d.opts); err != nil {
		return err
	}
	idx, _, err := readApplied(g.db)
	if err != nil {
		return fmt.Errorf("statedb: restore: %w", err)
	}
	g.applied.Store(idx)
	if check != nil {
		g.refs.Add(1)
		v := &View{g: g, snap: g.db.NewSnapshot()}
		cerr := check(v)
		if err := v.Close(); err != nil && cerr == nil {
			cerr = err
		}
		if cerr != nil {
			return fmt.Errorf("statedb: restore: %w", cerr)
		}
	}
	if err := g.db.Flush(); err != nil {
		return fmt.Errorf("statedb: restore: make the new state durable: %w", err)
	}

	d.mu.Lock()
	if d.cur == nil {
		d.mu.Unlock()
		return ErrClosed
	}
	if err := d.writeActive(seq); err != nil {
		d.mu.Unlock()
		return fmt.Errorf("statedb: restore: %w", err)
	}
	prev := d.cur
	d.cur = g
	d.mu.Unlock()

	// The switch is visible. Until the rename is durable a crash could bring
	// back the previous generation, so its files are only removed once the
	// directory is synced (otherwise at the next Open).
	if serr := durable.SyncDir(d.dir); serr != nil {
		d.log.Warn("could not sync the data directory after a restore; the previous state is kept until next open", "err", serr)
	} else {
		prev.retired.Store(true)
	}
	if err := prev.release(); err != nil {
		d.log.Warn("closing the state replaced by a restore failed", "err", err)
	}
	d.log.Info("state restored from snapshot", "applied_index", idx)
	return nil
}

// fill reads a snapshot stream from r into db, verifying it as it goes.
func fill(db *pebble.DB, r io.Reader, opts Options) error {
	b := db.NewBatch()
	defer func() { _ = b.Close() }()
	err := decodeStream(r, opts.MaxValueSize, func(key, val []byte) error {
		if err := b.Set(key, val, nil); err != nil {
			return fmt.Errorf("statedb: restore: %w", err)
		}
		if b.Len() >= opts.RestoreBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("statedb: restore: %w", err)
			}
			b.Reset() // reuse the batch's buffer: memory stays at one batch
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("statedb: restore: %w", err)
	}
	return nil
}

// ReadRecords reads a whole snapshot stream into memory, verifying it (tools and tests;
// a node restores with Restore, which streams).
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	err := decodeStream(r, defaultMaxValue, func(k, v []byte) error {
		out = append(out, Record{Key: bytes.Clone(k), Value: bytes.Clone(v)})
		return nil
	})
	return out, err
}

// decodeStream reads a snapshot stream, calling fn with each record (key and value are
// valid only during the call), and verifies its order, bounds and trailer. Records are
// handed over before the trailer is checked: the caller must discard what it did with
// them when decodeStream fails.
func decodeStream(r io.Reader, maxValue int, fn func(key, val []byte) error) error {
	hr := &hashReader{r: bufio.NewReaderSize(r, ioBufSize), h: sha256.New()}
	head := make([]byte, len(snapshotMagic)+4)
	if err := hr.readFull(head); err != nil {
		return truncated("header", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a statedb snapshot (magic %q, want %q)", ErrBadSnapshot, head[:len(snapshotMagic)], snapshotMagic)
	}
	switch v := binary.BigEndian.Uint32(head[len(snapshotMagic):]); v {
	case snapshotVersionPlain:
	case snapshotVersion:
		// The rest is compressed: read it through Snappy, whose chunks are at most
		// 64 KiB, so memory stays bounded whatever a stream claims.
		hr.r = bufio.NewReaderSize(snappyReader{snappy.NewReader(hr.r)}, ioBufSize)
	default:
		return fmt.Errorf("%w: format version %d, this build reads versions %d and %d", ErrSnapshotVersion, v, snapshotVersionPlain, snapshotVersion)
	}

	var (
		count      uint64
		key, prevK []byte
		val        []byte
	)
	for {
		kl, err := hr.uvarint("record")
		if err != nil {
			return err
		}
		if kl == 0 {
			break
		}
		if kl > maxKeySize {
			return fmt.Errorf("%w: record %d: key length %d over %d", ErrBadSnapshot, count, kl, maxKeySize)
		}
		key = grow(key, int(kl))
		if err := hr.readFull(key); err != nil {
			return truncated("record", err)
		}
		if count > 0 && bytes.Compare(prevK, key) >= 0 {
			return fmt.Errorf("%w: record %d out of key order", ErrBadSnapshot, count)
		}
		vl, err := hr.uvarint("record")
		if err != nil {
			return err
		}
		if vl > uint64(maxValue) {
			return fmt.Errorf("%w: record %d: value length %d over %d", ErrBadSnapshot, count, vl, maxValue)
		}
		val = grow(val, int(vl))
		if err := hr.readFull(val); err != nil {
			return truncated("record", err)
		}
		if err := fn(key, val); err != nil {
			return err
		}
		prevK = append(prevK[:0], key...)
		count++
	}
	var cnt [8]byte
	if err := hr.readFull(cnt[:]); err != nil {
		return truncated("trailer", err)
	}
	want := hr.h.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(hr.r, got[:]); err != nil {
		return truncated("trailer", err)
	}
	if !bytes.Equal(got[:], want) {
		return fmt.Errorf("%w: checksum mismatch (corrupted stream)", ErrBadSnapshot)
	}
	if n := binary.BigEndian.Uint64(cnt[:]); n != count {
		return fmt.Errorf("%w: trailer counts %d records, stream held %d", ErrBadSnapshot, n, count)
	}
	if _, err := hr.r.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrBadSnapshot) {
			return fmt.Errorf("%w: data after the trailer", ErrBadSnapshot)
		}
		return fmt.Errorf("statedb: read snapshot trailer: %w", err)
	}
	return nil
}

// snappyReader reports a damaged compressed body (a chunk whose checksum or
// encoding is wrong, an unknown chunk type) as ErrBadSnapshot.
type snappyReader struct{ r *snappy.Reader }

func (s snappyReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if errors.Is(err, snappy.ErrCorrupt) || errors.Is(err, snappy.ErrUnsupported) {
		err = fmt.Errorf("%w: compressed body: %v", ErrBadSnapshot, err)
	}
	return n, err
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
