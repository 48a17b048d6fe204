package state

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/custos/custos/internal/policy"
	"github.com/custos/custos/internal/statedb"
)

// Velocity ledgers (count_velocity and amount_velocity policies): per policy, one entry
// per admitted request in its scope (keyed by the request's stamp) and a running total of
// the entries present. A request's evaluation first drops the entries that left the
// window (stamps only move forward, so each entry leaves once), after which the total is
// the window's: the cost per request does not grow with the traffic in the window. A
// request that did not sign (failed, denied) is taken out again.

const (
	tVelocity      = "vel"       // (policy id, stamp, request id) → amount (sats, 8 bytes)
	tVelocityTotal = "vel.total" // policy id → velocityTotal of its entries present
	// velocityDropBatch bounds the entries one evaluation drops; past it (a long pause,
	// then a burst), that evaluation sums the window itself and the rest are dropped by
	// the next ones.
	velocityDropBatch = 1024
)

// velocityTotal is the sum and count of a policy's ledger entries.
type velocityTotal struct {
	Sats  int64 `json:"sats"`
	Count int64 `json:"count"`
}

func velocityKey(policyID string, stamp int64, requestID string) []byte {
	return statedb.AppendString(statedb.AppendInt64(velocityPrefix(policyID), stamp), requestID)
}

func velocityPrefix(policyID string) []byte {
	return statedb.AppendString(key(tVelocity), policyID)
}

func loadTotal(r readKV, policyID string) velocityTotal {
	var t velocityTotal
	raw, err := r.Get(keyStr(tVelocityTotal, policyID))
	switch {
	case errors.Is(err, statedb.ErrNotFound):
		return t
	case err != nil:
		fault("state: read velocity total: %w", err)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		fault("state: decode velocity total: %w", err)
	}
	return t
}

func (a *applier) storeTotal(policyID string, t velocityTotal) {
	a.t.setRaw(keyStr(tVelocityTotal, policyID), mustJSON(&t))
}

// scanLedger calls fn with each entry of a policy's ledger with stamp in [from, to),
// until fn returns false.
func scanLedger(r readKV, policyID string, from, to int64, fn func(k []byte, sats int64) bool) {
	prefix := velocityPrefix(policyID)
	lower := statedb.AppendInt64(slices.Clone(prefix), from)
	if from <= 0 {
		lower = prefix
	}
	err := r.Scan(lower, statedb.AppendInt64(slices.Clone(prefix), to), func(k, v []byte) error {
		if !fn(k, int64(decodeU64(v))) {
			return statedb.ErrStop
		}
		return nil
	})
	if err != nil {
		fault("state: scan velocity ledger: %w", err)
	}
}

// windowSum sums a policy's entries from since on, entry by entry (the fallback).
func windowSum(r readKV, policyID string, since int64) (sats, count int64) {
	scanLedger(r, policyID, since, 1<<62, func(_ []byte, v int64) bool {
		sats += v
		count++
		return true
	})
	return sats, count
}

// ledger is the velocity history as Apply reads it: it drops what left the window.
type ledger struct{ a *applier }

func (l ledger) Since(policyID string, since int64) (sats, count int64) {
	a := l.a
	t := loadTotal(a.t, policyID)
	var stale [][]byte
	var staleSats int64
	scanLedger(a.t, policyID, 0, since, func(k []byte, v int64) bool {
		stale = append(stale, slices.Clone(k))
		staleSats += v
		return len(stale) < velocityDropBatch
	})
	for _, k := range stale {
		a.t.delRaw(k)
	}
	if len(stale) > 0 {
		t.Sats -= staleSats
		t.Count -= int64(len(stale))
		a.storeTotal(policyID, t)
	}
	if len(stale) == velocityDropBatch {
		return windowSum(a.t, policyID, since)
	}
	return t.Sats, t.Count
}

// readLedger reads the ledgers without changing them (an evaluation's dry run).
type readLedger struct{ a *applier }

func (l readLedger) Since(policyID string, since int64) (sats, count int64) {
	t := loadTotal(l.a.t, policyID)
	var n int
	scanLedger(l.a.t, policyID, 0, since, func(_ []byte, v int64) bool {
		t.Sats -= v
		t.Count--
		n++
		return n < velocityDropBatch
	})
	if n == velocityDropBatch {
		return windowSum(l.a.t, policyID, since)
	}
	return t.Sats, t.Count
}

// evaluate judges a request against the active policies.
func (a *applier) evaluate(pr *policy.Request) policy.Result {
	pr.StampMs = a.stamp
	return a.policies().Evaluate(pr, ledger{a})
}

// count records an admitted request in the ledgers of the velocity policies in whose
// scope it is.
func (a *applier) count(r *Request, res *policy.Result) {
	var amount int64
	if r.Amount != nil && *r.Amount > 0 {
		amount = *r.Amount
	}
	for _, p := range res.Counted {
		a.t.setRaw(velocityKey(p.ID, r.countedAt(), r.ID), u64Value(uint64(amount)))
		t := loadTotal(a.t, p.ID)
		t.Sats += amount
		t.Count++
		a.storeTotal(p.ID, t)
		r.Counted = append(r.Counted, p.ID)
	}
}

// uncount takes a request that did not sign (failed, denied) out of the ledgers it is
// still in.
func (a *applier) uncount(r *Request) {
	for _, id := range r.Counted {
		k := velocityKey(id, r.countedAt(), r.ID)
		raw, err := a.t.Get(k)
		if errors.Is(err, statedb.ErrNotFound) {
			continue // it left the window already
		}
		if err != nil {
			fault("state: read velocity entry: %w", err)
		}
		a.t.delRaw(k)
		t := loadTotal(a.t, id)
		t.Sats -= int64(decodeU64(raw))
		t.Count--
		a.storeTotal(id, t)
	}
	r.Counted = nil
}

// dropLedger forgets an archived policy's ledger.
func (a *applier) dropLedger(policyID string) {
	prefix := velocityPrefix(policyID)
	a.t.delRange(prefix, statedb.PrefixEnd(prefix))
	a.t.delRaw(keyStr(tVelocityTotal, policyID))
}

// ledgerWithout is the ledger less one request's own entries: a request judged again
// when it runs (rejudge) is not counted twice.
type ledgerWithout struct {
	a *applier
	r *Request
}

func (l ledgerWithout) Since(policyID string, since int64) (sats, count int64) {
	sats, count = ledger{l.a}.Since(policyID, since)
	if l.r.countedAt() < since || !slices.Contains(l.r.Counted, policyID) {
		return sats, count
	}
	raw, err := l.a.t.Get(velocityKey(policyID, l.r.countedAt(), l.r.ID))
	switch {
	case errors.Is(err, statedb.ErrNotFound):
		return sats, count
	case err != nil:
		fault("state: read velocity entry: %w", err)
	}
	return sats - int64(decodeU64(raw)), count - 1
}

// countedAt is the stamp under which the request is in the ledgers: its admission, or —
// once an approved request runs — that run (recount).
func (r *Request) countedAt() int64 {
	if r.CountedAt != 0 {
		return r.CountedAt
	}
	return r.CreatedAt
}

// recount moves an approved request's ledger entries to the stamp at which it runs: what
// the window limits is when requests run, and a request that waited for approval longer
// than the window must not run next to others unseen.
func (a *applier) recount(r *Request) {
	if len(r.Counted) == 0 || r.countedAt() == a.stamp {
		return
	}
	ids := slices.Clone(r.Counted)
	a.uncount(r)
	r.CountedAt = a.stamp
	var amount int64
	if r.Amount != nil && *r.Amount > 0 {
		amount = *r.Amount
	}
	for _, id := range ids {
		a.t.setRaw(velocityKey(id, r.CountedAt, r.ID), u64Value(uint64(amount)))
		t := loadTotal(a.t, id)
		t.Sats += amount
		t.Count++
		a.storeTotal(id, t)
	}
	r.Counted = ids
}
