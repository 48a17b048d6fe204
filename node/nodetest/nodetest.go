// Package nodetest is test support: it starts real custos nodes in this process, so that
// tests of the SDKs and of the HTTP API run against the real handler stack instead of
// hand-written fakes. Each node is node.New and Start with a real Pebble keystore in a
// temporary directory, real libp2p and raft on 127.0.0.1 and the real HTTP API; they
// form one cluster and Start returns once every node answers /readyz with 200.
//
// The nodes run in dev mode with the repository's INSECURE pre-parameter fixtures
// (test/fixtures/preparams), so that an ECDSA keygen takes seconds instead of minutes,
// and with a freshly generated admin credential (the shared HMAC ADMIN_KEY, or an
// Ed25519 admin key pair with Options.KeyPair). It must only ever be imported by tests;
// package node must never import it, and it imports neither SDK (node/client, admin),
// so that their own tests can use it.
package nodetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/freeport"
	"github.com/custos/custos/node"
)

// Defaults of Options.
const (
	DefaultNodes        = 3
	DefaultThreshold    = 2
	DefaultName         = "nodetest"
	DefaultReadyTimeout = 2 * time.Minute
	// stopTimeout bounds each node's Stop.
	stopTimeout = 30 * time.Second
	// startAttempts is how often a start that lost a port race is tried again.
	startAttempts = 3
)

// Options say what cluster to start. The zero value is 3 nodes, k = 2, the shared admin
// key.
type Options struct {
	// Nodes is the number of members (DefaultNodes when 0). Configuration validation
	// requires at least 2.
	Nodes int
	// Threshold is k, the number of signers (DefaultThreshold when 0).
	Threshold int
	// Name is the cluster's name, the audience of its tokens (DefaultName when empty).
	Name string
	// KeyPair runs the cluster in admin key-pair mode (EdDSA admin tokens and RFC 9421
	// signatures by the admin key) instead of the shared HMAC ADMIN_KEY: see
	// Cluster.AdminPrivateKey.
	KeyPair bool
	// WaitTimeout is api.wait_timeout, how long keygen and sign hold their answer
	// (the node's default when 0).
	WaitTimeout time.Duration
	// Config is merged into every node's configuration, one level deep (an object
	// value is merged into the object of the same name, anything else replaces it):
	// e.g. {"rate": {"per_caller_rps": 0}}.
	Config map[string]any
	// FixturesDir holds the pre-parameter fixtures (preparams-*.json); empty means the
	// repository's test/fixtures/preparams.
	FixturesDir string
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait until every node is ready (DefaultReadyTimeout
	// when 0).
	ReadyTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Threshold == 0 {
		o.Threshold = DefaultThreshold
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Cluster is a running in-process cluster.
type Cluster struct {
	opts      Options
	dir       string
	removeDir bool
	ids       []string
	urls      []string
	nodes     []*node.Node
	adminKey  []byte
	adminPriv ed25519.PrivateKey

	closeOnce sync.Once
	closeErr  error
}

// Start starts a cluster for t, with its data in t.TempDir(), and registers t.Cleanup to
// stop every node. It fails t when the cluster does not start or get ready in time.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := start(t.TempDir(), false, opts)
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("nodetest: %v", err)
		}
	})
	return c
}

// New starts a cluster that outlives any one test (its data in a new temporary
// directory); the caller stops it with Close, e.g. from TestMain. Shared does that for a
// package's tests.
func New(opts Options) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "nodetest-")
	if err != nil {
		return nil, fmt.Errorf("nodetest: %w", err)
	}
	c, err := start(dir, true, opts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nodetest: %w", err)
	}
	return c, nil
}

// start starts a cluster in dir, trying again with other ports when one was taken
// between choosing and binding it.
func start(dir string, removeDir bool, opts Options) (*Cluster, error) {
	opts = opts.withDefaults()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var c *Cluster
		c, err = startOnce(filepath.Join(dir, "try"+strconv.Itoa(attempt)), opts)
		if err == nil {
			c.dir, c.removeDir = dir, removeDir
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	return nil, err
}

func startOnce(dir string, opts Options) (c *Cluster, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	fixtures, err := fixturesDir(opts.FixturesDir)
	if err != nil {
		return nil, err
	}
	ports, err := freeport.Pick(2 * opts.Nodes)
	if err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts}
	admin := map[string]any{}
	if opts.KeyPair {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("admin key pair: %w", err)
		}
		c.adminPriv = priv
		admin["public_key"] = hex.EncodeToString(pub)
	} else {
		c.adminKey = make([]byte, 32)
		if _, err := rand.Read(c.adminKey); err != nil {
			return nil, fmt.Errorf("admin key: %w", err)
		}
		keyFile := filepath.Join(dir, "admin.key")
		if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(c.adminKey)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("admin key: %w", err)
		}
		admin["key_file"] = keyFile
		admin["allow_shared_key"] = true
	}

	var members []config.Member
	for i := range opts.Nodes {
		id := "node" + strconv.Itoa(i+1)
		dataDir := filepath.Join(dir, id)
		pid, err := node.InitDataDir(dataDir, filepath.Join(dataDir, "master.key"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		members = append(members, config.Member{ID: id, PeerID: pid, P2PAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ports[opts.Nodes+i])}, API: url})
		c.ids = append(c.ids, id)
		c.urls = append(c.urls, url)
	}

	defer func() {
		if err != nil {
			_ = c.stopNodes()
		}
	}()
	for i, m := range members {
		api := map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", ports[i])}
		if opts.WaitTimeout > 0 {
			api["wait_timeout"] = opts.WaitTimeout.String()
		}
		raw := map[string]any{
			"mode":       config.ModeDev,
			"node_id":    m.ID,
			"data_dir":   filepath.Join(dir, m.ID),
			"cluster":    map[string]any{"name": opts.Name, "threshold": opts.Threshold, "members": members},
			"api":        api,
			"p2p":        map[string]any{"listen": m.P2PAddrs},
			"master_key": map[string]any{"file": filepath.Join(dir, m.ID, "master.key")},
			"admin":      admin,
			"preparams":  map[string]any{"insecure_fixtures_dir": fixtures},
			"log":        map[string]any{"level": "error"},
		}
		merge(raw, opts.Config)
		b, err := json.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: configuration: %w", m.ID, err)
		}
		cfg, err := config.Parse(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: configuration: %w", m.ID, err)
		}
		n, err := node.New(cfg, node.Options{Logger: opts.Logger.With("cluster", opts.Name)})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.ID, err)
		}
		// Stop also undoes a partial Start (it closes what was opened).
		c.nodes = append(c.nodes, n)
		if err := n.Start(context.Background()); err != nil {
			return nil, fmt.Errorf("%s: start: %w", m.ID, err)
		}
	}
	if err := c.waitReady(opts.ReadyTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// merge merges add into base one level deep (objects into objects, the rest replaced).
func merge(base, add map[string]any) {
	for k, v := range add {
		b, bok := base[k].(map[string]any)
		a, aok := v.(map[string]any)
		if bok && aok {
			merged := make(map[string]any, len(b)+len(a))
			for kk, vv := range b {
				merged[kk] = vv
			}
			for kk, vv := range a {
				merged[kk] = vv
			}
			base[k] = merged
			continue
		}
		base[k] = v
	}
}

// waitReady polls every node's /readyz until each answers 200, or fails with the last
// reasons once timeout has passed.
func (c *Cluster) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i, u := range c.urls {
		for {
			ready, why := readyz(ctx, hc, u)
			if ready {
				break
			}
			select {
			case err := <-c.nodes[i].Fatal():
				return fmt.Errorf("%s failed while starting: %w", c.ids[i], err)
			case <-ctx.Done():
				return fmt.Errorf("%s not ready after %v: %s", c.ids[i], timeout, why)
			case <-tick.C:
			}
		}
	}
	return nil
}

// readyz asks one node whether it is ready, and if not, why.
func readyz(ctx context.Context, hc *http.Client, base string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("HTTP %d %s", resp.StatusCode, bytes.TrimSpace(body))
}

// Close stops every node (the last started first) and removes the data New created. It
// is safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.stopNodes()
		if c.removeDir {
			if err := os.RemoveAll(c.dir); err != nil {
				c.closeErr = errors.Join(c.closeErr, err)
			}
		}
	})
	return c.closeErr
}

func (c *Cluster) stopNodes() error {
	var errs []error
	for i := len(c.nodes) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		if err := c.nodes[i].Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", c.ids[i], err))
		}
		cancel()
	}
	c.nodes = nil
	return errors.Join(errs...)
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.urls) }

// URL is node i's API base URL ("http://127.0.0.1:port"), 0 ≤ i < N.
func (c *Cluster) URL(i int) string { return c.urls[i] }

// URLs are every node's API base URL, in node order.
func (c *Cluster) URLs() []string { return slices.Clone(c.urls) }

// NodeID is node i's id ("node1", …).
func (c *Cluster) NodeID(i int) string { return c.ids[i] }

// Node is node i itself.
func (c *Cluster) Node(i int) *node.Node { return c.nodes[i] }

// Name is the cluster's name, the audience its tokens may carry.
func (c *Cluster) Name() string { return c.opts.Name }

// Threshold is the cluster's k.
func (c *Cluster) Threshold() int { return c.opts.Threshold }

// AdminKey is the shared 32-byte ADMIN_KEY (raw bytes, for admin.New), nil in key-pair
// mode.
func (c *Cluster) AdminKey() []byte { return slices.Clone(c.adminKey) }

// AdminPrivateKey is the admin's Ed25519 private key in key-pair mode (for
// admin.NewKeyPair), nil in shared-key mode.
func (c *Cluster) AdminPrivateKey() ed25519.PrivateKey { return slices.Clone(c.adminPriv) }

// Shared starts one cluster on first use and shares it among the tests of a package, so
// that the suite pays for one start. Declare it as a variable of a test file, get the
// cluster with Cluster(t) in each test, and Close it from TestMain after m.Run:
//
//	var shared = nodetest.Shared{Options: nodetest.Options{…}}
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		if err := shared.Close(); err != nil { … }
//		os.Exit(code)
//	}
//
// Tests that share a cluster share its state: each should create its own users and keys.
type Shared struct {
	// Options are the cluster's options; set them before the first Cluster call.
	Options Options

	mu  sync.Mutex
	c   *Cluster
	err error
}

// Cluster returns the shared cluster, starting it on the first call; it fails t when
// the cluster could not start (then and on every later call).
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil && s.err == nil {
		s.c, s.err = New(s.Options)
	}
	if s.err != nil {
		t.Fatalf("shared cluster: %v", s.err)
	}
	return s.c
}

// Close stops the shared cluster if it was started.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	return s.c.Close()
}

// Main runs a test package's tests and then stops the shared cluster, for TestMain:
// os.Exit(shared.Main(m)). A failure to stop turns a passing run into a failing one.
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the shared cluster:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// fixturesDir returns dir, or the repository's test/fixtures/preparams: found next to
// this source file, else above the working directory.
func fixturesDir(dir string) (string, error) {
	has := func(d string) bool {
		m, _ := filepath.Glob(filepath.Join(d, "preparams-*.json"))
		return len(m) > 0
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("fixtures directory %s holds no preparams-*.json", dir)
		}
		return filepath.Abs(dir)
	}
	rel := filepath.Join("test", "fixtures", "preparams")
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if has(d) {
			return filepath.Abs(d)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("fixtures: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if has(filepath.Join(d, rel)) {
			return filepath.Join(d, rel), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no %s above %s: set Options.FixturesDir", rel, wd)
		}
	}
}
