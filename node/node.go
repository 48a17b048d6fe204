package node

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
	"github.com/custos/custos/protocol"
)

// Node is one running custos node.
type Node struct {
	cfg    *config.Config
	log    *slog.Logger
	ks     *keystore.Store
	host   *p2p.Host
	fsm    *state.FSM
	raft   *raft.Raft
	wal    *wal.WAL
	trans  *raft.NetworkTransport
	engine *protocol.Engine
	// authn verifies every credential, here for early refusals and in the FSM at the
	// entry's stamp (the same code).
	authn *authn.Verifier
	// adminPub is the admin's Ed25519 public key of this node's configuration (key-pair
	// mode): written into the cluster's first entry, then only compared with the state.
	adminPub ed25519.PublicKey
	// identity is the node's libp2p identity key: it signs the node's reports and the
	// requests it proposes.
	identity crypto.PrivKey
	pool     *pool
	met      *metrics
	// limiter is the per-caller token bucket (nil when rate limiting is off).
	limiter *rateLimiter
	// akWaits bounds the requests waiting for an access key this node has not applied yet.
	akWaits chan struct{}
	http    *http.Server
	apiLn   net.Listener

	// clockOffset is insecure_testing.clock_offset (zero in production); every wall-clock
	// reading that decides something goes through now.
	clockOffset time.Duration
	// clock is what this node knows of its clock against the other voters' (clock.go).
	clock *clockCheck

	stampMu   sync.Mutex
	lastStamp int64

	waiters *waiters
	events  chan state.Event
	// checkpoints carries checkpoint events to checkpointLoop; vouch is this node's
	// trust in its own state (vouch.go).
	checkpoints chan state.Event
	vouch       vouching
	leaderKick  chan struct{}

	// lifeMu guards stopping; work counts the short-lived goroutines (ceremonies, the
	// leader's reports) that Stop waits for. spawn refuses new ones once Stop began, so
	// that work.Add never races work.Wait.
	lifeMu   sync.Mutex
	stopping bool
	work     sync.WaitGroup

	active  sync.Map // request id + attempt → struct{}: ceremonies running here
	activeN atomicCounter

	// fatal carries the first error after which the node must stop (its keystore
	// failed); faultFS is the test-only write-fault switch (nil unless configured).
	fatal   chan error
	faultFS *errorfs.Toggle

	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// Options are what a node needs beyond its configuration file.
type Options struct {
	Logger *slog.Logger
	// MasterKey overrides the configured master-key source (tests).
	MasterKey []byte
}

// New opens the node's keystore and identity and prepares every component; Start runs it.
func New(cfg *config.Config, opts Options) (*Node, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{cfg: cfg, log: log.With("node", cfg.NodeID), waiters: newWaiters(), events: make(chan state.Event, 4096), checkpoints: make(chan state.Event, 64), leaderKick: make(chan struct{}, 1)}
	mk := opts.MasterKey
	if mk == nil {
		var err error
		if mk, err = loadMasterKey(cfg); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n.fatal = make(chan error, 1)
	kopts := keystore.Options{Logger: n.log}
	if cfg.InsecureTesting.WriteFaultFile != "" {
		n.faultFS = &errorfs.Toggle{Injector: errorfs.ErrInjected.If(errorfs.Writes)}
		kopts.FS = errorfs.Wrap(vfs.Default, n.faultFS)
		n.log.Warn("INSECURE: keystore writes fail while the fault file exists", "file", cfg.InsecureTesting.WriteFaultFile)
	}
	if off := cfg.InsecureTesting.ClockOffset.Duration; off != 0 {
		n.log.Warn("INSECURE: wall clock shifted", "offset", off.String())
	}
	ks, err := keystore.Open(keystoreDir(cfg), mk, kopts)
	if err != nil {
		if errors.Is(err, keystore.ErrWrongMasterKey) {
			return nil, fmt.Errorf("the master key does not open %s: check master_key in the configuration (%w)", keystoreDir(cfg), err)
		}
		return nil, fmt.Errorf("keystore: %w", err)
	}
	n.ks = ks
	an, adminPub, err := newAuthn(cfg)
	if err != nil {
		ks.Close()
		return nil, err
	}
	n.authn, n.adminPub = an, adminPub
	n.clockOffset = cfg.InsecureTesting.ClockOffset.Duration
	n.met = newMetrics()
	n.limiter = newRateLimiter(cfg.RateLimit())
	n.akWaits = make(chan struct{}, maxAccessKeyWaits)
	return n, nil
}

// maxAccessKeyWaits bounds the requests that wait at once for an unknown access key to
// appear in this node's state (see findAccessKey).
const maxAccessKeyWaits = 32

// Fatal delivers the error after which the node must stop (at most one): its keystore
// failed, so it can neither store nor read shares until restarted on a working disk.
// The process stops and lets its supervisor restart it rather than serve half-broken.
func (n *Node) Fatal() <-chan error { return n.fatal }

// watchHealth raises Fatal when the keystore fails, and (test-only) turns injected
// write faults on and off with the presence of the fault file.
func (n *Node) watchHealth(ctx context.Context) {
	every(ctx, 100*time.Millisecond, func() bool {
		if n.faultFS != nil {
			if _, err := os.Stat(n.cfg.InsecureTesting.WriteFaultFile); err == nil {
				n.faultFS.On()
			} else {
				n.faultFS.Off()
			}
		}
		if n.ks.Failed() {
			select {
			case n.fatal <- fmt.Errorf("keystore failed (see the storage error logged before): %w", keystore.ErrStoreFailed):
			default:
			}
			return false
		}
		return true
	})
}

// every calls fn every d until ctx ends or fn returns false.
func every(ctx context.Context, d time.Duration, fn func() bool) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !fn() {
			return
		}
	}
}

// now is the node's wall clock (shifted by the test-only clock offset).
func (n *Node) now() time.Time { return time.Now().Add(n.clockOffset) }

func keystoreDir(cfg *config.Config) string { return cfg.DataDir + "/keystore" }

func loadMasterKey(cfg *config.Config) ([]byte, error) {
	if cfg.MasterKey.File != "" {
		k, err := keystore.MasterKeyFromFile(cfg.MasterKey.File)
		if err != nil {
			return nil, fmt.Errorf("master key: %w", err)
		}
		return k, nil
	}
	v := os.Getenv(cfg.MasterKey.Env)
	if v == "" {
		return nil, fmt.Errorf("master key: set master_key.file in the configuration or the %s environment variable", cfg.MasterKey.Env)
	}
	k, err := keystore.MasterKeyFromHex(strings.TrimSpace(v))
	if err != nil {
		return nil, fmt.Errorf("master key from %s: %w", cfg.MasterKey.Env, err)
	}
	return k, nil
}

// newAuthn builds the node's credential verifier from its configuration. In key-pair mode
// the admin public key is returned for the cluster's first entry; the verifier itself
// takes the key from the replicated state.
func newAuthn(cfg *config.Config) (*authn.Verifier, ed25519.PublicKey, error) {
	vc := authn.Config{
		Audience:        cfg.Cluster.Name,
		RequireAudience: cfg.Auth.RequireAudience,
		MaxUserTokenTTL: cfg.Auth.MaxTokenTTL.Duration,
	}
	var adminPub ed25519.PublicKey
	switch {
	case cfg.Admin.PublicKey != "":
		pk, err := hex.DecodeString(cfg.Admin.PublicKey)
		if err != nil || len(pk) != ed25519.PublicKeySize {
			return nil, nil, errors.New("admin.public_key must be 64 hex characters (an Ed25519 public key)")
		}
		adminPub = ed25519.PublicKey(pk)
	default:
		var raw string
		if cfg.Admin.KeyFile != "" {
			// Checked like the master key file: a regular file, mode 0600 or stricter.
			b, err := keystore.ReadSecretFile(cfg.Admin.KeyFile, 1024) // 64 hex characters and white space
			if err != nil {
				return nil, nil, fmt.Errorf("admin key file (admin.key_file): %w", err)
			}
			raw = string(b)
			clear(b)
		} else {
			raw = os.Getenv(cfg.Admin.KeyEnv)
		}
		k, err := auth.ParseAdminKeyHex(strings.TrimSpace(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("admin key: %w", err)
		}
		vc.HMACKey = k
	}
	v, err := authn.New(vc)
	if err != nil {
		return nil, nil, fmt.Errorf("credential verifier: %w", err)
	}
	return v, adminPub, nil
}

// Identity returns the node's libp2p identity, creating and storing it on first use.
func Identity(ks *keystore.Store) (crypto.PrivKey, error) {
	b, err := ks.GetMeta("identity")
	if errors.Is(err, keystore.ErrNotFound) {
		priv, err := p2p.GenerateIdentity()
		if err != nil {
			return nil, err
		}
		raw, err := p2p.MarshalIdentity(priv)
		if err != nil {
			return nil, err
		}
		if err := ks.PutMeta("identity", raw); err != nil {
			return nil, fmt.Errorf("store identity: %w", err)
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	return p2p.UnmarshalIdentity(b)
}

// Start runs the node: p2p host, raft, engine, pool, scheduler, runner and HTTP API.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	priv, err := Identity(n.ks)
	if err != nil {
		return err
	}
	self := n.cfg.Self()
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if pid.String() != self.PeerID {
		return fmt.Errorf("this data directory's identity is %s but the configuration lists %s for %s: wrong data_dir or configuration", pid, self.PeerID, self.ID)
	}
	n.identity = priv
	members, err := p2pMembers(n.cfg.Cluster.Members)
	if err != nil {
		return err
	}
	host, err := p2p.New(p2p.Config{Identity: priv, ListenAddrs: n.cfg.P2P.Listen, EnableQUIC: n.cfg.P2P.QUIC, Members: members, Logger: n.log})
	if err != nil {
		return fmt.Errorf("p2p: %w", err)
	}
	n.host = host
	n.met.reg.MustRegister(newP2PCollector(host))

	n.engine = protocol.NewEngine(protocol.EngineConfig{
		Self:      n.cfg.NodeID,
		Transport: &tssTransport{n: n},
		Logger:    n.log,
		OnDrop:    func(reason string) { n.met.dropped.WithLabelValues(reason).Inc() },
	})
	host.SetFrameHandler(n.onFrame)
	n.clock = newClockCheck(n.met.reg)
	host.HandleRPC(rpcClock, n.handleClock)
	host.HandleRPC(rpcPropose, func(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
		id, ok := host.NodeIDOf(from)
		if !ok {
			return nil, errors.New("unknown peer")
		}
		return n.handlePropose(ctx, id, req)
	})

	n.fsm = state.NewFSM(sigVerifier{}, n.authn, n.onEvent)
	n.fsm.OnSnapshot(n.onSnapshot)
	n.fsm.OnRestore(n.onRestore)
	if err := n.openRaft(); err != nil {
		return err
	}
	n.pool = newPool(n)
	if err := n.pool.seed(); err != nil {
		return err
	}
	n.goBG(n.pool.run)
	n.goBG(n.dispatchEvents)
	n.goBG(n.leaderLoop)
	n.goBG(n.reconcileLoop)
	n.goBG(n.checkpointLoop)
	n.goBG(n.metricsLoop)
	n.goBG(n.watchHealth)
	n.goBG(n.clockLoop)

	ln, err := listenAPI(n.cfg)
	if err != nil {
		return err
	}
	n.apiLn = ln
	n.http = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	n.goBG(func(ctx context.Context) {
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server stopped", "err", err)
		}
	})
	scheme := "http"
	if n.cfg.APITLS() {
		scheme = "https"
	}
	n.log.Info("node started", "api", ln.Addr().String(), "api_scheme", scheme, "api_mtls", n.cfg.API.ClientCAFile != "", "peer_id", pid.String(), "p2p", host.ListenAddrs())
	return nil
}

func p2pMembers(ms []config.Member) ([]p2p.Member, error) {
	out := make([]p2p.Member, 0, len(ms))
	for _, m := range ms {
		pm, err := p2p.ParseMember(m.ID, m.PeerID, m.P2PAddrs)
		if err != nil {
			return nil, fmt.Errorf("cluster member %s: %w", m.ID, err)
		}
		out = append(out, pm)
	}
	return out, nil
}

func peerIDFromString(s string) (peer.ID, error) { return peer.Decode(s) }

// spawn runs f in a goroutine that Stop waits for; after Stop began it runs nothing and
// returns false.
func (n *Node) spawn(f func()) bool {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.stopping {
		return false
	}
	n.work.Add(1)
	go func() {
		defer n.work.Done()
		f()
	}()
	return true
}

func (n *Node) goBG(f func(ctx context.Context)) {
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		f(n.ctx)
	}()
}

// Stop shuts the node down: API first, then ceremonies, raft, p2p and the keystore.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	if n.http != nil {
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	n.lifeMu.Lock()
	n.stopping = true
	n.lifeMu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	if n.engine != nil {
		n.engine.Close()
	}
	n.work.Wait()
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, err)
		}
	}
	n.bg.Wait()
	if n.trans != nil {
		_ = n.trans.Close()
	}
	if n.wal != nil {
		_ = n.wal.Close()
	}
	if n.host != nil {
		_ = n.host.Close()
	}
	if n.ks != nil {
		if err := n.ks.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// APIAddr is the address the HTTP API listens on.
func (n *Node) APIAddr() string { return n.apiLn.Addr().String() }

// InitDataDir creates a node's data directory, its master key file (never overwriting one)
// and its libp2p identity, and returns the peer id.
func InitDataDir(dataDir, masterKeyFile string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	mk, err := keystore.MasterKeyFromFile(masterKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		mk, err = keystore.WriteNewMasterKeyFile(masterKeyFile)
	}
	if err != nil {
		return "", fmt.Errorf("master key: %w", err)
	}
	ks, err := keystore.Open(dataDir+"/keystore", mk, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", fmt.Errorf("keystore: %w", err)
	}
	defer ks.Close()
	priv, err := Identity(ks)
	if err != nil {
		return "", err
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return "", err
	}
	return pid.String(), nil
}
