package raftnode

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
)

// raftLog carries hashicorp/raft's logs (hclog, one JSON object per line) into the node's
// slog logger, so that they land where the node's own logs go, with the node's
// attributes, and a test that silences the node silences raft too.
type raftLog struct{ log *slog.Logger }

// Write implements io.Writer for hclog's JSON output.
func (w raftLog) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(p, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) > 0 {
			w.line(line)
		}
	}
	return len(p), nil
}

func (w raftLog) line(b []byte) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		w.log.Warn(string(b), "component", "raft")
		return
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	if !w.log.Enabled(context.Background(), level) {
		return
	}
	msg, _ := m["@message"].(string)
	attrs := []any{"component", "raft"}
	for k, v := range m {
		if k == "" || k[0] == '@' {
			continue
		}
		attrs = append(attrs, k, v)
	}
	w.log.Log(context.Background(), level, msg, attrs...)
}
