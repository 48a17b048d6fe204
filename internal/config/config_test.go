package config

import (
	"errors"
	"strings"
	"testing"
)

const base = `{
  "mode": %MODE%,
  "node_id": "node1",
  "data_dir": "/tmp/x",
  "cluster": {"name": "c", "threshold": 2, "members": [
    {"id": "node1", "peer_id": "p1", "p2p_addrs": ["/ip4/127.0.0.1/tcp/1"], "api": "http://127.0.0.1:1"},
    {"id": "node2", "peer_id": "p2", "p2p_addrs": ["/ip4/127.0.0.1/tcp/2"], "api": "http://127.0.0.1:2"}]},
  "api": {"listen": "127.0.0.1:0"},
  "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"]},
  "admin": %ADMIN%,
  "preparams": %PRE%
}`

func cfg(mode, admin, pre string) string {
	r := strings.NewReplacer("%MODE%", mode, "%ADMIN%", admin, "%PRE%", pre)
	return r.Replace(base)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		wantErr  string
		insecure bool
	}{
		{"dev with fixtures", cfg(`"dev"`, `{"key_file":"k"}`, `{"insecure_fixtures_dir":"f"}`), "", false},
		{"production key pair", cfg(`"production"`, `{"public_key":"aa"}`, `{}`), "", false},
		{"default mode is production", cfg(`""`, `{"public_key":"aa"}`, `{"insecure_fixtures_dir":"f"}`), "insecure_fixtures_dir", true},
		{"production refuses fixtures", cfg(`"production"`, `{"public_key":"aa"}`, `{"insecure_fixtures_dir":"f"}`), "insecure_fixtures_dir", true},
		{"production refuses shared key without opt-in", cfg(`"production"`, `{"key_file":"k"}`, `{}`), "allow_shared_key", true},
		{"production shared key with opt-in", cfg(`"production"`, `{"key_file":"k","allow_shared_key":true}`, `{}`), "", false},
		{"both admin credentials", cfg(`"dev"`, `{"key_file":"k","public_key":"aa"}`, `{}`), "exactly one admin credential", false},
		{"unknown mode", cfg(`"staging"`, `{"public_key":"aa"}`, `{}`), "mode must be", false},
		{"rate off", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"rate": {"per_caller_rps": 0}, "mode"`, 1), "", false},
		{"negative rate", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"rate": {"per_caller_rps": -1}, "mode"`, 1), "rate.per_caller_rps", false},
		{"negative burst", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"rate": {"burst": -5}, "mode"`, 1), "rate.burst", false},
		{"too few callers", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"rate": {"max_callers": 3}, "mode"`, 1), "rate.max_callers", false},
		{"dev clock offset", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"insecure_testing": {"clock_offset": "-3s", "write_fault_file": "/tmp/f"}, "mode"`, 1), "", false},
		{"production refuses clock offset", strings.Replace(cfg(`"production"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"insecure_testing": {"clock_offset": "2s"}, "mode"`, 1), "insecure_testing", true},
		{"production refuses write faults", strings.Replace(cfg(`"production"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"insecure_testing": {"write_fault_file": "/tmp/f"}, "mode"`, 1), "insecure_testing", true},
		{"clock offset too large", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"insecure_testing": {"clock_offset": "2h"}, "mode"`, 1), "clock_offset", false},
		{"unknown field", strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, `"mdoe": 1, "mode"`, 1), "unknown field", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.text))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to mention %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrInsecure) != tt.insecure {
				t.Fatalf("errors.Is(ErrInsecure) = %v", !tt.insecure)
			}
		})
	}
}

func TestRateLimitDefaults(t *testing.T) {
	tests := []struct {
		name              string
		rate              string
		rps               float64
		burst, maxCallers int
	}{
		{"absent", ``, DefaultPerCallerRPS, 2 * DefaultPerCallerRPS, DefaultMaxCallers},
		{"rate only", `"rate": {"per_caller_rps": 5},`, 5, 10, DefaultMaxCallers},
		{"fractional rate", `"rate": {"per_caller_rps": 0.2},`, 0.2, 1, DefaultMaxCallers},
		{"all set", `"rate": {"per_caller_rps": 3, "burst": 7, "max_callers": 100},`, 3, 7, 100},
		{"off", `"rate": {"per_caller_rps": 0},`, 0, 1, DefaultMaxCallers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Replace(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`), `"mode"`, tt.rate+` "mode"`, 1)
			c, err := Parse(strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			rps, burst, maxCallers := c.RateLimit()
			if rps != tt.rps || burst != tt.burst || maxCallers != tt.maxCallers {
				t.Fatalf("RateLimit() = %v, %d, %d", rps, burst, maxCallers)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(cfg(`"dev"`, `{"key_file":"k"}`, `{}`))
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = Parse(strings.NewReader(s))
	})
}
