package state

import (
	"maps"
	"slices"
)

// meta is the cluster's own record: small and bounded (members, at most
// MaxCheckpointIndices checkpoints, counters), read on every entry and kept in memory as
// the FSM's committed copy. Everything that grows with use is in its own table.
type meta struct {
	Version   int      `json:"version"`
	Name      string   `json:"name"`
	Threshold int      `json:"threshold"`
	Members   []Member `json:"members"`
	// NextUserID is the last user id given out.
	NextUserID uint64 `json:"next_user_id"`
	// Strict is set once the cluster accepts only signed entries (ClusterInit v2 or
	// Upgrade); legacy entry kinds are refused from then on.
	Strict bool `json:"strict,omitempty"`
	// AdminPublicKey is the admin's Ed25519 public key in key-pair mode (nil in shared-key
	// mode); AdminKeyGenesis the first one, which every node's configuration must name.
	AdminPublicKey  []byte `json:"admin_public_key,omitempty"`
	AdminKeyGenesis []byte `json:"admin_key_genesis,omitempty"`
	// Checkpoints holds, per checkpoint index, each member's signed state hash;
	// LastCheckpoint is the newest checkpoint index.
	Checkpoints    map[uint64]map[string]string `json:"checkpoints,omitempty"`
	LastCheckpoint uint64                       `json:"last_checkpoint,omitempty"`
	// Objects counts the object records (users, keys, requests, access keys, proposal
	// results, idempotency scopes): how much a checkpoint hashes, which spaces them.
	Objects   int64 `json:"objects"`
	LastStamp int64 `json:"last_stamp"`
	// LastPrune is the stamp of the last prune; PruneBehind says it left a backlog, so
	// the next entry prunes again.
	LastPrune   int64 `json:"last_prune"`
	PruneBehind bool  `json:"prune_behind,omitempty"`
	// PrunedTo is where each pruned index's next scan starts (by table): in a time
	// index (tNonceExp, tPropExp, tSessionExp, tDone) a time below which every entry has
	// been pruned, in tEvent the first seq not pruned. Scanning from the table's start
	// instead walks every key pruned before: deleted keys stay as tombstones until Pebble
	// compacts them away, and it cannot while a raft snapshot streams, so each prune
	// was slower than the last (entries of 90 ms in make bench-state).
	PrunedTo map[string]int64 `json:"pruned_to,omitempty"`
	// Counts of the bounded tables (their limits are judged without a scan).
	Nonces    int `json:"nonces"`
	Proposals int `json:"proposals"`
	Open      int `json:"open"`
	// AuditSeq and AuditHead are the audit chain's last entry (0 and GenesisHash when
	// empty): a new entry links to the head without reading the log.
	AuditSeq  uint64 `json:"audit_seq"`
	AuditHead string `json:"audit_head"`
	// AuditPrunedSeq and AuditPrunedHash are the last entry the admin pruned (after
	// exporting it) and its hash: the first entry kept links to it. 0 and "" when none.
	AuditPrunedSeq  uint64 `json:"audit_pruned_seq,omitempty"`
	AuditPrunedHash string `json:"audit_pruned_hash,omitempty"`
	// Policies counts the active policies; PendingApprovals the approvals still pending
	// (governance.go).
	Policies         int `json:"policies,omitempty"`
	PendingApprovals int `json:"pending_approvals,omitempty"`
	// EventSeq is the newest event's seq; EventRetentionMs the admin's event retention
	// (0: the default) (events.go).
	EventSeq         uint64 `json:"event_seq,omitempty"`
	Webhooks         int    `json:"webhooks,omitempty"`
	EventRetentionMs int64  `json:"event_retention_ms,omitempty"`
	// RequestRetentionMs and AccessKeyRetentionMs are the admin's retention settings
	// (PUT /v1/admin/retention); 0 means the default.
	RequestRetentionMs   int64 `json:"request_retention_ms,omitempty"`
	AccessKeyRetentionMs int64 `json:"access_key_retention_ms,omitempty"`
	// KeyDeletionDelayMs is the admin's deletion delay (0: the default); Deletions counts
	// the keys whose deletion is scheduled (lifecycle.go).
	KeyDeletionDelayMs int64 `json:"key_deletion_delay_ms,omitempty"`
	Deletions          int   `json:"deletions,omitempty"`
	// EventsOn says the event log records changes (from the cluster's first entry, or
	// from the Upgrade entry that turned it on in a cluster older than the event log:
	// replaying older entries must not record events, or nodes that resumed from
	// different points of the log would hold different event logs).
	EventsOn bool `json:"events_on,omitempty"`
	// MemberChange is the newest membership change request (members.go).
	MemberChange string `json:"member_change,omitempty"`
}

// requestRetention is how long finished requests are kept (ms).
func (m *meta) requestRetention() int64 {
	if m.RequestRetentionMs > 0 {
		return m.RequestRetentionMs
	}
	return RequestRetentionMs
}

// sessionRetention is how long used session nonces are remembered (ms): past the
// retention of the request each served.
func (m *meta) sessionRetention() int64 { return 2 * m.requestRetention() }

// accessKeyRetention is how long dead access keys are kept (ms).
func (m *meta) accessKeyRetention() int64 {
	if m.AccessKeyRetentionMs > 0 {
		return m.AccessKeyRetentionMs
	}
	return AccessKeyRetentionMs
}

// stateVersion is the layout of the state database (tables and records); a database of
// another version is refused at open.
const stateVersion = 1

func newMeta() *meta { return &meta{Version: stateVersion, AuditHead: GenesisHash} }

// clone returns a deep copy: the applier works on a copy, published when its batch
// commits, so readers never see a half-applied entry.
func (m *meta) clone() *meta {
	c := *m
	c.Members = slices.Clone(m.Members)
	c.AdminPublicKey = slices.Clone(m.AdminPublicKey)
	c.AdminKeyGenesis = slices.Clone(m.AdminKeyGenesis)
	c.PrunedTo = maps.Clone(m.PrunedTo)
	if m.Checkpoints != nil {
		c.Checkpoints = make(map[uint64]map[string]string, len(m.Checkpoints))
		for i, v := range m.Checkpoints {
			c.Checkpoints[i] = maps.Clone(v)
		}
	}
	return &c
}

// markPruned records that table's next prune may start at `to` (meta.PrunedTo); the
// mark never goes back.
func (m *meta) markPruned(table string, to int64) {
	if to <= m.PrunedTo[table] {
		return
	}
	if m.PrunedTo == nil {
		m.PrunedTo = map[string]int64{}
	}
	m.PrunedTo[table] = to
}

// member returns the member with this id.
func (m *meta) member(id string) *Member {
	for i := range m.Members {
		if m.Members[i].ID == id {
			return &m.Members[i]
		}
	}
	return nil
}
