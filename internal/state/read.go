package state

import (
	"encoding/json"
	"math"
	"slices"
	"sort"

	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/statedb"
)

// Reads for the API and the node's components. Each reads the committed state: a
// consistent view of the database (records are decoded fresh, so callers own what they
// get) and the committed meta.

// Cluster returns the cluster's name, threshold and members.
func (f *FSM) Cluster() (name string, threshold int, members []Member) {
	m := f.meta()
	return m.Name, m.Threshold, slices.Clone(m.Members)
}

// LastStamp is the stamp of the last applied entry (unix ms).
func (f *FSM) LastStamp() int64 { return f.meta().LastStamp }

// User returns a copy of a user, or nil.
func (f *FSM) User(id uint64) *User {
	var u *User
	f.read(func(r readKV, _ *meta) { u, _ = load[User](r, keyU64(tUser, id)) })
	return u
}

// Users returns copies of users with id > after, ascending, at most limit.
func (f *FSM) Users(after uint64, limit int) []User {
	out := []User{}
	if limit <= 0 || after == math.MaxUint64 {
		return out
	}
	f.read(func(r readKV, _ *meta) {
		scanRecords(r, keyU64(tUser, after+1), statedb.PrefixEnd(key(tUser)), func(v []byte) bool {
			var u User
			decodeRecord(v, &u)
			out = append(out, u)
			return len(out) < limit
		})
	})
	return out
}

// Key returns a copy of a key, or nil.
func (f *FSM) Key(id string) *Key {
	var k *Key
	f.read(func(r readKV, _ *meta) { k, _ = load[Key](r, keyStr(tKey, id)) })
	return k
}

// KeysOf returns copies of an owner's keys with id > after, sorted by id, at most limit.
func (f *FSM) KeysOf(owner uint64, after string, limit int) []*Key {
	var out []*Key
	if limit <= 0 {
		return out
	}
	prefix := keyU64(tKeyOwner, owner)
	f.read(func(r readKV, _ *meta) {
		scanKeys(r, statedb.AppendString(slices.Clone(prefix), after+"\x00"), statedb.PrefixEnd(prefix), func(k []byte) bool {
			d := statedb.NewKeyDecoder(k)
			d.Table()
			d.Uint64()
			if key, ok := load[Key](r, keyStr(tKey, d.Text())); ok {
				out = append(out, key)
			}
			return len(out) < limit
		})
	})
	return out
}

// AllKeys returns copies of every key (for reconciliation on a node).
func (f *FSM) AllKeys() []*Key {
	var out []*Key
	f.read(func(r readKV, _ *meta) {
		scanRecords(r, key(tKey), statedb.PrefixEnd(key(tKey)), func(v []byte) bool {
			var k Key
			decodeRecord(v, &k)
			out = append(out, &k)
			return true
		})
	})
	return out
}

// Request returns a copy of a request, or nil.
func (f *FSM) Request(id string) *Request {
	var req *Request
	f.read(func(r readKV, _ *meta) { req, _ = load[Request](r, keyStr(tRequest, id)) })
	return req
}

// OpenRequests returns copies of every request that is not final (at most
// MaxOpenRequests), oldest first.
func (f *FSM) OpenRequests() []*Request {
	var out []*Request
	f.read(func(r readKV, _ *meta) {
		scanKeys(r, key(tOpen), statedb.PrefixEnd(key(tOpen)), func(k []byte) bool {
			d := statedb.NewKeyDecoder(k)
			d.Table()
			if req, ok := load[Request](r, keyStr(tRequest, d.Text())); ok {
				out = append(out, req)
			}
			return true
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// Audit returns entries with seq > after, ascending, at most limit, and whether more follow.
func (f *FSM) Audit(after uint64, limit int) ([]AuditEntry, bool) {
	p := f.AuditPage(after, limit)
	return p.Entries, p.More
}

// AuditPage is a page of the audit log and the pruned anchor, read from one view: the
// first entry of a pruned log links to PrunedHash.
type AuditPage struct {
	Entries    []AuditEntry
	More       bool
	PrunedSeq  uint64
	PrunedHash string
}

// AuditPage returns entries with seq > after, ascending, at most limit, whether more
// follow, and the pruned anchor as of the same state.
func (f *FSM) AuditPage(after uint64, limit int) AuditPage {
	var p AuditPage
	f.read(func(r readKV, _ *meta) {
		if m, ok := load[meta](r, key(tMeta)); ok {
			p.PrunedSeq, p.PrunedHash = m.AuditPrunedSeq, m.AuditPrunedHash
		}
		if after == math.MaxUint64 {
			return
		}
		scanRecords(r, keyU64(tAudit, after+1), statedb.PrefixEnd(key(tAudit)), func(v []byte) bool {
			if len(p.Entries) == limit {
				p.More = true
				return false
			}
			var e AuditEntry
			decodeRecord(v, &e)
			p.Entries = append(p.Entries, e)
			return true
		})
	})
	return p
}

// AuditPruned returns the seq and hash of the last pruned audit entry (0, "" when the log
// was never pruned): the first entry kept links to it.
func (f *FSM) AuditPruned() (uint64, string) {
	m := f.meta()
	return m.AuditPrunedSeq, m.AuditPrunedHash
}

// AuditHead returns the seq and hash of the last audit entry.
func (f *FSM) AuditHead() (uint64, string) {
	m := f.meta()
	return m.AuditSeq, m.AuditHead
}

// KeysIn is KeysOf limited to the ids in only (all of the owner's keys when only is
// empty): an access key's view of its grantor's keys.
func (f *FSM) KeysIn(owner uint64, only []string, after string, limit int) []*Key {
	if len(only) == 0 {
		return f.KeysOf(owner, after, limit)
	}
	var out []*Key
	f.read(func(r readKV, _ *meta) {
		for _, id := range only {
			if k, ok := load[Key](r, keyStr(tKey, id)); ok && k.Owner == owner && k.ID > after {
				out = append(out, k)
			}
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// AccessKey returns a copy of an access key, or nil.
func (f *FSM) AccessKey(id string) *AccessKey {
	var ak *AccessKey
	f.read(func(r readKV, _ *meta) { ak, _ = load[AccessKey](r, keyStr(tAccess, id)) })
	return ak
}

// AccessKeyByPublicKey returns a copy of the newest access key of that scheme and public
// key (the only one that can be live; the caller judges liveness at its own time), or nil.
func (f *FSM) AccessKeyByPublicKey(scheme string, pub []byte) *AccessKey {
	var ak *AccessKey
	f.read(func(r readKV, _ *meta) {
		if id := accessKeyIDByPub(r, scheme, pub); id != "" {
			ak, _ = load[AccessKey](r, keyStr(tAccess, id))
		}
	})
	return ak
}

// AccessKeysOf returns copies of a grantor's access keys with id > after, sorted by id,
// at most limit.
func (f *FSM) AccessKeysOf(grantor uint64, after string, limit int) []*AccessKey {
	var out []*AccessKey
	f.read(func(r readKV, _ *meta) {
		for _, id := range accessKeysOf(r, grantor) {
			if id <= after {
				continue
			}
			if len(out) == limit {
				break
			}
			if ak, ok := load[AccessKey](r, keyStr(tAccess, id)); ok {
				out = append(out, ak)
			}
		}
	})
	return out
}

// AccessLog returns an access key's log entries with seq > after, ascending, at most
// limit, and whether more follow.
func (f *FSM) AccessLog(id string, after uint64, limit int) ([]AccessLogEntry, bool) {
	var out []AccessLogEntry
	more := false
	if after == math.MaxUint64 {
		return nil, false
	}
	prefix := statedb.AppendString(key(tAccessLog), id)
	f.read(func(r readKV, _ *meta) {
		scanRecords(r, accessLogKey(id, after+1), statedb.PrefixEnd(prefix), func(v []byte) bool {
			if len(out) == limit {
				more = true
				return false
			}
			var e AccessLogEntry
			decodeRecord(v, &e)
			out = append(out, e)
			return true
		})
	})
	return out, more
}

// scanRecords calls fn with each value in [lower, upper) until fn returns false.
func scanRecords(r readKV, lower, upper []byte, fn func(v []byte) bool) {
	err := r.Scan(lower, upper, func(_, v []byte) error {
		if !fn(v) {
			return statedb.ErrStop
		}
		return nil
	})
	if err != nil {
		fault("state: scan: %w", err)
	}
}

func decodeRecord(raw []byte, v any) {
	if err := json.Unmarshal(raw, v); err != nil {
		fault("state: decode: %w", err)
	}
}

// Policy returns a copy of a policy (active or archived), or nil.
func (f *FSM) Policy(id string) *policy.Record {
	var p *policy.Record
	f.read(func(r readKV, _ *meta) { p, _ = load[policy.Record](r, keyStr(tPolicy, id)) })
	return p
}

// Policies returns copies of the policies with id > after (active and archived), by id,
// at most limit.
func (f *FSM) Policies(after string, limit int) []policy.Record {
	out := []policy.Record{}
	if limit <= 0 {
		return out
	}
	f.read(func(r readKV, _ *meta) {
		scanRecords(r, keyStr(tPolicy, after+"\x00"), statedb.PrefixEnd(key(tPolicy)), func(v []byte) bool {
			var p policy.Record
			decodeRecord(v, &p)
			out = append(out, p)
			return len(out) < limit
		})
	})
	return out
}

// Approval returns a copy of an approval, or nil.
func (f *FSM) Approval(id string) *Approval {
	var ap *Approval
	f.read(func(r readKV, _ *meta) { ap, _ = load[Approval](r, keyStr(tApproval, id)) })
	return ap
}

// Approvals returns copies of the approvals a caller may see — every one for the admin
// (all true), else those user may decide or initiated — with id > after, by id (the
// order of creation), in status (all when ""), at most limit.
func (f *FSM) Approvals(user uint64, all bool, status, after string, limit int) []*Approval {
	var out []*Approval
	if limit <= 0 {
		return out
	}
	keep := func(ap *Approval) bool {
		if status == "" || ap.Status == status {
			out = append(out, ap)
		}
		return len(out) < limit
	}
	f.read(func(r readKV, _ *meta) {
		if all {
			scanRecords(r, keyStr(tApproval, after+"\x00"), statedb.PrefixEnd(key(tApproval)), func(v []byte) bool {
				var ap Approval
				decodeRecord(v, &ap)
				return keep(&ap)
			})
			return
		}
		prefix := keyU64(tApprovalFor, user)
		scanKeys(r, statedb.AppendString(slices.Clone(prefix), after+"\x00"), statedb.PrefixEnd(prefix), func(k []byte) bool {
			d := statedb.NewKeyDecoder(k)
			d.Table()
			d.Uint64()
			if ap, ok := load[Approval](r, keyStr(tApproval, d.Text())); ok {
				return keep(ap)
			}
			return true
		})
	})
	return out
}

// PendingBroadcasts returns copies of the signed PSBT requests whose broadcast the leader
// still owes (at most limit).
func (f *FSM) PendingBroadcasts(limit int) []*Request {
	var out []*Request
	f.read(func(r readKV, _ *meta) {
		scanKeys(r, key(tBroadcastDue), statedb.PrefixEnd(key(tBroadcastDue)), func(k []byte) bool {
			d := statedb.NewKeyDecoder(k)
			d.Table()
			if req, ok := load[Request](r, keyStr(tRequest, d.Text())); ok {
				out = append(out, req)
			}
			return len(out) < limit
		})
	})
	return out
}
