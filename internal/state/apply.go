package state

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/policy"
)

// applier applies one entry; it holds the entry's stamp and collects events.
type applier struct {
	t        *tx
	m        *meta
	pols     **policy.Set // the batch's active policies (governance.go)
	stamp    int64
	index    uint64
	verifier Verifier
	authn    *authn.Verifier // through memo
	memo     *authn.Memo     // the batch's signatures verified ahead (ahead.go)
	events   *[]Event
	// checkpointHere is set by a checkpoint request: the FSM checkpoints at this entry.
	checkpointHere bool
	// curReport is the signed report being applied (nil for other entries).
	curReport *Report
}

func (a *applier) emit(kind, requestID, keyID string) {
	*a.events = append(*a.events, Event{Kind: kind, RequestID: requestID, KeyID: keyID, Stamp: a.stamp})
}

func refuse(code, detail string) Result { return Result{Code: code, Detail: detail} }

func (a *applier) clusterInit(c *ClusterInit) Result {
	if len(a.m.Members) > 0 {
		return refuse("request.conflict", "cluster already initialised")
	}
	if c.Name == "" || len(c.Members) < 2 || c.Threshold < 2 || c.Threshold > len(c.Members) {
		return refuse("request.malformed", "invalid cluster definition")
	}
	if len(c.AdminPublicKey) != 0 && len(c.AdminPublicKey) != ed25519.PublicKeySize {
		return refuse("request.malformed", "admin public key must be 32 bytes")
	}
	a.m.Strict = c.Strict
	a.m.EventsOn = c.Events
	if len(c.AdminPublicKey) > 0 {
		a.m.AdminPublicKey = slices.Clone(c.AdminPublicKey)
		a.m.AdminKeyGenesis = slices.Clone(c.AdminPublicKey)
	}
	a.m.Name = c.Name
	a.m.Threshold = c.Threshold
	a.m.Members = slices.Clone(c.Members)
	slices.SortFunc(a.m.Members, func(x, y Member) int { return cmpString(x.ID, y.ID) })
	a.audit("cluster", "cluster.init", c.Name, "allowed", "")
	return Result{}
}

func cmpString(x, y string) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// call authenticates and authorises an API request in API.md's order, then acts on it.
// Every call is audited; a call by an access key that exists is also appended to that
// key's own log, allowed or refused.
func (a *applier) call(c *Call) Result {
	if c.ProposalID != "" {
		if p := a.proposal(c.ProposalID); p != nil {
			// A retry of a proposal that already applied: same answer, no new effect
			// and no new audit entry.
			return p.Result
		}
	}
	return a.callFresh(c)
}

// callFresh is call for a proposal known not to have applied before (submit looked
// its id up before checking the caller's signature, as a retry may come after its
// window; the lookup is not repeated).
func (a *applier) callFresh(c *Call) Result {
	res := a.callInner(c)
	if c.ProposalID != "" && a.m.Proposals < MaxProposals {
		a.addProposal(c.ProposalID, ProposalResult{Result: res, Expires: a.stamp + ProposalRetentionMs})
	}
	outcome := "allowed"
	if !res.OK() {
		outcome = "refused"
	}
	object := c.KeyID
	switch {
	case res.RequestID != "":
		object = res.RequestID
	case res.AccessKeyID != "":
		object = res.AccessKeyID
	case res.WebhookID != "":
		object = res.WebhookID
	case c.AccessKeyID != "":
		object = c.AccessKeyID
	case res.UserID != 0:
		object = "user:" + strconv.FormatUint(res.UserID, 10)
	case c.TargetUserID != 0:
		object = "user:" + strconv.FormatUint(c.TargetUserID, 10)
	case c.RequestID != "":
		object = c.RequestID
	case c.Op == OpAuditPrune && res.OK():
		object = "audit:" + strconv.FormatUint(a.m.AuditPrunedSeq, 10)
	}
	a.audit(c.Caller.Actor(), c.Op, object, outcome, res.Code)
	if c.Caller.Kind == CallerAccessKey {
		a.logAccess(c.Caller.AccessKeyID, c.Op, object, outcome, res.Code)
	}
	return res
}

// principal is who a call acts as: a user, or an access key acting as its grantor within
// its grant.
type principal struct {
	user *User      // the user, or the access key's grantor
	ak   *AccessKey // nil for a user
}

// has reports whether the principal holds p now: a user's own permission, or for an
// access key its grant ∩ the grantor's current permissions, never access:manage.
func (p principal) has(perm string) bool {
	if p.user == nil || !p.user.Has(perm) {
		return false
	}
	if p.ak != nil {
		return perm != PermAccessManage && slices.Contains(p.ak.Permissions, perm)
	}
	return true
}

// sees reports whether the principal may see or use key keyID: the grantor's own keys,
// limited to the access key's key_ids when it has them.
func (p principal) sees(k *Key) bool {
	return k != nil && p.user != nil && k.Owner == p.user.ID && (p.ak == nil || p.ak.Covers(k.ID))
}

func (a *applier) callInner(c *Call) Result {
	p, r := a.authenticate(&c.Caller)
	if !r.OK() {
		return r
	}
	if c.Malformed != "" {
		return refuse("request.malformed", c.Malformed)
	}
	admin := c.Caller.Kind == CallerAdmin
	if c.Caller.SigpairOnly && c.Op != OpSigpairCreate {
		return refuse("perm.denied", "a Sigpair-style admin token is accepted only on /v1/create-user")
	}
	switch c.Op {
	case OpClusterGet:
		if p.ak != nil {
			return refuse("perm.denied", "this route is for the admin and users")
		}
		return Result{}
	case OpKeyReshare, OpKeyRefresh:
		if !admin {
			return refuse("perm.denied", "resharing a key is the admin's")
		}
		return a.keyReshare(c)
	case OpMemberList, OpMemberAdd, OpMemberRemove, OpMemberReplace:
		if !admin {
			return refuse("perm.denied", "cluster membership is the admin's")
		}
		return a.memberOp(c)
	case OpWebhookCreate, OpWebhookList, OpWebhookDelete, OpWebhookDeliveries:
		if !admin {
			return refuse("perm.denied", "webhooks are the admin's")
		}
		return a.webhookOp(c)
	case OpUserCreate, OpSigpairCreate, OpUserList, OpUserGet, OpUserDisable, OpUserEnable,
		OpUserRevokeTokens, OpUserPermissions, OpAuditList, OpAdminKeyRotate, OpAuditPrune,
		OpRetentionGet, OpRetentionSet:
		if !admin {
			return refuse("perm.denied", "this route is for the admin")
		}
		return a.adminOp(c)
	case OpRequestGet:
		if admin {
			if a.request(c.RequestID) == nil {
				return refuse("request.not_found", "no such request")
			}
			return Result{RequestID: c.RequestID}
		}
		if p.user == nil {
			return refuse("perm.denied", "this route is for the admin, users and access keys")
		}
		return a.userOp(c, p)
	case OpPolicyCreate, OpPolicyReplace, OpPolicyArchive, OpPolicyList, OpPolicyGet:
		if p.ak != nil {
			return refuse("perm.denied", "access keys cannot read or change policies")
		}
		return a.policyOp(c, p)
	case OpPolicyEvaluate:
		return a.evaluateOp(c, p)
	case OpApprovalList, OpApprovalGet, OpApprovalDecide:
		return a.approvalOp(c, p)
	case OpRequestCancel:
		return a.cancel(c, p)
	case OpEventList:
		if p.ak != nil {
			return refuse("perm.denied", "the activity stream is for the admin and users")
		}
		return Result{}
	case OpKeyCreate, OpKeyList, OpKeyGet, OpKeySign, OpKeyPSBT, OpKeyDerive, OpKeyDelete, OpKeyRestore:
		if admin || p.user == nil {
			return refuse("perm.denied", "this route is for users and access keys")
		}
		return a.userOp(c, p)
	case OpAccessCreate, OpAccessList, OpAccessRevoke, OpAccessLog:
		if admin || p.user == nil {
			return refuse("perm.denied", "access keys are granted by users; the admin-grant variant is not supported")
		}
		if p.ak != nil {
			return refuse("perm.denied", "an access key cannot manage access keys")
		}
		return a.accessOp(c, p.user)
	}
	return refuse("request.malformed", "unknown operation")
}

// authenticate judges the stateful parts of authentication at the entry's stamp, in
// API.md's order: the credential is known (user, access key), token expiry, the
// signature window, the status of the user, access key and grantor, token revocation,
// then the nonce (consumed only when everything before passed).
func (a *applier) authenticate(c *Caller) (principal, Result) {
	var ak *AccessKey
	if c.Kind == CallerAccessKey {
		if ak = a.accessKey(c.AccessKeyID); ak == nil {
			return principal{}, refuse("auth.token_invalid", "unknown access key")
		}
	}
	now := a.stamp / 1000
	if c.TokenExpires != 0 && c.TokenExpires <= now {
		return principal{}, refuse("auth.token_expired", "token expired")
	}
	if c.Created != 0 {
		if c.Created > now+SignatureWindowS {
			return principal{}, refuse("auth.signature_invalid", "signature created in the future; check the client's clock")
		}
		if c.Created < now-SignatureWindowS {
			return principal{}, refuse("auth.signature_expired", "signature created too long ago")
		}
	}
	if c.Expires != 0 && c.Expires <= now {
		return principal{}, refuse("auth.signature_expired", "signature expired")
	}
	var p principal
	switch c.Kind {
	case CallerAdmin:
	case CallerUser:
		user := a.user(c.UserID)
		if user == nil {
			return principal{}, refuse("auth.token_invalid", "unknown user")
		}
		if user.Status != UserActive {
			return principal{}, refuse("auth.user_disabled", "user is disabled")
		}
		if c.TokenIssuedAt < user.TokensNotBefore {
			return principal{}, refuse("auth.token_invalid", "token was revoked")
		}
		p.user = user
	case CallerAccessKey:
		if ak.RevokedAt != 0 && ak.RevokedAt <= a.stamp {
			return principal{}, refuse("auth.key_revoked", "access key revoked")
		}
		if ak.ExpiresAt != 0 && ak.ExpiresAt <= a.stamp {
			return principal{}, refuse("auth.key_revoked", "access key expired")
		}
		grantor := a.user(ak.Grantor)
		if grantor == nil {
			return principal{}, refuse("auth.token_invalid", "the access key's grantor does not exist")
		}
		if grantor.Status != UserActive {
			return principal{}, refuse("auth.user_disabled", "the access key's grantor is disabled")
		}
		p.user, p.ak = grantor, ak
	default:
		return principal{}, refuse("auth.missing", "unknown caller kind")
	}
	if r := a.useNonces(c.NonceKey, c.TokenNonceKey); !r.OK() {
		return principal{}, r
	}
	return p, Result{}
}

// useNonces consumes the request's replay keys, all or none.
func (a *applier) useNonces(keys ...string) Result {
	n := 0
	for i, k := range keys {
		if k == "" {
			continue
		}
		if slices.Contains(keys[:i], k) || a.nonceSeen(k) {
			return refuse("auth.nonce_reused", "nonce already used")
		}
		n++
	}
	if n > 0 && a.m.Nonces+n > MaxNonces {
		return refuse("rate.limited", "too many requests in the replay window")
	}
	for _, k := range keys {
		if k != "" {
			a.addNonce(k, a.stamp+NonceRetentionMs)
		}
	}
	return Result{}
}

func (a *applier) adminOp(c *Call) Result {
	switch c.Op {
	case OpAuditList, OpUserList, OpRetentionGet:
		return Result{}
	case OpRetentionSet:
		return a.setRetention(c.Retention)
	case OpAdminKeyRotate:
		return a.rotateAdminKey(c)
	case OpAuditPrune:
		return a.pruneAudit(c.AuditPrune)
	case OpUserCreate, OpSigpairCreate:
		name := c.UserName
		if name == "" || len(name) > 128 || !utf8.ValidString(name) {
			return refuse("request.malformed", "name must be 1–128 characters of UTF-8")
		}
		perms := DefaultPermissions()
		if c.PermsSet {
			if r := validPerms(c.Permissions); !r.OK() {
				return r
			}
			perms = slices.Clone(c.Permissions)
		}
		a.m.NextUserID++
		u := &User{ID: a.m.NextUserID, Name: name, Status: UserActive, Permissions: perms, CreatedAt: a.stamp}
		a.putUser(u)
		return Result{UserID: u.ID}
	}
	u := a.user(c.TargetUserID)
	if u == nil {
		return refuse("user.not_found", "no such user")
	}
	switch c.Op {
	case OpUserGet:
	case OpUserDisable:
		u.Status = UserDisabled
	case OpUserEnable:
		u.Status = UserActive
	case OpUserRevokeTokens:
		u.TokensNotBefore = a.stamp / 1000
	case OpUserPermissions:
		if r := validPerms(c.Permissions); !r.OK() {
			return r
		}
		u.Permissions = slices.Clone(c.Permissions)
	}
	return Result{UserID: u.ID}
}

func validPerms(perms []string) Result {
	if len(perms) > 32 {
		return refuse("request.malformed", "too many permissions")
	}
	for _, p := range perms {
		if !ValidPermission(p) {
			return refuse("request.malformed", fmt.Sprintf("unknown permission %q", p))
		}
	}
	return Result{}
}

func (a *applier) userOp(c *Call, p principal) Result {
	switch c.Op {
	case OpKeyList:
		if !p.has(PermKeysRead) {
			return refuse("perm.denied", "missing permission keys:read")
		}
		return Result{}
	case OpKeyGet:
		if !p.has(PermKeysRead) {
			return refuse("perm.denied", "missing permission keys:read")
		}
		if !p.sees(a.key(c.KeyID)) {
			return refuse("key.not_found", "no such key")
		}
		return Result{KeyID: c.KeyID}
	case OpRequestGet:
		r := a.request(c.RequestID)
		// A user sees its requests; an access key only those it made itself (API.md:
		// "their own"), not its grantor's others.
		if r == nil || r.Owner != p.user.ID || (p.ak != nil && (r.AccessKeyID != p.ak.ID || !p.ak.Covers(r.KeyID))) {
			return refuse("request.not_found", "no such request")
		}
		return Result{RequestID: c.RequestID}
	case OpKeyCreate:
		if p.ak != nil {
			return refuse("perm.denied", "access keys cannot create keys; POST /v1/keys is for users")
		}
		if !p.has(PermKeysCreate) {
			return refuse("perm.denied", "missing permission keys:create")
		}
		return a.keyCreate(c, p.user)
	case OpKeySign:
		if !p.has(PermKeysSign) {
			return refuse("perm.denied", "missing permission keys:sign")
		}
		return a.keySign(c, p)
	case OpKeyPSBT:
		if !p.has(PermKeysSign) {
			return refuse("perm.denied", "missing permission keys:sign")
		}
		return a.keyPSBT(c, p)
	case OpKeyDerive:
		return a.keyDerive(c, p)
	case OpKeyDelete:
		return a.keyDelete(c, p)
	case OpKeyRestore:
		return a.keyRestore(c, p)
	}
	return refuse("request.malformed", "unknown operation")
}

// MaxIdempotencyKey bounds an idempotency key (bytes). The key is part of a database
// key (its scope), and the snapshot stream carries keys of at most 64 KiB: one caller's
// longer key would keep every node from installing a snapshot for as long as the
// request is kept.
const MaxIdempotencyKey = 256

// idempotent returns an earlier request for the same (caller, route, key) scope, or the
// refusal of a key that is too long (a field value: judged after permission and the
// object's existence, where each route calls it).
func (a *applier) idempotent(c *Call, route string) (string, Result, bool) {
	if c.IdempotencyKey == "" {
		return "", Result{}, false
	}
	if len(c.IdempotencyKey) > MaxIdempotencyKey {
		return "", refuse("request.malformed", fmt.Sprintf("idempotency_key must be at most %d bytes", MaxIdempotencyKey)), true
	}
	scope := idemScopeOf(c.Caller.Actor(), route, c.IdempotencyKey)
	rec := a.idem(scope)
	if rec == nil {
		return scope, Result{}, false
	}
	if rec.BodyHash != c.BodyHash {
		return scope, refuse("request.idempotency_conflict", "idempotency key reused with a different body"), true
	}
	r := a.request(rec.RequestID)
	return scope, Result{RequestID: rec.RequestID, KeyID: r.KeyID, Existing: true}, true
}

// idemScopeOf is the scope of an idempotency key: the caller, the route (with the key
// for signing) and the key.
func idemScopeOf(actor, route, idemKey string) string { return actor + "|" + route + "|" + idemKey }

// idemScope is the scope a request's idempotency key was remembered under.
func idemScope(r *Request) string {
	route := OpKeyCreate
	if r.Kind == KindSign {
		route = OpKeySign + "|" + r.KeyID
	}
	return idemScopeOf(r.Actor, route, r.IdempotencyKey)
}

// rememberIdempotency records which request an idempotency scope produced.
func (a *applier) rememberIdempotency(scope, requestID, bodyHash string) {
	if scope != "" {
		a.t.put(keyStr(tIdem, scope), &idemRecord{RequestID: requestID, BodyHash: bodyHash})
	}
}

func (a *applier) useSessionNonce(nonce []byte) Result {
	if len(nonce) != 32 {
		return refuse("cluster.unavailable", "schedule carries no valid session nonce")
	}
	h := hex.EncodeToString(nonce)
	if a.sessionUsed(h) {
		return refuse("cluster.unavailable", "session nonce reused; retry")
	}
	a.addSession(h)
	return Result{}
}

func (a *applier) keyCreate(c *Call, u *User) Result {
	n := len(a.memberIDs())
	switch {
	case c.Curve != CurveSecp256k1 && c.Curve != CurveEd25519:
		return refuse("request.malformed", `curve must be "secp256k1" or "ed25519"`)
	case c.Threshold < 2 || c.Threshold > n:
		return refuse("request.malformed", fmt.Sprintf("threshold must be between 2 and %d", n))
	case len(c.Label) > 128 || !utf8.ValidString(c.Label):
		return refuse("request.malformed", "label must be at most 128 characters of UTF-8")
	}
	scope, r, done := a.idempotent(c, OpKeyCreate)
	if done {
		return r
	}
	if a.openRequests() >= MaxOpenRequests {
		return refuse("rate.limited", "too many requests in flight")
	}
	s := c.Schedule
	req := &Request{
		ID: a.derivedID("req_"), Kind: KindKeygen, Status: StatusScheduled, KeyID: a.derivedID("key_"), Owner: u.ID,
		Actor: c.Caller.Actor(), CreatedAt: a.stamp, UpdatedAt: a.stamp, Signed: c.Signed, IdempotencyKey: c.IdempotencyKey,
	}
	if s != nil && s.RequestID != "" && s.KeyID != "" {
		if a.m.Strict && (!validLeaderID("req_", s.RequestID) || !validLeaderID("key_", s.KeyID)) {
			return refuse("cluster.unavailable", "the leader chose ids of another form; retry")
		}
		req.ID, req.KeyID = s.RequestID, s.KeyID
		if a.request(s.RequestID) != nil {
			return refuse("cluster.unavailable", "request id collision; retry")
		}
		if a.key(s.KeyID) != nil {
			return refuse("cluster.unavailable", "key id collision; retry")
		}
	}
	if c.Curve == CurveSecp256k1 && s != nil && len(s.ChainCode) == 32 {
		req.ChainCode = slices.Clone(s.ChainCode)
	}
	var pres *policy.Result
	if a.policies().Len() > 0 {
		if c.Curve == CurveSecp256k1 && len(req.ChainCode) != 32 {
			// A keygen that may wait for approval keeps the leader's chain code.
			if c.Unschedulable != "" {
				return refuse("cluster.unavailable", c.Unschedulable)
			}
			return refuse("cluster.unavailable", "keygen carries no chain code; retry")
		}
		var answer *Result
		if pres, answer = a.governKeygen(req, c.Label, u); answer != nil {
			a.rememberIdempotency(scope, req.ID, c.BodyHash)
			return *answer
		}
	}
	if c.Unschedulable != "" {
		return refuse("cluster.unavailable", c.Unschedulable)
	}
	if s == nil || s.RequestID == "" || s.KeyID == "" {
		return refuse("cluster.unavailable", "keygen not scheduled by the leader; retry")
	}
	members := a.memberIDs()
	if !slices.Equal(sortedCopy(s.Committee), members) {
		return refuse("cluster.unavailable", "keygen committee must be every member; retry")
	}
	if c.Curve == CurveSecp256k1 && len(s.ChainCode) != 32 {
		return refuse("cluster.unavailable", "keygen carries no chain code; retry")
	}
	if r := a.useSessionNonce(s.Nonce); !r.OK() {
		return r
	}
	k := &Key{
		ID: s.KeyID, Owner: u.ID, Label: c.Label, Curve: c.Curve, Threshold: c.Threshold,
		Parties: n, Members: members, Status: KeyGenerating, RequestID: s.RequestID,
		CreatedAt: a.stamp, Reports: map[string][]byte{},
	}
	if c.Curve == CurveSecp256k1 {
		k.ChainCode = slices.Clone(s.ChainCode)
	}
	a.addKey(k)
	req.ChainCode = nil
	req.Committee, req.Nonce, req.Attempt, req.ScheduledAt = members, slices.Clone(s.Nonce), 1, a.stamp
	a.addRequest(req)
	if pres != nil {
		a.count(req, pres)
	}
	a.rememberIdempotency(scope, req.ID, c.BodyHash)
	a.emit(EventScheduled, req.ID, k.ID)
	return Result{RequestID: req.ID, KeyID: k.ID}
}

func (a *applier) keySign(c *Call, p principal) Result {
	k := a.key(c.KeyID)
	if !p.sees(k) {
		return refuse("key.not_found", "no such key")
	}
	if k.Status != KeyActive {
		return refuse("key.not_active", "key is "+k.Status)
	}
	msg, err := hex.DecodeString(c.MessageHex)
	if err != nil {
		return refuse("request.malformed", "message must be hex")
	}
	var path []uint32
	switch k.Curve {
	case CurveSecp256k1:
		if len(msg) != 32 {
			return refuse("request.malformed", "message must be a 32-byte digest for secp256k1")
		}
		if c.Path != "" {
			if path, err = ParsePath(c.Path); err != nil {
				return refuse("request.malformed", err.Error())
			}
		}
	case CurveEd25519:
		if len(msg) > MaxEd25519Message {
			return refuse("request.malformed", "message is longer than 64 KiB")
		}
		if c.Path != "" {
			return refuse("request.malformed", "ed25519 keys have no derivation")
		}
	}
	return a.admitSign(c, p, k, &Request{Message: msg, Path: c.Path, PathIdx: path})
}

// admitSign admits a sign request (a digest, a message or a PSBT, in req) whose key and
// fields were judged: idempotency, the bound on requests in flight, the policies (it may
// be blocked or wait for approval), then the leader's schedule, bounded.
func (a *applier) admitSign(c *Call, p principal, k *Key, req *Request) Result {
	scope, r, done := a.idempotent(c, OpKeySign+"|"+k.ID)
	if done {
		return r
	}
	if a.openRequests() >= MaxOpenRequests {
		return refuse("rate.limited", "too many requests in flight")
	}
	s := c.Schedule
	req.ID, req.Kind, req.Status, req.KeyID, req.Owner = a.derivedID("req_"), KindSign, StatusScheduled, k.ID, p.user.ID
	req.Actor, req.CreatedAt, req.UpdatedAt, req.Signed, req.IdempotencyKey = c.Caller.Actor(), a.stamp, a.stamp, c.Signed, c.IdempotencyKey
	if p.ak != nil {
		req.AccessKeyID = p.ak.ID
	}
	if s != nil && s.RequestID != "" {
		if a.m.Strict && !validLeaderID("req_", s.RequestID) {
			return refuse("cluster.unavailable", "the leader chose a request id of another form; retry")
		}
		req.ID = s.RequestID
		if a.request(s.RequestID) != nil {
			return refuse("cluster.unavailable", "request id collision; retry")
		}
	}
	var pres *policy.Result
	if a.policies().Len() > 0 {
		var answer *Result
		if pres, answer = a.governSign(req, k, p); answer != nil {
			a.rememberIdempotency(scope, req.ID, c.BodyHash)
			return *answer
		}
	}
	if c.Unschedulable != "" {
		return refuse("cluster.unavailable", c.Unschedulable)
	}
	if s == nil || s.RequestID == "" {
		return refuse("cluster.unavailable", "signing not scheduled by the leader; retry")
	}
	if r := a.assign(req, k, s.Committee, s.Nonce); !r.OK() {
		return r
	}
	req.Attempt, req.ScheduledAt = 1, a.stamp
	a.addRequest(req)
	if pres != nil {
		a.count(req, pres)
	}
	a.rememberIdempotency(scope, req.ID, c.BodyHash)
	a.emit(EventScheduled, req.ID, k.ID)
	return Result{RequestID: req.ID, KeyID: k.ID}
}

// assign gives a sign request its committee and session nonce, both the leader's and
// both bounded: exactly k of the key's parties, a nonce never used before.
func (a *applier) assign(r *Request, k *Key, committee []string, nonce []byte) Result {
	if res := a.validCommittee(k, committee); !res.OK() {
		return res
	}
	if res := a.useSessionNonce(nonce); !res.OK() {
		return res
	}
	r.Committee, r.Nonce = sortedCopy(committee), slices.Clone(nonce)
	return Result{}
}

// MaxEd25519Message is the largest raw message an Ed25519 key signs.
const MaxEd25519Message = 64 << 10

func (a *applier) validCommittee(k *Key, committee []string) Result {
	if len(committee) != k.Threshold {
		return refuse("cluster.unavailable", "committee size differs from the key's threshold; retry")
	}
	seen := map[string]bool{}
	for _, m := range committee {
		if seen[m] || !slices.Contains(k.Members, m) {
			return refuse("cluster.unavailable", "committee is not a subset of the key's parties; retry")
		}
		seen[m] = true
	}
	return Result{}
}

// memberIDs are the active members' ids (sorted): those that take part in keygens and
// may hold keys' shares (a joining or leaving node does not: members.go).
func (a *applier) memberIDs() []string {
	ids := make([]string, 0, len(a.m.Members))
	for _, m := range a.m.Members {
		if m.active() {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// maxPublicKey bounds a public key a keygen report carries (an uncompressed secp256k1
// point; compressed points are 33 bytes, Ed25519 keys 32): the key keeps every report.
const maxPublicKey = 65

func (a *applier) shareStored(c *ShareStored) Result {
	r := a.request(c.RequestID)
	if r == nil || r.Kind != KindKeygen || r.Status != StatusScheduled || !equalBytes(r.Nonce, c.Nonce) {
		return refuse("request.conflict", "no keygen in progress for that session")
	}
	k := a.key(r.KeyID)
	if k == nil || k.RequestID != r.ID {
		// An approved keygen the leader has not released yet: scheduled, but with no
		// session nonce (an empty one matches) and no key of its own.
		return refuse("request.conflict", "no keygen in progress for that session")
	}
	if !slices.Contains(k.Members, c.Node) || len(c.PublicKey) == 0 {
		return refuse("request.conflict", "report from a node outside the keygen")
	}
	if len(c.PublicKey) > maxPublicKey {
		return refuse("request.malformed", fmt.Sprintf("a public key is at most %d bytes", maxPublicKey))
	}
	if k.Reports == nil {
		k.Reports = map[string][]byte{} // stored without it while empty
	}
	k.Reports[c.Node] = slices.Clone(c.PublicKey)
	if c.InlinePreParams && !slices.Contains(r.InlinePreParams, c.Node) {
		r.InlinePreParams = append(r.InlinePreParams, c.Node)
	}
	if len(k.Reports) < len(k.Members) {
		return Result{RequestID: r.ID}
	}
	first := k.Reports[k.Members[0]]
	for _, m := range k.Members {
		if !equalBytes(k.Reports[m], first) {
			a.failRequest(r, "ceremony.failed", "nodes computed different public keys", "node:"+c.Node)
			return Result{RequestID: r.ID}
		}
	}
	k.PublicKey = slices.Clone(first)
	k.Status = KeyActive
	a.settle(r, StatusActive)
	a.record(api.EventKeyCreated, k.Owner, nil, api.EventData{RequestID: r.ID, Kind: r.Kind, KeyID: k.ID, UserID: k.Owner, Actor: "node:" + c.Node, Status: k.Status})
	a.audit("node:"+c.Node, "keygen.active", k.ID, "allowed", "")
	a.emit(EventSettled, r.ID, k.ID)
	return Result{RequestID: r.ID, KeyID: k.ID}
}

func (a *applier) ceremonyResult(c *CeremonyResult) Result {
	r := a.request(c.RequestID)
	if r == nil || r.Kind != KindSign {
		return refuse("request.conflict", "no such sign request")
	}
	if Final(r.Status) {
		return Result{RequestID: r.ID, Existing: true}
	}
	if r.Status != StatusScheduled || r.Attempt < 1 {
		// Waiting for approval, or approved and not run yet: no ceremony ran for it.
		return refuse("request.conflict", "the request has not been scheduled to sign")
	}
	k := a.key(r.KeyID)
	if r.PSBT != nil {
		if err := a.psbtResult(r, k, c); err != nil {
			a.audit("node:"+c.Node, "sign.result", r.ID, "refused", "ceremony.failed")
			return refuse("ceremony.failed", "PSBT signatures refused: "+err.Error())
		}
	} else {
		if err := a.verifier.VerifySignature(k.Curve, k.PublicKey, k.ChainCode, r.PathIdx, r.Message, &c.Signature); err != nil {
			a.audit("node:"+c.Node, "sign.result", r.ID, "refused", "ceremony.failed")
			return refuse("ceremony.failed", "signature does not verify: "+err.Error())
		}
		sig := c.Signature
		r.Signature = &sig
	}
	r.SignedBy = c.Node
	a.settle(r, StatusSigned)
	a.requestEvent(api.EventRequestSigned, r, "node:"+c.Node)
	a.audit("node:"+c.Node, "sign.signed", r.ID, "allowed", "")
	a.emit(EventSettled, r.ID, r.KeyID)
	return Result{RequestID: r.ID}
}

func (a *applier) ceremonyFailed(c *CeremonyFailed) Result {
	r := a.request(c.RequestID)
	if r == nil || Final(r.Status) || !equalBytes(r.Nonce, c.Nonce) {
		return Result{RequestID: c.RequestID, Existing: true}
	}
	if !slices.Contains(r.Participants(), c.Node) {
		return refuse("request.conflict", "report from a node outside the committee")
	}
	culprits := c.Culprits
	if len(culprits) > 16 {
		culprits = culprits[:16]
	}
	culprits = slices.Clone(culprits)
	for i := range culprits {
		culprits[i] = truncate(culprits[i], 64) // node ids are at most 64 characters
	}
	r.Failures = append(r.Failures, Failure{Node: c.Node, Attempt: r.Attempt, Code: truncate(c.Code, 64), Detail: truncate(c.Detail, 256), Culprits: culprits})
	if len(r.Failures) > 64 {
		r.Failures = r.Failures[len(r.Failures)-64:]
	}
	r.UpdatedAt = a.stamp
	if r.Kind == KindKeygen || r.Kind == KindReshare {
		a.failRequest(r, "ceremony.failed", r.Kind+" failed on "+c.Node+": "+truncate(c.Detail, 200), "node:"+c.Node)
		return Result{RequestID: r.ID}
	}
	if !r.Retry {
		r.Retry = true
		a.emit(EventRetry, r.ID, r.KeyID)
	}
	return Result{RequestID: r.ID}
}

func (a *applier) reschedule(c *Reschedule, actor string) Result {
	r := a.request(c.RequestID)
	if r != nil && r.Attempt == 0 && r.ApprovalID != "" && c.Attempt == 0 {
		// An approved request's first run (governance.go).
		return a.release(r, c, actor)
	}
	if r == nil || r.Kind != KindSign || Final(r.Status) || r.Attempt != c.Attempt {
		return refuse("request.conflict", "request is not waiting for that attempt")
	}
	if r.Attempt >= MaxAttempts {
		return refuse("request.conflict", "attempts exhausted")
	}
	if a.m.Strict {
		// Judged again at every scheduling (DESIGN.md invariant 3).
		if res := a.reauthorise(r); !res.OK() {
			a.failRequest(r, res.Code, "not rescheduled: "+res.Detail, actor)
			return Result{RequestID: r.ID}
		}
	}
	if res := a.assign(r, a.key(r.KeyID), c.Committee, c.Nonce); !res.OK() {
		return res
	}
	r.Attempt++
	r.Retry = false
	r.ScheduledAt = a.stamp
	r.UpdatedAt = a.stamp
	a.audit(actor, "sign.rescheduled", r.ID, "allowed", "")
	a.emit(EventScheduled, r.ID, r.KeyID)
	return Result{RequestID: r.ID}
}

func (a *applier) fail(c *Fail, actor string) Result {
	r := a.request(c.RequestID)
	if r == nil || Final(r.Status) {
		return Result{RequestID: c.RequestID, Existing: true}
	}
	if r.Status == StatusPendingApproval {
		// Only its approval's expiry (or a denial) ends it, judged by stamps.
		return refuse("request.conflict", "the request waits for approval until it expires")
	}
	if r.Kind == KindDelete && r.Attempt > 0 {
		// A scheduled deletion ends at its delete_at or when its owner restores the key:
		// a leader's report must not keep a key alive that its owner deleted.
		return refuse("request.conflict", "a scheduled deletion ends at its delete_at, or when the key is restored")
	}
	if r.Kind == KindMemberChange && r.Attempt > 0 {
		// The leader gives up a membership change: what is done stays done.
		a.failRequest(r, truncate(c.Code, 64), truncate(c.Detail, 256), actor)
		a.undoChange(r)
		return Result{RequestID: r.ID}
	}
	a.failRequest(r, truncate(c.Code, 64), truncate(c.Detail, 256), actor)
	return Result{RequestID: r.ID}
}

func (a *applier) failRequest(r *Request, code, detail, actor string) {
	r.Error = &ErrorInfo{Code: code, Detail: detail}
	if r.Attempt == 0 {
		// Never ran: it stops counting. One whose ceremony ran keeps counting even if it
		// failed: a member in the committee could otherwise obtain the signature,
		// report a failure and free the slot.
		a.uncount(r)
	}
	a.settle(r, StatusFailed)
	if r.Kind == KindReshare {
		a.abandonReshare(r)
	}
	if r.Kind == KindKeygen {
		if k := a.key(r.KeyID); k != nil {
			k.Status = KeyFailed
			a.emit(EventKeyFailed, r.ID, k.ID)
		}
	}
	a.audit(actor, r.Kind+".failed", r.ID, "refused", code)
	a.requestEvent(api.EventRequestFailed, r, actor)
	a.emit(EventSettled, r.ID, r.KeyID)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
