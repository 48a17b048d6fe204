package state

import (
	"fmt"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/internal/policy"
)

// Key lifecycle (API.md "Key lifecycle"): derivation (a read), deletion with a delay and
// restore. Deletion follows Sigpair's advice and AWS KMS's habit: the caller signs the
// DELETE within the last DeleteSignatureWindowS seconds (re-authentication), the key
// stops signing at once, waits the cluster's deletion delay (restore cancels), and at its
// delete_at every node's FSM marks it deleted at the same entry — the first entry stamped
// at or after it; the leader writes one when one is due — and every node erases the
// key's data key and share from its keystore (crypto-erase; a node that was down erases
// when it applies that entry or, after a snapshot, when its reconciler sees the key).

// Key statuses of the lifecycle.
const (
	KeyDeletionScheduled = api.KeyDeletionScheduled
	KeyDeleted           = api.KeyDeleted
)

// KindDelete is a key deletion request.
const KindDelete = api.KindDelete

// Deletion settings.
const (
	// DeleteSignatureWindowS is how recent a DELETE's signature must be (re-authentication).
	DeleteSignatureWindowS = 60
	// KeyDeletionDelayMs is the default delay between DELETE and erasure (7 days).
	KeyDeletionDelayMs = 7 * 24 * 60 * 60 * 1000
	// MinKeyDeletionDelayMs and MaxKeyDeletionDelayMs bound the admin's setting. The
	// minimum is short so that a test cluster can run the whole lifecycle; production
	// clusters keep days (docs/api.md says so).
	MinKeyDeletionDelayMs = 1000
	MaxKeyDeletionDelayMs = 366 * 24 * 60 * 60 * 1000
)

// tKeyDelete indexes keys whose deletion is scheduled: (delete at, key id) → "".
const tKeyDelete = "key.del"

// keyDeletionDelay is the cluster's deletion delay (ms).
func (m *meta) keyDeletionDelay() int64 {
	if m.KeyDeletionDelayMs > 0 {
		return m.KeyDeletionDelayMs
	}
	return KeyDeletionDelayMs
}

// keyDerive judges POST /v1/keys/{key_id}/derive: a read of the key's public data (the
// HTTP layer computes the child from the key the state holds). Ed25519 keys have no
// derivation (400); a key without a public key (generating, failed) is not active (409).
func (a *applier) keyDerive(c *Call, p principal) Result {
	if !p.has(PermKeysRead) {
		return refuse(api.CodePermDenied, "missing permission keys:read")
	}
	k := a.key(c.KeyID)
	if !p.sees(k) {
		return refuse(api.CodeKeyNotFound, "no such key")
	}
	b := c.Derive
	if b == nil {
		return refuse(api.CodeRequestMalformed, "no body")
	}
	if k.Curve != CurveSecp256k1 {
		return refuse(api.CodeRequestMalformed, "ed25519 keys have no derivation; derive is for secp256k1 keys")
	}
	if len(k.PublicKey) == 0 || len(k.ChainCode) != 32 {
		return refuse(api.CodeKeyNotActive, "key is "+k.Status+": it has no public key to derive from yet")
	}
	if _, err := ParsePath(DerivePath(b)); err != nil {
		return refuse(api.CodeRequestMalformed, "path: "+err.Error())
	}
	if _, err := btc.Params(NetworkOf(b)); err != nil {
		return refuse(api.CodeRequestMalformed, "network: "+err.Error())
	}
	return Result{KeyID: k.ID}
}

// DerivePath is a derive body's path ("m", the key itself, when not given).
func DerivePath(b *api.DeriveBody) string {
	if b.Path == "" {
		return "m"
	}
	return b.Path
}

// NetworkOf is a derive body's network ("mainnet" when not given).
func NetworkOf(b *api.DeriveBody) string {
	if b.Network == "" {
		return "mainnet"
	}
	return b.Network
}

// keyDelete judges DELETE /v1/keys/{key_id}: a user's own key (access keys cannot
// delete), keys:delete, a signature created in the last DeleteSignatureWindowS seconds,
// an active key; then the key.delete policies (block, or an approval first), then the
// deletion is scheduled.
func (a *applier) keyDelete(c *Call, p principal) Result {
	k, res := a.ownersKey(c, p, "delete keys; DELETE /v1/keys/{key_id} is for the key's owner")
	if !res.OK() {
		return res
	}
	if c.Caller.Created == 0 || c.Caller.Created < a.stamp/1000-DeleteSignatureWindowS {
		return refuse(api.CodeAuthSignatureExpired, fmt.Sprintf("deleting a key needs a request signature created in the last %d s: sign the DELETE again and send it at once", DeleteSignatureWindowS))
	}
	switch k.Status {
	case KeyActive:
		if k.Resharing != nil {
			return refuse(api.CodeRequestConflict, "a reshare of this key is running ("+k.Resharing.RequestID+"); delete it once the reshare ended")
		}
	case KeyDeletionScheduled:
		return refuse(api.CodeKeyNotActive, "the key's deletion is already scheduled for "+millis(k.DeleteAt).Format(time.RFC3339)+"; POST /v1/keys/"+k.ID+"/restore cancels it")
	default:
		return refuse(api.CodeKeyNotActive, "key is "+k.Status)
	}
	if a.openRequests() >= MaxOpenRequests {
		return refuse(api.CodeRateLimited, "too many requests in flight")
	}
	id := a.derivedID("req_")
	if res := a.freshRequestID(id); !res.OK() {
		return res
	}
	r := &Request{
		ID: id, Kind: KindDelete, Status: StatusScheduled, KeyID: k.ID, Owner: p.user.ID,
		Actor: c.Caller.Actor(), CreatedAt: a.stamp, UpdatedAt: a.stamp, Signed: c.Signed,
	}
	if a.policies().Len() > 0 {
		res := a.evaluate(&policy.Request{Activity: api.ActivityKeyDelete, UserID: p.user.ID, KeyID: k.ID, KeyLabel: k.Label})
		switch res.Decision {
		case api.ActionBlock:
			out := a.block(r, &res)
			return out
		case api.ActionRequireApproval:
			r.Status = StatusPendingApproval
			a.addRequest(r)
			a.count(r, &res)
			a.requireApproval(r, &res, api.ApprovalSummary{KeyID: k.ID, Route: c.Signed.Method + " " + c.Signed.Path},
				api.Initiator{UserID: p.user.ID})
			return Result{RequestID: r.ID, KeyID: k.ID, ApprovalID: r.ApprovalID}
		}
		a.auditMatches(r.Actor, r.ID, &res)
		a.addRequest(r)
		a.count(r, &res)
	} else {
		a.addRequest(r)
	}
	a.scheduleDeletion(r, k)
	return Result{RequestID: r.ID, KeyID: k.ID}
}

// ownersKey is the key a deletion or restore names, for its owner only (not an access
// key: what is refused says what access keys cannot do), with keys:delete.
func (a *applier) ownersKey(c *Call, p principal, what string) (*Key, Result) {
	if p.ak != nil {
		return nil, refuse(api.CodePermDenied, "access keys cannot "+what)
	}
	if !p.has(PermKeysDelete) {
		return nil, refuse(api.CodePermDenied, "missing permission keys:delete")
	}
	k := a.key(c.KeyID)
	if !p.sees(k) {
		return nil, refuse(api.CodeKeyNotFound, "no such key")
	}
	return k, Result{}
}

// scheduleDeletion starts a key's deletion delay (the request r waits for it, open).
func (a *applier) scheduleDeletion(r *Request, k *Key) {
	k.Status = KeyDeletionScheduled
	k.DeleteAt = a.stamp + a.m.keyDeletionDelay()
	k.DeleteRequest = r.ID
	a.t.setRaw(keyAt(tKeyDelete, k.DeleteAt, k.ID), nil)
	a.m.Deletions++
	r.Status, r.NotBefore, r.UpdatedAt = StatusScheduled, k.DeleteAt, a.stamp
	// A deletion is not a ceremony: attempt 1 says it is under way (the leader's loop
	// only writes the entry that completes it, once it is due).
	r.Attempt = 1
	a.audit(r.Actor, "key.deletion_scheduled", k.ID, "allowed", "")
	a.keyEvent(api.EventKeyDeletionScheduled, k, r, r.Actor)
}

// keyEvent records an event about a key's lifecycle.
func (a *applier) keyEvent(typ string, k *Key, r *Request, actor string) {
	d := api.EventData{KeyID: k.ID, UserID: k.Owner, Actor: actor, Status: k.Status}
	if r != nil {
		d.RequestID, d.Kind = r.ID, r.Kind
	}
	if k.DeleteAt != 0 && k.Status == KeyDeletionScheduled {
		d.Detail = "delete_at " + millis(k.DeleteAt).Format(time.RFC3339)
	}
	a.record(typ, k.Owner, nil, d)
}

// keyRestore applies POST /v1/keys/{key_id}/restore: before delete_at, the key is active
// again and its deletion request is denied (request.cancelled).
func (a *applier) keyRestore(c *Call, p principal) Result {
	k, res := a.ownersKey(c, p, "restore keys; the route is for the key's owner")
	if !res.OK() {
		return res
	}
	if k.Status != KeyDeletionScheduled {
		if k.Status == KeyDeleted {
			return refuse(api.CodeKeyNotActive, "the key was deleted at "+millis(k.DeletedAt).Format(time.RFC3339)+"; its shares are erased and it cannot be restored")
		}
		return refuse(api.CodeKeyNotActive, "the key's deletion is not scheduled (key is "+k.Status+")")
	}
	a.cancelDeletion(k, c.Caller.Actor())
	return Result{KeyID: k.ID, RequestID: k.DeleteRequest}
}

// cancelDeletion makes a key whose deletion is scheduled active again.
func (a *applier) cancelDeletion(k *Key, actor string) {
	a.t.delRaw(keyAt(tKeyDelete, k.DeleteAt, k.ID))
	a.m.Deletions--
	reqID := k.DeleteRequest
	k.Status, k.DeleteAt, k.DeleteRequest = KeyActive, 0, ""
	var r *Request
	if reqID != "" {
		if r = a.request(reqID); r != nil && !Final(r.Status) {
			a.deny(r, api.CodeRequestCancelled, "the key was restored", actor)
		}
	}
	a.audit(actor, "key.restored", k.ID, "allowed", "")
	a.keyEvent(api.EventKeyDeletionCancelled, k, r, actor)
}

// completeDeletions deletes the keys whose delete_at came by this entry's stamp (bounded
// per entry; the rest at the next ones). Every node applies it at the same entry and
// erases its share when it sees the EventKeyDeleted hint (or the key's status later).
func (a *applier) completeDeletions() {
	if a.m.Deletions <= 0 {
		return
	}
	for _, id := range a.due(tKeyDelete) {
		k := a.key(id)
		if k == nil || k.Status != KeyDeletionScheduled {
			continue
		}
		a.t.delRaw(keyAt(tKeyDelete, k.DeleteAt, k.ID))
		a.m.Deletions--
		if k.Resharing != nil {
			// A membership change was moving it: the reshare ends with the key.
			if rr := a.request(k.Resharing.RequestID); rr != nil && !Final(rr.Status) {
				a.failRequest(rr, api.CodeKeyNotActive, "the key was deleted", "cluster")
			}
			k.Resharing = nil
		}
		k.Status, k.DeletedAt = KeyDeleted, a.stamp
		var r *Request
		if k.DeleteRequest != "" {
			if r = a.request(k.DeleteRequest); r != nil && !Final(r.Status) {
				a.settle(r, StatusActive)
			}
		}
		a.audit("cluster", "key.deleted", k.ID, "allowed", "")
		a.keyEvent(api.EventKeyDeleted, k, r, "cluster")
		a.emit(EventKeyDeleted, k.DeleteRequest, k.ID)
		a.emit(EventSettled, k.DeleteRequest, k.ID)
	}
}

// releaseDeletion schedules an approved deletion (its approval passed and its delay is
// over), judged again: the initiator still active with keys:delete, the key still
// active.
func (a *applier) releaseDeletion(r *Request, actor string) Result {
	u := a.user(r.Owner)
	k := a.key(r.KeyID)
	switch {
	case u == nil || u.Status != UserActive || !u.Has(PermKeysDelete):
		a.failRequest(r, api.CodePermDenied, "not run: the initiator is disabled or no longer holds keys:delete", actor)
	case k == nil || k.Status != KeyActive:
		status := "gone"
		if k != nil {
			status = k.Status
		}
		a.failRequest(r, api.CodeKeyNotActive, "not run: the key is "+status, actor)
	default:
		if res := a.rejudge(r); !res.OK() {
			a.failRequest(r, res.Code, "not run: "+res.Detail, actor)
			return Result{RequestID: r.ID}
		}
		a.recount(r)
		a.scheduleDeletion(r, k)
	}
	return Result{RequestID: r.ID, KeyID: r.KeyID}
}
