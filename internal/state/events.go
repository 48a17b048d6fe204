package state

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/statedb"
)

// The event log (API.md "Events"): every change a client may want to hear about is
// written here by Apply, in the same batch as the change, so an event exists exactly when
// its change does, in log order, with the same sequence numbers on every node. It is kept
// for the event retention (default 7 days), pruned by stamps like the rest. The activity
// stream and webhooks read it; nothing in it is a token, a secret, a share or a signed
// body.

const (
	tEvent = "event" // seq → EventRecord
	// EventRetentionMs is how long events are kept by default; the admin sets another
	// within [MinEventRetentionMs, MaxEventRetentionMs].
	EventRetentionMs    = 7 * 24 * 60 * 60 * 1000
	MinEventRetentionMs = 60 * 60 * 1000
	MaxEventRetentionMs = 366 * 24 * 60 * 60 * 1000
)

// EventRecord is an event as the state keeps it: the wire event's fields and who may see
// it (never served).
type EventRecord struct {
	Seq  uint64        `json:"seq"`
	Type string        `json:"type"`
	Time int64         `json:"time_ms"`
	Data api.EventData `json:"data"`
	// Owner is the user whose key, request or access key it concerns (0: none, e.g. a
	// policy change); Deciders are the users who may decide the approval it concerns.
	Owner    uint64   `json:"owner,omitempty"`
	Deciders []uint64 `json:"deciders,omitempty"`
}

// View is the event as the API serves it.
func (e *EventRecord) View() api.Event {
	return api.Event{ID: EventID(e.Seq), Seq: e.Seq, Type: e.Type, Time: time.UnixMilli(e.Time).UTC(), Data: e.Data}
}

// EventID is the id of the event with seq: "evt_" and 16 hex digits.
func EventID(seq uint64) string { return fmt.Sprintf("evt_%016x", seq) }

// VisibleTo reports whether a user sees the event: events about its own keys, requests
// and access keys, and the approvals it may decide. (The admin sees all.)
func (e *EventRecord) VisibleTo(user uint64) bool {
	return user != 0 && (e.Owner == user || slices.Contains(e.Deciders, user))
}

// record appends an event of the entry being applied.
func (a *applier) record(typ string, owner uint64, deciders []uint64, d api.EventData) {
	if !a.m.EventsOn {
		return
	}
	a.m.EventSeq++
	e := EventRecord{Seq: a.m.EventSeq, Type: typ, Time: a.stamp, Data: d, Owner: owner, Deciders: deciders}
	if len(e.Data.Detail) > 256 {
		e.Data.Detail = e.Data.Detail[:256]
	}
	a.t.setRaw(keyU64(tEvent, e.Seq), mustJSON(&e))
	// Events are hashed in checkpoints like objects: they count in the spacing.
	a.t.objects++
}

// requestEvent records an event about a request.
func (a *applier) requestEvent(typ string, r *Request, actor string) {
	d := api.EventData{RequestID: r.ID, Kind: r.Kind, KeyID: r.KeyID, ApprovalID: r.ApprovalID, UserID: r.Owner, Actor: actor, Status: r.Status}
	if r.Error != nil {
		d.Code, d.Detail = r.Error.Code, r.Error.Detail
	}
	var deciders []uint64
	if r.ApprovalID != "" {
		if ap := a.approval(r.ApprovalID); ap != nil {
			deciders = ap.deciders()
		}
	}
	a.record(typ, r.Owner, deciders, d)
}

// deciders lists an approval's group members.
func (ap *Approval) deciders() []uint64 {
	var out []uint64
	for _, g := range ap.Groups {
		out = append(out, g.Members...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// eventRetention is how long events are kept (ms).
func (m *meta) eventRetention() int64 {
	if m.EventRetentionMs > 0 {
		return m.EventRetentionMs
	}
	return EventRetentionMs
}

// pruneEvents drops events older than the retention, oldest first (bounded per entry).
func (a *applier) pruneEvents() (behind bool) {
	cutoff := a.stamp - a.m.eventRetention()
	var old [][]byte
	err := a.t.Scan(keyU64(tEvent, uint64(a.m.PrunedTo[tEvent])), statedb.PrefixEnd(key(tEvent)), func(k, v []byte) error {
		var e EventRecord
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		if e.Time >= cutoff {
			return statedb.ErrStop
		}
		old = append(old, slices.Clone(k))
		if len(old) == pruneBatch {
			return statedb.ErrStop
		}
		return nil
	})
	if err != nil {
		fault("state: prune events: %w", err)
	}
	for _, k := range old {
		a.t.delRaw(k)
	}
	if len(old) > 0 {
		// Events are numbered in order: the next scan starts after the last one dropped
		// (meta.PrunedTo), not over their tombstones.
		d := statedb.NewKeyDecoder(old[len(old)-1])
		d.Table()
		a.m.markPruned(tEvent, int64(d.Uint64()+1))
	}
	a.t.objects -= int64(len(old))
	return len(old) == pruneBatch
}

// Events returns the events with seq > after that user may see (every one when all),
// ascending, at most limit, reading at most scan records. last is the seq of the last
// record read (after, when none): a reader continues after it, whether or not it saw that
// record.
func (f *FSM) Events(user uint64, all bool, after uint64, limit, scan int) (out []EventRecord, last uint64) {
	last = after
	if limit <= 0 || after == ^uint64(0) {
		// (after+1 would wrap to the start of the log.)
		return nil, last
	}
	f.read(func(r readKV, _ *meta) {
		read := 0
		err := r.Scan(keyU64(tEvent, after+1), statedb.PrefixEnd(key(tEvent)), func(_, v []byte) error {
			var e EventRecord
			decodeRecord(v, &e)
			read++
			last = e.Seq
			if all || e.VisibleTo(user) {
				out = append(out, e)
			}
			if len(out) >= limit || read >= scan {
				return statedb.ErrStop
			}
			return nil
		})
		if err != nil {
			fault("state: read events: %w", err)
		}
	})
	return out, last
}

// EventSeq is the seq of the newest event (0: none yet).
func (f *FSM) EventSeq() uint64 { return f.meta().EventSeq }

// OldestEvent is the seq of the oldest event kept (0: none).
func (f *FSM) OldestEvent() uint64 {
	var seq uint64
	f.read(func(r readKV, m *meta) {
		_ = r.Scan(keyU64(tEvent, uint64(m.PrunedTo[tEvent])), statedb.PrefixEnd(key(tEvent)), func(k, _ []byte) error {
			d := statedb.NewKeyDecoder(k)
			d.Table()
			seq = d.Uint64()
			return statedb.ErrStop
		})
	})
	return seq
}

// WaitEvent blocks until an event with seq > after exists or ctx ends.
func (f *FSM) WaitEvent(ctx context.Context, after uint64) error {
	for {
		f.notifyMu.Lock()
		ch := f.notify
		f.notifyMu.Unlock()
		if f.meta().EventSeq > after {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
