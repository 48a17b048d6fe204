package api

import (
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The legacy* functions below build the answers exactly as node/handlers.go and
// node/access.go built them (maps) before this package, from the same data; each case
// checks that marshalling the api type gives the same JSON object. They are the record
// that moving the server (internal/httpapi) onto these types changed no answer; the
// answers' exact bytes are pinned by TestAnswerJSONGolden.

func rfc3339(ms int64) string     { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }
func rfc3339Nano(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
func secs(ms int64) time.Time     { return time.Unix(ms/1000, 0).UTC() }
func millis(ms int64) time.Time   { return time.UnixMilli(ms).UTC() }

// key is the state a key view is built from.
type key struct {
	id, label, curve, status string
	threshold, parties       int
	pub, chain               []byte
	created                  int64
}

func legacyKey(k key) map[string]any {
	v := map[string]any{
		"key_id": k.id, "label": k.label, "curve": k.curve, "threshold": k.threshold,
		"parties": k.parties, "public_key": hex.EncodeToString(k.pub), "status": k.status,
		"created_at": rfc3339(k.created),
	}
	if len(k.chain) > 0 && k.status == KeyActive {
		v["chain_code"] = hex.EncodeToString(k.chain)
	}
	return v
}

func apiKey(k key) Key {
	out := Key{KeyID: k.id, Label: k.label, Curve: k.curve, Threshold: k.threshold, Parties: k.parties,
		PublicKey: hex.EncodeToString(k.pub), Status: k.status, CreatedAt: secs(k.created)}
	if len(k.chain) > 0 && k.status == KeyActive {
		out.ChainCode = hex.EncodeToString(k.chain)
	}
	return out
}

// request is the state a request view is built from.
type request struct {
	id, kind, status, keyID, path, idem, session string
	created, updated                             int64
	message                                      []byte
	sig                                          *struct {
		r, s, der, ed []byte
		rec           int
	}
	key        *key
	inline     []string
	errCode    string
	errDetail  string
	hasErrInfo bool
}

func legacyRequest(r request) map[string]any {
	v := map[string]any{
		"request_id": r.id, "kind": r.kind, "status": r.status, "key_id": r.keyID,
		"created_at": rfc3339(r.created), "updated_at": rfc3339(r.updated),
	}
	if r.kind == KindSign {
		v["message"] = hex.EncodeToString(r.message)
		if r.path != "" {
			v["derivation_path"] = r.path
		}
	}
	if r.idem != "" {
		v["idempotency_key"] = r.idem
	}
	if r.session != "" {
		v["session_id"] = r.session
	}
	if s := r.sig; s != nil && r.status == StatusSigned {
		if len(s.ed) > 0 {
			v["signature"] = map[string]any{"signature": hex.EncodeToString(s.ed)}
		} else {
			v["signature"] = map[string]any{"r": hex.EncodeToString(s.r), "s": hex.EncodeToString(s.s), "recovery_id": s.rec, "der": hex.EncodeToString(s.der)}
		}
	}
	if r.kind == KindKeygen && r.status == StatusActive && r.key != nil {
		v["key"] = legacyKey(*r.key)
	}
	if len(r.inline) > 0 {
		v["preparams_inline"] = r.inline
	}
	if r.hasErrInfo {
		v["error"] = map[string]any{"code": r.errCode, "detail": r.errDetail}
	}
	return v
}

func apiRequest(r request) Request {
	out := Request{RequestID: r.id, Kind: r.kind, Status: r.status, KeyID: r.keyID, CreatedAt: secs(r.created), UpdatedAt: secs(r.updated),
		IdempotencyKey: r.idem, SessionID: r.session, PreParamsInline: r.inline}
	if r.kind == KindSign {
		out.Message = hex.EncodeToString(r.message)
		out.DerivationPath = r.path
	}
	if s := r.sig; s != nil && r.status == StatusSigned {
		if len(s.ed) > 0 {
			out.Signature = &Signature{Signature: hex.EncodeToString(s.ed)}
		} else {
			rec := s.rec
			out.Signature = &Signature{R: hex.EncodeToString(s.r), S: hex.EncodeToString(s.s), RecoveryID: &rec, DER: hex.EncodeToString(s.der)}
		}
	}
	if r.kind == KindKeygen && r.status == StatusActive && r.key != nil {
		k := apiKey(*r.key)
		out.Key = &k
	}
	if r.hasErrInfo {
		out.Error = &RequestError{Code: r.errCode, Detail: r.errDetail}
	}
	return out
}

// accessKey is the state an access-key view is built from.
type accessKey struct {
	id, label, scheme         string
	pub                       []byte
	perms, keyIDs             []string
	expires, created, revoked int64
}

func legacyAccessKey(ak accessKey) map[string]any {
	v := map[string]any{
		"id": ak.id, "label": ak.label, "scheme": ak.scheme, "public_key": hex.EncodeToString(ak.pub),
		"permissions": ak.perms, "key_ids": ak.keyIDs, "expires_at": nil,
		"created_at": rfc3339Nano(ak.created), "revoked_at": nil,
	}
	if ak.keyIDs == nil {
		v["key_ids"] = []string{}
	}
	if ak.perms == nil {
		v["permissions"] = []string{}
	}
	if ak.expires != 0 {
		v["expires_at"] = rfc3339Nano(ak.expires)
	}
	if ak.revoked != 0 {
		v["revoked_at"] = rfc3339Nano(ak.revoked)
	}
	return v
}

func apiAccessKey(ak accessKey) AccessKey {
	out := AccessKey{ID: ak.id, Label: ak.label, Scheme: ak.scheme, PublicKey: hex.EncodeToString(ak.pub),
		Permissions: ak.perms, KeyIDs: ak.keyIDs, CreatedAt: millis(ak.created)}
	if ak.expires != 0 {
		out.ExpiresAt = millis(ak.expires)
	}
	if ak.revoked != 0 {
		out.RevokedAt = millis(ak.revoked)
	}
	return out
}

// sameJSON marshals both and compares them as JSON values (object member order aside).
func sameJSON(t *testing.T, legacy, typed any) {
	t.Helper()
	lb, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := json.Marshal(typed)
	if err != nil {
		t.Fatal(err)
	}
	var lv, tv any
	if err := json.Unmarshal(lb, &lv); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(tb, &tv); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(lv, tv) {
		t.Fatalf("JSON differs\nserver: %s\napi:    %s", lb, tb)
	}
}

const (
	t0 = int64(1767323045123) // 2026-01-02T03:04:05.123Z
	t1 = int64(1767323107000)
)

var (
	pub33 = append([]byte{2}, make([]byte, 32)...)
	pub32 = make([]byte, 32)
	chain = []byte(strings.Repeat("c", 32))
)

func TestKeyJSONIsTheServers(t *testing.T) {
	tests := map[string]key{
		"active secp256k1 with chain code": {id: "key_1", label: "hot", curve: CurveSecp256k1, status: KeyActive, threshold: 2, parties: 3, pub: pub33, chain: chain, created: t0},
		"generating: chain code withheld":  {id: "key_2", curve: CurveSecp256k1, status: KeyGenerating, threshold: 2, parties: 3, chain: chain, created: t0},
		"ed25519":                          {id: "key_3", label: "ed", curve: CurveEd25519, status: KeyActive, threshold: 3, parties: 3, pub: pub32, created: t1},
		"failed, empty label":              {id: "key_4", curve: CurveEd25519, status: KeyFailed, threshold: 2, parties: 2, created: 0},
	}
	for name, k := range tests {
		t.Run(name, func(t *testing.T) { sameJSON(t, legacyKey(k), apiKey(k)) })
	}
	t.Run("keygen answer with inline pre-parameters", func(t *testing.T) {
		k := tests["active secp256k1 with chain code"]
		lv := legacyKey(k)
		lv["preparams_inline"] = []string{"node2"}
		av := apiKey(k)
		av.PreParamsInline = []string{"node2"}
		sameJSON(t, lv, av)
	})
	t.Run("list pages", func(t *testing.T) {
		k := tests["ed25519"]
		sameJSON(t, map[string]any{"keys": []map[string]any{legacyKey(k)}, "next": "key_3"}, KeyList{Keys: []Key{apiKey(k)}, Next: "key_3"})
		sameJSON(t, map[string]any{"keys": []map[string]any{}}, KeyList{Keys: []Key{}})
	})
}

func TestRequestJSONIsTheServers(t *testing.T) {
	active := key{id: "key_1", label: "hot", curve: CurveSecp256k1, status: KeyActive, threshold: 2, parties: 3, pub: pub33, chain: chain, created: t0}
	ecdsa := &struct {
		r, s, der, ed []byte
		rec           int
	}{r: make([]byte, 32), s: []byte{1, 2}, der: []byte{0x30, 1}, rec: 0}
	ed := &struct {
		r, s, der, ed []byte
		rec           int
	}{ed: make([]byte, 64)}
	tests := map[string]request{
		"ecdsa signed, recovery id 0, path": {id: "req_1", kind: KindSign, status: StatusSigned, keyID: "key_1", path: "m/0/7", idem: "i-1", session: "sess", created: t0, updated: t1, message: make([]byte, 32), sig: ecdsa},
		"ed25519 signed, empty message":     {id: "req_2", kind: KindSign, status: StatusSigned, keyID: "key_3", created: t0, updated: t1, sig: ed},
		"sign scheduled":                    {id: "req_3", kind: KindSign, status: StatusScheduled, keyID: "key_1", created: t0, updated: t0, message: []byte("hi"), session: "s"},
		"sign submitted, no session":        {id: "req_4", kind: KindSign, status: StatusSubmitted, keyID: "key_1", created: t0, updated: t0, message: []byte("hi")},
		"sign failed":                       {id: "req_5", kind: KindSign, status: StatusFailed, keyID: "key_1", created: t0, updated: t1, message: []byte{0}, hasErrInfo: true, errCode: CodeCeremonyFailed, errDetail: "3 attempts failed"},
		"sign blocked, empty detail":        {id: "req_6", kind: KindSign, status: StatusBlocked, keyID: "key_1", created: t0, updated: t1, hasErrInfo: true, errCode: CodePermDenied},
		"keygen active":                     {id: "req_7", kind: KindKeygen, status: StatusActive, keyID: "key_1", created: t0, updated: t1, key: &active, inline: []string{"node1", "node3"}},
		"keygen scheduled":                  {id: "req_8", kind: KindKeygen, status: StatusScheduled, keyID: "key_1", idem: "k", created: t0, updated: t0, session: "x"},
		"keygen failed":                     {id: "req_9", kind: KindKeygen, status: StatusFailed, keyID: "key_1", created: t0, updated: t1, hasErrInfo: true, errCode: CodeCeremonyFailed, errDetail: "keygen timed out"},
	}
	for name, r := range tests {
		t.Run(name, func(t *testing.T) { sameJSON(t, legacyRequest(r), apiRequest(r)) })
	}
	t.Run("problem with the request", func(t *testing.T) {
		r := tests["sign blocked, empty detail"]
		lv := map[string]any{"type": "about:blank", "title": "permission denied", "status": 403, "code": "perm.denied", "detail": "", "request_id": "rq_1", "request": legacyRequest(r)}
		ar := apiRequest(r)
		av := Problem{Type: ProblemTypeBlank, Title: Title(CodePermDenied), Status: StatusOf(CodePermDenied), Code: CodePermDenied, RequestID: "rq_1", Request: &ar}
		sameJSON(t, lv, av)
	})
}

func TestSignatureShapes(t *testing.T) {
	zero := 0
	for _, tt := range []struct {
		sig  Signature
		want string
	}{
		{Signature{R: "01", S: "02", RecoveryID: &zero, DER: "30"}, `{"r":"01","s":"02","recovery_id":0,"der":"30"}`},
		{Signature{Signature: "ee"}, `{"signature":"ee"}`},
	} {
		b, err := json.Marshal(tt.sig)
		if err != nil || string(b) != tt.want {
			t.Errorf("got %s %v, want %s", b, err, tt.want)
		}
		var back Signature
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tt.sig) {
			t.Errorf("round trip of %s: %+v %v", b, back, err)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, kind := range []string{KindSign, KindKeygen} {
		r := Request{RequestID: "r", Kind: kind, Status: StatusScheduled, KeyID: "k", CreatedAt: secs(t0)}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `"message"`) != (kind == KindSign) {
			t.Fatalf("%s: %s", kind, b)
		}
		var back Request
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip of %s: %+v %v", b, back, err)
		}
	}
}

func TestUserAndClusterJSONAreTheServers(t *testing.T) {
	type user struct {
		id      uint64
		name    string
		status  string
		perms   []string
		created int64
	}
	legacyUser := func(u user) map[string]any {
		return map[string]any{"user_id": u.id, "name": u.name, "status": u.status, "permissions": u.perms, "created_at": rfc3339(u.created)}
	}
	apiUser := func(u user) User {
		return User{UserID: u.id, Name: u.name, Status: u.status, Permissions: u.perms, CreatedAt: secs(u.created)}
	}
	for name, u := range map[string]user{
		"default permissions": {id: 7, name: "alice", status: UserActive, perms: []string{PermKeysRead, PermKeysSign}, created: t0},
		"no permissions":      {id: 1 << 40, name: "bob", status: UserDisabled, created: t1},
	} {
		t.Run(name, func(t *testing.T) { sameJSON(t, legacyUser(u), apiUser(u)) })
	}
	u := user{id: 3, name: "c", status: UserActive, perms: []string{}, created: t0}
	sameJSON(t, map[string]any{"users": []map[string]any{legacyUser(u)}, "next": strconv.FormatUint(u.id, 10)}, UserList{Users: []User{apiUser(u)}, Next: "3"})
	sameJSON(t, map[string]any{"users": []map[string]any{}}, UserList{Users: []User{}})
	sameJSON(t, map[string]any{"user_id": uint64(9), "name": "dora"}, UserCreated{UserID: 9, Name: "dora"})
	sameJSON(t, map[string]any{"user_id": uint64(9)}, SigpairUserCreated{UserID: 9})
	sameJSON(t, map[string]any{"public_key": "ab"}, AdminKey{PublicKey: "ab"})

	ms := []map[string]any{
		{"id": "node1", "api": "http://127.0.0.1:7701", "peer_id": "12D3a", "healthy": true, "leader": false},
		{"id": "node2", "api": "http://127.0.0.1:7702", "peer_id": "12D3b", "healthy": false, "leader": true},
	}
	sameJSON(t, map[string]any{"name": "dev", "threshold": 2, "parties": len(ms), "leader": "node2", "members": ms},
		Cluster{Name: "dev", Threshold: 2, Parties: 2, Leader: "node2", Members: []Member{
			{ID: "node1", API: "http://127.0.0.1:7701", PeerID: "12D3a", Healthy: true},
			{ID: "node2", API: "http://127.0.0.1:7702", PeerID: "12D3b", Leader: true},
		}})
	var none []map[string]any // no members, no leader: the server wrote null
	sameJSON(t, map[string]any{"name": "", "threshold": 0, "parties": 0, "leader": "", "members": none}, Cluster{})
}

func TestAccessKeyJSONIsTheServers(t *testing.T) {
	tests := map[string]accessKey{
		"nil lists, no expiry":  {id: "ak_1", scheme: SchemeEd25519, pub: pub32, created: t0},
		"limited and expiring":  {id: "ak_2", label: "bot", scheme: SchemeSecp256k1, pub: pub33, perms: []string{PermKeysSign}, keyIDs: []string{"key_1"}, expires: t1, created: t0},
		"revoked, whole second": {id: "ak_3", scheme: SchemeEd25519, pub: pub32, perms: []string{}, keyIDs: []string{}, created: t1, revoked: t1 + 250},
	}
	for name, ak := range tests {
		t.Run(name, func(t *testing.T) {
			sameJSON(t, legacyAccessKey(ak), apiAccessKey(ak))
			b, _ := json.Marshal(apiAccessKey(ak))
			var back AccessKey
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := apiAccessKey(ak)
			if !back.ExpiresAt.Equal(want.ExpiresAt) || !back.CreatedAt.Equal(want.CreatedAt) || !back.RevokedAt.Equal(want.RevokedAt) || back.ID != want.ID || len(back.Permissions) != len(want.Permissions) {
				t.Fatalf("round trip of %s: %+v", b, back)
			}
		})
	}
	ak := tests["limited and expiring"]
	sameJSON(t, map[string]any{"access_keys": []map[string]any{legacyAccessKey(ak)}, "next": "ak_2"}, AccessKeyList{AccessKeys: []AccessKey{apiAccessKey(ak)}, Next: "ak_2"})

	now := millis(t1)
	revoked := apiAccessKey(tests["revoked, whole second"])
	if revoked.Revoked(now) || !revoked.Revoked(now.Add(time.Second)) || revoked.Expired(now) {
		t.Fatal("Revoked/Expired")
	}
	expiring := apiAccessKey(ak)
	if !expiring.Expired(now) || expiring.Expired(now.Add(-time.Millisecond)) || expiring.Revoked(now) {
		t.Fatal("Expired at the instant")
	}
}

func TestAccessKeyDecoding(t *testing.T) {
	tests := []struct {
		name, in        string
		expires, revoke bool
		wantErr         bool
	}{
		{"nulls", `{"id":"ak_1","expires_at":null,"revoked_at":null,"created_at":"2026-01-02T03:04:05Z"}`, false, false, false},
		{"absent", `{"id":"ak_1"}`, false, false, false},
		{"empty strings", `{"id":"ak_1","expires_at":"","revoked_at":""}`, false, false, false},
		{"set", `{"id":"ak_1","expires_at":"2026-01-02T03:04:05.123Z","revoked_at":"2026-01-02T03:04:05+02:00"}`, true, true, false},
		{"bad time", `{"id":"ak_1","expires_at":"tomorrow"}`, false, false, true},
		{"bad type", `{"id":"ak_1","revoked_at":17}`, false, false, true},
		{"not an object", `[]`, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k AccessKey
			err := json.Unmarshal([]byte(tt.in), &k)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err == nil && (k.ExpiresAt.IsZero() == tt.expires || k.RevokedAt.IsZero() == tt.revoke || k.ID != "ak_1") {
				t.Fatalf("%+v", k)
			}
		})
	}
}

func TestLogsAndAuditJSONAreTheServers(t *testing.T) {
	type use struct {
		seq                          uint64
		at                           int64
		route, object, outcome, code string
	}
	legacy := func(e use) map[string]any {
		return map[string]any{"seq": e.seq, "time": rfc3339Nano(e.at), "route": e.route, "object": e.object, "outcome": e.outcome, "code": e.code}
	}
	typed := func(e use) AccessLogEntry {
		return AccessLogEntry{Seq: e.seq, Time: millis(e.at), Route: e.route, Object: e.object, Outcome: e.outcome, Code: e.code}
	}
	uses := []use{
		{1, t0, "GET /v1/keys", "", OutcomeAllowed, ""},
		{2, t1, "POST /v1/keys/{key_id}/sign", "key_1", OutcomeRefused, CodePermDenied},
	}
	var lv []map[string]any
	var tv []AccessLogEntry
	for _, u := range uses {
		lv = append(lv, legacy(u))
		tv = append(tv, typed(u))
	}
	sameJSON(t, map[string]any{"entries": lv, "next": "2"}, AccessLog{Entries: tv, Next: "2"})
	sameJSON(t, map[string]any{"entries": []map[string]any{}}, AccessLog{Entries: []AccessLogEntry{}})

	e := AuditEntry{Seq: 4, Time: "2026-01-02T03:04:05.123Z", Actor: "admin", Action: "users.create", Object: "user:7", Outcome: OutcomeAllowed, PrevHash: strings.Repeat("0", 64), Hash: strings.Repeat("a", 64)}
	sameJSON(t, map[string]any{"entries": []map[string]any{{"seq": 4, "time": e.Time, "actor": "admin", "action": "users.create", "object": "user:7", "outcome": "allowed", "code": "", "prev_hash": e.PrevHash, "hash": e.Hash}}, "next": "4"},
		AuditList{Entries: []AuditEntry{e}, Next: "4"})
	sameJSON(t, map[string]any{"entries": []AuditEntry{}}, AuditList{Entries: []AuditEntry{}})
}

func TestOpenEndpointsJSON(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want string
	}{
		{Readiness{Status: ReadyStatusReady}, `{"status":"ready"}`},
		{Readiness{Status: ReadyStatusNotReady, Reasons: []string{"no raft leader"}}, `{"status":"not_ready","reasons":["no raft leader"]}`},
		{Health{Status: HealthStatusOK}, `{"status":"ok"}`},
	} {
		if b, err := json.Marshal(tt.v); err != nil || string(b) != tt.want {
			t.Errorf("got %s %v, want %s", b, err, tt.want)
		}
	}
}

func TestFinal(t *testing.T) {
	for status, final := range map[string]bool{
		StatusSubmitted: false, StatusPendingApproval: false, StatusScheduled: false, StatusSigning: false,
		StatusSigned: true, StatusActive: true, StatusBlocked: true, StatusDenied: true, StatusFailed: true,
		"": false, "cancelled": false, "SIGNED": false,
	} {
		if Final(status) != final {
			t.Errorf("Final(%q) = %v", status, !final)
		}
	}
}

func TestRequestBodies(t *testing.T) {
	perms := []string{}
	for _, tt := range []struct {
		v    any
		want string
	}{
		{KeygenBody{Curve: CurveEd25519, Threshold: 2, Label: "agent"}, `{"curve":"ed25519","threshold":2,"label":"agent"}`},
		{SignBody{Message: "00", IdempotencyKey: "i1"}, `{"message":"00","idempotency_key":"i1"}`},
		{UserBody{Name: "bob"}, `{"name":"bob"}`},
		{UserBody{Name: "eve", Permissions: &perms}, `{"name":"eve","permissions":[]}`},
		{PermissionsBody{Permissions: []string{}}, `{"permissions":[]}`},
		{AccessKeyBody{Label: "bot", Scheme: SchemeSecp256k1, PublicKey: "02ab", Permissions: []string{}}, `{"label":"bot","scheme":"secp256k1","public_key":"02ab","permissions":[]}`},
	} {
		if b, err := json.Marshal(tt.v); err != nil || string(b) != tt.want {
			t.Errorf("got %s %v, want %s", b, err, tt.want)
		}
	}
}
