package statedb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/custos/custos/internal/durable"
)

// Errors. Each is wrapped with context; test with errors.Is.
var (
	// ErrNotFound: no record under the key.
	ErrNotFound = errors.New("statedb: not found")
	// ErrClosed: the DB, View, Batch or Snapshot was closed.
	ErrClosed = errors.New("statedb: closed")
	// ErrReservedKey: a write to an empty key or to the 0x00 range, which
	// holds the package's own records.
	ErrReservedKey = errors.New("statedb: reserved key")
	// ErrStaleBatch: the batch was opened before a Restore replaced the
	// state; committing it would write into the discarded database.
	ErrStaleBatch = errors.New("statedb: batch predates a restore")
	// ErrIndexNotIncreasing: Commit with an applied index not above the
	// recorded one (raft applies each index once, in order).
	ErrIndexNotIncreasing = errors.New("statedb: applied index not increasing")
	// ErrBadSnapshot: a snapshot stream that is truncated, corrupted or not a
	// statedb snapshot.
	ErrBadSnapshot = errors.New("statedb: bad snapshot")
	// ErrSnapshotVersion: a snapshot in a format version this build does not read.
	ErrSnapshotVersion = errors.New("statedb: unsupported snapshot version")
)

// appliedKey holds the last applied raft index and its stamp: 16 bytes, the
// big-endian index then the big-endian stamp. It is in the reserved 0x00
// range, sorts before every table, and travels in snapshots so a restored
// node knows which index its state reflects.
var appliedKey = []byte("\x00applied")

// AppliedKey reports whether key is the package's applied-index record: a
// per-node record that callers exclude from ContentHash.
func AppliedKey(key []byte) bool { return bytes.Equal(key, appliedKey) }

// Options configures Open. The zero value is usable.
type Options struct {
	// Logger receives Pebble's log lines and the package's own; never keys or
	// values. Defaults to slog.Default().
	Logger *slog.Logger
	// CacheSize is Pebble's block cache in bytes (0: Pebble's default, 8 MiB).
	CacheSize int64
	// RestoreBatchBytes bounds the memory a Restore uses: it commits the
	// records it has read whenever the pending batch reaches this size.
	// Default 512 KiB: below Pebble's retained-buffer size (1 MiB), so the
	// batch buffer is reused, and far below half a memtable.
	RestoreBatchBytes int
	// MaxValueSize bounds one value read from a snapshot stream, so a
	// corrupted length cannot make Restore allocate without limit.
	// Default 64 MiB. Keys are bounded to 64 KiB.
	MaxValueSize int
}

const (
	defaultRestoreBatch = 512 << 10
	defaultMaxValue     = 64 << 20
	maxKeySize          = 64 << 10
	separateValuesFrom  = 256      // values this long or longer go to blob files (openGeneration)
	activeFile          = "ACTIVE" // names the live generation directory
	genPrefix           = "state-" // generation directories: state-<n>
	tmpSuffix           = ".tmp"   // ACTIVE.tmp while switching
	dirPerm             = os.FileMode(0o700)
	filePerm            = os.FileMode(0o600)
)

// DB is the FSM's database. It is safe for concurrent use: reads and views
// run alongside batch commits; Restore swaps the whole state under a short
// exclusive lock.
//
// On disk, dir holds ACTIVE (the name of the live generation) and one Pebble
// directory per generation (state-1, state-2, ...). Restore builds the next
// generation beside the live one and switches ACTIVE with an atomic rename.
type DB struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu  sync.RWMutex // guards cur; held shared by commits, exclusively by the swap
	cur *generation  // nil once closed

	commitMu  sync.Mutex // orders commits so the applied index check holds
	restoreMu sync.Mutex // one Restore at a time
}

// generation is one Pebble database. It stays open while anything holds a
// reference: the DB (while it is current), and each open View, Batch or
// Snapshot taken from it, so a Restore never closes a database under a
// reader streaming from it.
type generation struct {
	db      *pebble.DB
	dir     string
	seq     uint64
	refs    atomic.Int64
	retired atomic.Bool // replaced by a Restore: remove its files once closed
	applied atomic.Uint64
	log     *slog.Logger
}

// Open opens (or creates) the database in dir, which must not be shared with
// any other store. Leftovers of an interrupted Restore are removed.
//
// Writes are not fsynced one by one (see the package doc: the raft log is the
// durable record and the applied index committed with each batch makes any
// crash leave a consistent prefix); call Sync at shutdown.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RestoreBatchBytes <= 0 {
		opts.RestoreBatchBytes = defaultRestoreBatch
	}
	if opts.MaxValueSize <= 0 {
		opts.MaxValueSize = defaultMaxValue
	}
	d := &DB{dir: dir, opts: opts, log: opts.Logger.With("component", "statedb")}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("statedb: create %s: %w", dir, err)
	}
	seq, err := d.readActive()
	if err != nil {
		return nil, err
	}
	fresh := seq == 0
	if fresh {
		seq = 1
	} else if _, err := os.Stat(filepath.Join(dir, genName(seq))); err != nil {
		return nil, fmt.Errorf("statedb: %s names %s, which cannot be opened: %w", activeFile, genName(seq), err)
	}
	if err := d.removeLeftovers(seq); err != nil {
		return nil, err
	}
	g, err := d.openGeneration(seq)
	if err != nil {
		return nil, err
	}
	if fresh {
		// ACTIVE is written only once the generation exists, so a crash
		// here leaves either nothing or a complete pair.
		err := d.writeActive(seq)
		if err == nil {
			err = durable.SyncDir(dir)
		}
		if err != nil {
			_ = g.release()
			return nil, fmt.Errorf("statedb: initialise %s: %w", dir, err)
		}
	}
	d.cur = g
	return d, nil
}

func genName(seq uint64) string { return genPrefix + strconv.FormatUint(seq, 10) }

// readActive returns the live generation named by ACTIVE, or 0 if the
// directory is new.
func (d *DB) readActive() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, activeFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("statedb: read %s: %w", activeFile, err)
	}
	name := strings.TrimSpace(string(b))
	seq, err := strconv.ParseUint(strings.TrimPrefix(name, genPrefix), 10, 64)
	if err != nil || !strings.HasPrefix(name, genPrefix) || seq == 0 {
		return 0, fmt.Errorf("statedb: %s in %s names %q, not a generation directory", activeFile, d.dir, name)
	}
	return seq, nil
}

// writeActive points ACTIVE at generation seq atomically: write a temporary
// file, fsync it, rename it over ACTIVE. The caller syncs the directory
// (durable.SyncDir) to make the rename durable.
func (d *DB) writeActive(seq uint64) error {
	tmp := filepath.Join(d.dir, activeFile+tmpSuffix)
	err := durable.WriteFile(tmp, []byte(genName(seq)+"\n"), filePerm)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.dir, activeFile))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("statedb: switch %s to %s: %w", activeFile, genName(seq), err)
	}
	return nil
}

// removeLeftovers deletes generation directories other than the live one
// (an interrupted Restore, or an old generation whose removal was cut short)
// and a stray ACTIVE.tmp. Only names this package creates are touched.
func (d *DB) removeLeftovers(live uint64) error {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("statedb: list %s: %w", d.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		stale := name == activeFile+tmpSuffix
		if s, ok := strings.CutPrefix(name, genPrefix); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil && n != live {
				stale = true
			}
		}
		if !stale {
			continue
		}
		d.log.Info("removing leftover of an interrupted restore", "path", name)
		if err := os.RemoveAll(filepath.Join(d.dir, name)); err != nil {
			return fmt.Errorf("statedb: remove leftover %s: %w", name, err)
		}
	}
	return nil
}

// openGeneration opens (creating if needed) generation seq and loads its
// applied index. The returned generation holds one reference (the owner's).
func (d *DB) openGeneration(seq uint64) (*generation, error) {
	dir := filepath.Join(d.dir, genName(seq))
	po := &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{log: d.log.With("engine", "pebble")},
	}
	// Apply looks up many keys that are not there (a fresh nonce, session or request
	// id): Bloom filters answer those without reading data blocks. Every level inherits
	// L0's policy (the bottom level's filters are read by Batch.Get only: pointReads).
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	// Raft's apply is the only writer and it must not wait: room for write bursts while a
	// snapshot streams and flushes or compactions lag (Pebble's defaults, 2 memtables and
	// 12 L0 sublevels, stopped apply for seconds under a sustained load on two cores), and
	// a second compaction when debt builds up. Memtables stay at Pebble's 4 MiB: they are
	// memory Pebble manages itself, held twice (one filling, one flushing), and
	// 16 MiB ones made a signing node's resident memory swing by tens of MiB (make soak)
	// for no apply throughput make bench-state could measure (4.7k vs 4.8k entries/s at
	// 150 k lifecycles).
	po.MemTableSize = 4 << 20
	po.MemTableStopWritesThreshold = 4
	// No write-ahead log: the raft log is the durable record (package doc). With one,
	// every memtable switch fsyncs the finished log file inside the commit path, and
	// while a snapshot streams hundreds of MiB to disk that fsync waits behind the
	// snapshot's dirty pages: make bench-state measured apply stalls of 90-280 ms, all
	// in Commit right before a memtable flush; without it, none in Commit. It also
	// halves what apply writes to disk.
	po.DisableWAL = true
	po.L0StopWritesThreshold = 24
	// Files that compactions made obsolete are unlinked at a paced rate rather than
	// all at once: a snapshot's iterator pins every file it may read until the stream
	// ends, so at 1 M lifecycles several GB became deletable at the same moment, and on
	// a file system that discards (TRIMs) freed blocks the burst made Apply's reads
	// wait on the disk (make bench-state: stalls of 100-200 ms at 500 k+). Pebble
	// deletes faster than this when obsolete files exceed a fifth of the live ones or
	// free space runs low.
	po.TargetByteDeletionRate = 128 << 20
	po.CompactionConcurrencyRange = func() (int, int) { return 1, 2 }
	// Values of separateValuesFrom bytes or more (request records, audit entries,
	// signed forms: most of what apply writes) are kept in blob files beside the
	// tables, written once at flush, and compactions move only the keys and a small
	// reference to them (Pebble's value separation, which CockroachDB turned on by default in
	// 2025). Compactions rewrote those values at every level before; make
	// bench-state measured the CPU per applied entry falling from 204-293 us to
	// 148-218 us over 100 k-1 M lifecycles, the growth with the state's size mostly
	// gone, and the 1 M restore from 35 s to 27 s. Blob files whose values are a
	// fifth garbage (deleted requests, pruned audit) are rewritten once 5 minutes old.
	// Reading a separated value costs one more block read; Apply's reads are few and
	// mostly recent, in the memtable or the block cache.
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           separateValuesFrom,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	// Levels above the last two hold a few percent of the data and are rewritten by
	// every compaction passing through: compressing them cost more CPU (a quarter of
	// all of it went to compactions in make bench-state) than the disk it saved.
	// L5 and L6 keep Pebble's Snappy. Blob files take the setting of the level they are
	// written for: at flush, L0's. Compressing every level (blob files too) cost more
	// CPU again with values separated (make bench-state at 200 k and 400 k: 201-243 us
	// per entry against 183-186 us) for half the disk.
	for i := range len(po.Levels) - 2 {
		po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	wlog := d.log.With("engine", "pebble")
	po.EventListener = &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			wlog.Warn("state database write stall: apply waits", "reason", info.Reason)
		},
		WriteStallEnd: func() { wlog.Info("state database write stall ended") },
	}
	if d.opts.CacheSize > 0 {
		c := pebble.NewCache(d.opts.CacheSize)
		defer c.Unref() // Pebble holds its own reference
		po.Cache = c
	}
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("statedb: open %s: %w", dir, err)
	}
	g := &generation{db: pdb, dir: dir, seq: seq, log: d.log}
	g.refs.Store(1)
	idx, _, err := readApplied(pdb)
	if err != nil {
		_ = pdb.Close()
		return nil, err
	}
	g.applied.Store(idx)
	return g, nil
}

// release drops one reference; the last one closes the Pebble database and,
// for a generation replaced by Restore, removes its files.
func (g *generation) release() error {
	if g.refs.Add(-1) != 0 {
		return nil
	}
	err := g.db.Close()
	if err != nil {
		err = fmt.Errorf("statedb: close %s: %w", g.dir, err)
	}
	if g.retired.Load() {
		if rerr := os.RemoveAll(g.dir); rerr != nil {
			g.log.Warn("could not remove the state replaced by a restore; it is removed at next open", "dir", g.dir, "err", rerr)
		}
	}
	return err
}

// acquire returns the current generation with a reference the caller must
// release.
func (d *DB) acquire() (*generation, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.cur == nil {
		return nil, ErrClosed
	}
	d.cur.refs.Add(1)
	return d.cur, nil
}

// Memory is what a Pebble database holds in the memory it manages itself (C malloc with
// cgo; the Go heap in custosd's pure-Go build), in bytes.
type Memory struct {
	BlockCache, MemTables int64
}

// Memory reports the current generation's block cache and memtables (zombie ones
// included: an iterator may still hold them).
func (d *DB) Memory() (Memory, error) {
	g, err := d.acquire()
	if err != nil {
		return Memory{}, err
	}
	defer func() { _ = g.release() }()
	m := g.db.Metrics()
	return Memory{BlockCache: m.BlockCache.Size, MemTables: int64(m.MemTable.Size + m.MemTable.ZombieSize)}, nil
}

// Dir returns the directory the DB owns.
func (d *DB) Dir() string { return d.dir }

// Sync makes every batch committed so far durable: it flushes Pebble's
// memtables to sorted files and syncs them (the database keeps no write-ahead
// log: see the package doc). Commits never wait for a disk; call Sync before
// anything outside the database relies on the applied index being durable —
// before raft drops the log behind a snapshot (state.FSM's Persist) and at
// shutdown (Close does).
func (d *DB) Sync() error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	defer g.release()
	if err := g.db.Flush(); err != nil {
		return fmt.Errorf("statedb: sync: %w", err)
	}
	return nil
}

// Close syncs (flushes) and closes the database. Views, Batches and Snapshots still
// open keep their generation's files open until they are closed; Close
// reports them, since the directory cannot be reopened until then. Close is
// idempotent.
func (d *DB) Close() error {
	d.mu.Lock()
	g := d.cur
	d.cur = nil
	d.mu.Unlock()
	if g == nil {
		return nil
	}
	err := g.db.Flush()
	if err != nil {
		err = fmt.Errorf("statedb: sync at close: %w", err)
	}
	open := g.refs.Load() - 1
	if rerr := g.release(); err == nil {
		err = rerr
	}
	if err == nil && open > 0 {
		err = fmt.Errorf("%w: %d views, batches or snapshots still open; the files close when the last one does", ErrClosed, open)
	}
	return err
}

// Get returns a copy of the committed value under key, or ErrNotFound.
func (d *DB) Get(key []byte) ([]byte, error) {
	g, err := d.acquire()
	if err != nil {
		return nil, err
	}
	defer g.release()
	return get(g.db, key)
}

// AppliedIndex returns the raft index and stamp recorded by the last
// committed batch (or restored snapshot); 0, 0 for a new database.
func (d *DB) AppliedIndex() (index uint64, stamp int64, err error) {
	g, err := d.acquire()
	if err != nil {
		return 0, 0, err
	}
	defer g.release()
	return readApplied(g.db)
}

// reader is what *pebble.DB, *pebble.Batch (indexed) and *pebble.Snapshot
// offer for reads.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func get(r reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("statedb: get: %w", err)
	}
	out := append([]byte{}, v...)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("statedb: get: %w", err)
	}
	return out, nil
}

func readApplied(r reader) (uint64, int64, error) {
	v, err := get(r, appliedKey)
	if errors.Is(err, ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("statedb: applied-index record is %d bytes, want 16", len(v))
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), nil //nolint:gosec // stored bit pattern
}

func encodeApplied(index uint64, stamp int64) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), index)
	return binary.BigEndian.AppendUint64(v, uint64(stamp)) //nolint:gosec // stored bit pattern
}

// checkWritable refuses keys in the reserved range.
func checkWritable(key []byte) error {
	if len(key) == 0 || key[0] == 0x00 {
		return ErrReservedKey
	}
	return nil
}

// pebbleLogger sends Pebble's log lines to slog. Fatalf panics: Pebble's own
// default exits the process, and a fatal storage error must stop apply.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("fatal storage error", "err", msg)
	panic("statedb: fatal storage error: " + msg)
}
