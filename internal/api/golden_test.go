package api

import (
	"encoding/json"
	"testing"
	"time"
)

// golden is an answer value and its exact JSON.
type golden struct {
	name string
	v    any
	want string
}

// goldenAnswers are values of every answer type with their exact JSON, as the nodes
// write them (the server marshals these types): a change of a field's name, presence,
// order or format fails TestAnswerJSONGolden.
func goldenAnswers() []golden {
	// Key, request and user times are whole seconds; access-key and log times milliseconds.
	created := time.Unix(1767323045, 0).UTC()
	updated := time.Unix(1767323107, 0).UTC()
	akTime := time.UnixMilli(1767323045123).UTC()
	rec0 := 0
	key := Key{KeyID: "key_1", Label: "hot", Curve: CurveSecp256k1, Threshold: 2, Parties: 3, PublicKey: "02ab", Status: KeyActive, CreatedAt: created, ChainCode: "cc"}
	keygen := key
	keygen.PreParamsInline = []string{"node2"}
	signed := Request{RequestID: "req_1", Kind: KindSign, Status: StatusSigned, KeyID: "key_1", CreatedAt: created, UpdatedAt: updated,
		Message: "00ff", DerivationPath: "m/0/7", IdempotencyKey: "i-1", SessionID: "sess",
		Signature: &Signature{R: "01", S: "02", RecoveryID: &rec0, DER: "3006"}}
	blocked := Request{RequestID: "req_2", Kind: KindSign, Status: StatusBlocked, KeyID: "key_1", CreatedAt: created, UpdatedAt: updated,
		Error: &RequestError{Code: CodePolicyBlocked, Detail: ""}}
	active := Request{RequestID: "req_3", Kind: KindKeygen, Status: StatusActive, KeyID: "key_1", CreatedAt: created, UpdatedAt: updated,
		Key: &key, PreParamsInline: []string{"node1"}}
	user := User{UserID: 7, Name: "alice", Status: UserActive, Permissions: []string{PermKeysRead}, CreatedAt: created}
	ak := AccessKey{ID: "ak_1", Label: "bot", Scheme: SchemeEd25519, PublicKey: "ee", Permissions: []string{PermKeysSign}, KeyIDs: []string{"key_1"},
		ExpiresAt: akTime.Add(time.Hour), CreatedAt: akTime, RevokedAt: akTime.Add(1877 * time.Millisecond)}
	audit := AuditEntry{Seq: 4, Time: "2026-01-02T03:04:05.123Z", Actor: "admin", Action: "users.create", Object: "user:7", Outcome: OutcomeAllowed, PrevHash: "00", Hash: "aa"}
	return []golden{
		{"key", key, `{"key_id":"key_1","label":"hot","curve":"secp256k1","threshold":2,"parties":3,"public_key":"02ab","status":"active","created_at":"2026-01-02T03:04:05Z","chain_code":"cc"}`},
		{"keygen answer", keygen, `{"key_id":"key_1","label":"hot","curve":"secp256k1","threshold":2,"parties":3,"public_key":"02ab","status":"active","created_at":"2026-01-02T03:04:05Z","chain_code":"cc","preparams_inline":["node2"]}`},
		{"key list", KeyList{Keys: []Key{key}, Next: "key_1"}, `{"keys":[{"key_id":"key_1","label":"hot","curve":"secp256k1","threshold":2,"parties":3,"public_key":"02ab","status":"active","created_at":"2026-01-02T03:04:05Z","chain_code":"cc"}],"next":"key_1"}`},
		{"empty key list", KeyList{Keys: []Key{}}, `{"keys":[]}`},
		{"signed ECDSA request", signed, `{"request_id":"req_1","kind":"sign","status":"signed","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:07Z","derivation_path":"m/0/7","idempotency_key":"i-1","session_id":"sess","signature":{"r":"01","s":"02","recovery_id":0,"der":"3006"},"message":"00ff"}`},
		{"signed Ed25519 request, empty message", Request{RequestID: "req_4", Kind: KindSign, Status: StatusSigned, KeyID: "key_2", CreatedAt: created, UpdatedAt: updated, Signature: &Signature{Signature: "abcd"}}, `{"request_id":"req_4","kind":"sign","status":"signed","key_id":"key_2","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:07Z","signature":{"signature":"abcd"},"message":""}`},
		{"blocked request", blocked, `{"request_id":"req_2","kind":"sign","status":"blocked","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:07Z","error":{"code":"policy.blocked","detail":""},"message":""}`},
		{"active keygen request", active, `{"request_id":"req_3","kind":"keygen","status":"active","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:07Z","key":{"key_id":"key_1","label":"hot","curve":"secp256k1","threshold":2,"parties":3,"public_key":"02ab","status":"active","created_at":"2026-01-02T03:04:05Z","chain_code":"cc"},"preparams_inline":["node1"]}`},
		{"scheduled keygen request", Request{RequestID: "req_5", Kind: KindKeygen, Status: StatusScheduled, KeyID: "key_3", CreatedAt: created, UpdatedAt: created}, `{"request_id":"req_5","kind":"keygen","status":"scheduled","key_id":"key_3","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`},
		{"problem", Problem{Type: ProblemTypeBlank, Title: Title(CodeKeyNotFound), Status: StatusOf(CodeKeyNotFound), Code: CodeKeyNotFound, Detail: "no such key", RequestID: "rq_1"}, `{"type":"about:blank","title":"key not found","status":404,"code":"key.not_found","detail":"no such key","request_id":"rq_1"}`},
		{"problem with the request", Problem{Type: ProblemTypeBlank, Title: Title(CodePolicyBlocked), Status: StatusOf(CodePolicyBlocked), Code: CodePolicyBlocked, RequestID: "rq_2", Request: &blocked}, `{"type":"about:blank","title":"blocked by policy","status":403,"code":"policy.blocked","detail":"","request_id":"rq_2","request":{"request_id":"req_2","kind":"sign","status":"blocked","key_id":"key_1","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:05:07Z","error":{"code":"policy.blocked","detail":""},"message":""}}`},
		{"user", user, `{"user_id":7,"name":"alice","status":"active","permissions":["keys:read"],"created_at":"2026-01-02T03:04:05Z"}`},
		{"user without permissions", User{UserID: 8, Name: "bob", Status: UserDisabled, CreatedAt: created}, `{"user_id":8,"name":"bob","status":"disabled","permissions":null,"created_at":"2026-01-02T03:04:05Z"}`},
		{"user list", UserList{Users: []User{user}, Next: "7"}, `{"users":[{"user_id":7,"name":"alice","status":"active","permissions":["keys:read"],"created_at":"2026-01-02T03:04:05Z"}],"next":"7"}`},
		{"empty user list", UserList{Users: []User{}}, `{"users":[]}`},
		{"user created", UserCreated{UserID: 9, Name: "dora"}, `{"user_id":9,"name":"dora"}`},
		{"sigpair user created", SigpairUserCreated{UserID: 9}, `{"user_id":9}`},
		{"cluster", Cluster{Name: "dev", Threshold: 2, Parties: 2, Leader: "node2", Members: []Member{
			{ID: "node1", API: "http://127.0.0.1:7701", PeerID: "12D3a", Healthy: true},
			{ID: "node2", API: "http://127.0.0.1:7702", PeerID: "12D3b", Leader: true},
		}}, `{"name":"dev","threshold":2,"parties":2,"leader":"node2","members":[{"id":"node1","api":"http://127.0.0.1:7701","peer_id":"12D3a","healthy":true,"leader":false},{"id":"node2","api":"http://127.0.0.1:7702","peer_id":"12D3b","healthy":false,"leader":true}]}`},
		{"cluster without members", Cluster{Name: "dev"}, `{"name":"dev","threshold":0,"parties":0,"leader":"","members":null}`},
		{"access key", ak, `{"id":"ak_1","label":"bot","scheme":"ed25519","public_key":"ee","permissions":["keys:sign"],"key_ids":["key_1"],"expires_at":"2026-01-02T04:04:05.123Z","created_at":"2026-01-02T03:04:05.123Z","revoked_at":"2026-01-02T03:04:07Z"}`},
		{"new access key", AccessKey{ID: "ak_2", Scheme: SchemeSecp256k1, PublicKey: "02cd", CreatedAt: akTime}, `{"id":"ak_2","label":"","scheme":"secp256k1","public_key":"02cd","permissions":[],"key_ids":[],"expires_at":null,"created_at":"2026-01-02T03:04:05.123Z","revoked_at":null}`},
		{"access key list", AccessKeyList{AccessKeys: []AccessKey{ak}, Next: "ak_1"}, `{"access_keys":[{"id":"ak_1","label":"bot","scheme":"ed25519","public_key":"ee","permissions":["keys:sign"],"key_ids":["key_1"],"expires_at":"2026-01-02T04:04:05.123Z","created_at":"2026-01-02T03:04:05.123Z","revoked_at":"2026-01-02T03:04:07Z"}],"next":"ak_1"}`},
		{"empty access key list", AccessKeyList{AccessKeys: []AccessKey{}}, `{"access_keys":[]}`},
		{"access log", AccessLog{Entries: []AccessLogEntry{
			{Seq: 1, Time: akTime, Route: "GET /v1/keys", Outcome: OutcomeAllowed},
			{Seq: 2, Time: updated, Route: "POST /v1/keys/{key_id}/sign", Object: "key_1", Outcome: OutcomeRefused, Code: CodePermDenied},
		}, Next: "2"}, `{"entries":[{"seq":1,"time":"2026-01-02T03:04:05.123Z","route":"GET /v1/keys","object":"","outcome":"allowed","code":""},{"seq":2,"time":"2026-01-02T03:05:07Z","route":"POST /v1/keys/{key_id}/sign","object":"key_1","outcome":"refused","code":"perm.denied"}],"next":"2"}`},
		{"empty access log", AccessLog{Entries: []AccessLogEntry{}}, `{"entries":[]}`},
		{"audit list", AuditList{Entries: []AuditEntry{audit}, Next: "4"}, `{"entries":[{"seq":4,"time":"2026-01-02T03:04:05.123Z","actor":"admin","action":"users.create","object":"user:7","outcome":"allowed","code":"","prev_hash":"00","hash":"aa"}],"next":"4"}`},
		{"empty audit list", AuditList{Entries: []AuditEntry{}}, `{"entries":[]}`},
		{"admin key", AdminKey{PublicKey: "ab"}, `{"public_key":"ab"}`},
		{"ready", Readiness{Status: ReadyStatusReady}, `{"status":"ready"}`},
		{"not ready", Readiness{Status: ReadyStatusNotReady, Reasons: []string{"no raft leader"}}, `{"status":"not_ready","reasons":["no raft leader"]}`},
		{"health", Health{Status: HealthStatusOK}, `{"status":"ok"}`},
	}
}

// TestAnswerJSONGolden pins the JSON of every answer type.
func TestAnswerJSONGolden(t *testing.T) {
	for _, tt := range goldenAnswers() {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(b) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, b, tt.want)
		}
	}
}
