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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/internal/ceremony"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/httpapi"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/raftnode"
	"github.com/custos/custos/internal/scheduler"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/vouch"
	"github.com/custos/custos/internal/webhook"
	"github.com/custos/custos/keystore"
	"github.com/custos/custos/protocol"
)

// Node is one running custos node: it wires the components below and owns their
// lifetimes. Each component owns its goroutines (Start under a WaitGroup, Stop cancels and
// waits); the node starts them in dependency order and stops them in reverse.
type Node struct {
	cfg *config.Config
	log *slog.Logger
	ks  *keystore.Store
	// authn verifies every credential, in the API for early refusal and in the FSM at
	// the entry's stamp (the same code).
	authn *authn.Verifier
	// adminPub is the admin's Ed25519 public key of this node's configuration (key-pair
	// mode): written into the cluster's first entry, then only compared with the state.
	adminPub ed25519.PublicKey
	// identity is the node's libp2p identity key: it signs the node's reports and the
	// requests it proposes.
	identity crypto.PrivKey
	met      *metrics

	host   *p2p.Host
	engine *protocol.Engine
	fsm    *state.FSM
	vouch  *vouch.Vouch
	sched  *scheduler.Scheduler
	// hooks delivers events to webhooks while this node leads (nil without a webhook key).
	hooks  *webhook.Deliverer
	raft   *raftnode.Node
	pool   *protocol.Pool
	runner *ceremony.Runner
	api    *httpapi.Server
	http   *http.Server
	apiLn  net.Listener

	// clockOffset is insecure_testing.clock_offset (zero in production); every wall-clock
	// reading that decides something goes through now.
	clockOffset time.Duration

	// events carries the FSM's events from Apply (which must not block) to dispatch.
	events chan state.Event

	// fatal carries the first error after which the node must stop (its keystore
	// failed); faultFS is the test-only write-fault switch (nil unless configured).
	fatal   chan error
	faultFS *errorfs.Toggle

	// control serves the control socket (backup, master-key rotation) while the node
	// runs; restoreUntil is when the restore guard ends (zero: not restored).
	control      *controlServer
	restoreUntil time.Time

	// membersMu guards what syncMembers last installed in the p2p host: the replicated
	// member list and the raft servers it was computed from (membersSynced: once).
	membersMu     sync.Mutex
	membersSynced bool
	syncedFSM     []state.Member
	syncedRaft    []raftnode.Server

	// ctx ends when Stop begins; bg counts the node's own loops (dispatch, metrics,
	// health, the API server, test hooks), which Stop waits for.
	ctx      context.Context
	cancel   context.CancelFunc
	lifeMu   sync.Mutex // guards stopping
	stopping bool
	bg       sync.WaitGroup
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
	n := &Node{cfg: cfg, log: log.With("node", cfg.NodeID), events: make(chan state.Event, 4096)}
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
	n.loadRestoreGuard()
	an, adminPub, err := newAuthn(cfg)
	if err != nil {
		ks.Close()
		return nil, err
	}
	n.authn, n.adminPub = an, adminPub
	n.clockOffset = cfg.InsecureTesting.ClockOffset.Duration
	n.met = newMetrics()
	return n, nil
}

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

// stateDir is the replicated state's own database (never the keystore's).
func stateDir(cfg *config.Config) string { return cfg.DataDir + "/state" }

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

// Start runs the node: p2p host, ceremony engine, FSM, vouching, scheduler, raft,
// pre-parameter pool, runner and HTTP API, in that order. ctx bounds the start only.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
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
		Transport: &tssTransport{host: host},
		Logger:    n.log,
		OnDrop:    func(reason string) { n.met.dropped.WithLabelValues(reason).Inc() },
	})
	host.SetFrameHandler(n.onFrame)

	if n.fsm, err = state.Open(state.Config{Dir: stateDir(n.cfg), Verifier: ceremony.SignatureVerifier{}, Authn: n.authn, OnEvent: n.onEvent, Logger: n.log}); err != nil {
		return err
	}
	n.met.reg.MustRegister(newDBMemoryCollector(n.fsm, n.ks))
	vc := vouch.Config{NodeID: n.cfg.NodeID, Logger: n.log, State: n.fsm, Store: n.ks, Registerer: n.met.reg, Threshold: n.cfg.Cluster.Threshold}
	for _, m := range n.cfg.Cluster.Members {
		vc.Members = append(vc.Members, state.Member{ID: m.ID, PeerID: m.PeerID})
	}
	n.vouch = vouch.New(vc)
	n.fsm.OnSnapshot(n.vouch.OnSnapshot)
	n.fsm.OnRestore(n.vouch.OnRestore)
	n.fsm.OnRestoreStart(n.vouch.OnRestoreStart)
	// The gater and the dial addresses follow the replicated member list from here on.
	n.syncMembers()

	broadcast, err := bitcoinBroadcaster(n.cfg)
	if err != nil {
		return err
	}
	kr, err := webhookKeyring(n.cfg)
	if err != nil {
		return err
	}
	if n.sched, err = scheduler.New(scheduler.Config{Config: n.cfg, Logger: n.log, State: n.fsm, IsLeader: n.isLeader, Live: n.live, Now: n.now, AdminPublicKey: n.adminPub, Broadcast: broadcast,
		SealWebhookSecret: sealWebhookSecret(kr), Raft: raftMembership{n}}); err != nil {
		return err
	}
	if n.raft, err = raftnode.New(raftnode.Config{
		Config: n.cfg, Logger: n.log, Identity: priv, Host: host, FSM: n.fsm, RaftFSM: n.raftFSM(), Scheduler: n.sched,
		BeforeStamp: n.beforeStamp(), Now: n.now, Registerer: n.met.reg, Phases: n.met.phases,
		OnRefused: func() { n.met.dropped.WithLabelValues("proposal_refused").Inc() },
	}); err != nil {
		return err
	}
	// The filler pauses while ceremonies run (the runner is built next).
	busy := func() bool { return n.runner != nil && n.runner.Active() > 0 }
	if n.pool, err = newPool(n.cfg, n.ks, n.log, n.met, busy); err != nil {
		return err
	}
	if n.runner, err = ceremony.New(ceremony.Config{
		Config: n.cfg, Logger: n.log, State: n.fsm, Reporter: n.runnerReporter(), Engine: n.engine, PreParams: n.pool, Store: n.ks,
		Blocked: n.ceremonyBlocked, Now: n.now, IsLeader: n.isLeader, Registerer: n.met.reg, Phases: n.met.phases,
	}); err != nil {
		return err
	}
	if n.api, err = httpapi.New(httpapi.Config{
		Config: n.cfg, Logger: n.log, State: n.fsm, Authn: n.authn, Proposer: submitter{n.raft},
		Registry: n.met.reg, Phases: n.met.phases, Now: n.now, IsLeader: n.isLeader, Leader: n.raft.Leader, Live: n.live,
		NotReady: n.readiness, Distrusted: n.vouch.Blocked, SessionID: ceremony.SessionID, DebugState: n.debugState, AfterCommit: n.afterCommit(),
		OpenWebhookSecret: openWebhookSecret(kr),
	}); err != nil {
		return err
	}

	// The dispatcher first: raft replays its log as it opens, and the events of the
	// replay go to the runner and the API's waiters.
	n.goBG(n.dispatchEvents)
	if err := n.raft.Start(n.ctx); err != nil {
		return err
	}
	n.vouch.Start(n.ctx, n.raft)
	n.sched.Start(n.ctx, n.raft)
	if kr != nil {
		n.hooks = n.newDeliverer(kr)
		n.hooks.Start(n.ctx)
	}
	n.pool.Start(n.ctx)
	n.runner.Start()
	n.goBG(n.metricsLoop)
	n.goBG(n.watchHealth)
	n.goBG(n.membersLoop)

	ln, err := httpapi.Listen(n.cfg)
	if err != nil {
		return err
	}
	n.apiLn = ln
	n.http = &http.Server{Handler: n.api.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	n.goBG(func(ctx context.Context) {
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server stopped", "err", err)
		}
	})
	if err := n.startControl(); err != nil {
		return err
	}
	scheme := "http"
	if n.cfg.APITLS() {
		scheme = "https"
	}
	n.log.Info("node started", "api", ln.Addr().String(), "api_scheme", scheme, "api_mtls", n.cfg.API.ClientCAFile != "", "peer_id", pid.String(), "p2p", host.ListenAddrs())
	return nil
}

// submitter is the API's proposer: raft's, with raft's errors told apart as the API
// needs (an entry that may still commit, or one that was not accepted).
type submitter struct{ r *raftnode.Node }

func (s submitter) Submit(ctx context.Context, b *state.SubmitBody) (state.Result, error) {
	sub, err := s.r.SignSubmit(b)
	if err != nil {
		return state.Result{}, fmt.Errorf("%w: %v", httpapi.ErrNotSigned, err)
	}
	res, err := s.r.Propose(ctx, state.TypeSubmit, sub)
	if errors.Is(err, raftnode.ErrNoQuorum) {
		err = httpapi.NoQuorum(err)
	}
	return res, err
}

// onEvent is called by the FSM inside Apply: it only queues.
func (n *Node) onEvent(e state.Event) {
	select {
	case n.events <- e:
	default:
		// The queue is full: the runner's reconcile loop finds scheduled work from the
		// state itself, so a dropped hint delays a ceremony but loses nothing.
		n.met.dropped.WithLabelValues("event_queue_full").Inc()
	}
}

// dispatchEvents hands each FSM event to the component it concerns.
func (n *Node) dispatchEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-n.events:
			switch e.Kind {
			case state.EventScheduled:
				n.runner.Scheduled(e.RequestID)
			case state.EventSettled, state.EventBroadcast:
				n.api.Settled(e.RequestID)
			case state.EventKeyFailed:
				n.runner.KeyFailed(e.KeyID)
			case state.EventKeyDeleted:
				n.runner.KeyDeleted(e.KeyID)
			case state.EventReshared:
				n.runner.Reshared(e.KeyID)
				n.api.Settled(e.RequestID)
			case state.EventReshareFailed:
				n.runner.ReshareFailed(e.KeyID)
			case state.EventMembers:
				n.syncMembers()
				n.sched.Kick()
			case state.EventRetry, state.EventApproved:
				n.sched.Kick()
			case state.EventCheckpoint, state.EventCheckpointVote:
				if !n.vouch.Notify(e) {
					n.met.dropped.WithLabelValues("checkpoint_queue_full").Inc()
				}
			}
		}
	}
}

// isLeader reports whether this node leads raft now.
func (n *Node) isLeader() bool { return n.raft.IsLeader() }

// live reports whether a member is reachable from this node now (itself always).
func (n *Node) live(nodeID string) bool {
	if nodeID == n.cfg.NodeID {
		return true
	}
	pid, ok := n.host.PeerIDOf(nodeID)
	return ok && n.host.Connected(pid)
}

// membersInterval is how often membersLoop looks for a changed member list.
const membersInterval = 2 * time.Second

// membersLoop calls syncMembers every membersInterval (it does nothing when nothing
// changed).
func (n *Node) membersLoop(ctx context.Context) {
	every(ctx, membersInterval, func() bool {
		n.syncMembers()
		return true
	})
}

// syncMembers makes the p2p host admit and dial the cluster's members as the replicated
// state lists them (effectiveMembers): the connection gater refuses a removed member, a
// new one is admitted and dialled, and connections to members that stay are kept. It
// compares its inputs with those it installed last and does nothing when they did not
// change, so it is cheap to call often (the ticker, the FSM's member events).
func (n *Node) syncMembers() {
	_, _, fsmMembers := n.fsm.Cluster()
	var servers []raftnode.Server
	if n.raft != nil {
		servers, _ = n.raft.Servers() // nil before raft opened: only bootstrap members count
	}
	n.membersMu.Lock()
	defer n.membersMu.Unlock()
	if n.membersSynced && slices.EqualFunc(fsmMembers, n.syncedFSM, sameStateMember) && slices.Equal(servers, n.syncedRaft) {
		return
	}
	list, skipped := effectiveMembers(n.cfg.Cluster.Members, fsmMembers, servers)
	for _, err := range skipped {
		n.log.Error("cluster member left out of the p2p member set", "err", err)
	}
	if !slices.EqualFunc(list, n.host.Members(), sameP2PMember) {
		if err := n.host.SetMembers(list); err != nil {
			n.log.Error("p2p member set not updated", "err", err)
			return
		}
		ids := make([]string, len(list))
		for i, m := range list {
			ids[i] = m.NodeID
		}
		n.log.Info("p2p member set", "members", strings.Join(ids, ","), "from_state", len(fsmMembers) > 0)
	}
	for i := range fsmMembers { // kept for the comparison: not shared with the FSM
		fsmMembers[i].P2PAddrs = slices.Clone(fsmMembers[i].P2PAddrs)
	}
	n.membersSynced, n.syncedFSM, n.syncedRaft = true, fsmMembers, servers
}

// sameP2PMember compares members as p2p.Host.Members returns them (list sorted by id).
func sameP2PMember(a, b p2p.Member) bool {
	return a.NodeID == b.NodeID && a.PeerID == b.PeerID && slices.EqualFunc(a.Addrs, b.Addrs, func(x, y ma.Multiaddr) bool { return x.Equal(y) })
}

func sameStateMember(a, b state.Member) bool {
	return a.ID == b.ID && a.PeerID == b.PeerID && a.API == b.API && a.Status == b.Status && slices.Equal(a.P2PAddrs, b.P2PAddrs)
}

// effectiveMembers is the p2p member set: whom this node admits and dials.
//
//   - Until the replicated state holds a member list (a new cluster before its first
//     entry, a joining node before it caught up), the configuration's bootstrap members.
//   - Then the state's members, each under the peer id the state gives it. Addresses: the
//     configuration's when it lists the same node with the same peer id (what this host
//     dials may differ from what the others dial: a NAT mapping, a test proxy per link),
//     else the state's. A member the state no longer lists is dropped.
//   - Plus a configured member the state does not list while the raft configuration does
//     (this node's state is behind a change that raft already made); a configured member
//     neither lists is dropped, so that a removed node listed in an old configuration
//     file is not admitted again after a restart.
//
// Members that cannot be used (a bad peer id or address, a peer id already taken, beyond
// p2p.MaxMembers) are left out and returned as errors.
func effectiveMembers(cfg []config.Member, fsm []state.Member, servers []raftnode.Server) ([]p2p.Member, []error) {
	var (
		out   []p2p.Member
		errs  []error
		ids   = map[string]bool{}
		peers = map[peer.ID]bool{}
	)
	add := func(id, peerID string, addrs []string) {
		if ids[id] {
			return
		}
		m, err := p2p.ParseMember(id, peerID, addrs)
		switch {
		case err != nil:
			errs = append(errs, err)
			return
		case peers[m.PeerID]:
			errs = append(errs, fmt.Errorf("member %s: peer id %s is already member %s's", id, m.PeerID, nodeOfPeer(out, m.PeerID)))
			return
		case len(out) >= p2p.MaxMembers:
			errs = append(errs, fmt.Errorf("member %s: more than %d members", id, p2p.MaxMembers))
			return
		}
		ids[id], peers[m.PeerID] = true, true
		out = append(out, m)
	}
	if len(fsm) == 0 {
		for _, m := range cfg {
			add(m.ID, m.PeerID, m.P2PAddrs)
		}
		return sortMembers(out), errs
	}
	byID := make(map[string]config.Member, len(cfg))
	for _, m := range cfg {
		byID[m.ID] = m
	}
	for _, m := range fsm {
		addrs := m.P2PAddrs
		if c, ok := byID[m.ID]; ok && c.PeerID == m.PeerID && len(c.P2PAddrs) > 0 {
			addrs = c.P2PAddrs
		}
		add(m.ID, m.PeerID, addrs)
	}
	for _, c := range cfg {
		inRaft := slices.ContainsFunc(servers, func(s raftnode.Server) bool { return s.ID == c.ID && s.PeerID == c.PeerID })
		if inRaft && !ids[c.ID] {
			add(c.ID, c.PeerID, c.P2PAddrs)
		}
	}
	return sortMembers(out), errs
}

// sortMembers sorts by node id, as p2p.Host.Members does.
func sortMembers(ms []p2p.Member) []p2p.Member {
	slices.SortFunc(ms, func(a, b p2p.Member) int { return strings.Compare(a.NodeID, b.NodeID) })
	return ms
}

func nodeOfPeer(ms []p2p.Member, p peer.ID) string {
	for _, m := range ms {
		if m.PeerID == p {
			return m.NodeID
		}
	}
	return ""
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

// goBG runs f under the node's context in a goroutine Stop waits for; after Stop began it
// runs nothing.
func (n *Node) goBG(f func(ctx context.Context)) {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.stopping {
		return
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		f(n.ctx)
	}()
}

// Stop shuts the node down in the reverse order of Start: the control socket and the API
// first, then ceremonies, the leader's loop, vouching, the pool, raft, the node's loops,
// the state database, p2p and the keystore.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	n.stopControl()
	if n.api != nil {
		n.api.EndStreams()
	}
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
	if n.runner != nil {
		n.runner.Stop()
	}
	if n.hooks != nil {
		n.hooks.Stop()
	}
	if n.sched != nil {
		n.sched.Stop()
	}
	if n.vouch != nil {
		n.vouch.Stop()
	}
	if n.pool != nil {
		n.pool.Stop()
	}
	if n.raft != nil {
		if err := n.raft.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	n.bg.Wait()
	if n.fsm != nil {
		if err := n.fsm.Close(); err != nil {
			errs = append(errs, err)
		}
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

// bitcoinBroadcaster is the leader's link to the configured Bitcoin node (nil when
// bitcoin.rpc_url is not set). The password file is read once, here.
func bitcoinBroadcaster(cfg *config.Config) (func(ctx context.Context, txHex string) (string, error), error) {
	b := cfg.Bitcoin
	if b.RPCURL == "" {
		return nil, nil
	}
	var password string
	if b.RPCPasswordFile != "" {
		raw, err := os.ReadFile(b.RPCPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("bitcoin.rpc_password_file: %w", err)
		}
		password = strings.TrimSpace(string(raw))
	}
	timeout := b.Timeout.Duration
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	rpc := &btc.RPC{URL: b.RPCURL, User: b.RPCUser, Password: password, Client: &http.Client{Timeout: timeout}}
	return rpc.SendRawTransaction, nil
}
