package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/custos/custos/internal/statedb"
)

// Snapshots written by binaries before the state moved to disk are one JSON document
// (legacyState, versions 1 and 2). Restore converts such a snapshot into the tables,
// through the same table helpers Apply uses, and restores the result like any
// statedb stream: a data directory of an earlier binary upgrades in place at its first
// start (its newest snapshot is restored, then the log after it replays), and a member
// still running an earlier binary can send one.

// legacyState is the JSON snapshot of earlier binaries.
type legacyState struct {
	Version         int                          `json:"version"`
	Name            string                       `json:"name"`
	Threshold       int                          `json:"threshold"`
	Members         []Member                     `json:"members"`
	Users           map[uint64]*User             `json:"users"`
	NextUserID      uint64                       `json:"next_user_id"`
	Keys            map[string]*Key              `json:"keys"`
	Requests        map[string]*Request          `json:"requests"`
	Open            map[string]bool              `json:"open"`
	Nonces          map[string]int64             `json:"nonces"`
	Proposals       map[string]ProposalResult    `json:"proposals,omitempty"`
	Sessions        map[string]int64             `json:"sessions"`
	Idem            map[string]string            `json:"idem"`
	IdemHash        map[string]string            `json:"idem_hash"`
	Audit           []AuditEntry                 `json:"audit"`
	AccessKeys      map[string]*AccessKey        `json:"access_keys"`
	AccessByPub     map[string]string            `json:"access_by_pub"`
	AccessByGrantor map[uint64][]string          `json:"access_by_grantor"`
	AccessLogs      map[string]*legacyAccessLog  `json:"access_logs"`
	Strict          bool                         `json:"strict,omitempty"`
	AdminPublicKey  []byte                       `json:"admin_public_key,omitempty"`
	AdminKeyGenesis []byte                       `json:"admin_key_genesis,omitempty"`
	Checkpoints     map[uint64]map[string]string `json:"checkpoints,omitempty"`
	LastStamp       int64                        `json:"last_stamp"`
	LastPrune       int64                        `json:"last_prune"`
	Applied         uint64                       `json:"applied"`
}

type legacyAccessLog struct {
	Next    uint64           `json:"next"`
	Entries []AccessLogEntry `json:"entries"`
}

// restoreLegacy converts a JSON snapshot read from r and restores it.
func (f *FSM) restoreLegacy(r io.Reader) error {
	var d legacyState
	dec := json.NewDecoder(r)
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("legacy snapshot: %w", err)
	}
	if d.Version < 1 || d.Version > SnapshotVersion {
		return fmt.Errorf("legacy snapshot version %d, this binary reads 1 to %d", d.Version, SnapshotVersion)
	}
	recs, err := d.records()
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := statedb.WriteRecords(pw, recs)
		pw.CloseWithError(err)
	}()
	err = f.db.RestoreChecked(pr, verifyRestored)
	pr.CloseWithError(errors.New("restore ended"))
	return err
}

// records lays the legacy state out in tables.
func (d *legacyState) records() (recs []statedb.Record, err error) {
	if i := VerifyChain(GenesisHash, d.Audit); i != -1 {
		return nil, fmt.Errorf("legacy snapshot: audit entry %d does not verify", i+1)
	}
	kv := memKV{}
	m := newMeta()
	m.Name, m.Threshold, m.Members, m.NextUserID = d.Name, d.Threshold, d.Members, d.NextUserID
	m.Strict, m.AdminPublicKey, m.AdminKeyGenesis = d.Strict, d.AdminPublicKey, d.AdminKeyGenesis
	m.Checkpoints, m.LastStamp, m.LastPrune = d.Checkpoints, d.LastStamp, d.LastPrune
	a := &applier{t: newTx(kv), m: m, stamp: d.LastStamp}
	err = catchFault(func() {
		for _, u := range d.Users {
			a.putUser(u)
		}
		for _, k := range d.Keys {
			if k.Reports == nil {
				k.Reports = map[string][]byte{}
			}
			a.addKey(k)
		}
		for id, r := range d.Requests {
			a.t.put(keyStr(tRequest, id), r)
			switch {
			case d.Open[id]:
				a.t.setRaw(keyStr(tOpen, id), nil)
				m.Open++
			default:
				a.t.setRaw(keyAt(tDone, r.UpdatedAt, id), nil)
			}
		}
		for k, exp := range d.Nonces {
			a.addNonce(k, exp)
		}
		for id, p := range d.Proposals {
			a.addProposal(id, p)
		}
		for n, at := range d.Sessions {
			a.t.setRaw(keyStr(tSession, n), statedb.AppendInt64(nil, at))
			a.t.setRaw(keyAt(tSessionExp, at, n), nil)
		}
		for scope, id := range d.Idem {
			a.t.put(keyStr(tIdem, scope), &idemRecord{RequestID: id, BodyHash: d.IdemHash[scope]})
		}
		for i := range d.Audit {
			a.appendAudit(&d.Audit[i])
		}
		for _, ak := range d.AccessKeys {
			a.addAccessKey(ak)
		}
		for pub, id := range d.AccessByPub { // the newest key per public key
			a.t.setRaw(keyStr(tAccessPub, pub), []byte(id))
		}
		for id, l := range d.AccessLogs {
			a.t.setRaw(keyStr(tAccessNext, id), u64Value(l.Next))
			for i := range l.Entries {
				a.t.setRaw(accessLogKey(id, l.Entries[i].Seq), mustJSON(&l.Entries[i]))
			}
		}
		a.t.flush()
		m.Objects = a.t.objects
		for idx := range m.Checkpoints {
			m.LastCheckpoint = max(m.LastCheckpoint, idx)
		}
		a.t.setRaw(key(tMeta), mustJSON(m))
	})
	if err != nil {
		return nil, fmt.Errorf("legacy snapshot: %w", err)
	}
	return append([]statedb.Record{statedb.AppliedRecord(d.Applied, d.LastStamp)}, kv.sorted()...), nil
}

// verifyRestored checks a restored state before it is switched in: its layout version,
// that what the FSM loads from it into memory once switched in (reload: the meta record,
// the active policies) decodes — a restore that failed after the switch would leave the
// node on a state it never told anyone it restored —, and its audit log link by link up
// to the head its meta names (the state hash covers the audit only through that head).
func verifyRestored(v *statedb.View) error {
	// A state is as of an index: without one, the restored node would take the state for
	// an empty one (nothing to vouch for, every entry to apply again on top of it).
	if idx, _, err := v.AppliedIndex(); err != nil || idx == 0 {
		return fmt.Errorf("snapshot names no applied index (%v)", err)
	}
	return catchFault(func() {
		m, ok := load[meta](v, key(tMeta))
		if !ok {
			m = newMeta()
		}
		if m.Version != stateVersion {
			fault("snapshot's state layout is version %d, this binary reads version %d", m.Version, stateVersion)
		}
		loadPolicies(v)
		prev, seq := GenesisHash, uint64(0)
		if m.AuditPrunedSeq != 0 {
			prev, seq = m.AuditPrunedHash, m.AuditPrunedSeq
		}
		// The links are checked in order here; the hashes (the costly part: an RFC 8785
		// canonical form and a SHA-256 per entry) by a worker per CPU, a chunk at a time.
		hashes := newAuditHashCheck()
		chunk := make([]AuditEntry, 0, auditCheckChunk)
		scanKV(v, key(tAudit), statedb.PrefixEnd(key(tAudit)), func(k, raw []byte) bool {
			var e AuditEntry
			decodeRecord(raw, &e)
			seq++
			// Each entry under its own seq's key: the state hash leaves the audit out, so
			// an entry stored elsewhere would pass the votes and later be overwritten,
			// or make a prune that names it fail on this node alone.
			if e.Seq != seq || e.PrevHash != prev || !bytes.Equal(k, keyU64(tAudit, seq)) {
				hashes.stop()
				fault("snapshot's audit entry %d does not verify", seq)
			}
			prev = e.Hash
			if chunk = append(chunk, e); len(chunk) == auditCheckChunk {
				hashes.check(chunk)
				chunk = make([]AuditEntry, 0, auditCheckChunk)
			}
			return true
		})
		hashes.check(chunk)
		if bad := hashes.stop(); bad != 0 {
			fault("snapshot's audit entry %d does not verify", bad)
		}
		if seq != m.AuditSeq || prev != m.AuditHead {
			fault("snapshot's audit log ends at %d, its state names %d", seq, m.AuditSeq)
		}
	})
}

// auditCheckChunk is how many audit entries a hash-checking worker takes at a time.
const auditCheckChunk = 4096

// auditHashCheck recomputes audit entries' hashes on a worker per CPU.
type auditHashCheck struct {
	work chan []AuditEntry
	wg   sync.WaitGroup
	bad  atomic.Uint64 // the lowest seq whose hash does not verify (0: none yet)
	once sync.Once
}

func newAuditHashCheck() *auditHashCheck {
	c := &auditHashCheck{work: make(chan []AuditEntry, runtime.GOMAXPROCS(0))}
	for range runtime.GOMAXPROCS(0) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for es := range c.work {
				for i := range es {
					if AuditHash(&es[i]) != es[i].Hash {
						c.flag(es[i].Seq)
						break
					}
				}
			}
		}()
	}
	return c
}

func (c *auditHashCheck) flag(seq uint64) {
	for {
		cur := c.bad.Load()
		if (cur != 0 && cur <= seq) || c.bad.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// check hands a chunk to the workers (nothing once one found a bad hash).
func (c *auditHashCheck) check(es []AuditEntry) {
	if len(es) > 0 && c.bad.Load() == 0 {
		c.work <- es
	}
}

// stop waits for the workers and returns the lowest bad seq found (0: none).
func (c *auditHashCheck) stop() uint64 {
	c.once.Do(func() { close(c.work) })
	c.wg.Wait()
	return c.bad.Load()
}

// memKV is a set of records in memory, for building a state outside the database.
type memKV map[string][]byte

func (m memKV) Get(k []byte) ([]byte, error) {
	v, ok := m[string(k)]
	if !ok {
		return nil, statedb.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m memKV) Set(k, v []byte) error {
	m[string(k)] = bytes.Clone(v)
	return nil
}

func (m memKV) Delete(k []byte) error {
	delete(m, string(k))
	return nil
}

func (m memKV) DeleteRange(lo, hi []byte) error {
	for k := range m {
		if k >= string(lo) && k < string(hi) {
			delete(m, k)
		}
	}
	return nil
}

func (m memKV) Scan(lo, hi []byte, fn func(k, v []byte) error) error {
	for _, r := range m.sorted() {
		if (lo != nil && bytes.Compare(r.Key, lo) < 0) || (hi != nil && bytes.Compare(r.Key, hi) >= 0) {
			continue
		}
		if err := fn(r.Key, r.Value); err != nil {
			if errors.Is(err, statedb.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (m memKV) sorted() []statedb.Record {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]statedb.Record, len(keys))
	for i, k := range keys {
		out[i] = statedb.Record{Key: []byte(k), Value: m[k]}
	}
	return out
}
