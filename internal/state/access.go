package state

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/policy"
)

// Limits on an access-key grant's fields.
const (
	// MaxGrantKeyIDs bounds the key_ids of one access key.
	MaxGrantKeyIDs = 256
	// maxKeyIDLen bounds one entry of key_ids.
	maxKeyIDLen = 128
)

// accessOp serves the access-key routes. Only users reach it (callInner refuses the admin
// and access keys). Checks follow API.md's order: permission (403), the objects exist and
// are the caller's (404), field values (400), then state conflicts (409).
func (a *applier) accessOp(c *Call, u *User) Result {
	switch c.Op {
	case OpAccessLog:
		// The grantor only; no permission beyond being the grantor.
		if ak := a.accessKey(c.AccessKeyID); ak == nil || ak.Grantor != u.ID {
			return refuse("access_key.not_found", "no such access key")
		}
		return Result{AccessKeyID: c.AccessKeyID}
	}
	if !u.Has(PermAccessManage) {
		return refuse("perm.denied", "missing permission access:manage")
	}
	switch c.Op {
	case OpAccessList:
		return Result{}
	case OpAccessRevoke:
		ak := a.accessKey(c.AccessKeyID)
		if ak == nil || ak.Grantor != u.ID {
			return refuse("access_key.not_found", "no such access key")
		}
		a.revokeAccessKey(ak)
		return Result{AccessKeyID: ak.ID}
	case OpAccessCreate:
		if a.policies().Len() == 0 {
			return a.accessCreate(c, u, false)
		}
		// Judged in full first (a grant that would be refused never waits for approval),
		// then by the access.grant policies.
		if r := a.accessCreate(c, u, true); !r.OK() {
			return r
		}
		pr := &policy.Request{Activity: api.ActivityAccessGrant, UserID: u.ID}
		if c.Grant != nil {
			pr.GrantKeyIDs = c.Grant.KeyIDs
		}
		return a.governedChange(c, KindAccessGrant, pr, func() Result { return a.accessCreate(c, u, false) }, c.Schedule.AccessKeyID)
	}
	return refuse("request.malformed", "unknown operation")
}

// accessCreate grants an access key; with check, it only judges the grant (everything
// but making room and storing it).
func (a *applier) accessCreate(c *Call, u *User, check bool) Result {
	g := c.Grant
	if g == nil {
		return refuse("request.malformed", "no grant in the request")
	}
	// Permission: a grant never exceeds the grantor's current permissions and never holds
	// access:manage. Unknown names are field errors, judged below.
	for _, p := range g.Permissions {
		if p == PermAccessManage {
			return refuse("perm.denied", "an access key never holds access:manage")
		}
		if ValidPermission(p) && !u.Has(p) {
			return refuse("perm.denied", fmt.Sprintf("cannot grant %s: the grantor does not hold it", p))
		}
	}
	// Objects: every key id must be a key the grantor owns (the list is bounded by the
	// route's body limit; its length is a field value, judged below).
	for _, id := range g.KeyIDs {
		if k := a.key(id); k == nil || k.Owner != u.ID {
			return refuse("key.not_found", "key_ids names a key the grantor does not own")
		}
	}
	// Field values.
	f, r := a.validGrant(g)
	if !r.OK() {
		return r
	}
	// State conflicts.
	if id := accessKeyIDByPub(a.t, f.Scheme, f.PublicKey); id != "" {
		if old := a.accessKey(id); old != nil && old.LiveAt(a.stamp) {
			return refuse("request.conflict", "this public key already backs a live access key")
		}
	}
	s := c.Schedule
	if s == nil || !validAccessKeyID(s.AccessKeyID) {
		return refuse("cluster.unavailable", "access key not scheduled by the leader; retry")
	}
	if a.accessKey(s.AccessKeyID) != nil {
		return refuse("cluster.unavailable", "access key id collision; retry")
	}
	if check {
		return Result{}
	}
	if r := a.makeRoom(u.ID); !r.OK() {
		return r
	}
	ak := &AccessKey{
		ID: s.AccessKeyID, Grantor: u.ID, Label: f.Label, Scheme: f.Scheme, PublicKey: f.PublicKey,
		Permissions: f.Permissions, KeyIDs: f.KeyIDs, ExpiresAt: f.ExpiresAt, CreatedAt: a.stamp,
	}
	if c.Signed != nil {
		sf := *c.Signed
		ak.Grant = &sf
	}
	a.addAccessKey(ak)
	a.record(api.EventAccessKeyGranted, u.ID, nil, api.EventData{AccessKeyID: ak.ID, UserID: u.ID, Actor: c.Caller.Actor()})
	return Result{AccessKeyID: ak.ID}
}

// ValidGrant is a grant's fields, decoded and checked.
type ValidGrant struct {
	Label       string
	Scheme      string
	PublicKey   []byte
	Permissions []string
	KeyIDs      []string
	ExpiresAt   int64 // unix ms, 0 = never
}

// ParseGrant decodes and checks a grant's field values (not the grantor's permissions,
// keys or the public key's uniqueness, which depend on the state): label at most 128
// characters of UTF-8; scheme ed25519 (32-byte public key) or secp256k1 (33-byte
// compressed point); at least one known permission, no duplicates; key_ids without
// duplicates; expires_at RFC 3339 or empty. Nodes use it to re-verify a stored grant.
func ParseGrant(g *GrantFields) (*ValidGrant, error) {
	f := &ValidGrant{Label: g.Label, Scheme: g.Scheme}
	if len(g.Label) > 128 || !utf8.ValidString(g.Label) {
		return nil, fmt.Errorf("label must be at most 128 characters of UTF-8")
	}
	pub, err := hex.DecodeString(g.PublicKey)
	if err != nil || g.PublicKey != strings.ToLower(g.PublicKey) {
		return nil, fmt.Errorf("public_key must be lowercase hex")
	}
	switch g.Scheme {
	case SchemeEd25519:
		if len(pub) != 32 {
			return nil, fmt.Errorf("an ed25519 public_key is 32 bytes (64 hex characters)")
		}
	case SchemeSecp256k1:
		if len(pub) != 33 || (pub[0] != 2 && pub[0] != 3) {
			return nil, fmt.Errorf("a secp256k1 public_key is a 33-byte compressed point (66 hex characters)")
		}
		if _, err := btcec.ParsePubKey(pub); err != nil {
			return nil, fmt.Errorf("public_key is not a secp256k1 point")
		}
	default:
		return nil, fmt.Errorf(`scheme must be "ed25519" or "secp256k1"`)
	}
	f.PublicKey = pub
	if len(g.Permissions) == 0 {
		return nil, fmt.Errorf("permissions must name at least one permission")
	}
	if r := validPerms(g.Permissions); !r.OK() {
		return nil, fmt.Errorf("%s", r.Detail)
	}
	if hasDuplicate(g.Permissions) {
		return nil, fmt.Errorf("permissions lists a permission twice")
	}
	f.Permissions = slices.Clone(g.Permissions)
	if len(g.KeyIDs) > MaxGrantKeyIDs {
		return nil, fmt.Errorf("key_ids holds at most %d keys", MaxGrantKeyIDs)
	}
	for _, id := range g.KeyIDs {
		if id == "" || len(id) > maxKeyIDLen {
			return nil, fmt.Errorf("key_ids entries must be key ids")
		}
	}
	if hasDuplicate(g.KeyIDs) {
		return nil, fmt.Errorf("key_ids lists a key twice")
	}
	if len(g.KeyIDs) > 0 {
		f.KeyIDs = slices.Clone(g.KeyIDs)
	}
	if g.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339Nano, g.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("expires_at must be an RFC 3339 time")
		}
		f.ExpiresAt = t.UnixMilli()
		if f.ExpiresAt <= 0 {
			return nil, fmt.Errorf("expires_at must be after 1970")
		}
	}
	return f, nil
}

// validGrant applies ParseGrant and judges expires_at against the entry's stamp.
func (a *applier) validGrant(g *GrantFields) (*ValidGrant, Result) {
	f, err := ParseGrant(g)
	if err != nil {
		return nil, refuse("request.malformed", err.Error())
	}
	if f.ExpiresAt != 0 && f.ExpiresAt <= a.stamp {
		return nil, refuse("request.malformed", "expires_at must be in the future")
	}
	return f, Result{}
}

func hasDuplicate(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, v := range s {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

// validAccessKeyID accepts "ak_" followed by 32 lowercase hex characters (the leader's
// choice; newID in the node).
func validAccessKeyID(id string) bool { return validLeaderID("ak_", id) }

// validLeaderID reports whether id is prefix + 32 lowercase hex characters: the form of
// every id the leader chooses (request, key and access-key ids). The FSM's own ids
// (governance.go's derivedID: prefix + 16 hex digits) never have it, so a leader cannot
// choose an id the FSM will give later.
func validLeaderID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) != 32 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// makeRoom keeps a grantor's access keys within MaxAccessKeysPerGrantor: at the limit,
// the key that died first (revoked or expired at the stamp; ties by id) is dropped with
// its log; when every key is live the grant is refused.
func (a *applier) makeRoom(grantor uint64) Result {
	ids := accessKeysOf(a.t, grantor)
	if len(ids) < MaxAccessKeysPerGrantor {
		return Result{}
	}
	var victim *AccessKey
	for _, id := range ids {
		ak := a.accessKey(id)
		if ak == nil || ak.LiveAt(a.stamp) {
			continue
		}
		if victim == nil || ak.deadSince() < victim.deadSince() {
			victim = ak
		}
	}
	if victim == nil {
		return refuse("request.conflict", fmt.Sprintf("a user holds at most %d live access keys; revoke one first", MaxAccessKeysPerGrantor))
	}
	a.dropAccessKey(victim)
	return Result{}
}
