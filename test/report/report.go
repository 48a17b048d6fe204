// Package report holds what custos's measuring tools (test/bench, test/benchstate,
// test/soak) share about their results: a target judged against the figures and the JSON
// report file. It holds no state.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Target is one target judged against a run's figures.
type Target struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Met    bool   `json:"met"`
	Judged bool   `json:"judged"` // false: too few figures to judge
	Note   string `json:"note,omitempty"`
}

// Verdict is "met", "NOT MET" or "not judged".
func (t Target) Verdict() string {
	switch {
	case !t.Judged:
		return "not judged"
	case t.Met:
		return "met"
	default:
		return "NOT MET"
	}
}

// WriteJSON writes v as indented JSON to path, creating its directory.
func WriteJSON(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("report directory: %w", err)
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
