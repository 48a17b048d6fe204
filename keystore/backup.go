package keystore

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// # Backup stream
//
// Export writes, and Import reads, a plaintext stream of every share and every
// metadata record of a store. It is meant to go straight into an encrypting
// writer (custosd backup puts it into an age writer): the plaintext never
// touches a disk. The stream is versioned, self-describing and strict:
//
//	magic      "custos keystore backup\n" (23 bytes)
//	version    1 byte, BackupVersion
//	records    zero or more of:
//	             type     1 byte: 'S' share, 'M' metadata record
//	             name     2-byte big-endian length (1–MaxNameLen), then the key id
//	                      or metadata name (the package's name rules)
//	             value    4-byte big-endian length (≤ MaxValueSize), then the value
//	trailer    type 'E', 8-byte big-endian record count, then the SHA-256 of every
//	           byte before the digest (magic through count)
//
// and then the end of the stream: a byte after the digest is an error. Shares come
// first, then metadata records; within each type names are strictly increasing
// (byte order), which is the order the store keeps them in, so the stream of a
// store is canonical and a repeated record is refused without remembering names.
//
// What is not in the stream, and why:
//   - data keys, the node data key, the check record: Import seals everything under
//     fresh keys of its own under the master key it is given (the master key of the
//     store that was backed up is not needed to restore);
//   - ECDSA pre-parameter sets: a set taken for a keygen after the backup was made
//     would, once restored, be handed out a second time (the pool promises a set is
//     used once). Pre-parameters are regenerated (or, in dev mode, refilled from
//     fixtures) by the restored node;
//   - the pre-parameter counter, for the same reason: the new store starts its own.
//
// The digest is not a signature: whoever can write a backup stream can make one that
// imports. It turns a truncated or damaged stream into an error, whatever carried it.
// (age authenticates the ciphertext for its recipient but not who encrypted it: anyone
// with the recipient's public key can make a backup.) A forged identity or share is
// caught by the node: its peer id must match the configuration, and each share must
// yield the key's public key in the replicated state before it is used.

// BackupVersion is the version of the backup stream Export writes and Import reads.
const BackupVersion = 1

// Limits of Import.
const (
	// MaxBackupRecords bounds the number of records in a backup stream.
	MaxBackupRecords = 1 << 20
	// MaxBackupSize bounds the total size of a backup stream in bytes.
	MaxBackupSize = 8 << 30
)

// ImportedAtMeta is the metadata record Import adds to the store it creates: the time
// of the import, as decimal Unix milliseconds. A node restored from a backup uses it to
// know since when it may lack records written after the backup (see node's restore
// guard). A record of that name in the stream is replaced.
const ImportedAtMeta = "imported-at"

// ErrBadBackup means a backup stream is malformed, truncated, of an unknown version, or
// breaks a limit. Import creates nothing when it returns it.
var ErrBadBackup = errors.New("keystore: backup stream is malformed, truncated or of an unsupported version")

// ErrNotEmpty means Import was asked to restore into a directory that holds something.
var ErrNotEmpty = errors.New("keystore: target directory is not empty")

const (
	backupMagic = "custos keystore backup\n"

	recShare = byte('S')
	recMeta  = byte('M')
	recEnd   = byte('E')

	// importBatchBytes is how much sealed data Import buffers per Pebble batch.
	importBatchBytes = 4 << 20
)

// recRank orders the record types in a stream.
func recRank(t byte) int {
	switch t {
	case recShare:
		return 1
	case recMeta:
		return 2
	}
	return 0
}

// Export writes every share and metadata record of the store to w as a backup stream
// (see the package documentation above). It reads one consistent Pebble snapshot; the
// store's lock is held only while that snapshot is taken, so a slow writer delays no
// other call (a master key rotated meanwhile does not matter: the snapshot and the keys
// that open it are taken together). Each decrypted record is cleared once written to w
// (what w and its buffers do with it is w's: give an encrypting writer). Any record
// that fails to open stops the export with an error (ErrCorrupt): a backup is whole or
// it is not made.
//
// The store must not be closed while Export runs.
func (s *Store) Export(w io.Writer) (err error) {
	var snap *pebble.Snapshot
	var master, metaAEAD cipher.AEAD
	err = s.do("export", func(db *pebble.DB) error {
		snap = db.NewSnapshot()
		master, metaAEAD = s.master, s.metaAEAD
		return nil
	})
	if err != nil {
		return err
	}
	defer snap.Close()
	defer s.catch("export", &err)

	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	if _, err := bw.WriteString(backupMagic); err != nil {
		return fmt.Errorf("keystore: export: %w", err)
	}
	if err := bw.WriteByte(BackupVersion); err != nil {
		return fmt.Errorf("keystore: export: %w", err)
	}
	var count uint64

	// Shares: iterate the data keys and open the share next to each.
	it, err := prefixIter(snap, prefixDataKey)
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		dkKey := bytes.Clone(it.Key())
		keyID := string(dkKey[len(prefixDataKey):])
		wrapped, verr := it.ValueAndErr()
		if verr != nil {
			_ = it.Close()
			return storageErr("export", verr)
		}
		share, err := openShare(snap, master, keyID, dkKey, wrapped)
		if err != nil {
			_ = it.Close()
			return err
		}
		err = writeRecord(bw, recShare, keyID, share)
		clear(share)
		if err != nil {
			_ = it.Close()
			return err
		}
		count++
	}
	if err := it.Close(); err != nil {
		return storageErr("export", err)
	}
	// A share without a data key is a corrupt store, not something to leave out quietly.
	if n, err := countPrefix(snap, prefixShare); err != nil {
		return err
	} else if n != count {
		return fmt.Errorf("%w: %d shares but %d data keys", ErrCorrupt, n, count)
	}

	it, err = prefixIter(snap, prefixMeta)
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := bytes.Clone(it.Key())
		v, verr := it.ValueAndErr()
		if verr != nil {
			_ = it.Close()
			return storageErr("export", verr)
		}
		pt, err := openRecord(metaAEAD, k, v)
		if err != nil {
			_ = it.Close()
			return err
		}
		err = writeRecord(bw, recMeta, string(k[len(prefixMeta):]), pt)
		clear(pt)
		if err != nil {
			_ = it.Close()
			return err
		}
		count++
	}
	if err := it.Close(); err != nil {
		return storageErr("export", err)
	}

	var trailer [9]byte
	trailer[0] = recEnd
	binary.BigEndian.PutUint64(trailer[1:], count)
	if _, err := bw.Write(trailer[:]); err != nil {
		return fmt.Errorf("keystore: export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("keystore: export: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("keystore: export: %w", err)
	}
	s.log.Info("keystore exported", "records", count)
	return nil
}

// openShare opens the share of keyID given its wrapped data key, from r.
func openShare(r reader, master cipher.AEAD, keyID string, dkKey, wrapped []byte) ([]byte, error) {
	if err := validateName("key id", keyID); err != nil {
		return nil, fmt.Errorf("%w: stored key id: %v", ErrCorrupt, err)
	}
	dk, err := unwrapDataKey(master, dkKey, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	sKey := shareKey(keyID)
	sealed, err := getRaw(r, sKey)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: data key of %q has no share", ErrCorrupt, keyID)
	}
	if err != nil {
		return nil, err
	}
	dkAEAD, err := newAEAD(dk)
	if err != nil {
		return nil, err
	}
	return openRecord(dkAEAD, sKey, sealed)
}

// countPrefix counts the keys under prefix.
func countPrefix(r reader, prefix string) (uint64, error) {
	it, err := prefixIter(r, prefix)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Error(); err != nil {
		return 0, storageErr("scan "+prefix, err)
	}
	return n, nil
}

// writeRecord writes one record of the backup stream.
func writeRecord(w io.Writer, typ byte, name string, value []byte) error {
	if err := validateName("name", name); err != nil {
		return fmt.Errorf("%w: stored name: %v", ErrCorrupt, err)
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: record %q: %d bytes is too long", ErrCorrupt, name, len(value))
	}
	var hdr [1 + 2]byte
	hdr[0] = typ
	binary.BigEndian.PutUint16(hdr[1:], uint16(len(name)))
	var vlen [4]byte
	binary.BigEndian.PutUint32(vlen[:], uint32(len(value)))
	for _, b := range [][]byte{hdr[:], []byte(name), vlen[:], value} {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("keystore: export: %w", err)
		}
	}
	return nil
}

// backupReader reads a backup stream strictly, hashing what it reads and counting its
// size against MaxBackupSize.
type backupReader struct {
	r    *bufio.Reader
	h    hash.Hash
	n    int64
	last struct {
		rank int
		name string
	}
}

func (br *backupReader) full(p []byte) error {
	if br.n+int64(len(p)) > MaxBackupSize {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadBackup, int64(MaxBackupSize))
	}
	if _, err := io.ReadFull(br.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated at byte %d", ErrBadBackup, br.n)
		}
		return fmt.Errorf("keystore: read backup: %w", err)
	}
	br.n += int64(len(p))
	br.h.Write(p)
	return nil
}

// record is one record read from a backup stream; value is nil for the trailer.
type record struct {
	typ   byte
	name  string
	value []byte
	count uint64 // trailer only
}

// next reads the next record or the trailer.
func (br *backupReader) next() (record, error) {
	var t [1]byte
	if err := br.full(t[:]); err != nil {
		return record{}, err
	}
	switch t[0] {
	case recEnd:
		var c [8]byte
		if err := br.full(c[:]); err != nil {
			return record{}, err
		}
		return record{typ: recEnd, count: binary.BigEndian.Uint64(c[:])}, nil
	case recShare, recMeta:
	default:
		return record{}, fmt.Errorf("%w: unknown record type %#x at byte %d", ErrBadBackup, t[0], br.n-1)
	}
	var nl [2]byte
	if err := br.full(nl[:]); err != nil {
		return record{}, err
	}
	n := int(binary.BigEndian.Uint16(nl[:]))
	if n == 0 || n > MaxNameLen {
		return record{}, fmt.Errorf("%w: name of %d bytes at byte %d", ErrBadBackup, n, br.n-2)
	}
	name := make([]byte, n)
	if err := br.full(name); err != nil {
		return record{}, err
	}
	if err := validateName("name", string(name)); err != nil {
		return record{}, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	rank := recRank(t[0])
	if rank < br.last.rank || rank == br.last.rank && string(name) <= br.last.name {
		return record{}, fmt.Errorf("%w: record %q is out of order or repeated", ErrBadBackup, name)
	}
	br.last.rank, br.last.name = rank, string(name)
	var vl [4]byte
	if err := br.full(vl[:]); err != nil {
		return record{}, err
	}
	vn := binary.BigEndian.Uint32(vl[:])
	if vn > MaxValueSize {
		return record{}, fmt.Errorf("%w: record %q: value of %d bytes, limit %d", ErrBadBackup, name, vn, MaxValueSize)
	}
	if vn == 0 && t[0] == recShare {
		return record{}, fmt.Errorf("%w: share %q is empty", ErrBadBackup, name)
	}
	value := make([]byte, vn)
	if err := br.full(value); err != nil {
		clear(value)
		return record{}, err
	}
	return record{typ: t[0], name: string(name), value: value}, nil
}

// Import creates a new store in dir, under masterKey, holding every record of the
// backup stream r (written by Export), each sealed afresh: new node data key, new data
// keys, new nonces. dir must not exist or be an empty directory (ErrNotEmpty otherwise).
//
// Nothing is created unless the whole stream is read and checked: the records go into a
// store in a sibling directory "<dir>.partial-import", and only after the trailer's
// count and digest match, the end of the stream is reached and the store is closed, is
// that directory renamed to dir. A truncated, reordered or tampered stream, one of
// another version, or one past a limit (MaxBackupRecords, MaxBackupSize, MaxValueSize,
// the name rules) is an error wrapping ErrBadBackup and leaves nothing behind. A
// "<dir>.partial-import" left by an import that was interrupted (the process died) is
// removed first. The new store also gets ImportedAtMeta.
func Import(dir string, masterKey []byte, r io.Reader, opts Options) (err error) {
	if len(masterKey) != MasterKeySize {
		return fmt.Errorf("%w: master key must be %d bytes, got %d", ErrInvalidMasterKey, MasterKeySize, len(masterKey))
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if st, err := fs.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%w: %s exists and is not a directory", ErrNotEmpty, dir)
		}
		ents, err := fs.List(dir)
		if err != nil {
			return fmt.Errorf("keystore: import: %w", err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("%w: %s holds %d entries; restore only into a new or empty directory", ErrNotEmpty, dir, len(ents))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("keystore: import: %w", err)
	}
	tmp := dir + ".partial-import"
	if _, err := fs.Stat(tmp); err == nil {
		logger.Warn("removing the directory of an interrupted import", "dir", tmp)
		if err := fs.RemoveAll(tmp); err != nil {
			return fmt.Errorf("keystore: import: remove %s: %w", tmp, err)
		}
	}
	defer func() {
		if err != nil {
			_ = fs.RemoveAll(tmp)
		}
	}()
	s, err := Open(tmp, masterKey, Options{FS: fs, Logger: logger})
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()
	if err := s.importStream(r); err != nil {
		return err
	}
	closed = true
	if err := s.Close(); err != nil {
		return err
	}
	// An empty directory in the way (say, a mount point's subdirectory made by the
	// operator) is replaced; rename(2) does that for an empty directory, but vfs
	// implementations differ, so remove it first.
	if _, err := fs.Stat(dir); err == nil {
		if err := fs.Remove(dir); err != nil {
			return fmt.Errorf("keystore: import: replace empty %s: %w", dir, err)
		}
	}
	if err := fs.Rename(tmp, dir); err != nil {
		return fmt.Errorf("keystore: import: rename %s to %s: %w", tmp, dir, err)
	}
	if d, err := fs.OpenDir(fs.PathDir(dir)); err == nil {
		serr := d.Sync()
		_ = d.Close()
		if serr != nil {
			return fmt.Errorf("keystore: import: sync directory of %s: %w", dir, serr)
		}
	}
	logger.Info("keystore imported", "dir", dir)
	return nil
}

// importStream reads a backup stream into the (new, empty) store s.
func (s *Store) importStream(r io.Reader) error {
	br := &backupReader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
	head := make([]byte, len(backupMagic)+1)
	if err := br.full(head); err != nil {
		return err
	}
	if string(head[:len(backupMagic)]) != backupMagic {
		return fmt.Errorf("%w: not a custos keystore backup", ErrBadBackup)
	}
	if v := head[len(backupMagic)]; v != BackupVersion {
		return fmt.Errorf("%w: version %d; this binary reads version %d", ErrBadBackup, v, BackupVersion)
	}
	return s.do("import", func(db *pebble.DB) error {
		b := db.NewBatch()
		defer func() { b.Close() }()
		flush := func(sync bool) error {
			opt := pebble.NoSync
			if sync {
				opt = pebble.Sync
			}
			if err := b.Commit(opt); err != nil {
				return storageErr("import", err)
			}
			b.Close()
			b = db.NewBatch()
			return nil
		}
		var count uint64
		for {
			rec, err := br.next()
			if err != nil {
				return err
			}
			if rec.typ == recEnd {
				if rec.count != count {
					return fmt.Errorf("%w: trailer counts %d records, the stream holds %d", ErrBadBackup, rec.count, count)
				}
				break
			}
			count++
			if count > MaxBackupRecords {
				clear(rec.value)
				return fmt.Errorf("%w: more than %d records", ErrBadBackup, MaxBackupRecords)
			}
			if rec.typ == recMeta && rec.name == ImportedAtMeta {
				clear(rec.value)
				continue
			}
			err = s.stage(b, rec)
			clear(rec.value)
			if err != nil {
				return err
			}
			if b.Len() > importBatchBytes {
				if err := flush(false); err != nil {
					return err
				}
			}
		}
		sum := br.h.Sum(nil)
		digest := make([]byte, sha256.Size)
		if _, err := io.ReadFull(br.r, digest); err != nil {
			return fmt.Errorf("%w: truncated in its digest", ErrBadBackup)
		}
		if !bytes.Equal(sum, digest) {
			return fmt.Errorf("%w: digest mismatch (the stream was damaged or altered)", ErrBadBackup)
		}
		if _, err := br.r.ReadByte(); err == nil {
			return fmt.Errorf("%w: data after the digest", ErrBadBackup)
		} else if !errors.Is(err, io.EOF) {
			return fmt.Errorf("keystore: read backup: %w", err)
		}
		at, err := sealRecord(s.metaAEAD, metaKey(ImportedAtMeta), []byte(strconv.FormatInt(time.Now().UnixMilli(), 10)))
		if err != nil {
			return err
		}
		if err := b.Set(metaKey(ImportedAtMeta), at, nil); err != nil {
			return storageErr("import", err)
		}
		return flush(true)
	})
}

// stage seals one record into b: a share under a fresh data key, a metadata record
// under the meta key.
func (s *Store) stage(b *pebble.Batch, rec record) error {
	switch rec.typ {
	case recShare:
		dk := make([]byte, dataKeySize)
		if _, err := rand.Read(dk); err != nil {
			return fmt.Errorf("keystore: random data key: %w", err)
		}
		defer clear(dk)
		dkAEAD, err := newAEAD(dk)
		if err != nil {
			return err
		}
		dkKey, sKey := dataKeyKey(rec.name), shareKey(rec.name)
		wrapped, err := sealRecord(s.master, dkKey, dk)
		if err != nil {
			return err
		}
		sealed, err := sealRecord(dkAEAD, sKey, rec.value)
		if err != nil {
			return err
		}
		if err := b.Set(dkKey, wrapped, nil); err != nil {
			return storageErr("import", err)
		}
		if err := b.Set(sKey, sealed, nil); err != nil {
			return storageErr("import", err)
		}
	case recMeta:
		k := metaKey(rec.name)
		sealed, err := sealRecord(s.metaAEAD, k, rec.value)
		if err != nil {
			return err
		}
		if err := b.Set(k, sealed, nil); err != nil {
			return storageErr("import", err)
		}
	}
	return nil
}
