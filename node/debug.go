package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"

	"github.com/custos/custos/internal/state"
)

// DebugState is GET /debug/state (api.debug): what an operator (or the chaos harness) compares across
// nodes once faults heal — the replicated state's checkpoint must be equal on every node
// at the same applied index — and the process's own health figures. It holds no secret:
// hashes, counters and indexes only.
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

func (n *Node) handleDebugState(w http.ResponseWriter, r *http.Request) {
	ds := DebugState{
		Node:       n.cfg.NodeID,
		RaftState:  n.raft.State().String(),
		Halted:     n.fsm.Halted(),
		Keystore:   "ok",
		Goroutines: runtime.NumGoroutine(),
		OpenFDs:    openFDs(),
		Ceremonies: n.activeN.load(),
		Checkpoint: n.fsm.Checkpoint(),
	}
	if _, id := n.raft.LeaderWithID(); id != "" {
		ds.Leader = string(id)
	}
	if ids, err := n.ks.ListShares(); err == nil {
		ds.Shares, ds.SharesHash = len(ids), SharesHash(ids)
	} else {
		ds.Keystore = "error: " + err.Error()
	}
	if n.ks.Failed() {
		ds.Keystore = "failed"
	}
	b, err := json.Marshal(ds)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// openFDs counts this process's open file descriptors (-1 where /proc is absent).
func openFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

// registerPprof serves Go's profiler under /debug/pprof/ (api.debug; off by default:
// profiles reveal code paths and timing, so only trusted networks should reach them).
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
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
