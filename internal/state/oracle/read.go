package oracle

import (
	"encoding/hex"
	"maps"
	"slices"
	"sort"
)

// Cluster returns the cluster's name, threshold and members.
func (f *FSM) Cluster() (name string, threshold int, members []Member) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.d.Name, f.d.Threshold, slices.Clone(f.d.Members)
}

// LastStamp is the stamp of the last applied entry (unix ms).
func (f *FSM) LastStamp() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.d.LastStamp
}

// User returns a copy of a user, or nil.
func (f *FSM) User(id uint64) *User {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u := f.d.Users[id]
	if u == nil {
		return nil
	}
	c := *u
	c.Permissions = slices.Clone(u.Permissions)
	return &c
}

// Users returns copies of users with id > after, ascending, at most limit.
func (f *FSM) Users(after uint64, limit int) []User {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := make([]uint64, 0, len(f.d.Users))
	for id := range f.d.Users {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]User, 0, len(ids))
	for _, id := range ids {
		u := *f.d.Users[id]
		u.Permissions = slices.Clone(u.Permissions)
		out = append(out, u)
	}
	return out
}

func copyKey(k *Key) *Key {
	c := *k
	c.Members = slices.Clone(k.Members)
	c.PublicKey = slices.Clone(k.PublicKey)
	c.ChainCode = slices.Clone(k.ChainCode)
	c.Reports = maps.Clone(k.Reports)
	return &c
}

// Key returns a copy of a key, or nil.
func (f *FSM) Key(id string) *Key {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k := f.d.Keys[id]
	if k == nil {
		return nil
	}
	return copyKey(k)
}

// KeysOf returns copies of an owner's keys with id > after, sorted by id, at most limit.
func (f *FSM) KeysOf(owner uint64, after string, limit int) []*Key {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Key
	for _, k := range f.d.Keys {
		if k.Owner == owner && k.ID > after {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	for i, k := range out {
		out[i] = copyKey(k)
	}
	return out
}

// AllKeys returns copies of every key (for reconciliation on a node).
func (f *FSM) AllKeys() []*Key {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Key, 0, len(f.d.Keys))
	for _, k := range f.d.Keys {
		out = append(out, copyKey(k))
	}
	return out
}

func copyRequest(r *Request) *Request {
	c := *r
	c.Message = slices.Clone(r.Message)
	c.PathIdx = slices.Clone(r.PathIdx)
	c.Committee = slices.Clone(r.Committee)
	c.Nonce = slices.Clone(r.Nonce)
	c.Failures = slices.Clone(r.Failures)
	if r.Signed != nil {
		s := *r.Signed
		c.Signed = &s
	}
	if r.Signature != nil {
		s := *r.Signature
		c.Signature = &s
	}
	if r.Error != nil {
		e := *r.Error
		c.Error = &e
	}
	return &c
}

// Request returns a copy of a request, or nil.
func (f *FSM) Request(id string) *Request {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.d.Requests[id]
	if r == nil {
		return nil
	}
	return copyRequest(r)
}

// OpenRequests returns copies of every request that is not final.
func (f *FSM) OpenRequests() []*Request {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Request, 0, len(f.d.Open))
	for id := range f.d.Open {
		out = append(out, copyRequest(f.d.Requests[id]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// Audit returns entries with seq > after, ascending, at most limit, and whether more follow.
func (f *FSM) Audit(after uint64, limit int) ([]AuditEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := uint64(len(f.d.Audit))
	if after >= n {
		return nil, false
	}
	end := min(after+uint64(limit), n)
	return slices.Clone(f.d.Audit[after:end]), end < n
}

// AuditHead returns the seq and hash of the last audit entry.
func (f *FSM) AuditHead() (uint64, string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(f.d.Audit) == 0 {
		return 0, GenesisHash
	}
	e := f.d.Audit[len(f.d.Audit)-1]
	return e.Seq, e.Hash
}

// KeysIn is KeysOf limited to the ids in only (all of the owner's keys when only is
// empty): an access key's view of its grantor's keys.
func (f *FSM) KeysIn(owner uint64, only []string, after string, limit int) []*Key {
	if len(only) == 0 {
		return f.KeysOf(owner, after, limit)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Key
	for _, id := range only {
		if k := f.d.Keys[id]; k != nil && k.Owner == owner && k.ID > after {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	for i, k := range out {
		out[i] = copyKey(k)
	}
	return out
}

func copyAccessKey(k *AccessKey) *AccessKey {
	c := *k
	c.PublicKey = slices.Clone(k.PublicKey)
	c.Permissions = slices.Clone(k.Permissions)
	c.KeyIDs = slices.Clone(k.KeyIDs)
	if k.Grant != nil {
		g := *k.Grant
		g.Body = slices.Clone(k.Grant.Body)
		c.Grant = &g
	}
	return &c
}

// AccessKey returns a copy of an access key, or nil.
func (f *FSM) AccessKey(id string) *AccessKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k := f.d.AccessKeys[id]
	if k == nil {
		return nil
	}
	return copyAccessKey(k)
}

// AccessKeyByPublicKey returns a copy of the newest access key of that scheme and public
// key (the only one that can be live; the caller judges liveness at its own time), or nil.
func (f *FSM) AccessKeyByPublicKey(scheme string, pub []byte) *AccessKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k := f.d.AccessKeys[f.d.AccessByPub[scheme+":"+hex.EncodeToString(pub)]]
	if k == nil {
		return nil
	}
	return copyAccessKey(k)
}

// AccessKeysOf returns copies of a grantor's access keys with id > after, sorted by id,
// at most limit.
func (f *FSM) AccessKeysOf(grantor uint64, after string, limit int) []*AccessKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*AccessKey
	for _, id := range f.d.AccessByGrantor[grantor] {
		if id > after {
			if len(out) == limit {
				break
			}
			out = append(out, copyAccessKey(f.d.AccessKeys[id]))
		}
	}
	return out
}

// AccessLog returns an access key's log entries with seq > after, ascending, at most
// limit, and whether more follow.
func (f *FSM) AccessLog(id string, after uint64, limit int) ([]AccessLogEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := f.d.AccessLogs[id]
	if l == nil {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(l.Entries, after+1, func(e AccessLogEntry, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	end := min(i+limit, len(l.Entries))
	return slices.Clone(l.Entries[i:end]), end < len(l.Entries)
}
