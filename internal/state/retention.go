package state

import (
	"fmt"

	"github.com/custos/custos/internal/api"
)

// Retention is configuration, replicated (DESIGN.md "Replicated state"): the admin sets
// how long finished requests and dead access keys are kept by a signed request that every
// node applies, so every node prunes the same records at the same entry (pruning is
// judged by entry stamps only). Nonces live for their replay window and proposal
// results for the entry node's retries, both fixed by the protocol; the audit is kept
// until the admin prunes a range it exported.

// setRetention applies PUT /v1/admin/retention: each value given replaces the current
// one, within its bounds.
func (a *applier) setRetention(b *RetentionBody) Result {
	if b == nil {
		return refuse("request.malformed", "no retention given")
	}
	if b.NoncesS != 0 || b.SessionNoncesS != 0 || b.ProposalResultsS != 0 || b.Audit != "" {
		return refuse("request.malformed", "only finished_requests_s, dead_access_keys_s, events_s and key_deletion_delay_s can be set")
	}
	check := func(name string, s, lo, hi int64) (int64, Result) {
		if s == 0 {
			return 0, Result{}
		}
		if s < lo/1000 || s > hi/1000 {
			return 0, refuse("request.malformed", fmt.Sprintf("%s must be between %d and %d seconds", name, lo/1000, hi/1000))
		}
		return s * 1000, Result{}
	}
	req, r := check("finished_requests_s", b.FinishedRequestsS, MinRequestRetentionMs, MaxRequestRetentionMs)
	if !r.OK() {
		return r
	}
	ak, r := check("dead_access_keys_s", b.DeadAccessKeysS, MinAccessKeyRetentionMs, MaxAccessKeyRetentionMs)
	if !r.OK() {
		return r
	}
	ev, r := check("events_s", b.EventsS, MinEventRetentionMs, MaxEventRetentionMs)
	if !r.OK() {
		return r
	}
	del, r := check("key_deletion_delay_s", b.KeyDeletionDelayS, MinKeyDeletionDelayMs, MaxKeyDeletionDelayMs)
	if !r.OK() {
		return r
	}
	if req == 0 && ak == 0 && ev == 0 && del == 0 {
		return refuse("request.malformed", "set finished_requests_s, dead_access_keys_s, events_s or key_deletion_delay_s")
	}
	if del != 0 {
		// Applies to deletions scheduled from now on; those scheduled keep their delete_at.
		a.m.KeyDeletionDelayMs = del
	}
	if ev != 0 {
		a.m.EventRetentionMs = ev
	}
	if req != 0 {
		a.m.RequestRetentionMs = req
	}
	if ak != 0 {
		a.m.AccessKeyRetentionMs = ak
	}
	return Result{}
}

// Retention returns the cluster's retention settings as GET /v1/admin/retention answers
// them.
func (f *FSM) Retention() api.Retention {
	m := f.meta()
	return api.Retention{
		FinishedRequestsS: m.requestRetention() / 1000,
		DeadAccessKeysS:   m.accessKeyRetention() / 1000,
		NoncesS:           NonceRetentionMs / 1000,
		SessionNoncesS:    m.sessionRetention() / 1000,
		ProposalResultsS:  ProposalRetentionMs / 1000,
		Audit:             "forever (until the admin prunes an exported range)",
		EventsS:           m.eventRetention() / 1000,
		KeyDeletionDelayS: m.keyDeletionDelay() / 1000,
	}
}
