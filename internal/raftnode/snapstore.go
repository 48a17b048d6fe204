package raftnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/durable"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/statedb"
)

// Why a snapshot store of our own: raft's file store keeps a snapshot as the stream the
// FSM writes into it, so every snapshot read, compressed, hashed and wrote the whole
// state — at 1 M sign lifecycles a gigabyte and 45 s of a core, every few minutes, for
// a stream that is read only when a follower falls behind the log. This store keeps the
// snapshots this node takes as checkpoints of the state database instead (a memtable
// flush and hard links, beside Apply: make bench-state measured 26 ms to 8 s at 100 k to
// 1 M lifecycles, the longer ones a flush waiting behind compactions), and makes the stream from one only when it is opened — to send it to
// a follower, or to restore it here. Snapshots sent by a leader, and those earlier
// binaries wrote, stay streams in raft's file store, which this one wraps.
//
// On disk, under the raft directory:
//
//	snapshots/<id>/           raft's file store (streams)
//	checkpoints/<id>/meta.json the snapshot's raft metadata and the index its state holds
//	checkpoints/<id>/state/    the checkpoint (a read-only Pebble database)
//	checkpoints/<id>/stream    its stream, once opened (kept while the checkpoint is)
//
// A checkpoint being written is checkpoints/<id>.tmp, renamed once complete; a stream
// being made is stream.tmp. Leftovers of either are removed at start.
const (
	checkpointsDir = "checkpoints"
	checkpointMeta = "meta.json"
	checkpointDB   = "state"
	checkpointFile = "stream"
	tmpSuffix      = ".tmp"
	// refusedDir, under the raft directory, holds the last snapshot a leader sent that
	// the FSM refused (setAside), for the operator to look at; each refusal replaces it.
	refusedDir = "refused-snapshot"
)

// CheckpointStreamer makes the stream of a checkpoint the FSM wrote (state.FSM).
type CheckpointStreamer interface {
	StreamCheckpoint(dir string, w io.Writer) (int64, uint64, error)
}

// snapshotStore is raft's snapshot store: checkpoints for the snapshots this node takes,
// raft's file store for the streams it receives (see above). It keeps the newest
// retain snapshots of both kinds together.
type snapshotStore struct {
	files  *raft.FileSnapshotStore
	base   string // the raft directory
	cps    string // base/checkpoints
	retain int
	stream CheckpointStreamer
	log    *slog.Logger

	// produce serialises making streams (each reads a whole checkpoint).
	produce sync.Mutex

	mu   sync.Mutex      // guards busy and received
	busy map[string]bool // checkpoints whose stream is being made: not reaped meanwhile
	// received is the stream a leader sent that raft has the FSM restore next (its
	// installSnapshot closes the sink, then restores it), until restored or set aside.
	received string
}

// NewSnapshotStore opens the snapshot store a node keeps in its raft directory dir
// (test/benchstate measures it), keeping the newest retain snapshots.
func NewSnapshotStore(dir string, retain int, stream CheckpointStreamer, log *slog.Logger) (raft.SnapshotStore, error) {
	return newSnapshotStore(dir, retain, stream, hclog.NewNullLogger(), log)
}

// newSnapshotStore opens the store in the raft directory base, removing leftovers of an
// interrupted checkpoint or stream.
func newSnapshotStore(base string, retain int, stream CheckpointStreamer, hl hclog.Logger, log *slog.Logger) (*snapshotStore, error) {
	files, err := raft.NewFileSnapshotStoreWithLogger(base, retain, hl)
	if err != nil {
		return nil, err
	}
	s := &snapshotStore{files: files, base: base, cps: filepath.Join(base, checkpointsDir), retain: retain, stream: stream, log: log, busy: map[string]bool{}}
	if err := os.MkdirAll(s.cps, 0o700); err != nil {
		return nil, fmt.Errorf("raft checkpoints: %w", err)
	}
	ents, err := os.ReadDir(s.cps)
	if err != nil {
		return nil, fmt.Errorf("raft checkpoints: %w", err)
	}
	for _, e := range ents {
		leftover := filepath.Join(s.cps, e.Name())
		if !strings.HasSuffix(e.Name(), tmpSuffix) {
			if !e.IsDir() {
				continue // not ours
			}
			leftover = filepath.Join(s.cps, e.Name(), checkpointFile+tmpSuffix)
		}
		if err := os.RemoveAll(leftover); err != nil {
			return nil, fmt.Errorf("raft checkpoints: remove leftover %s: %w", leftover, err)
		}
	}
	return s, nil
}

// cpMeta is a checkpoint's meta.json.
type cpMeta struct {
	raft.SnapshotMeta
	// Content is the applied index the checkpoint's state holds: at or after Index
	// (the FSM goes on applying while the checkpoint is taken).
	Content uint64 `json:"content_index"`
}

// Create starts a snapshot. The sink becomes a checkpoint if the FSM asks for one
// (state.CheckpointSink), a stream in the file store if it is written to.
func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	file, err := s.files.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &snapshotSink{s: s, file: file, meta: cpMeta{SnapshotMeta: raft.SnapshotMeta{
		Version: version, ID: file.ID(), Index: index, Term: term,
		Configuration: configuration, ConfigurationIndex: configurationIndex,
	}}}, nil
}

// stored is one snapshot of either kind.
type stored struct {
	meta       *raft.SnapshotMeta
	checkpoint bool
}

// all lists the snapshots of both kinds, newest first (index, term, id).
func (s *snapshotStore) all() ([]stored, error) {
	streams, err := s.files.List()
	if err != nil {
		return nil, err
	}
	var out []stored
	for _, m := range streams {
		out = append(out, stored{meta: m})
	}
	ents, err := os.ReadDir(s.cps)
	if err != nil {
		return nil, fmt.Errorf("raft checkpoints: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !validID(e.Name()) {
			continue // being written (.tmp), or not ours
		}
		m, err := readCPMeta(filepath.Join(s.cps, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // reaped meanwhile
		}
		if err == nil && m.ID != e.Name() {
			err = fmt.Errorf("its metadata names snapshot %q", m.ID)
		}
		if err != nil {
			s.log.Warn("raft checkpoints: skipping one whose metadata cannot be read", "id", e.Name(), "err", err)
			continue
		}
		meta := m.SnapshotMeta
		out = append(out, stored{meta: &meta, checkpoint: true})
	}
	// Newest is the highest index (then term, then id). raft's file store puts the term
	// first, which agrees on an honest log (terms never decrease along it), but a leader
	// chooses the term it sends with a snapshot: one sent at a small index with a huge
	// term would stay newest for good — what raft takes at every start, sends on as
	// leader and keeps while it reaps this node's own newer checkpoints.
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].meta, out[j].meta
		if a.Index != b.Index {
			return a.Index > b.Index
		}
		if a.Term != b.Term {
			return a.Term > b.Term
		}
		return a.ID > b.ID
	})
	return out, nil
}

// List implements raft.SnapshotStore: the newest retain snapshots, newest first. A
// checkpoint's Size is the bytes of its files (what its stream will be is known only
// once it is made: Open's).
func (s *snapshotStore) List() ([]*raft.SnapshotMeta, error) {
	all, err := s.all()
	if err != nil {
		return nil, err
	}
	var out []*raft.SnapshotMeta
	for _, st := range all[:min(len(all), s.retain)] {
		out = append(out, st.meta)
	}
	return out, nil
}

// Open implements raft.SnapshotStore. A checkpoint's stream is made the first time it
// is opened (paced like a stream the FSM writes; 28 s for 937 MiB at 1 M lifecycles in
// make bench-state) and kept beside it for the next follower.
func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if !validID(id) {
		return nil, nil, fmt.Errorf("raft snapshots: bad id %q", id)
	}
	dir := filepath.Join(s.cps, id)
	m, err := readCPMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return s.files.Open(id)
	}
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, checkpointFile)
	if err := s.makeStream(id, dir, m); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("raft checkpoint %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("raft checkpoint %s: %w", id, err)
	}
	meta := m.SnapshotMeta
	meta.Size = fi.Size()
	return &meta, f, nil
}

// makeStream writes the stream of checkpoint id unless it is there already.
func (s *snapshotStore) makeStream(id, dir string, m *cpMeta) error {
	path := filepath.Join(dir, checkpointFile)
	if _, err := os.Stat(path); err == nil {
		return nil // made already: no need to wait behind another one being made
	}
	s.produce.Lock()
	defer s.produce.Unlock()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	s.mu.Lock()
	if _, err := os.Stat(dir); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("raft checkpoint %s: reaped before its stream was made: %w", id, err)
	}
	s.busy[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.busy, id)
		s.mu.Unlock()
	}()
	start := time.Now()
	s.log.Info("making the stream of a raft snapshot kept as a checkpoint", "id", id, "index", m.Index, "state_index", m.Content)
	tmp := path + tmpSuffix
	n, idx, err := s.writeStream(dir, tmp)
	if err == nil && idx != m.Content {
		err = fmt.Errorf("the checkpoint's state is at index %d, its metadata says %d", idx, m.Content)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = durable.SyncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("raft checkpoint %s: make its stream: %w", id, err)
	}
	s.log.Info("raft snapshot stream made", "id", id, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeStream writes the checkpoint's stream to path, synced.
func (s *snapshotStore) writeStream(dir, path string) (int64, uint64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, 0, err
	}
	n, idx, err := s.stream.StreamCheckpoint(filepath.Join(dir, checkpointDB), f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, idx, err
}

// ContentIndex is the applied index the state of snapshot id holds, which may be past
// the index raft took it at (a checkpoint's state: persistCheckpoint in
// internal/state). For a stream, read from its first record.
func (s *snapshotStore) ContentIndex(id string) (uint64, error) {
	if !validID(id) {
		return 0, fmt.Errorf("raft snapshots: bad id %q", id)
	}
	if m, err := readCPMeta(filepath.Join(s.cps, id)); err == nil {
		return m.Content, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	_, rc, err := s.files.Open(id)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return statedb.StreamAppliedIndex(rc)
}

// reap removes the snapshots past the newest retain (a checkpoint whose stream is being
// made waits for the next reap).
func (s *snapshotStore) reap() {
	all, err := s.all()
	if err != nil {
		s.log.Warn("raft snapshots: cannot list them to remove old ones", "err", err)
		return
	}
	for _, st := range all[min(len(all), s.retain):] {
		path := filepath.Join(s.base, "snapshots", st.meta.ID)
		if st.checkpoint {
			path = filepath.Join(s.cps, st.meta.ID)
		}
		s.mu.Lock()
		if !s.busy[st.meta.ID] {
			if err := os.RemoveAll(path); err != nil {
				s.log.Warn("raft snapshots: cannot remove an old one", "path", path, "err", err)
			}
		}
		s.mu.Unlock()
	}
}

// restoreRefused is told that the FSM refused the snapshot raft restored: the stream a
// leader sent last is set aside. raft leaves it in the store when the restore fails, as
// the newest snapshot (a leader chooses its term and index): this node would send it on
// as a leader, and restore it again at every start (restoreIfBehind), where a snapshot
// that cannot be restored stops the node. A compromised leader could so have bricked
// every follower it sent one to, and kept them down after it was removed.
func (s *snapshotStore) restoreRefused(cause error) {
	s.mu.Lock()
	id := s.received
	s.received = ""
	s.mu.Unlock()
	if id == "" {
		return
	}
	if _, err := s.setAside(id); err != nil {
		s.log.Warn("raft snapshots: cannot set aside a snapshot the state refused", "id", id, "err", err)
		return
	}
	s.log.Warn("a snapshot the leader sent was refused and set aside; the leader sends another one", "id", id, "kept_at", filepath.Join(s.base, refusedDir), "err", cause)
}

// restored is told that the FSM restored the snapshot raft restored.
func (s *snapshotStore) restored() {
	s.mu.Lock()
	s.received = ""
	s.mu.Unlock()
}

// setAside moves the stream id out of the store, to refusedDir (replacing what was
// there: a leader that keeps sending refused snapshots does not fill the disk). It
// reports false, and moves nothing, for a checkpoint: this node's own state, which is
// not a leader's to spoil.
func (s *snapshotStore) setAside(id string) (bool, error) {
	if !validID(id) {
		return false, fmt.Errorf("raft snapshots: bad id %q", id)
	}
	if _, err := os.Stat(filepath.Join(s.cps, id)); err == nil {
		return false, nil
	}
	snaps := filepath.Join(s.base, "snapshots")
	dst := filepath.Join(s.base, refusedDir)
	if err := os.RemoveAll(dst); err != nil {
		return false, fmt.Errorf("raft snapshots: %w", err)
	}
	if err := os.Rename(filepath.Join(snaps, id), dst); err != nil {
		return false, fmt.Errorf("raft snapshots: set aside %s: %w", id, err)
	}
	if err := durable.SyncDir(snaps); err != nil {
		return false, fmt.Errorf("raft snapshots: %w", err)
	}
	if err := durable.SyncDir(s.base); err != nil {
		return false, fmt.Errorf("raft snapshots: %w", err)
	}
	return true, nil
}

// validID reports whether id has the form of the ids raft's file store gives snapshots
// ("term-index-milliseconds"), the only ones this store makes or opens: no path
// separators, dots or anything else a path could be made of.
func validID(id string) bool {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 20 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func readCPMeta(dir string) (*cpMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, checkpointMeta))
	if err != nil {
		return nil, err
	}
	var m cpMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("raft checkpoint %s: %s: %w", filepath.Base(dir), checkpointMeta, err)
	}
	return &m, nil
}

// snapshotSink is a snapshot being written: a stream into the file store's sink until
// Checkpoint is called, a checkpoint in its own directory after.
type snapshotSink struct {
	s     *snapshotStore
	file  raft.SnapshotSink
	meta  cpMeta
	tmp   string // the checkpoint's directory while it is written
	wrote bool
	done  bool // closed or cancelled (raft closes a sink the FSM closed already)
}

var _ state.CheckpointSink = (*snapshotSink)(nil)

func (k *snapshotSink) ID() string { return k.meta.ID }

func (k *snapshotSink) Write(p []byte) (int, error) {
	if k.tmp != "" {
		return 0, errors.New("raft snapshot: written to after it became a checkpoint")
	}
	k.wrote = true
	return k.file.Write(p)
}

// Checkpoint implements state.CheckpointSink.
func (k *snapshotSink) Checkpoint(take func(dir string) (uint64, error)) error {
	if k.wrote || k.tmp != "" {
		return errors.New("raft snapshot: a checkpoint asked for after the snapshot was written to")
	}
	if err := k.file.Cancel(); err != nil {
		return fmt.Errorf("raft snapshot: %w", err)
	}
	k.tmp = filepath.Join(k.s.cps, k.meta.ID+tmpSuffix)
	if err := os.Mkdir(k.tmp, 0o700); err != nil {
		return fmt.Errorf("raft checkpoint: %w", err)
	}
	idx, err := take(filepath.Join(k.tmp, checkpointDB))
	if err != nil {
		return err
	}
	k.meta.Content = idx
	return nil
}

// Close completes the snapshot and removes those past the newest retain.
func (k *snapshotSink) Close() error {
	if k.done {
		return nil
	}
	k.done = true
	defer k.s.reap()
	if k.tmp == "" {
		// A stream: this node's own snapshots are checkpoints (state.FSM asks for
		// one), so a stream is one a leader sent, which raft restores next.
		if err := k.file.Close(); err != nil {
			return err
		}
		k.s.mu.Lock()
		k.s.received = k.meta.ID
		k.s.mu.Unlock()
		return nil
	}
	size, err := dirBytes(filepath.Join(k.tmp, checkpointDB))
	if err != nil {
		return k.fail(err)
	}
	k.meta.Size = size
	b, err := json.Marshal(k.meta)
	if err != nil {
		return k.fail(err)
	}
	if err := durable.WriteFile(filepath.Join(k.tmp, checkpointMeta), b, 0o600); err != nil {
		return k.fail(err)
	}
	if err := durable.SyncDir(k.tmp); err != nil {
		return k.fail(err)
	}
	final := filepath.Join(k.s.cps, k.meta.ID)
	if err := os.Rename(k.tmp, final); err != nil {
		return k.fail(err)
	}
	if err := durable.SyncDir(k.s.cps); err != nil {
		return fmt.Errorf("raft checkpoint: %w", err)
	}
	return nil
}

func (k *snapshotSink) fail(err error) error {
	_ = os.RemoveAll(k.tmp)
	return fmt.Errorf("raft checkpoint: %w", err)
}

// Cancel abandons the snapshot.
func (k *snapshotSink) Cancel() error {
	if k.done {
		return nil
	}
	k.done = true
	if k.tmp == "" {
		return k.file.Cancel()
	}
	return os.RemoveAll(k.tmp)
}

// dirBytes is the size of the files in dir (not recursive: a Pebble directory is flat).
func dirBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}
