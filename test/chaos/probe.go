//go:build linux

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"time"
)

// DebugState is a node's GET /debug/state.
type DebugState struct {
	Node       string `json:"node"`
	RaftState  string `json:"raft_state"`
	Leader     string `json:"leader"`
	Halted     string `json:"halted"`
	Keystore   string `json:"keystore"`
	Goroutines int    `json:"goroutines"`
	OpenFDs    int    `json:"open_fds"`
	Ceremonies int64  `json:"ceremonies_running"`
	Shares     int    `json:"shares"`
	SharesHash string `json:"shares_hash"`
	Index      uint64 `json:"applied_index"`
	StateHash  string `json:"state_hash"`
	AuditSeq   uint64 `json:"audit_seq"`
	AuditHead  string `json:"audit_head"`
}

func (h *harness) debugState(ctx context.Context, i int) (*DebugState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.c.API(i)+"/debug/state", nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.c.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /debug/state: HTTP %d", h.c.NodeID(i), resp.StatusCode)
	}
	var ds DebugState
	if err := json.Unmarshal(b, &ds); err != nil {
		return nil, fmt.Errorf("%s /debug/state: %w", h.c.NodeID(i), err)
	}
	return &ds, nil
}

// procHealth is a node process's goroutines and open descriptors at one moment.
type procHealth struct {
	PID        int `json:"pid"`
	Goroutines int `json:"goroutines"`
	OpenFDs    int `json:"open_fds"`
}

func (h *harness) health(ctx context.Context) []procHealth {
	out := make([]procHealth, h.c.N())
	for i := range out {
		out[i].PID = h.c.PID(i)
		if ds, err := h.debugState(ctx, i); err == nil {
			out[i].Goroutines, out[i].OpenFDs = ds.Goroutines, ds.OpenFDs
		} else {
			out[i].Goroutines, out[i].OpenFDs = -1, -1
		}
	}
	return out
}

// crashPattern matches what a crashing Go program prints.
var crashPattern = regexp.MustCompile(`(?m)^(panic: |fatal error: |SIGSEGV|goroutine \d+ \[running\]:)`)

// crashes returns the nodes whose logs show a Go panic or runtime crash.
func (h *harness) crashes() []string {
	var out []string
	for i := range h.c.N() {
		b, err := os.ReadFile(h.c.LogPath(i))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: read log: %v", h.c.NodeID(i), err))
			continue
		}
		if loc := crashPattern.FindIndex(b); loc != nil {
			end := min(len(b), loc[0]+600)
			out = append(out, fmt.Sprintf("%s: %s", h.c.NodeID(i), b[loc[0]:end]))
		}
	}
	return out
}
