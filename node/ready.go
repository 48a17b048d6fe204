package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"runtime"
	"time"

	"github.com/custos/custos/internal/state"
)

// notReady composes GET /readyz's reasons from every component: the FSM, raft and the
// clock, the admin configuration, vouching, the pool and the keystore.
func (n *Node) notReady() []string {
	var reasons []string
	if h := n.fsm.Halted(); h != "" {
		reasons = append(reasons, "halted: "+h)
	}
	reasons = append(reasons, n.raft.NotReady()...)
	if name, _, _ := n.fsm.Cluster(); name == "" {
		reasons = append(reasons, "cluster not initialised")
	}
	if ls := n.fsm.LastStamp(); ls > 0 && time.UnixMilli(ls).Sub(n.now()) > state.MaxStampSkew {
		reasons = append(reasons, "the log is stamped ahead of this node's clock; check NTP")
	}
	if r := n.adminKeyMismatch(); r != "" {
		reasons = append(reasons, r)
	}
	if r := n.vouch.Blocked(); r != "" {
		reasons = append(reasons, r)
	}
	if !n.pool.Ready() {
		reasons = append(reasons, "pre-parameter pool empty")
	}
	if n.ks.Failed() {
		reasons = append(reasons, "keystore failed: the node is stopping")
	}
	return reasons
}

// adminKeyMismatch says why this node's admin configuration disagrees with the cluster's
// replicated state, or "". In key-pair mode the state holds the admin public key the
// cluster started with (then rotations by signed admin requests); a node configured with
// another key, or with the shared key on a key-pair cluster (or the reverse), would judge
// admin requests differently from its peers, so it does not serve until fixed.
func (n *Node) adminKeyMismatch() string {
	if !n.fsm.Strict() {
		return ""
	}
	genesis, _ := n.fsm.AdminKeys()
	switch {
	case len(n.adminPub) == 0 && len(genesis) == 0:
		return ""
	case len(n.adminPub) == 0:
		return "the cluster uses an admin key pair but this node is configured with the shared admin key: set admin.public_key to the cluster's first admin public key " + hex.EncodeToString(genesis)
	case len(genesis) == 0:
		return "the cluster uses the shared admin key but this node is configured with admin.public_key: configure the shared key"
	case !bytes.Equal(genesis, n.adminPub):
		return "admin.public_key differs from the admin public key the cluster started with (" + hex.EncodeToString(genesis) + "): fix this node's configuration"
	}
	return ""
}

// DebugState is GET /debug/state (api.debug): what an operator (or the chaos harness)
// compares across nodes once faults heal — the replicated state's checkpoint must be
// equal on every node at the same applied index — and the process's own health figures.
// It holds no secret: hashes, counters and indexes only.
type DebugState struct {
	Node       string `json:"node"`
	RaftState  string `json:"raft_state"`
	Leader     string `json:"leader"`
	Halted     string `json:"halted,omitempty"`
	Keystore   string `json:"keystore"`
	Goroutines int    `json:"goroutines"`
	OpenFDs    int    `json:"open_fds"`
	Ceremonies int64  `json:"ceremonies_running"`
	// Shares counts the keys this node holds a share for and SharesHash is the SHA-256
	// (hex) of their ids, sorted and each followed by "\n": enough to compare a node's
	// shares with the active keys, without naming keys to an unauthenticated caller.
	Shares     int    `json:"shares"`
	SharesHash string `json:"shares_hash"`
	state.Checkpoint
}

// debugState is GET /debug/state's body.
func (n *Node) debugState() any {
	ds := DebugState{
		Node:       n.cfg.NodeID,
		RaftState:  n.raft.State().String(),
		Leader:     n.raft.Leader(),
		Halted:     n.fsm.Halted(),
		Keystore:   "ok",
		Goroutines: runtime.NumGoroutine(),
		OpenFDs:    openFDs(),
		Ceremonies: n.runner.Active(),
		Checkpoint: n.fsm.Checkpoint(),
	}
	if ids, err := n.ks.ListShares(); err == nil {
		ds.Shares, ds.SharesHash = len(ids), SharesHash(ids)
	} else {
		ds.Keystore = "error: " + err.Error()
	}
	if n.ks.Failed() {
		ds.Keystore = "failed"
	}
	return ds
}

// openFDs counts this process's open file descriptors (-1 where /proc is absent).
func openFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

// SharesHash is GET /debug/state's shares_hash of a sorted list of key ids.
func SharesHash(sortedIDs []string) string {
	h := sha256.New()
	for _, id := range sortedIDs {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}
