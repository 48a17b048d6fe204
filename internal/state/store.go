package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custos/custos/internal/statedb"
)

// The replicated state lives in the FSM's own Pebble database (internal/statedb), laid out
// as tables of JSON records keyed with statedb's order-preserving encoding. Object tables
// hold one record per object; index tables hold empty values under keys that sort as the
// index should (an expiry time, then the object's id), so that pruning and listing are
// range scans, never a walk over everything.
const (
	tMeta       = "meta"        // the one cluster record (meta)
	tUser       = "user"        // user id → User
	tKey        = "key"         // key id → Key
	tKeyOwner   = "key.owner"   // (owner, key id) → ""
	tRequest    = "req"         // request id → Request
	tOpen       = "req.open"    // request id → "" for every request not final
	tDone       = "req.done"    // (settled at, request id) → "" for every final request
	tNonce      = "nonce"       // replay key → expiry (ms)
	tNonceExp   = "nonce.exp"   // (expiry, replay key) → ""
	tProposal   = "prop"        // proposal id → ProposalResult
	tPropExp    = "prop.exp"    // (expiry, proposal id) → ""
	tSession    = "session"     // session nonce (hex) → stamp used
	tSessionExp = "session.exp" // (stamp, session nonce) → ""
	tIdem       = "idem"        // idempotency scope → idemRecord
	tAudit      = "audit"       // seq → AuditEntry
	tAccess     = "ak"          // access key id → AccessKey
	tAccessPub  = "ak.pub"      // scheme ":" hex(public key) → access key id (the newest)
	tAccessBy   = "ak.grantor"  // (grantor, access key id) → ""
	tAccessDead = "ak.dead"     // (dead since, access key id) → "" for revoked or expiring keys
	tAccessLog  = "ak.log"      // (access key id, seq) → AccessLogEntry
	tAccessNext = "ak.lognext"  // access key id → last log seq (uint64)
)

func key(table string) []byte { return statedb.AppendTable(nil, table) }

func keyStr(table, s string) []byte { return statedb.AppendString(key(table), s) }

func keyU64(table string, v uint64) []byte { return statedb.AppendUint64(key(table), v) }

// keyAt is an index key: a time (ms), then an id.
func keyAt(table string, at int64, id string) []byte {
	return statedb.AppendString(statedb.AppendInt64(key(table), at), id)
}

// keyAtBound is the smallest index key at time at: a scan up to it covers every entry
// strictly before at.
func keyAtBound(table string, at int64) []byte { return statedb.AppendInt64(key(table), at) }

// readKV is what the state reads from: a batch being applied (its own writes over the
// committed state) or a consistent view of the committed state.
type readKV interface {
	Get(key []byte) ([]byte, error)
	Scan(lower, upper []byte, fn func(key, value []byte) error) error
}

// dbFault is a failure of the state database inside Apply (a disk error, a record this
// binary cannot decode). Apply cannot continue deterministically past one: it recovers
// the fault and halts the node.
type dbFault struct{ err error }

func fault(format string, args ...any) { panic(dbFault{fmt.Errorf(format, args...)}) }

// load reads and decodes one record; ok is false when there is none.
func load[T any](r readKV, k []byte) (*T, bool) {
	raw, err := r.Get(k)
	if errors.Is(err, statedb.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		fault("state: read %q: %w", k, err)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		fault("state: decode %q: %w", k, err)
	}
	return &v, true
}

// exists reports whether a record is stored under k.
func exists(r readKV, k []byte) bool {
	_, err := r.Get(k)
	if errors.Is(err, statedb.ErrNotFound) {
		return false
	}
	if err != nil {
		fault("state: read %q: %w", k, err)
	}
	return true
}

// scanKV calls fn with each record in [lower, upper) until fn returns false.
func scanKV(r readKV, lower, upper []byte, fn func(k, v []byte) bool) {
	err := r.Scan(lower, upper, func(k, v []byte) error {
		if !fn(k, v) {
			return statedb.ErrStop
		}
		return nil
	})
	if err != nil {
		fault("state: scan: %w", err)
	}
}

// scanKeys calls fn with each key in [lower, upper) until fn returns false.
func scanKeys(r readKV, lower, upper []byte, fn func(k []byte) bool) {
	err := r.Scan(lower, upper, func(k, _ []byte) error {
		if !fn(k) {
			return statedb.ErrStop
		}
		return nil
	})
	if err != nil {
		fault("state: scan: %w", err)
	}
}

// tx is the applier's view of the database during one raft batch: objects it read are
// cached, decoded, and written back at flush if their encoding changed, so an apply
// method changes a record by changing the value it loaded (as it did when the state was
// a set of maps). Index records go straight to the batch. Not safe for concurrent use.
type tx struct {
	b    batchKV
	objs map[string]*object
	// objects is how many object records this tx added, less those it deleted.
	objects int64
	// keysChanged says flush wrote or deleted a key record (FSM.KeysVersion).
	keysChanged bool
}

// batchKV is what a tx writes into: a statedb.Batch (or, to convert an old snapshot, a
// set of records in memory).
type batchKV interface {
	readKV
	Set(key, value []byte) error
	Delete(key []byte) error
	DeleteRange(start, end []byte) error
}

// object is a cached record: v is nil when there is none (or it was deleted).
type object struct {
	v    any
	orig []byte // the encoding read from the database (nil: none)
}

func newTx(b batchKV) *tx { return &tx{b: b, objs: map[string]*object{}} }

// Get reads a record as this batch sees it: an object the batch loaded, added, changed
// or deleted is read from the cache (encoded), not from the database, which holds it
// only after flush — what an entry decides must not depend on which entries share its
// raft batch (every node batches the log its own way).
func (t *tx) Get(k []byte) ([]byte, error) {
	if o, ok := t.objs[string(k)]; ok {
		if o.v == nil {
			return nil, statedb.ErrNotFound
		}
		return encodeObject(k, o.v), nil
	}
	return t.b.Get(k)
}

// Scan is the batch's Scan with its cached objects in place of what the database holds
// (see Get), in key order. A database error faults (as scanKV does).
func (t *tx) Scan(lower, upper []byte, fn func(key, value []byte) error) error {
	var ferr error
	t.scanMerged(lower, upper, func(k []byte, o *object, raw []byte) bool {
		if o != nil {
			raw = encodeObject(k, o.v)
		}
		ferr = fn(k, raw)
		return ferr == nil
	})
	if errors.Is(ferr, statedb.ErrStop) {
		return nil
	}
	return ferr
}

// scanMerged walks [lower, upper) as this batch sees it, in key order: a record the
// batch has cached as an object comes as that object (o; raw nil), one it deleted not at
// all, any other as the database holds it (raw; o nil) — the database holds the batch's
// objects only after flush, so a plain scan would see the batch's start, and what an
// entry decides must not depend on where raft's batches begin. fn returns false to stop.
func (t *tx) scanMerged(lower, upper []byte, fn func(k []byte, o *object, raw []byte) bool) {
	var cached []string // every cached key in range, deleted ones too (to skip them)
	for k := range t.objs {
		if k >= string(lower) && k < string(upper) {
			cached = append(cached, k)
		}
	}
	slices.Sort(cached)
	next := 0
	// emitBefore hands fn the batch's objects ordered before key k (all when k is nil);
	// it reports false when fn stopped.
	emitBefore := func(k []byte) bool {
		for ; next < len(cached) && (k == nil || cached[next] < string(k)); next++ {
			if o := t.objs[cached[next]]; o.v != nil && !fn([]byte(cached[next]), o, nil) {
				return false
			}
		}
		return true
	}
	stopped := false
	scanKV(t.b, lower, upper, func(k, raw []byte) bool {
		if !emitBefore(k) {
			stopped = true
			return false
		}
		if next < len(cached) && cached[next] == string(k) {
			next++
			if o := t.objs[string(k)]; o.v == nil || fn(k, o, nil) {
				return true // deleted in this batch, or handed over
			}
			stopped = true
			return false
		}
		if !fn(k, nil, raw) {
			stopped = true
			return false
		}
		return true
	})
	if !stopped {
		emitBefore(nil)
	}
}

// encodeObject is a cached object's encoding, as flush writes it.
func encodeObject(k []byte, v any) []byte {
	enc, err := json.Marshal(v)
	if err != nil {
		fault("state: encode %q: %w", k, err)
	}
	return enc
}

// get returns the object under k, cached for the rest of the batch, or nil.
func get[T any](t *tx, k []byte) *T {
	if o, ok := t.objs[string(k)]; ok {
		if o.v == nil {
			return nil
		}
		return o.v.(*T)
	}
	raw, err := t.b.Get(k)
	if errors.Is(err, statedb.ErrNotFound) {
		t.objs[string(k)] = &object{}
		return nil
	}
	if err != nil {
		fault("state: read %q: %w", k, err)
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		fault("state: decode %q: %w", k, err)
	}
	t.objs[string(k)] = &object{v: v, orig: raw}
	return v
}

// eachObject calls fn with every object of type T whose key is in [lower, upper), as
// this batch sees it (scanMerged: changed, added and deleted objects of the batch
// included), in key order, until fn returns false. Objects it only reads are not cached.
func eachObject[T any](t *tx, lower, upper []byte, fn func(*T) bool) {
	t.scanMerged(lower, upper, func(k []byte, o *object, raw []byte) bool {
		if o != nil {
			return fn(o.v.(*T))
		}
		v := new(T)
		if err := json.Unmarshal(raw, v); err != nil {
			fault("state: decode %q: %w", k, err)
		}
		return fn(v)
	})
}

// put stores v under k (a new object, or a replacement).
func (t *tx) put(k []byte, v any) {
	if o, ok := t.objs[string(k)]; ok {
		if o.v == nil {
			t.objects++
		}
		o.v = v
		return
	}
	orig, err := t.b.Get(k)
	if err != nil && !errors.Is(err, statedb.ErrNotFound) {
		fault("state: read %q: %w", k, err)
	}
	if orig == nil {
		t.objects++
	}
	t.objs[string(k)] = &object{v: v, orig: orig}
}

// del removes the object under k.
func (t *tx) del(k []byte) {
	if o, ok := t.objs[string(k)]; ok {
		if o.v != nil {
			t.objects--
		}
		o.v = nil
		return
	}
	orig, err := t.b.Get(k)
	if err != nil && !errors.Is(err, statedb.ErrNotFound) {
		fault("state: read %q: %w", k, err)
	}
	if orig != nil {
		t.objects--
	}
	t.objs[string(k)] = &object{orig: orig}
}

// setRaw writes an index record (never an object's key).
func (t *tx) setRaw(k, v []byte) {
	if err := t.b.Set(k, v); err != nil {
		fault("state: write: %w", err)
	}
}

// delRaw deletes an index record.
func (t *tx) delRaw(k []byte) {
	if err := t.b.Delete(k); err != nil {
		fault("state: delete: %w", err)
	}
}

// delRange deletes every record in [lower, upper) (index or log records, never cached
// objects).
func (t *tx) delRange(lower, upper []byte) {
	if err := t.b.DeleteRange(lower, upper); err != nil {
		fault("state: delete range: %w", err)
	}
}

// flush writes every changed object into the batch.
func (t *tx) flush() {
	keys := key(tKey)
	for k, o := range t.objs {
		if o.v == nil {
			if o.orig != nil {
				if err := t.b.Delete([]byte(k)); err != nil {
					fault("state: delete %q: %w", k, err)
				}
				t.keysChanged = t.keysChanged || strings.HasPrefix(k, string(keys))
			}
			continue
		}
		enc, err := json.Marshal(o.v)
		if err != nil {
			fault("state: encode %q: %w", k, err)
		}
		if !bytes.Equal(enc, o.orig) {
			if err := t.b.Set([]byte(k), enc); err != nil {
				fault("state: write %q: %w", k, err)
			}
			t.keysChanged = t.keysChanged || strings.HasPrefix(k, string(keys))
		}
	}
	clear(t.objs)
}

// u64Value and its decoder store a counter as 8 bytes.
func u64Value(v uint64) []byte { return statedb.AppendUint64(nil, v) }

func decodeU64(b []byte) uint64 {
	if len(b) != 8 {
		fault("state: counter of %d bytes", len(b))
	}
	d := statedb.NewKeyDecoder(b)
	return d.Uint64()
}
