//go:build linux

package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/devcluster"
	"github.com/custos/custos/internal/freeport"
	"github.com/custos/custos/node"
	"github.com/custos/custos/node/client"
)

// Defaults for Options.
const (
	DefaultNodes        = 3
	DefaultThreshold    = 2
	DefaultReadyTimeout = 90 * time.Second
	DefaultStopTimeout  = 15 * time.Second
	// MaxNodes bounds the cluster size the harness starts.
	MaxNodes = 16
	// logTailLines is how much of a node's log an error quotes.
	logTailLines = 30
	// PollInterval is how often the harness's waits check their condition again.
	PollInterval = 100 * time.Millisecond
	// probeTimeout bounds one readiness or state probe of one node (a frozen node
	// answers nothing).
	probeTimeout = 5 * time.Second
)

// ErrNotRunning is returned for a node whose process is not running.
var ErrNotRunning = errors.New("cluster: node not running")

// Options says what cluster to start.
type Options struct {
	// Nodes is n (default 3) and Threshold the default k of the cluster (default 2).
	Nodes, Threshold int
	// Binary is the custosd to run; empty builds one from the module into Dir.
	Binary string
	// Dir holds the cluster's files; empty makes a temporary directory. Close removes it
	// unless KeepDir.
	Dir     string
	KeepDir bool
	// FixturesDir holds the insecure pre-parameter fixtures that warm every node's pool;
	// empty means <module root>/test/fixtures/preparams.
	FixturesDir string
	// Extra is merged into every node's configuration (see devcluster.Spec.Extra), for
	// example {"rate": {"per_caller_rps": 0}} or {"log": {"level": "warn"}}.
	Extra map[string]any
	// Env is added to every node's environment, and NodeEnv[i] to node i's after it
	// (for example CUSTOS_TEST_MISBEHAVE=forge for one member of a Binaries.CustosdHooks
	// cluster).
	Env     []string
	NodeEnv map[int][]string
	// Proxied puts a LatencyProxy in front of every node's p2p port and makes every member
	// address in every configuration the proxy's (QUIC off), so that all peer-to-peer
	// traffic crosses a proxy and is delayed by OneWayDelay in each direction. Each node
	// still listens on its own port. VerifyProxied checks the sockets.
	Proxied     bool
	OneWayDelay time.Duration
	// PerLink, with Proxied, gives every ordered pair of nodes its own proxy (Link(i, j):
	// node i's dials to node j), so that faults can be put on single links and single
	// directions (Partition, Isolate) instead of on everything a node receives.
	PerLink bool
	// NodeExtra is merged into node i's configuration after Extra (per-node settings
	// such as insecure_testing.clock_offset). MergeConfig changes it later.
	NodeExtra map[int]map[string]any
	// TLS, when set, says that the nodes' API serves HTTPS: the TLS files go in
	// Extra["api"] (tls_cert_file, tls_key_file, client_ca_file), the harness makes every
	// member's API URL https (API returns it), and its own HTTP client (readiness probes,
	// Get, the admin clients, the users' SDK clients) uses this client configuration: the
	// CA that signed the nodes' certificate and, for mutual TLS, a client certificate.
	TLS *tls.Config
	// AdminKeyPair, when set, configures every node with its public key as the admin key
	// (admin.public_key, no shared key; an admin.public_key in Extra must be the same
	// key) and makes the harness's admin clients sign with it (admin.NewKeyPair).
	// Otherwise the nodes take the cluster's shared ADMIN_KEY (AdminKey) and the
	// harness's admin clients use that.
	AdminKeyPair ed25519.PrivateKey
	// SkipReady lists nodes New starts but does not wait for: nodes expected to report not
	// ready (a node whose clock is off, say). Wait for them with WaitReady if ever.
	SkipReady []int
	// ReadyTimeout bounds New's wait for every node's /readyz (default 90 s); StopTimeout
	// is the grace between SIGTERM and SIGKILL (default 15 s).
	ReadyTimeout, StopTimeout time.Duration
	// Logger receives the harness's progress; nil discards it.
	Logger *slog.Logger
}

// Cluster is a running set of custosd processes. Its methods are safe for concurrent use.
type Cluster struct {
	opts      Options
	dir       string
	ownDir    bool
	bin       string
	dc        *devcluster.Cluster
	apiPorts  []int
	p2pPorts  []int
	proxies   []*LatencyProxy
	links     [][]*LatencyProxy // links[i][j]: node i's dials to node j (PerLink)
	adm       *admin.Admin      // talks to node 1
	adms      []*admin.Admin    // adms[i] talks to node i
	hc        *http.Client
	probe     *http.Client // short timeout, for readiness and state probes
	log       *slog.Logger
	closeOnce sync.Once
	closeErr  error
	// extra and fixtures are what every node's configuration was made with (AddNode
	// makes the next one alike).
	extra    map[string]any
	fixtures string

	// nodesMu guards the node list that AddNode grows: dc.Nodes, apiPorts, p2pPorts,
	// adms. addMu serialises AddNode.
	nodesMu sync.RWMutex
	addMu   sync.Mutex

	mu    sync.Mutex
	procs []*process
}

// process is one running custosd.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	log  *os.File
}

// New creates the cluster's files, starts every node and waits until all are ready.
// On error everything started so far is stopped. The caller must Close the cluster.
func New(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = DefaultNodes
	}
	if opts.Threshold == 0 {
		opts.Threshold = DefaultThreshold
	}
	if opts.Nodes < 2 || opts.Nodes > MaxNodes || opts.Threshold < 2 || opts.Threshold > opts.Nodes {
		return nil, fmt.Errorf("cluster: want 2 ≤ threshold (%d) ≤ nodes (%d) ≤ %d", opts.Threshold, opts.Nodes, MaxNodes)
	}
	if opts.OneWayDelay < 0 || opts.OneWayDelay > MaxProxyDelay {
		return nil, fmt.Errorf("cluster: one-way delay %v outside 0..%v", opts.OneWayDelay, MaxProxyDelay)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	for i := range opts.NodeEnv {
		if i < 0 || i >= opts.Nodes {
			return nil, fmt.Errorf("cluster: NodeEnv for node index %d of %d", i, opts.Nodes)
		}
	}
	for _, i := range opts.SkipReady {
		if i < 0 || i >= opts.Nodes {
			return nil, fmt.Errorf("cluster: SkipReady lists node index %d of %d", i, opts.Nodes)
		}
	}
	if opts.AdminKeyPair != nil && len(opts.AdminKeyPair) != ed25519.PrivateKeySize {
		return nil, errors.New("cluster: AdminKeyPair is not an Ed25519 private key")
	}
	c := &Cluster{opts: opts, dir: opts.Dir, log: opts.Logger, procs: make([]*process, opts.Nodes)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "custos-cluster-")
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		c.dir, c.ownDir = d, true
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	var root string
	if opts.Binary == "" || opts.FixturesDir == "" {
		if root, err = ModuleRoot(ctx); err != nil {
			return nil, err
		}
	}
	c.bin = opts.Binary
	if c.bin == "" {
		c.log.Info("building custosd", "root", root)
		if c.bin, err = Build(ctx, root, filepath.Join(c.dir, "bin")); err != nil {
			return nil, err
		}
	}
	fixtures := opts.FixturesDir
	if fixtures == "" {
		fixtures = filepath.Join(root, "test", "fixtures", "preparams")
	}
	ports, err := FreePorts(2 * opts.Nodes)
	if err != nil {
		return nil, err
	}
	c.apiPorts, c.p2pPorts = ports[:opts.Nodes], ports[opts.Nodes:]
	extra := map[string]any{}
	for k, v := range opts.Extra {
		extra[k] = v
	}
	if opts.AdminKeyPair != nil {
		// No shared key file: the nodes take the key pair's public key only.
		adm := map[string]any{}
		if m, ok := extra["admin"].(map[string]any); ok {
			for k, v := range m {
				adm[k] = v
			}
		}
		pub := hex.EncodeToString(opts.AdminKeyPair.Public().(ed25519.PublicKey))
		if given, ok := adm["public_key"]; ok && given != pub {
			return nil, fmt.Errorf("cluster: Extra's admin.public_key %v is not AdminKeyPair's public key %s", given, pub)
		}
		adm["key_file"] = ""
		adm["public_key"] = pub
		extra["admin"] = adm
	}
	c.extra, c.fixtures = extra, fixtures
	c.dc, err = devcluster.Create(devcluster.Spec{Dir: c.dir, Threshold: opts.Threshold, APIPorts: c.apiPorts, P2PPorts: c.p2pPorts, FixturesDir: fixtures, Extra: extra, Custosd: c.bin})
	if err != nil {
		return nil, fmt.Errorf("cluster: create: %w", err)
	}
	for i, ex := range opts.NodeExtra {
		if i < 0 || i >= opts.Nodes {
			return nil, fmt.Errorf("cluster: NodeExtra for node index %d of %d", i, opts.Nodes)
		}
		if err := mergeConfig(c.ConfigPath(i), ex); err != nil {
			return nil, err
		}
	}
	if opts.TLS != nil {
		if err := c.useHTTPS(); err != nil {
			return nil, err
		}
	}
	switch {
	case opts.Proxied && opts.PerLink:
		if err := c.startLinkProxies(); err != nil {
			return nil, err
		}
	case opts.Proxied:
		if err := c.startProxies(); err != nil {
			return nil, err
		}
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     opts.TLS.Clone(),
	}
	c.hc = &http.Client{Timeout: 3 * time.Minute, Transport: tr}
	c.probe = &http.Client{Timeout: probeTimeout, Transport: tr}
	for i := range c.dc.Nodes {
		a, err := c.newAdmin(i)
		if err != nil {
			return nil, err
		}
		c.adms = append(c.adms, a)
	}
	c.adm = c.adms[0]
	for i := range c.dc.Nodes {
		if err := c.Start(i); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	var wait []int
	for _, i := range c.All() {
		if !slices.Contains(opts.SkipReady, i) {
			wait = append(wait, i)
		}
	}
	if err := c.WaitReady(rctx, wait...); err != nil {
		return nil, err
	}
	c.log.Info("cluster ready", "nodes", opts.Nodes, "threshold", opts.Threshold, "dir", c.dir, "proxied", opts.Proxied, "one_way_delay", opts.OneWayDelay.String())
	return c, nil
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1 (internal/freeport).
func FreePorts(n int) ([]int, error) { return freeport.Pick(n) }

// startProxies starts a proxy per node and rewrites every configuration so that each
// member's p2p_addrs is its proxy (each node keeps listening on its own port; dialers
// use p2p_addrs only, and the p2p gater admits by peer id, not by address).
func (c *Cluster) startProxies() error {
	var addrs []string
	for i, port := range c.p2pPorts {
		p, err := NewLatencyProxy("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", port), c.opts.OneWayDelay)
		if err != nil {
			return err
		}
		c.proxies = append(c.proxies, p)
		addrs = append(addrs, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.Port()))
		c.log.Info("latency proxy", "node", c.dc.Nodes[i].ID, "listen", p.Addr(), "target", p.Target(), "one_way_delay", c.opts.OneWayDelay.String())
	}
	for _, n := range c.dc.Nodes {
		if err := rewriteMemberAddrs(devcluster.ConfigPath(c.dir, n.ID), addrs); err != nil {
			return err
		}
	}
	return nil
}

// startLinkProxies starts a proxy per ordered pair (i, j), i ≠ j, and writes node i's
// configuration so that member j's p2p_addrs is that proxy (member i keeps its own port,
// which it never dials).
func (c *Cluster) startLinkProxies() error {
	n := c.N()
	c.links = make([][]*LatencyProxy, n)
	for i := range n {
		c.links[i] = make([]*LatencyProxy, n)
		addrs := make([]string, n)
		for j := range n {
			if i == j {
				addrs[j] = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", c.p2pPorts[j])
				continue
			}
			p, err := NewLatencyProxy("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", c.p2pPorts[j]), c.opts.OneWayDelay)
			if err != nil {
				return err
			}
			c.links[i][j] = p
			c.proxies = append(c.proxies, p)
			addrs[j] = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.Port())
		}
		if err := rewriteMemberAddrs(c.ConfigPath(i), addrs); err != nil {
			return err
		}
	}
	c.log.Info("link proxies", "links", len(c.proxies))
	return nil
}

// Link is the proxy that carries node i's connections to node j (PerLink clusters; nil
// otherwise or when i == j). Whichever node dials, the bytes from i to j cross either
// Link(i, j) Forward or Link(j, i) Reverse.
func (c *Cluster) Link(i, j int) *LatencyProxy {
	if c.links == nil || i == j {
		return nil
	}
	return c.links[i][j]
}

// Cut holds (on) or releases every byte sent from node from to node to, on both links
// between them: a one-way partition. It needs a PerLink cluster.
func (c *Cluster) Cut(from, to int, on bool) error {
	if c.links == nil {
		return errors.New("cluster: Cut needs Options.PerLink")
	}
	if from == to {
		return nil
	}
	c.links[from][to].Block(Forward, on)
	c.links[to][from].Block(Reverse, on)
	return nil
}

// Isolate cuts (on) or heals every link between node i and the others, in the given
// directions: out are i's bytes to them, in theirs to i.
func (c *Cluster) Isolate(i int, out, in, on bool) error {
	for j := range c.N() {
		if j == i {
			continue
		}
		if out {
			if err := c.Cut(i, j, on); err != nil {
				return err
			}
		}
		if in {
			if err := c.Cut(j, i, on); err != nil {
				return err
			}
		}
	}
	return nil
}

// HealAll releases every cut and removes jitter and bandwidth caps (delays stay).
func (c *Cluster) HealAll() {
	for _, p := range c.proxies {
		p.Block(Forward, false)
		p.Block(Reverse, false)
		_ = p.SetJitter(0)
		_ = p.SetBandwidth(0)
	}
}

// Freeze stops (SIGSTOP) or thaws (SIGCONT) node i's process group: a hung machine, not
// a dead one.
func (c *Cluster) Freeze(i int, on bool) error {
	pid := c.PID(i)
	if pid == 0 {
		return fmt.Errorf("%w: %s", ErrNotRunning, c.NodeID(i))
	}
	sig := syscall.SIGCONT
	if on {
		sig = syscall.SIGSTOP
	}
	if err := syscall.Kill(-pid, sig); err != nil {
		return fmt.Errorf("cluster: %s %s: %w", sig, c.NodeID(i), err)
	}
	return nil
}

// mergeConfig merges extra into the top level of a configuration file, one level deep
// for objects ({"api": {"debug": true}} keeps the api section's other fields).
func mergeConfig(path string, extra map[string]any) error {
	return editConfig(path, func(cfg map[string]any) error {
		for k, v := range extra {
			sub, ok := v.(map[string]any)
			cur, ok2 := cfg[k].(map[string]any)
			if ok && ok2 {
				for sk, sv := range sub {
					cur[sk] = sv
				}
				continue
			}
			cfg[k] = v
		}
		return nil
	})
}

// rewriteMemberAddrs sets cluster.members[i].p2p_addrs = [addrs[i]] and p2p.quic = false
// in a configuration file written by devcluster.Create.
func rewriteMemberAddrs(path string, addrs []string) error {
	return editConfig(path, func(cfg map[string]any) error {
		cl, _ := cfg["cluster"].(map[string]any)
		members, _ := cl["members"].([]any)
		if len(members) != len(addrs) {
			return fmt.Errorf("lists %d members, want %d", len(members), len(addrs))
		}
		for i, m := range members {
			mm, ok := m.(map[string]any)
			if !ok {
				return fmt.Errorf("member %d is not an object", i)
			}
			mm["p2p_addrs"] = []string{addrs[i]}
		}
		p2p, _ := cfg["p2p"].(map[string]any)
		if p2p == nil {
			return errors.New("no p2p section")
		}
		p2p["quic"] = false
		return nil
	})
}

// editConfigRead decodes a configuration file for read, keeping numbers as written.
func editConfigRead(path string, read func(cfg map[string]any) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("cluster: %s: %w", path, err)
	}
	if err := read(cfg); err != nil {
		return fmt.Errorf("cluster: %s: %w", path, err)
	}
	return nil
}

// editConfig rewrites a configuration file through edit, keeping numbers as written.
func editConfig(path string, edit func(cfg map[string]any) error) error {
	var edited map[string]any
	if err := editConfigRead(path, func(cfg map[string]any) error {
		edited = cfg
		return edit(cfg)
	}); err != nil {
		return err
	}
	out, err := json.MarshalIndent(edited, "", "  ")
	if err != nil {
		return fmt.Errorf("cluster: %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// useHTTPS makes every member's API URL https, in every configuration and in API.
func (c *Cluster) useHTTPS() error {
	for i := range c.dc.Nodes {
		c.dc.Nodes[i].API = strings.Replace(c.dc.Nodes[i].API, "http://", "https://", 1)
		err := editConfig(c.ConfigPath(i), func(cfg map[string]any) error {
			cl, _ := cfg["cluster"].(map[string]any)
			members, _ := cl["members"].([]any)
			if len(members) != c.N() {
				return fmt.Errorf("lists %d members, want %d", len(members), c.N())
			}
			for j, m := range members {
				mm, ok := m.(map[string]any)
				api, ok2 := mm["api"].(string)
				if !ok || !ok2 {
					return fmt.Errorf("member %d has no api URL", j)
				}
				mm["api"] = strings.Replace(api, "http://", "https://", 1)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// MergeConfig merges extra into node i's configuration file, one level deep as
// NodeExtra ({"insecure_testing": {"clock_offset": "20s"}} keeps that section's other
// fields). A running node reads it when it next starts: Stop, MergeConfig, Start.
func (c *Cluster) MergeConfig(i int, extra map[string]any) error {
	return mergeConfig(c.ConfigPath(i), extra)
}

// All returns every node's index: 0, 1, … N()-1.
func (c *Cluster) All() []int {
	out := make([]int, c.N())
	for i := range out {
		out[i] = i
	}
	return out
}

// N is the number of nodes.
func (c *Cluster) N() int {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	return len(c.dc.Nodes)
}

// Threshold is the cluster's default k.
func (c *Cluster) Threshold() int { return c.opts.Threshold }

// Dir is the directory holding the cluster's configurations, data and logs.
func (c *Cluster) Dir() string { return c.dir }

// Binary is the custosd the nodes run.
func (c *Cluster) Binary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bin
}

// SetBinary makes nodes started from now on run bin (an upgrade: stop a node, set the
// new binary, start it).
func (c *Cluster) SetBinary(bin string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bin = bin
}

// NodeID is node i's id ("node1" …).
func (c *Cluster) NodeID(i int) string {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	return c.dc.Nodes[i].ID
}

// Index returns the index of the node with the given id, or -1.
func (c *Cluster) Index(nodeID string) int {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	for i, n := range c.dc.Nodes {
		if n.ID == nodeID {
			return i
		}
	}
	return -1
}

// API is node i's API base URL.
func (c *Cluster) API(i int) string {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	return c.dc.Nodes[i].API
}

// APIs returns every node's API base URL.
func (c *Cluster) APIs() []string {
	out := make([]string, c.N())
	for i := range out {
		out[i] = c.API(i)
	}
	return out
}

// P2PPort is the port node i listens on for peers.
func (c *Cluster) P2PPort(i int) int {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	return c.p2pPorts[i]
}

// APIPort is the port of node i's API.
func (c *Cluster) APIPort(i int) int {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	return c.apiPorts[i]
}

// Proxies returns the latency proxies, one per node (index = node), or nil.
func (c *Cluster) Proxies() []*LatencyProxy { return c.proxies }

// LogPath is node i's log file.
func (c *Cluster) LogPath(i int) string { return devcluster.LogPath(c.dir, c.NodeID(i)) }

// ConfigPath is node i's configuration file.
func (c *Cluster) ConfigPath(i int) string { return devcluster.ConfigPath(c.dir, c.NodeID(i)) }

// Admin is the harness's admin SDK client talking to node 1 (HS256 with the shared
// ADMIN_KEY, or key-pair with Options.AdminKeyPair). AdminFor(i) talks to node i.
func (c *Cluster) Admin() *admin.Admin { return c.adm }

// maxGetBody bounds what Get reads.
const maxGetBody = 16 << 20

// Get fetches one of node i's unauthenticated routes (/metrics, /debug/state, /healthz…)
// and returns its body, refusing any status but 200.
func (c *Cluster) Get(ctx context.Context, i int, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.API(i)+path, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cluster: GET %s on %s: %w", path, c.NodeID(i), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGetBody))
	if err != nil {
		return nil, fmt.Errorf("cluster: GET %s on %s: %w", path, c.NodeID(i), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cluster: GET %s on %s: HTTP %d", path, c.NodeID(i), resp.StatusCode)
	}
	return body, nil
}

// DebugState returns node i's GET /debug/state (dev clusters serve it: api.debug).
func (c *Cluster) DebugState(ctx context.Context, i int) (*node.DebugState, error) {
	b, err := c.Get(ctx, i, "/debug/state")
	if err != nil {
		return nil, err
	}
	var ds node.DebugState
	if err := json.Unmarshal(b, &ds); err != nil {
		return nil, fmt.Errorf("cluster: %s /debug/state: %w", c.NodeID(i), err)
	}
	return &ds, nil
}

// AdminFor returns the harness's admin SDK client that talks to node i (made by New,
// like Admin; the error is for an index out of range).
func (c *Cluster) AdminFor(i int) (*admin.Admin, error) {
	c.nodesMu.RLock()
	defer c.nodesMu.RUnlock()
	if i < 0 || i >= len(c.adms) {
		return nil, fmt.Errorf("cluster: no node index %d", i)
	}
	return c.adms[i], nil
}

// newAdmin makes the harness's admin client for node i: key-pair with
// Options.AdminKeyPair, else HS256 with the shared ADMIN_KEY.
func (c *Cluster) newAdmin(i int) (*admin.Admin, error) {
	var (
		a   *admin.Admin
		err error
	)
	if c.opts.AdminKeyPair != nil {
		a, err = admin.NewKeyPair(c.opts.AdminKeyPair, c.API(i), admin.WithHTTPClient(c.hc))
	} else {
		var key []byte
		if key, err = c.AdminKey(); err != nil {
			return nil, err
		}
		a, err = admin.New(key, c.API(i), admin.WithHTTPClient(c.hc))
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: admin client: %w", err)
	}
	return a, nil
}

// AdminKey returns the cluster's shared ADMIN_KEY (32 bytes, from AdminKeyFile): what
// the nodes take as admin credential unless Options.AdminKeyPair, and what HS256 admin
// and user tokens are signed with.
func (c *Cluster) AdminKey() ([]byte, error) {
	key, err := c.dc.AdminKey("/")
	if err != nil {
		return nil, fmt.Errorf("cluster: admin key: %w", err)
	}
	return key, nil
}

// AdminKeyFile is the file holding the shared ADMIN_KEY in hex (the CLI's
// --admin-key-file).
func (c *Cluster) AdminKeyFile() string { return c.dc.AdminKeyFile }

// HTTPClient is the HTTP client the harness's SDK clients share: keep-alive pools sized
// for dozens of concurrent calls per node.
func (c *Cluster) HTTPClient() *http.Client { return c.hc }

// PID returns node i's process id, or 0 when it is not running.
func (c *Cluster) PID(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[i]; p != nil && !p.exited() {
		return p.cmd.Process.Pid
	}
	return 0
}

// PIDs returns every node's process id (0 for a node that is not running).
func (c *Cluster) PIDs() []int {
	out := make([]int, c.N())
	for i := range out {
		out[i] = c.PID(i)
	}
	return out
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start starts node i's process (it must not be running) in its own process group,
// appending its output to LogPath(i). It does not wait for readiness.
func (c *Cluster) Start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[i]; p != nil && !p.exited() {
		return fmt.Errorf("cluster: %s is already running", c.NodeID(i))
	}
	lf, err := os.OpenFile(c.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	bin := c.bin
	cmd := exec.Command(bin, "run", "--config", c.ConfigPath(i))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(append(os.Environ(), c.opts.Env...), c.opts.NodeEnv[i]...)
	// Own process group (signals reach the node and nothing else); killed if the harness
	// dies without closing.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("cluster: start %s: %w", c.NodeID(i), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: lf}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	c.procs[i] = p
	c.log.Debug("node started", "node", c.NodeID(i), "pid", cmd.Process.Pid)
	return nil
}

// Stop sends SIGTERM to node i's process group, waits up to the stop timeout, then
// sends SIGKILL. Stopping a node that is not running is a no-op.
func (c *Cluster) Stop(i int) error { return c.halt(i, syscall.SIGTERM) }

// Kill sends SIGKILL to node i's process group and waits for it to exit.
func (c *Cluster) Kill(i int) error { return c.halt(i, syscall.SIGKILL) }

func (c *Cluster) halt(i int, sig syscall.Signal) error {
	c.mu.Lock()
	p := c.procs[i]
	c.procs[i] = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	defer p.log.Close()
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("cluster: signal %s: %w", c.NodeID(i), err)
	}
	// A frozen (SIGSTOP) node handles nothing until it is continued.
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-time.After(c.opts.StopTimeout):
	}
	c.log.Warn("node did not stop in time; killing it", "node", c.NodeID(i), "signal", sig.String())
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("cluster: kill %s: %w", c.NodeID(i), err)
	}
	<-p.done
	return nil
}

// Running reports whether node i's process is running.
func (c *Cluster) Running(i int) bool { return c.PID(i) != 0 }

// WaitReady waits until every listed node answers 200 on /readyz, failing early (with
// the tail of its log) when one of them exits, and with its last answer and log tail
// when ctx ends first.
func (c *Cluster) WaitReady(ctx context.Context, nodes ...int) error {
	for _, i := range nodes {
		var (
			last   string
			exited bool
		)
		err := Until(ctx, func() bool {
			if exited = c.PID(i) == 0; exited {
				return true
			}
			ok, answer := c.readyz(ctx, i)
			last = answer
			return ok
		})
		if exited {
			return fmt.Errorf("cluster: %s exited before it was ready:\n%s", c.NodeID(i), c.LogTail(i, logTailLines))
		}
		if err != nil {
			return fmt.Errorf("cluster: %s not ready (%s): %w\n%s", c.NodeID(i), last, err, c.LogTail(i, logTailLines))
		}
	}
	return nil
}

// maxReadyzBody bounds what readyz quotes of a /readyz answer.
const maxReadyzBody = 4 << 10

// readyz asks node i's /readyz once: whether it answered 200, and what it answered.
func (c *Cluster) readyz(ctx context.Context, i int) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.API(i)+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxReadyzBody))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("HTTP %d %s", resp.StatusCode, bytes.TrimSpace(b))
}

// LogTail returns the last n lines of node i's log.
func (c *Cluster) LogTail(i, n int) string {
	b, err := os.ReadFile(c.LogPath(i))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StopAll stops every running node at once (SIGTERM, then SIGKILL after the stop
// timeout) and waits for all of them. Start brings a node back.
func (c *Cluster) StopAll() error {
	c.mu.Lock()
	n := len(c.procs) // not N(): Close may run before the files exist; AddNode's included
	c.mu.Unlock()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Stop(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops every node (SIGTERM to all at once, then SIGKILL after the stop timeout),
// closes the proxies and removes the cluster's directory unless KeepDir (or a Dir the
// caller gave). Idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if err := c.StopAll(); err != nil {
			errs = append(errs, err)
		}
		for _, p := range c.proxies {
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.hc != nil {
			c.hc.CloseIdleConnections()
		}
		if c.ownDir && !c.opts.KeepDir {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, fmt.Errorf("cluster: %w", err))
			}
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// VmHWM returns node i's peak resident set size in bytes.
func (c *Cluster) VmHWM(i int) (int64, error) {
	pid := c.PID(i)
	if pid == 0 {
		return 0, fmt.Errorf("%w: %s", ErrNotRunning, c.NodeID(i))
	}
	return ReadVmHWM(pid)
}

// ResetPeakRSS resets node i's VmHWM to its current RSS.
func (c *Cluster) ResetPeakRSS(i int) error {
	pid := c.PID(i)
	if pid == 0 {
		return fmt.Errorf("%w: %s", ErrNotRunning, c.NodeID(i))
	}
	return ResetPeakRSS(pid)
}

// User is a user with its request-signing key and one SDK client per node (index = node).
// Every call of those clients carries the user token and an RFC 9421 signature.
type User struct {
	ID      uint64
	Token   string
	Key     ed25519.PrivateKey
	Clients []*client.Client
}

// NewUser creates a user through the admin API (default permissions when perms is
// empty), gives it a fresh Ed25519 request-signing key and a token valid for ttl, and
// builds one SDK client per node sharing HTTPClient.
func (c *Cluster) NewUser(ctx context.Context, name string, ttl time.Duration, perms ...string) (*User, error) {
	id, err := c.adm.CreateUser(ctx, name, perms...)
	if err != nil {
		return nil, fmt.Errorf("cluster: create user %s: %w", name, err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	tok, err := c.adm.GenUserToken(id, hex.EncodeToString(pub), ttl)
	if err != nil {
		return nil, fmt.Errorf("cluster: user token: %w", err)
	}
	u := &User{ID: id, Token: tok, Key: priv}
	if u.Clients, err = c.Clients(tok, priv); err != nil {
		return nil, err
	}
	return u, nil
}

// Clients returns one user-mode SDK client per node (index = node) for a user token and
// its request-signing key, sharing HTTPClient (and so Options.TLS): for a token the
// caller minted itself, or a new token of an existing User.
func (c *Cluster) Clients(token string, key ed25519.PrivateKey) ([]*client.Client, error) {
	first, err := client.New(c.API(0), token, key, client.WithHTTPClient(c.hc))
	if err != nil {
		return nil, fmt.Errorf("cluster: client: %w", err)
	}
	out := []*client.Client{first}
	for i := 1; i < c.N(); i++ {
		cl, err := first.WithBaseURL(c.API(i))
		if err != nil {
			return nil, fmt.Errorf("cluster: client: %w", err)
		}
		out = append(out, cl)
	}
	return out, nil
}
