package state

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/hashicorp/raft"
)

var akN int

// akID returns a fresh, well-formed access-key id.
func akID() string {
	akN++
	return fmt.Sprintf("ak_%032x", akN)
}

// edPub returns a distinct 32-byte "public key" for tests (the FSM does not check Ed25519
// points).
func edPub(seed byte) string { return hex.EncodeToString(bytes.Repeat([]byte{seed}, 32)) }

func secpPub(t *testing.T) string {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k.PubKey().SerializeCompressed())
}

func (h *harness) ak(id, nonce string) Caller {
	return Caller{Kind: CallerAccessKey, AccessKeyID: id, Created: h.stamp / 1000, NonceKey: nonce}
}

var nonceSeq int

func (h *harness) nonce() string {
	nonceSeq++
	return fmt.Sprintf("nonce-%d", nonceSeq)
}

// grant creates an access key for user and returns its id; it fails the test on refusal.
func (h *harness) grant(user uint64, g GrantFields) string {
	h.t.Helper()
	res := h.apply(TypeCall, &Call{Caller: h.user(user, h.nonce()), Op: OpAccessCreate, Grant: &g, Schedule: &Schedule{AccessKeyID: akID()}})
	if !res.OK() || res.AccessKeyID == "" {
		h.t.Fatalf("grant: %+v", res)
	}
	return res.AccessKeyID
}

func (h *harness) setPerms(user uint64, perms ...string) {
	h.t.Helper()
	if res := h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserPermissions, TargetUserID: user, Permissions: perms}); !res.OK() {
		h.t.Fatalf("set permissions: %+v", res)
	}
}

func TestAccessKeyCreateRules(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	bob := h.createUser("bob")
	carol := h.createUser("carol")
	h.setPerms(carol, PermKeysRead, PermKeysSign) // no access:manage
	dave := h.createUser("dave")
	h.setPerms(dave, PermKeysRead, PermAccessManage) // cannot grant keys:sign
	aliceKey := h.activeKey(alice, CurveSecp256k1)
	bobKey := h.activeKey(bob, CurveSecp256k1)
	live := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}})
	secp := secpPub(t)
	future := time.UnixMilli(h.stamp + 3_600_000).UTC().Format(time.RFC3339)
	past := time.UnixMilli(h.stamp - 1000).UTC().Format(time.RFC3339)

	g := func(mod func(*GrantFields)) *GrantFields {
		f := GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(2), Permissions: []string{PermKeysRead, PermKeysSign}}
		if mod != nil {
			mod(&f)
		}
		return &f
	}
	tests := []struct {
		name   string
		caller func() Caller
		grant  *GrantFields
		want   string
	}{
		{"admin cannot grant", func() Caller { return h.admin(h.nonce()) }, g(nil), "perm.denied"},
		{"user without access:manage", func() Caller { return h.user(carol, h.nonce()) }, g(nil), "perm.denied"},
		{"access key cannot grant", func() Caller { return h.ak(live, h.nonce()) }, g(nil), "perm.denied"},
		{"escalation beyond the grantor", func() Caller { return h.user(dave, h.nonce()) }, g(nil), "perm.denied"},
		{"never access:manage", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Permissions = []string{PermAccessManage} }), "perm.denied"},
		{"escalation before field errors", func() Caller { return h.user(dave, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = "rsa" }), "perm.denied"},
		{"another user's key", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.KeyIDs = []string{bobKey} }), "key.not_found"},
		{"missing key", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.KeyIDs = []string{"key_nope"} }), "key.not_found"},
		{"key before field errors", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.KeyIDs = []string{bobKey}; f.PublicKey = "zz" }), "key.not_found"},
		{"unknown scheme", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = "rsa" }), "request.malformed"},
		{"short ed25519 key", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.PublicKey = "00ff" }), "request.malformed"},
		{"uppercase hex", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.PublicKey = strings.ToUpper(edPub(0xab)) }), "request.malformed"},
		{"uncompressed secp256k1", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = SchemeSecp256k1; f.PublicKey = "04" + edPub(3) }), "request.malformed"},
		{"secp256k1 not on the curve", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = SchemeSecp256k1; f.PublicKey = "02" + strings.Repeat("ff", 32) }), "request.malformed"},
		{"unknown permission", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Permissions = []string{"keys:fly"} }), "request.malformed"},
		{"no permission", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Permissions = nil }), "request.malformed"},
		{"duplicate permission", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Permissions = []string{PermKeysRead, PermKeysRead} }), "request.malformed"},
		{"duplicate key id", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.KeyIDs = []string{aliceKey, aliceKey} }), "request.malformed"},
		{"expiry in the past", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.ExpiresAt = past }), "request.malformed"},
		{"expiry not RFC 3339", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.ExpiresAt = "tomorrow" }), "request.malformed"},
		{"label too long", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Label = strings.Repeat("x", 129) }), "request.malformed"},
		{"same public key as a live key", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.PublicKey = edPub(1) }), "request.conflict"},
		{"same public key, another grantor", func() Caller { return h.user(bob, h.nonce()) }, g(func(f *GrantFields) { f.PublicKey = edPub(1); f.Permissions = []string{PermKeysRead} }), "request.conflict"},
		{"ok, scoped, expiring", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.KeyIDs = []string{aliceKey}; f.ExpiresAt = future; f.Label = "bot" }), ""},
		{"ok, secp256k1", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = SchemeSecp256k1; f.PublicKey = secp }), ""},
		{"same secp256k1 key again", func() Caller { return h.user(alice, h.nonce()) }, g(func(f *GrantFields) { f.Scheme = SchemeSecp256k1; f.PublicKey = secp }), "request.conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.apply(TypeCall, &Call{Caller: tt.caller(), Op: OpAccessCreate, Grant: tt.grant, Schedule: &Schedule{AccessKeyID: akID()}})
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
			if tt.want == "" {
				ak := h.f.AccessKey(res.AccessKeyID)
				if ak == nil || ak.Grantor != alice || ak.CreatedAt != h.stamp || ak.RevokedAt != 0 {
					t.Fatalf("stored access key %+v", ak)
				}
				if got := h.f.AccessKeyByPublicKey(ak.Scheme, ak.PublicKey); got == nil || got.ID != ak.ID {
					t.Fatal("access key not indexed by its public key")
				}
			}
		})
	}
	// The leader must choose the id.
	res := h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessCreate, Grant: g(func(f *GrantFields) { f.PublicKey = edPub(9) })})
	if res.Code != "cluster.unavailable" {
		t.Fatalf("unscheduled create: %+v", res)
	}
	res = h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessCreate, Grant: g(func(f *GrantFields) { f.PublicKey = edPub(9) }), Schedule: &Schedule{AccessKeyID: "ak_../x"}})
	if res.Code != "cluster.unavailable" {
		t.Fatalf("malformed id: %+v", res)
	}
}

func TestAccessKeyAuthentication(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	key := h.activeKey(alice, CurveEd25519)
	id := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}})
	expiring := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(2), Permissions: []string{PermKeysRead},
		ExpiresAt: time.UnixMilli(h.stamp + 5000).UTC().Format(time.RFC3339Nano)})
	revoked := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(3), Permissions: []string{PermKeysRead}})
	if res := h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessRevoke, AccessKeyID: revoked}); !res.OK() {
		t.Fatal(res)
	}

	tests := []struct {
		name   string
		before func()
		caller func() Caller
		want   string
	}{
		{"ok", nil, func() Caller { return h.ak(id, "ak-n1") }, ""},
		{"replayed nonce", nil, func() Caller { return h.ak(id, "ak-n1") }, "auth.nonce_reused"},
		{"unknown access key", nil, func() Caller { return h.ak("ak_"+strings.Repeat("0", 32), h.nonce()) }, "auth.token_invalid"},
		{"stale signature", nil, func() Caller { c := h.ak(id, h.nonce()); c.Created -= 301; return c }, "auth.signature_expired"},
		{"future signature", nil, func() Caller { c := h.ak(id, h.nonce()); c.Created += 400; return c }, "auth.signature_invalid"},
		{"revoked", nil, func() Caller { return h.ak(revoked, h.nonce()) }, "auth.key_revoked"},
		{"not yet expired", nil, func() Caller { return h.ak(expiring, h.nonce()) }, ""},
		{"expired at the stamp", func() { h.stamp += 5000 }, func() Caller { return h.ak(expiring, h.nonce()) }, "auth.key_revoked"},
		{"grantor disabled", func() { h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserDisable, TargetUserID: alice}) }, func() Caller { return h.ak(id, "ak-n2") }, "auth.user_disabled"},
		{"status before nonce", nil, func() Caller { return h.ak(id, "ak-n2") }, "auth.user_disabled"},
		{"grantor enabled again, nonce not consumed by the refusal", func() { h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserEnable, TargetUserID: alice}) }, func() Caller { return h.ak(id, "ak-n2") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			res := h.apply(TypeCall, &Call{Caller: tt.caller(), Op: OpKeyGet, KeyID: key})
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
		})
	}
	entries, _ := h.f.Audit(0, 10_000)
	last := entries[len(entries)-1]
	if last.Actor != id || last.Action != OpKeyGet || last.Outcome != "allowed" {
		t.Fatalf("audit entry %+v", last)
	}
}

func TestAccessKeyEffectivePermissionsAndScope(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	bob := h.createUser("bob")
	k1 := h.activeKey(alice, CurveSecp256k1)
	k2 := h.activeKey(alice, CurveSecp256k1)
	bobKey := h.activeKey(bob, CurveSecp256k1)
	scoped := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead, PermKeysSign}, KeyIDs: []string{k1}})
	reader := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(2), Permissions: []string{PermKeysRead}})
	digest := strings.Repeat("ab", 32)
	sched := func() *Schedule {
		return &Schedule{RequestID: fmt.Sprintf("req_ak%d", nonceSeq), Committee: []string{"n1", "n2"}, Nonce: freshNonce()}
	}
	// A request on k2 made by alice herself.
	own := h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpKeySign, KeyID: k2, MessageHex: digest, Schedule: sched()})
	if !own.OK() {
		t.Fatal(own)
	}

	var signed string
	tests := []struct {
		name   string
		before func()
		call   func() Call
		want   string
	}{
		{"read a key in scope", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeyGet, KeyID: k1} }, ""},
		{"read a key out of scope", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeyGet, KeyID: k2} }, "key.not_found"},
		{"read another user's key", nil, func() Call { return Call{Caller: h.ak(reader, h.nonce()), Op: OpKeyGet, KeyID: bobKey} }, "key.not_found"},
		{"unscoped key reads every key of the grantor", nil, func() Call { return Call{Caller: h.ak(reader, h.nonce()), Op: OpKeyGet, KeyID: k2} }, ""},
		{"sign without keys:sign in the grant", nil, func() Call {
			return Call{Caller: h.ak(reader, h.nonce()), Op: OpKeySign, KeyID: k1, MessageHex: digest, Schedule: sched()}
		}, "perm.denied"},
		{"sign out of scope", nil, func() Call {
			return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeySign, KeyID: k2, MessageHex: digest, Schedule: sched()}
		}, "key.not_found"},
		{"sign in scope", nil, func() Call {
			return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeySign, KeyID: k1, MessageHex: digest, Schedule: sched()}
		}, ""},
		{"request out of scope", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpRequestGet, RequestID: own.RequestID} }, "request.not_found"},
		{"an access key does not see its grantor's own requests", nil, func() Call { return Call{Caller: h.ak(reader, h.nonce()), Op: OpRequestGet, RequestID: own.RequestID} }, "request.not_found"},
		{"access keys cannot create keys", nil, func() Call {
			return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeyCreate, Curve: CurveEd25519, Threshold: 2}
		}, "perm.denied"},
		{"access keys cannot read the cluster", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpClusterGet} }, "perm.denied"},
		{"access keys cannot list access keys", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpAccessList} }, "perm.denied"},
		{"grantor loses keys:sign: the key loses it too", func() { h.setPerms(alice, PermKeysRead, PermAccessManage) }, func() Call {
			return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeySign, KeyID: k1, MessageHex: digest, Schedule: sched()}
		}, "perm.denied"},
		{"grantor keeps keys:read", nil, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeyGet, KeyID: k1} }, ""},
		{"grantor loses keys:read", func() { h.setPerms(alice, PermAccessManage) }, func() Call { return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeyList} }, "perm.denied"},
		{"grantor regains them", func() { h.setPerms(alice, DefaultPermissions()...) }, func() Call {
			return Call{Caller: h.ak(scoped, h.nonce()), Op: OpKeySign, KeyID: k1, MessageHex: digest, Schedule: sched()}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			c := tt.call()
			res := h.apply(TypeCall, &c)
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
			if c.Op == OpKeySign && res.OK() {
				signed = res.RequestID
			}
		})
	}
	r := h.f.Request(signed)
	if r == nil || r.Owner != alice || r.AccessKeyID != scoped || r.Actor != scoped {
		t.Fatalf("request made by an access key: %+v", r)
	}
	// The access key that made a request reads it; another of the grantor's does not.
	for ak, want := range map[string]string{scoped: "", reader: "request.not_found"} {
		c := Call{Caller: h.ak(ak, h.nonce()), Op: OpRequestGet, RequestID: signed}
		if res := h.apply(TypeCall, &c); res.Code != want {
			t.Fatalf("%s reads the request %s made: %q, want %q", ak, scoped, res.Code, want)
		}
	}
	if keys := h.f.KeysIn(alice, h.f.AccessKey(scoped).KeyIDs, "", 100); len(keys) != 1 || keys[0].ID != k1 {
		t.Fatalf("scoped key list: %v", keys)
	}
	if keys := h.f.KeysIn(alice, nil, "", 100); len(keys) != 2 {
		t.Fatalf("unscoped key list: %d keys", len(keys))
	}
}

func TestAccessKeyRevokeListAndLog(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	bob := h.createUser("bob")
	id := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}, Label: "bot"})
	other := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(2), Permissions: []string{PermKeysRead}})

	if res := h.apply(TypeCall, &Call{Caller: h.ak(id, h.nonce()), Op: OpKeyList}); !res.OK() {
		t.Fatal(res)
	}
	if res := h.apply(TypeCall, &Call{Caller: h.ak(id, h.nonce()), Op: OpKeyGet, KeyID: "key_x"}); res.Code != "key.not_found" {
		t.Fatal(res)
	}
	revokeTests := []struct {
		name   string
		caller func() Caller
		target string
		want   string
	}{
		{"someone else's key", func() Caller { return h.user(bob, h.nonce()) }, id, "access_key.not_found"},
		{"unknown key", func() Caller { return h.user(alice, h.nonce()) }, "ak_nope", "access_key.not_found"},
		{"the admin", func() Caller { return h.admin(h.nonce()) }, id, "perm.denied"},
		{"the grantor", func() Caller { return h.user(alice, h.nonce()) }, id, ""},
		{"again", func() Caller { return h.user(alice, h.nonce()) }, id, ""},
	}
	for _, tt := range revokeTests {
		t.Run("revoke "+tt.name, func(t *testing.T) {
			res := h.apply(TypeCall, &Call{Caller: tt.caller(), Op: OpAccessRevoke, AccessKeyID: tt.target})
			if res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
		})
	}
	ak := h.f.AccessKey(id)
	if ak.RevokedAt == 0 || ak.RevokedAt >= h.stamp {
		t.Fatalf("revoked at %d (stamp %d): a second revoke must keep the first time", ak.RevokedAt, h.stamp)
	}
	if res := h.apply(TypeCall, &Call{Caller: h.ak(id, h.nonce()), Op: OpKeyList}); res.Code != "auth.key_revoked" {
		t.Fatal(res)
	}
	// The public key is free again once its key is revoked.
	h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}})

	if list := h.f.AccessKeysOf(alice, "", 10); len(list) != 3 || list[0].ID >= list[1].ID {
		t.Fatalf("list: %d keys", len(list))
	}
	if list := h.f.AccessKeysOf(alice, "", 1); len(list) != 1 {
		t.Fatalf("limit: %d", len(list))
	}
	for _, c := range []struct {
		caller Caller
		op     string
		want   string
	}{
		{h.user(alice, h.nonce()), OpAccessList, ""},
		{h.user(bob, h.nonce()), OpAccessLog, "access_key.not_found"},
		{h.user(alice, h.nonce()), OpAccessLog, ""},
	} {
		if res := h.apply(TypeCall, &Call{Caller: c.caller, Op: c.op, AccessKeyID: id}); res.Code != c.want {
			t.Fatalf("%s: %+v", c.op, res)
		}
	}
	entries, more := h.f.AccessLog(id, 0, 100)
	if more || len(entries) != 3 {
		t.Fatalf("log: %+v", entries)
	}
	want := []struct{ op, outcome, code string }{
		{OpKeyList, "allowed", ""}, {OpKeyGet, "refused", "key.not_found"}, {OpKeyList, "refused", "auth.key_revoked"},
	}
	for i, w := range want {
		e := entries[i]
		if e.Seq != uint64(i+1) || e.Op != w.op || e.Outcome != w.outcome || e.Code != w.code {
			t.Fatalf("entry %d: %+v, want %+v", i, e, w)
		}
	}
	if e, _ := h.f.AccessLog(other, 0, 10); len(e) != 0 {
		t.Fatal("another key's log has entries")
	}
}

func TestAccessLogIsBounded(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	id := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}})
	const uses = MaxAccessLogEntries + 25
	for i := 0; i < uses; i++ {
		h.apply(TypeCall, &Call{Caller: h.ak(id, h.nonce()), Op: OpKeyList})
	}
	all, more := h.f.AccessLog(id, 0, 5000)
	if more || len(all) != MaxAccessLogEntries {
		t.Fatalf("log keeps %d entries (more=%v), want %d", len(all), more, MaxAccessLogEntries)
	}
	if all[0].Seq != uses-MaxAccessLogEntries+1 || all[len(all)-1].Seq != uses {
		t.Fatalf("log keeps seq %d..%d, want the newest", all[0].Seq, all[len(all)-1].Seq)
	}
	page, more := h.f.AccessLog(id, uses-10, 5)
	if !more || len(page) != 5 || page[0].Seq != uses-9 {
		t.Fatalf("page after %d: %+v more=%v", uses-10, page, more)
	}
}

func TestAccessKeysPerGrantorBounded(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	var first string
	for i := 0; i < MaxAccessKeysPerGrantor; i++ {
		pub := hex.EncodeToString(append(bytes.Repeat([]byte{7}, 30), byte(i>>8), byte(i)))
		id := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: pub, Permissions: []string{PermKeysRead}})
		if i == 0 {
			first = id
		}
	}
	extra := GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}}
	res := h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessCreate, Grant: &extra, Schedule: &Schedule{AccessKeyID: akID()}})
	if res.Code != "request.conflict" {
		t.Fatalf("grant past the limit: %+v", res)
	}
	h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessRevoke, AccessKeyID: first})
	h.grant(alice, extra)
	if h.f.AccessKey(first) != nil {
		t.Fatal("the dead key was not dropped to make room")
	}
	if n := len(h.f.AccessKeysOf(alice, "", 1000)); n != MaxAccessKeysPerGrantor {
		t.Fatalf("%d keys kept", n)
	}
}

func TestAccessKeyPruneAndSnapshot(t *testing.T) {
	h := newHarness(t)
	alice := h.createUser("alice")
	dead := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}})
	live := h.grant(alice, GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(2), Permissions: []string{PermKeysRead}})
	h.apply(TypeCall, &Call{Caller: h.ak(dead, h.nonce()), Op: OpKeyList})
	h.apply(TypeCall, &Call{Caller: h.user(alice, h.nonce()), Op: OpAccessRevoke, AccessKeyID: dead})

	snap := snapshotOf(t, h.f)
	g := restoredFSM(t, snap)
	if _, h1 := h.f.Hash(); func() string { _, h2 := g.Hash(); return h2 }() != h1 {
		t.Fatal("restored state differs")
	}
	if e, _ := g.AccessLog(dead, 0, 10); len(e) != 1 || g.AccessKeyByPublicKey(SchemeEd25519, bytes.Repeat([]byte{2}, 32)).ID != live {
		t.Fatal("access keys not restored")
	}

	h.stamp += AccessKeyRetentionMs + pruneEveryMs + 1
	h.apply(TypeCall, &Call{Caller: h.admin(""), Op: OpUserList})
	if h.f.AccessKey(dead) != nil || h.f.AccessKeyByPublicKey(SchemeEd25519, bytes.Repeat([]byte{1}, 32)) != nil {
		t.Fatal("a key dead for longer than the retention was not pruned")
	}
	if e, _ := h.f.AccessLog(dead, 0, 10); len(e) != 0 {
		t.Fatal("the pruned key's log was kept")
	}
	if h.f.AccessKey(live) == nil {
		t.Fatal("a live key was pruned")
	}
}

func TestRestoreVersion1Snapshot(t *testing.T) {
	v1 := `{"version":1,"name":"old","threshold":2,"members":[{"id":"n1"},{"id":"n2"}],"users":{"1":{"user_id":1,"name":"a","status":"active","permissions":["keys:read","access:manage"],"created_at_ms":1}},"next_user_id":1,"keys":{},"requests":{},"open":{},"nonces":{},"sessions":{},"idem":{},"idem_hash":{},"audit":[],"last_stamp":5,"last_prune":0,"applied":3}`
	f := openTestFSM(t, okVerifier{}, nil, nil)
	// From a leader: refused (every member runs this binary's format).
	if err := f.Restore(io.NopCloser(strings.NewReader(v1))); err == nil || !strings.Contains(err.Error(), "upgrade every member") {
		t.Fatalf("a leader's JSON snapshot: %v", err)
	}
	// From the node's own store at start: converted.
	if err := f.RestoreLocal(io.NopCloser(strings.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	b, _ := Encode(TypeCall, 10, &Call{Caller: Caller{Kind: CallerUser, UserID: 1}, Op: OpAccessCreate,
		Grant: &GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}}, Schedule: &Schedule{AccessKeyID: akID()}})
	res := f.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: b}).(Result)
	if !res.OK() {
		t.Fatalf("access key on a state restored from a version-1 snapshot: %+v", res)
	}
	if err := f.RestoreLocal(io.NopCloser(strings.NewReader(strings.Replace(v1, `"version":1`, `"version":3`, 1)))); err == nil {
		t.Fatal("a snapshot from a newer version was restored")
	}
}

func TestCallSchemaVersion(t *testing.T) {
	tests := []struct {
		name string
		call Call
		want int
	}{
		{"user call", Call{Caller: Caller{Kind: CallerUser, UserID: 1}, Op: OpKeyList}, 1},
		{"access-key caller", Call{Caller: Caller{Kind: CallerAccessKey, AccessKeyID: "ak_1"}, Op: OpKeyList}, 2},
		{"access op", Call{Caller: Caller{Kind: CallerUser, UserID: 1}, Op: OpAccessList}, 2},
		{"admin with jti and signature", Call{Caller: Caller{Kind: CallerAdmin, NonceKey: "sig|admin|x", TokenNonceKey: "jti|y"}, Op: OpUserList}, 2},
		{"x-auth signed form", Call{Caller: Caller{Kind: CallerUser}, Op: OpKeySign, Signed: &SignedForm{XAuthToken: "t"}}, 2},
		{"proposal id", Call{Caller: Caller{Kind: CallerUser, UserID: 1}, Op: OpKeyList, ProposalID: "p1"}, 3},
	}
	for _, tt := range tests {
		b, err := Encode(TypeCall, 1, &tt.call)
		if err != nil {
			t.Fatal(err)
		}
		var env Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if env.Version != tt.want {
			t.Errorf("%s: version %d, want %d", tt.name, env.Version, tt.want)
		}
	}
}

func TestAdminJTIAndSignatureNonceBothConsumed(t *testing.T) {
	h := newHarness(t)
	admin := func(nonce, jti string) Caller {
		c := h.admin(nonce)
		c.TokenNonceKey = jti
		return c
	}
	tests := []struct {
		name   string
		caller Caller
		want   string
	}{
		{"first", admin("sig|admin|a", "jti|1"), ""},
		{"same jti, new nonce", admin("sig|admin|b", "jti|1"), "auth.nonce_reused"},
		{"new jti, same nonce", admin("sig|admin|a", "jti|2"), "auth.nonce_reused"},
		{"the refused ones consumed nothing", admin("sig|admin|b", "jti|2"), ""},
		{"one key twice", admin("x", "x"), "auth.nonce_reused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := h.apply(TypeCall, &Call{Caller: tt.caller, Op: OpUserList}); res.Code != tt.want {
				t.Fatalf("code %q, want %q (%s)", res.Code, tt.want, res.Detail)
			}
		})
	}
}

func TestParseGrant(t *testing.T) {
	good := GrantFields{Scheme: SchemeEd25519, PublicKey: edPub(1), Permissions: []string{PermKeysRead}, ExpiresAt: "2030-01-02T03:04:05.678Z"}
	f, err := ParseGrant(&good)
	if err != nil {
		t.Fatal(err)
	}
	if f.ExpiresAt != time.Date(2030, 1, 2, 3, 4, 5, 678e6, time.UTC).UnixMilli() || len(f.PublicKey) != 32 || f.KeyIDs != nil {
		t.Fatalf("parsed %+v", f)
	}
	bad := good
	bad.KeyIDs = []string{strings.Repeat("k", 129)}
	if _, err := ParseGrant(&bad); err == nil {
		t.Fatal("an overlong key id was accepted")
	}
}

func FuzzParseGrant(f *testing.F) {
	f.Add("ed25519", edPub(1), "keys:read", "", "2030-01-02T03:04:05Z")
	f.Add("secp256k1", "02"+strings.Repeat("11", 32), "keys:sign", "key_1", "")
	f.Fuzz(func(t *testing.T, scheme, pub, perm, keyID, exp string) {
		g := GrantFields{Scheme: scheme, PublicKey: pub, Permissions: []string{perm}, ExpiresAt: exp}
		if keyID != "" {
			g.KeyIDs = []string{keyID}
		}
		v, err := ParseGrant(&g)
		if err == nil && (v.Scheme != scheme || len(v.Permissions) != 1) {
			t.Fatalf("accepted grant changed: %+v", v)
		}
	})
}
