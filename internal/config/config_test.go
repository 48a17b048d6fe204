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

// withAPI replaces the api object of a configuration made by cfg.
func withAPI(text, api string) string {
	return strings.Replace(text, `"api": {"listen": "127.0.0.1:0"}`, `"api": `+api, 1)
}

func TestValidateAPITransport(t *testing.T) {
	prod := cfg(`"production"`, `{"public_key":"aa"}`, `{}`)
	dev := cfg(`"dev"`, `{"public_key":"aa"}`, `{}`)
	tests := []struct {
		name     string
		text     string
		wantErr  []string
		insecure bool
	}{
		{"production plain on 127.0.0.1", withAPI(prod, `{"listen":"127.0.0.1:7701"}`), nil, false},
		{"production plain on 127.0.0.2", withAPI(prod, `{"listen":"127.0.0.2:7701"}`), nil, false},
		{"production plain on ::1", withAPI(prod, `{"listen":"[::1]:7701"}`), nil, false},
		{"production plain on localhost", withAPI(prod, `{"listen":"localhost:7701"}`), nil, false},
		{"production plain on all interfaces", withAPI(prod, `{"listen":"0.0.0.0:7701"}`), []string{"api.listen 0.0.0.0:7701 is not a loopback address", "tls_cert_file", "tls_key_file", "allow_plain_http", "TLS-terminating proxy"}, true},
		{"production plain on empty host", withAPI(prod, `{"listen":":7701"}`), []string{"not a loopback address"}, true},
		{"production plain on [::]", withAPI(prod, `{"listen":"[::]:7701"}`), []string{"not a loopback address"}, true},
		{"production plain on a LAN address", withAPI(prod, `{"listen":"10.0.0.5:7701"}`), []string{"not a loopback address"}, true},
		{"production plain on a host name", withAPI(prod, `{"listen":"eu-1.custos.internal:7701"}`), []string{"not a loopback address"}, true},
		{"production plain opted in", withAPI(prod, `{"listen":"0.0.0.0:7701","allow_plain_http":true}`), nil, false},
		{"production TLS on all interfaces", withAPI(prod, `{"listen":"0.0.0.0:7701","tls_cert_file":"c.pem","tls_key_file":"k.pem"}`), nil, false},
		{"production mTLS", withAPI(prod, `{"listen":"0.0.0.0:7701","tls_cert_file":"c.pem","tls_key_file":"k.pem","client_ca_file":"ca.pem"}`), nil, false},
		{"dev plain on all interfaces", withAPI(dev, `{"listen":"0.0.0.0:7701"}`), nil, false},
		{"cert without key", withAPI(dev, `{"listen":"127.0.0.1:0","tls_cert_file":"c.pem"}`), []string{"tls_cert_file and api.tls_key_file go together"}, false},
		{"key without cert", withAPI(dev, `{"listen":"127.0.0.1:0","tls_key_file":"k.pem"}`), []string{"tls_cert_file and api.tls_key_file go together"}, false},
		{"client CA without TLS", withAPI(dev, `{"listen":"127.0.0.1:0","client_ca_file":"ca.pem"}`), []string{"client_ca_file (mutual TLS) needs"}, false},
		{"client CA with half of TLS", withAPI(dev, `{"listen":"127.0.0.1:0","tls_cert_file":"c.pem","client_ca_file":"ca.pem"}`), []string{"go together", "client_ca_file (mutual TLS) needs"}, false},
		{"listen without port", withAPI(dev, `{"listen":"127.0.0.1"}`), []string{"api.listen must be host:port"}, false},
		{"dev debug", withAPI(dev, `{"listen":"127.0.0.1:0","debug":true}`), nil, false},
		{"production refuses debug", withAPI(prod, `{"listen":"127.0.0.1:0","debug":true}`), []string{"api.debug", "dev clusters"}, true},
		{"production refuses debug even with TLS", withAPI(prod, `{"listen":"0.0.0.0:7701","debug":true,"tls_cert_file":"c.pem","tls_key_file":"k.pem"}`), []string{"api.debug"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.text))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted (%+v), want an error mentioning %q", c.API, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if errors.Is(err, ErrInsecure) != tt.insecure {
				t.Fatalf("errors.Is(ErrInsecure) = %v", !tt.insecure)
			}
		})
	}
}

func TestIsLoopbackListen(t *testing.T) {
	tests := []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:7701", true},
		{"127.255.0.9:1", true},
		{"[::1]:7701", true},
		{"localhost:7701", true},
		{"LOCALHOST:7701", true},
		{"0.0.0.0:7701", false},
		{":7701", false},
		{"[::]:7701", false},
		{"192.168.1.2:7701", false},
		{"example.com:7701", false},
		{"127.0.0.1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsLoopbackListen(tt.listen); got != tt.want {
			t.Errorf("IsLoopbackListen(%q) = %v, want %v", tt.listen, got, tt.want)
		}
	}
}

// TestExampleConfig keeps deploy/example-config.json a valid production configuration.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../../deploy/example-config.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeProduction || !c.APITLS() {
		t.Fatalf("the example should be a production configuration with TLS on the API: mode %q, TLS %v", c.Mode, c.APITLS())
	}
}

// TestClusterJoin: cluster.join is off unless set, and parses when set.
func TestClusterJoin(t *testing.T) {
	c, err := Parse(strings.NewReader(cfg(`"dev"`, `{"public_key":"aa"}`, `{}`)))
	if err != nil || c.Cluster.Join {
		t.Fatalf("default: join %v, err %v", c != nil && c.Cluster.Join, err)
	}
	text := strings.Replace(cfg(`"production"`, `{"public_key":"aa"}`, `{}`), `"cluster": {"name": "c",`, `"cluster": {"join": true, "name": "c",`, 1)
	if c, err = Parse(strings.NewReader(text)); err != nil || !c.Cluster.Join {
		t.Fatalf("join: %+v, err %v", c, err)
	}
}
