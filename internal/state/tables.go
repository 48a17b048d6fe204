package state

import (
	"fmt"

	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/custos/custos/internal/api"

	"github.com/custos/custos/internal/statedb"
)

// The applier's typed access to the tables (store.go). Objects returned by the getters
// are cached for the batch: changing one changes the state (written back at flush).

func (a *applier) user(id uint64) *User { return get[User](a.t, keyU64(tUser, id)) }

func (a *applier) putUser(u *User) { a.t.put(keyU64(tUser, u.ID), u) }

func (a *applier) key(id string) *Key { return get[Key](a.t, keyStr(tKey, id)) }

// addKey stores a new key and indexes it by owner.
func (a *applier) addKey(k *Key) {
	a.t.put(keyStr(tKey, k.ID), k)
	a.t.setRaw(keyOwned(k.Owner, k.ID), nil)
}

func keyOwned(owner uint64, id string) []byte {
	return statedb.AppendString(keyU64(tKeyOwner, owner), id)
}

func (a *applier) request(id string) *Request { return get[Request](a.t, keyStr(tRequest, id)) }

// addRequest records a new, open request.
func (a *applier) addRequest(r *Request) {
	a.t.put(keyStr(tRequest, r.ID), r)
	a.t.setRaw(keyStr(tOpen, r.ID), nil)
	a.m.Open++
	a.requestEvent(api.EventRequestSubmitted, r, r.Actor)
}

// settle moves a request to a final status; it is kept for RequestRetentionMs after.
// A request is open exactly while its status is not final, so the status says whether
// the open index holds it (no read needed on the signing path).
func (a *applier) settle(r *Request, status string) {
	wasOpen := !Final(r.Status)
	r.Status = status
	r.Retry = false
	r.UpdatedAt = a.stamp
	if wasOpen {
		a.t.delRaw(keyStr(tOpen, r.ID))
		a.m.Open--
		a.t.setRaw(keyAt(tDone, a.stamp, r.ID), nil)
	}
}

func (a *applier) openRequests() int { return a.m.Open }

// nonceSeen reports whether a replay key is remembered.
func (a *applier) nonceSeen(k string) bool { return exists(a.t, keyStr(tNonce, k)) }

func (a *applier) addNonce(k string, expires int64) {
	a.t.setRaw(keyStr(tNonce, k), statedb.AppendInt64(nil, expires))
	a.t.setRaw(keyAt(tNonceExp, expires, k), nil)
	a.m.Nonces++
}

func (a *applier) proposal(id string) *ProposalResult {
	return get[ProposalResult](a.t, keyStr(tProposal, id))
}

// addProposal remembers a proposal's result; the caller looked id up and found none.
func (a *applier) addProposal(id string, p ProposalResult) {
	a.t.put(keyStr(tProposal, id), &p)
	a.t.setRaw(keyAt(tPropExp, p.Expires, id), nil)
	a.m.Proposals++
}

func (a *applier) sessionUsed(nonceHex string) bool { return exists(a.t, keyStr(tSession, nonceHex)) }

func (a *applier) addSession(nonceHex string) {
	a.t.setRaw(keyStr(tSession, nonceHex), statedb.AppendInt64(nil, a.stamp))
	a.t.setRaw(keyAt(tSessionExp, a.stamp, nonceHex), nil)
}

// idemRecord is what an idempotency scope produced.
type idemRecord struct {
	RequestID string `json:"request_id"`
	BodyHash  string `json:"body_hash"`
}

func (a *applier) idem(scope string) *idemRecord { return get[idemRecord](a.t, keyStr(tIdem, scope)) }

func (a *applier) accessKey(id string) *AccessKey {
	return get[AccessKey](a.t, keyStr(tAccess, id))
}

// accessKeyIDByPub returns the id of the newest access key with that scheme and public
// key ("" if none).
func accessKeyIDByPub(r readKV, scheme string, pub []byte) string {
	raw, err := r.Get(keyStr(tAccessPub, pubIndex(scheme, pub)))
	if errors.Is(err, statedb.ErrNotFound) {
		return ""
	}
	if err != nil {
		fault("state: read access key index: %w", err)
	}
	return string(raw)
}

func pubIndex(scheme string, pub []byte) string { return scheme + ":" + hex.EncodeToString(pub) }

func keyGranted(grantor uint64, id string) []byte {
	return statedb.AppendString(keyU64(tAccessBy, grantor), id)
}

// accessKeysOf lists a grantor's access key ids in id order (at most
// MaxAccessKeysPerGrantor).
func accessKeysOf(r readKV, grantor uint64) []string {
	prefix := keyU64(tAccessBy, grantor)
	var ids []string
	scanKeys(r, prefix, statedb.PrefixEnd(prefix), func(k []byte) bool {
		d := statedb.NewKeyDecoder(k)
		d.Table()
		d.Uint64()
		ids = append(ids, d.Text())
		return d.Err() == nil
	})
	return ids
}

// addAccessKey stores a new access key with its indexes.
func (a *applier) addAccessKey(ak *AccessKey) {
	a.t.put(keyStr(tAccess, ak.ID), ak)
	a.t.setRaw(keyStr(tAccessPub, pubIndex(ak.Scheme, ak.PublicKey)), []byte(ak.ID))
	a.t.setRaw(keyGranted(ak.Grantor, ak.ID), nil)
	if dead := ak.deadSince(); dead != 0 {
		a.t.setRaw(keyAt(tAccessDead, dead, ak.ID), nil)
	}
}

// revokeAccessKey marks a live key revoked at the stamp, moving it in the dead index.
func (a *applier) revokeAccessKey(ak *AccessKey) {
	if ak.RevokedAt != 0 {
		return
	}
	a.record(api.EventAccessKeyRevoked, ak.Grantor, nil, api.EventData{AccessKeyID: ak.ID, UserID: ak.Grantor, Actor: fmt.Sprintf("user:%d", ak.Grantor)})
	old := ak.deadSince()
	ak.RevokedAt = a.stamp
	if now := ak.deadSince(); now != old {
		if old != 0 {
			a.t.delRaw(keyAt(tAccessDead, old, ak.ID))
		}
		a.t.setRaw(keyAt(tAccessDead, now, ak.ID), nil)
	}
}

// dropAccessKey forgets an access key, its log and its index entries.
func (a *applier) dropAccessKey(ak *AccessKey) {
	a.t.del(keyStr(tAccess, ak.ID))
	logs := statedb.AppendString(key(tAccessLog), ak.ID)
	a.t.delRange(logs, statedb.PrefixEnd(logs))
	a.t.delRaw(keyStr(tAccessNext, ak.ID))
	if accessKeyIDByPub(a.t, ak.Scheme, ak.PublicKey) == ak.ID {
		a.t.delRaw(keyStr(tAccessPub, pubIndex(ak.Scheme, ak.PublicKey)))
	}
	a.t.delRaw(keyGranted(ak.Grantor, ak.ID))
	if dead := ak.deadSince(); dead != 0 {
		a.t.delRaw(keyAt(tAccessDead, dead, ak.ID))
	}
}

func accessLogKey(id string, seq uint64) []byte {
	return statedb.AppendUint64(statedb.AppendString(key(tAccessLog), id), seq)
}

// logAccess appends one use to an access key's log, keeping the newest
// MaxAccessLogEntries. Unknown keys have no log.
func (a *applier) logAccess(id, op, object, outcome, code string) {
	if a.accessKey(id) == nil {
		return
	}
	var next uint64
	if raw, err := a.t.Get(keyStr(tAccessNext, id)); err == nil {
		next = decodeU64(raw)
	} else if !errors.Is(err, statedb.ErrNotFound) {
		fault("state: read access log seq: %w", err)
	}
	next++
	a.t.setRaw(keyStr(tAccessNext, id), u64Value(next))
	e := AccessLogEntry{Seq: next, Time: a.stamp, Op: op, Object: object, Outcome: outcome, Code: code}
	a.t.setRaw(accessLogKey(id, next), mustJSON(&e))
	if next > MaxAccessLogEntries {
		a.t.delRaw(accessLogKey(id, next-MaxAccessLogEntries))
	}
}

// appendAudit stores the next audit entry and moves the head.
func (a *applier) appendAudit(e *AuditEntry) {
	a.t.setRaw(keyU64(tAudit, e.Seq), mustJSON(e))
	a.m.AuditSeq, a.m.AuditHead = e.Seq, e.Hash
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		fault("state: encode: %w", err)
	}
	return b
}

// pruneBatch bounds the records one entry prunes from each table: a backlog (after a
// long pause in stamps) is worked off over the following entries, never in one Apply.
const pruneBatch = 256

// prune drops, judged by the entry's stamp only, expired nonces, proposal results and
// session nonces, finished requests past their retention (with their idempotency
// scope), and access keys dead for longer than theirs (with their logs).
func (a *applier) prune() (behind bool) {
	s := a.stamp
	step := func(more bool) { behind = behind || more }
	step(a.pruneIndex(tNonceExp, s+1, true, func(id string) {
		a.t.delRaw(keyStr(tNonce, id))
		a.m.Nonces--
	}))
	step(a.pruneIndex(tPropExp, s+1, true, func(id string) {
		a.t.del(keyStr(tProposal, id))
		a.m.Proposals--
	}))
	step(a.pruneIndex(tSessionExp, s-a.m.sessionRetention(), true, func(id string) { a.t.delRaw(keyStr(tSession, id)) }))
	step(a.pruneIndex(tDone, s-a.m.requestRetention(), true, func(id string) {
		r := a.request(id)
		if r == nil {
			return
		}
		if r.ApprovalID != "" {
			a.dropApproval(r.ApprovalID)
		}
		if r.PSBT != nil && r.PSBT.Broadcast {
			a.t.delRaw(keyStr(tBroadcastDue, id))
		}
		if r.IdempotencyKey != "" {
			if scope := idemScope(r); a.idem(scope) != nil && a.idem(scope).RequestID == r.ID {
				a.t.del(keyStr(tIdem, scope))
			}
		}
		a.t.del(keyStr(tRequest, id))
	}))
	step(a.pruneEvents())
	step(a.pruneIndex(tAccessDead, s-a.m.accessKeyRetention(), false, func(id string) {
		if ak := a.accessKey(id); ak != nil {
			a.dropAccessKey(ak)
		}
	}))
	return behind
}

// pruneIndex removes up to pruneBatch entries of a time index before `before`, calling
// drop with each one's id; it reports whether it stopped at the bound.
//
// With resume, the scan starts where the last one left off (meta.PrunedTo): only for an
// index whose new entries are never timed below a bound a prune has reached — the
// expiry of a nonce or proposal result (stamp + a retention), a session's or a settled
// request's stamp (bound: stamp - a retention) — so that nothing lands behind the mark.
// An access key's dead time may be any expiry its grant named; that index is scanned
// from its start (few keys, pruned rarely).
func (a *applier) pruneIndex(table string, before int64, resume bool, drop func(id string)) bool {
	lower := key(table)
	if resume {
		from, ok := a.m.PrunedTo[table]
		if ok && from >= before {
			return false // everything before `from` is gone already
		}
		if ok {
			lower = keyAtBound(table, from)
		}
	}
	var keys [][]byte
	scanKeys(a.t, lower, keyAtBound(table, before), func(k []byte) bool {
		keys = append(keys, append([]byte(nil), k...))
		return len(keys) < pruneBatch
	})
	var last int64
	for _, k := range keys {
		d := statedb.NewKeyDecoder(k)
		d.Table()
		last = d.Int64()
		id := d.Text()
		if err := d.Done(); err != nil {
			fault("state: index %s: %w", table, err)
		}
		a.t.delRaw(k)
		drop(id)
	}
	behind := len(keys) == pruneBatch
	if resume {
		mark := before // all gone below the bound
		if behind {
			mark = last // stopped at pruneBatch: entries at this time may remain
		}
		a.m.markPruned(table, mark)
	}
	return behind
}
