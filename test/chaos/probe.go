//go:build linux

package chaos

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/custos/custos/node"
)

// debugState reads node i's /debug/state, giving up after 2 s (a frozen node never answers).
func (h *harness) debugState(ctx context.Context, i int) (*node.DebugState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.c.DebugState(ctx, i)
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
