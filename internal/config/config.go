// Package config owns custosd's configuration: the file format, environment overrides,
// defaults and validation. It refuses insecure settings under a production configuration,
// so that test shortcuts can never reach a real deployment by accident. It never reads
// secrets itself beyond checking that their sources are named.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Modes.
const (
	ModeProduction = "production"
	ModeDev        = "dev"
)

// Member is one node in the bootstrap configuration.
type Member struct {
	ID       string   `json:"id"`
	PeerID   string   `json:"peer_id"`
	P2PAddrs []string `json:"p2p_addrs"`
	API      string   `json:"api"`
}

// Duration is a time.Duration written as a Go duration string ("30s") in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Config is custosd's configuration file.
type Config struct {
	// Mode is "production" (default) or "dev". Insecure settings require dev.
	Mode    string `json:"mode"`
	NodeID  string `json:"node_id"`
	DataDir string `json:"data_dir"`

	Cluster struct {
		Name      string `json:"name"`
		Threshold int    `json:"threshold"`
		// Members are the bootstrap members: whom this node admits and dials until the
		// replicated state holds the cluster's member list (from then on the state's list
		// is followed; a bootstrap member the state never had is admitted alongside it),
		// and, without Join, the raft configuration this node bootstraps with at its
		// first start.
		Members []Member `json:"members"`
		// Join (default false) makes a node with no raft state wait to be added to a
		// running cluster instead of bootstrapping raft from Members: set it on a node
		// that joins a cluster after it started (Members: the running members and this
		// node), and on a node whose data directory was lost or restored once the
		// cluster's membership changed since it was created. Until a leader adds it
		// (the admin's POST /v1/admin/members) the node has no state and no raft
		// configuration and is not ready; it catches up from the leader, as a nonvoter
		// first. Once the node holds raft state the setting changes nothing, so it may
		// stay set. Never set it on every member of a new cluster: nobody would
		// bootstrap.
		Join bool `json:"join"`
	} `json:"cluster"`

	API struct {
		Listen      string   `json:"listen"`
		WaitTimeout Duration `json:"wait_timeout"`
		MaxBody     int64    `json:"max_body"`
		// Debug serves GET /debug/state (the state checkpoint, which serialises the whole
		// replicated state under the state lock) and Go's profiler under /debug/pprof/ on
		// the API listener. Off by default: both cost real work per call and reveal
		// internals, so turn it on only where the API is reachable from trusted hosts alone.
		// Dev only: a production configuration that sets it is refused.
		Debug bool `json:"debug"`
		// TLSCertFile and TLSKeyFile (PEM) make the API serve HTTPS (TLS 1.2 or later):
		// both or neither. The pair is loaded when the node starts.
		TLSCertFile string `json:"tls_cert_file"`
		TLSKeyFile  string `json:"tls_key_file"`
		// ClientCAFile (PEM bundle), with TLS only, turns on mutual TLS: every client must
		// present a certificate signed by one of these CAs, or the handshake fails.
		ClientCAFile string `json:"client_ca_file"`
		// AllowPlainHTTP lets a production node serve plain HTTP on a non-loopback
		// address: only for a node behind a TLS-terminating proxy on a trusted network.
		AllowPlainHTTP bool `json:"allow_plain_http"`
	} `json:"api"`

	P2P struct {
		Listen []string `json:"listen"`
		QUIC   bool     `json:"quic"`
	} `json:"p2p"`

	MasterKey struct {
		File string `json:"file"`
		Env  string `json:"env"`
	} `json:"master_key"`

	Admin struct {
		// KeyFile holds the shared HS256 ADMIN_KEY as 64 hex characters.
		KeyFile string `json:"key_file"`
		// KeyEnv names an environment variable holding the ADMIN_KEY in hex.
		KeyEnv string `json:"key_env"`
		// PublicKey is the admin's Ed25519 public key (hex) for key-pair mode.
		PublicKey string `json:"public_key"`
		// AllowSharedKey opts in to the shared HS256 key in production.
		AllowSharedKey bool `json:"allow_shared_key"`
	} `json:"admin"`

	Auth struct {
		RequireAudience bool     `json:"require_audience"`
		MaxTokenTTL     Duration `json:"max_token_ttl"`
	} `json:"auth"`

	PreParams struct {
		Target int `json:"target"`
		// InsecureFixturesDir seeds the pool from pre-generated test fixtures. Dev only.
		InsecureFixturesDir string `json:"insecure_fixtures_dir"`
		// InsecureFixtureSlot, when set, is this node's own slice of the fixtures: files
		// slot, slot+InsecureFixtureStride, … (stride 6 when 0). Without it a node takes
		// its index among cluster.members with their count as stride, which collides
		// once members join (a new node's list is longer): the dev cluster sets a slot
		// per node for the life of the cluster. Dev only.
		InsecureFixtureSlot   *int `json:"insecure_fixture_slot,omitempty"`
		InsecureFixtureStride int  `json:"insecure_fixture_stride,omitempty"`
	} `json:"preparams"`

	Ceremony struct {
		SignTimeout   Duration `json:"sign_timeout"`
		KeygenTimeout Duration `json:"keygen_timeout"`
	} `json:"ceremony"`

	Log struct {
		Level string `json:"level"`
	} `json:"log"`

	// Bitcoin is the Bitcoin node (bitcoind or btcd) that signed PSBTs are broadcast to
	// when a request asks ("broadcast": true). The leader broadcasts, so every member
	// should name a node (each its own, or a shared one). Without rpc_url a broadcast is
	// answered broadcast.failed, the signed transaction still returned.
	// Webhooks configures the delivery of the event log to the admin's webhooks.
	Webhooks struct {
		// SecretKeyFile holds the cluster's webhook key (64 hex characters, the SAME on
		// every node): webhook secrets are in the replicated state only sealed under it,
		// and the leader (whichever node it is) opens them to sign deliveries. Without
		// it, creating a webhook is refused.
		SecretKeyFile string `json:"secret_key_file"`
		// AllowLoopback lets deliveries reach loopback addresses (dev clusters, tests);
		// AllowLinkLocal link-local ones (cloud metadata addresses never).
		AllowLoopback  bool `json:"allow_loopback"`
		AllowLinkLocal bool `json:"allow_link_local"`
		// Timeout bounds one delivery (default 10 s).
		Timeout Duration `json:"timeout"`
	} `json:"webhooks"`

	Bitcoin struct {
		// RPCURL is the node's JSON-RPC endpoint, http(s)://host:port (btcd: run it with
		// --notls on loopback only, or give the https URL).
		RPCURL  string `json:"rpc_url"`
		RPCUser string `json:"rpc_user"`
		// RPCPasswordFile holds the RPC password (read at start; never logged).
		RPCPasswordFile string `json:"rpc_password_file"`
		// Timeout bounds one broadcast (default 15 s).
		Timeout Duration `json:"timeout"`
	} `json:"bitcoin"`

	// Rate limits authenticated callers per node, so that one caller cannot starve the
	// others: a token bucket per caller (user, access key, admin) refilled at
	// PerCallerRPS up to Burst. Past it the node answers 429 rate.limited.
	Rate struct {
		// PerCallerRPS is the sustained rate per caller; absent means
		// DefaultPerCallerRPS, 0 turns the limit off.
		PerCallerRPS *float64 `json:"per_caller_rps"`
		// Burst is the bucket size; 0 means twice PerCallerRPS (at least 1).
		Burst int `json:"burst"`
		// MaxCallers bounds the buckets a node keeps; idle ones are evicted first.
		MaxCallers int `json:"max_callers"`
	} `json:"rate"`

	// InsecureTesting holds fault-injection settings for the chaos harness. Dev only:
	// a production configuration that sets any of them is refused.
	InsecureTesting struct {
		// ClockOffset is added to every wall-clock reading the node makes (request
		// freshness, token expiry, leader stamps), to simulate clock skew between nodes.
		ClockOffset Duration `json:"clock_offset"`
		// WriteFaultFile names a file whose presence makes every write to this node's
		// keystore (Pebble) fail with an injected I/O error; removing it heals the node.
		WriteFaultFile string `json:"write_fault_file"`
		// RaftSnapshotThreshold, RaftTrailingLogs and RaftSnapshotInterval make raft
		// snapshot and compact its log early, so that tests can make a lagging node
		// catch up from a snapshot without writing thousands of entries (0: raft's
		// production settings).
		RaftSnapshotThreshold uint64   `json:"raft_snapshot_threshold"`
		RaftTrailingLogs      uint64   `json:"raft_trailing_logs"`
		RaftSnapshotInterval  Duration `json:"raft_snapshot_interval"`
	} `json:"insecure_testing"`
}

// MaxClockOffset bounds insecure_testing.clock_offset.
const MaxClockOffset = time.Hour

// Rate-limit defaults: generous for interactive and SDK use, tight enough that a runaway
// agent cannot monopolise a node.
const (
	DefaultPerCallerRPS = 20
	DefaultMaxCallers   = 65536
	maxRateValue        = 1_000_000
)

// RateLimit returns the per-caller rate (requests per second, 0 = off), burst and the
// most buckets kept, with defaults applied.
func (c *Config) RateLimit() (rps float64, burst, maxCallers int) {
	rps = DefaultPerCallerRPS
	if c.Rate.PerCallerRPS != nil {
		rps = *c.Rate.PerCallerRPS
	}
	burst = c.Rate.Burst
	if burst == 0 {
		burst = max(1, int(2*rps))
	}
	maxCallers = c.Rate.MaxCallers
	if maxCallers == 0 {
		maxCallers = DefaultMaxCallers
	}
	return rps, burst, maxCallers
}

// Load reads a configuration file, applies environment overrides and defaults, and
// validates the result.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := Parse(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(path), c.DataDir)
	}
	return c, nil
}

// Parse decodes a configuration, applies environment overrides and defaults, and validates.
func Parse(r io.Reader) (*Config, error) {
	c := &Config{}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	c.applyEnv(os.Getenv)
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// applyEnv applies CUSTOS_* environment overrides for the settings operators change per
// host.
func (c *Config) applyEnv(get func(string) string) {
	if v := get("CUSTOS_NODE_ID"); v != "" {
		c.NodeID = v
	}
	if v := get("CUSTOS_DATA_DIR"); v != "" {
		c.DataDir = v
	}
	if v := get("CUSTOS_API_LISTEN"); v != "" {
		c.API.Listen = v
	}
	if v := get("CUSTOS_P2P_LISTEN"); v != "" {
		c.P2P.Listen = strings.Split(v, ",")
	}
	if v := get("CUSTOS_MASTER_KEY_FILE"); v != "" {
		c.MasterKey.File = v
	}
	if v := get("CUSTOS_ADMIN_KEY_FILE"); v != "" {
		c.Admin.KeyFile = v
	}
	if v := get("CUSTOS_LOG_LEVEL"); v != "" {
		c.Log.Level = v
	}
}

func (c *Config) applyDefaults() {
	if c.Mode == "" {
		c.Mode = ModeProduction
	}
	if c.API.WaitTimeout.Duration == 0 {
		c.API.WaitTimeout.Duration = 30 * time.Second
	}
	if c.API.MaxBody == 0 {
		c.API.MaxBody = 1 << 20
	}
	if c.PreParams.Target == 0 {
		c.PreParams.Target = 4
	}
	if c.Ceremony.SignTimeout.Duration == 0 {
		c.Ceremony.SignTimeout.Duration = 20 * time.Second
	}
	if c.Ceremony.KeygenTimeout.Duration == 0 {
		c.Ceremony.KeygenTimeout.Duration = 3 * time.Minute
	}
	if c.MasterKey.File == "" && c.MasterKey.Env == "" {
		c.MasterKey.Env = "CUSTOS_MASTER_KEY"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	rps, burst, maxCallers := c.RateLimit()
	c.Rate.PerCallerRPS = &rps
	c.Rate.Burst = burst
	c.Rate.MaxCallers = maxCallers
}

// ErrInsecure is wrapped by every refusal of an insecure setting in production.
var ErrInsecure = errors.New("insecure setting refused in a production configuration")

// Validate checks the configuration for completeness and safety.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Mode != ModeProduction && c.Mode != ModeDev {
		add("mode must be %q or %q", ModeProduction, ModeDev)
	}
	if c.NodeID == "" {
		add("node_id is required")
	}
	if c.DataDir == "" {
		add("data_dir is required")
	}
	if c.Cluster.Name == "" {
		add("cluster.name is required")
	}
	n := len(c.Cluster.Members)
	if n < 2 {
		add("cluster.members needs at least 2 nodes")
	}
	if c.Cluster.Threshold < 2 || c.Cluster.Threshold > n {
		add("cluster.threshold must be between 2 and the number of members")
	}
	self := false
	seen := map[string]bool{}
	for _, m := range c.Cluster.Members {
		if m.ID == "" || m.PeerID == "" || len(m.P2PAddrs) == 0 || m.API == "" {
			add("cluster member %q needs id, peer_id, p2p_addrs and api", m.ID)
		}
		if seen[m.ID] {
			add("cluster member %q listed twice", m.ID)
		}
		seen[m.ID] = true
		if u, err := url.Parse(m.API); m.API != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https")) {
			add("cluster member %q: api must be an http(s) URL", m.ID)
		}
		self = self || m.ID == c.NodeID
	}
	if c.NodeID != "" && n > 0 && !self {
		add("node_id %q is not among cluster.members", c.NodeID)
	}
	if c.API.Listen == "" {
		add("api.listen is required")
	} else if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		add("api.listen must be host:port (e.g. 0.0.0.0:7701 or 127.0.0.1:7701): %v", err)
	}
	if (c.API.TLSCertFile == "") != (c.API.TLSKeyFile == "") {
		add("api.tls_cert_file and api.tls_key_file go together: set both to serve HTTPS, or neither")
	}
	if c.API.ClientCAFile != "" && !c.APITLS() {
		add("api.client_ca_file (mutual TLS) needs api.tls_cert_file and api.tls_key_file")
	}
	if len(c.P2P.Listen) == 0 {
		add("p2p.listen is required")
	}
	if c.API.MaxBody < 1024 || c.API.MaxBody > 1<<20 {
		add("api.max_body must be between 1 KiB and 1 MiB")
	}
	rps, burst, maxCallers := c.RateLimit()
	if rps < 0 || rps > maxRateValue {
		add("rate.per_caller_rps must be between 0 (off) and %d", maxRateValue)
	}
	if burst < 1 || burst > maxRateValue {
		add("rate.burst must be between 1 and %d", maxRateValue)
	}
	if maxCallers < 16 || maxCallers > 10_000_000 {
		add("rate.max_callers must be between 16 and 10000000")
	}
	if u := c.Bitcoin.RPCURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			add("bitcoin.rpc_url must be an http(s) URL such as http://127.0.0.1:18443")
		}
	}
	if d := c.InsecureTesting.ClockOffset.Duration; d > MaxClockOffset || d < -MaxClockOffset {
		add("insecure_testing.clock_offset must be within ±%v", MaxClockOffset)
	}
	shared := c.Admin.KeyFile != "" || c.Admin.KeyEnv != ""
	if shared == (c.Admin.PublicKey != "") {
		add("configure exactly one admin credential: admin.key_file/key_env (shared HS256 key) or admin.public_key (key pair)")
	}
	if c.Mode == ModeProduction {
		if c.PreParams.InsecureFixturesDir != "" {
			errs = append(errs, fmt.Errorf("preparams.insecure_fixtures_dir loads test pre-parameters: %w (use mode \"dev\" for a local cluster)", ErrInsecure))
		}
		it := c.InsecureTesting
		if it.ClockOffset.Duration != 0 || it.WriteFaultFile != "" || it.RaftSnapshotThreshold != 0 || it.RaftTrailingLogs != 0 || it.RaftSnapshotInterval.Duration != 0 {
			errs = append(errs, fmt.Errorf("insecure_testing injects faults: %w (use mode \"dev\")", ErrInsecure))
		}
		if !c.APITLS() && !c.API.AllowPlainHTTP && !IsLoopbackListen(c.API.Listen) {
			errs = append(errs, fmt.Errorf("api.listen %s is not a loopback address and the API has no TLS: %w; set api.tls_cert_file and api.tls_key_file to serve HTTPS, or set api.allow_plain_http to true only when a TLS-terminating proxy on a trusted network fronts the node", c.API.Listen, ErrInsecure))
		}
		if c.API.Debug {
			errs = append(errs, fmt.Errorf("api.debug serves /debug/state and /debug/pprof, which are for dev clusters: %w (remove api.debug, or use mode \"dev\")", ErrInsecure))
		}
		if shared && !c.Admin.AllowSharedKey {
			errs = append(errs, fmt.Errorf("the shared admin key lets any node mint tokens: %w unless admin.allow_shared_key is true (prefer admin.public_key)", ErrInsecure))
		}
	}
	return errors.Join(errs...)
}

// APITLS reports whether the API serves HTTPS (api.tls_cert_file and api.tls_key_file set).
func (c *Config) APITLS() bool { return c.API.TLSCertFile != "" && c.API.TLSKeyFile != "" }

// IsLoopbackListen reports whether a listen address (host:port) binds only to loopback:
// localhost, 127.0.0.0/8 or ::1. An empty or unspecified host (":7701", "0.0.0.0:7701",
// "[::]:7701") binds every interface, so it is not loopback; neither is anything that
// does not parse.
func IsLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Self returns this node's member entry.
func (c *Config) Self() Member {
	for _, m := range c.Cluster.Members {
		if m.ID == c.NodeID {
			return m
		}
	}
	return Member{}
}
