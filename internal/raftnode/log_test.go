package raftnode

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestRaftLogToSlog: raft's hclog lines become records of the node's logger, at their
// level, with their fields; below the logger's level they are dropped.
func TestRaftLogToSlog(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Debug, Output: raftLog{log}, JSONFormat: true})
	hl.Warn("heartbeat timeout reached", "last-leader-id", "n1")
	hl.Info("entering follower state")
	hl.Error("failed to contact", "server-id", "n2")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d records, want 2 (info dropped):\n%s", len(lines), out.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["level"] != "WARN" || first["msg"] != "heartbeat timeout reached" || first["component"] != "raft" || first["last-leader-id"] != "n1" {
		t.Fatalf("record %v", first)
	}
	if !strings.Contains(lines[1], `"level":"ERROR"`) || !strings.Contains(lines[1], `"server-id":"n2"`) {
		t.Fatalf("record %s", lines[1])
	}
	// Not JSON: kept as the message.
	_, _ = raftLog{log}.Write([]byte("plain text\n"))
	if !strings.Contains(out.String(), `"msg":"plain text"`) {
		t.Fatal("a plain line was lost")
	}
}
