// Package ceremony is a node's ceremony runner: when this node's own FSM has scheduled a
// request with this node in its committee, it runs this node's party (protocol), stores
// the share of a new key or signs with the stored one, and reports the outcome through
// raft as a signed report. The FSM authenticated and authorised the request when its entry
// applied; the runner checks only what the FSM cannot: time (the schedule's stamp against
// this clock, the signature window), that the session never ran here (a synced marker),
// that this node's state is vouched for, and that the share yields the key's public key.
//
// It must never act on anything but its own FSM's verdict, never decide who signs (the
// scheduler and the FSM do), never log a share, a message or a signature.
package ceremony

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

// State is what the runner reads of this node's replicated state (*state.FSM).
type State interface {
	Request(id string) *state.Request
	Key(id string) *state.Key
	OpenRequests() []*state.Request
	AllKeys() []*state.Key
	// KeysVersion changes whenever a key record may have changed.
	KeysVersion() uint64
}

// Reporter signs and proposes this node's reports (raftnode.Node).
type Reporter interface {
	Report(ctx context.Context, kind string, payload any) (state.Result, error)
}

// Engine runs this node's party of a ceremony (*protocol.Engine).
type Engine interface {
	Keygen(ctx context.Context, sid protocol.SessionID, curve string, committee []string, threshold int, pre *protocol.PreParams) (*protocol.Share, error)
	Sign(ctx context.Context, sid protocol.SessionID, signers []string, threshold int, share *protocol.Share, msg, chainCode []byte, path []uint32) (*protocol.Signature, error)
	Reshare(ctx context.Context, sid protocol.SessionID, spec protocol.ReshareSpec, old *protocol.Share, pre *protocol.PreParams) (*protocol.Share, error)
}

// PreParams hands out ECDSA pre-parameters (*protocol.Pool).
type PreParams interface {
	Take(ctx context.Context) (pre *protocol.PreParams, inline bool, err error)
}

// Store keeps this node's shares and session markers (*keystore.Store).
type Store interface {
	GetShare(keyID string) ([]byte, error)
	PutShare(keyID string, share []byte) error
	DeleteShare(keyID string) error
	HasShare(keyID string) (bool, error)
	ListShares() ([]string, error)
	GetMeta(name string) ([]byte, error)
	PutMeta(name string, value []byte) error
	PruneMeta(prefix string, keep func(name string, value []byte) bool) (int, error)
}

// Config is what a runner needs.
type Config struct {
	// Config is the node's configuration: its id and the ceremony timeouts.
	Config    *config.Config
	Logger    *slog.Logger
	State     State
	Reporter  Reporter
	Engine    Engine
	PreParams PreParams
	Store     Store
	// Blocked says why this node's state is in doubt ("" when it is not): it then joins
	// no ceremony (vouch.Vouch).
	Blocked func() string
	// Now is the node's wall clock; nil means time.Now.
	Now func() time.Time
	// IsLeader labels the phase metrics; nil means follower.
	IsLeader   func() bool
	Registerer prometheus.Registerer
	// Phases is custos_phase_seconds{event,phase,role}; nil records nothing.
	Phases *prometheus.HistogramVec
}

// Runner runs this node's parties.
type Runner struct {
	cfg      *config.Config
	self     string
	log      *slog.Logger
	fsm      State
	rep      Reporter
	engine   Engine
	pre      PreParams
	ks       Store
	blocked  func() string
	nowFn    func() time.Time
	isLeader func() bool
	phases   *prometheus.HistogramVec

	ceremonyDur       *prometheus.HistogramVec
	refusedCeremonies prometheus.Counter
	shareMismatch     prometheus.Counter

	active  sync.Map // request id + attempt → struct{}: ceremonies running here
	activeN atomic.Int64

	// mu guards stopping; work counts the ceremonies and reports in flight, which Stop
	// waits for. spawn refuses new ones once Stop began, so that work.Add never races
	// work.Wait.
	mu       sync.Mutex
	stopping bool
	work     sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
	loop     sync.WaitGroup
}

// New prepares a runner; Start runs its reconcile loop.
func New(cfg Config) (*Runner, error) {
	if cfg.Config == nil || cfg.State == nil || cfg.Reporter == nil || cfg.Engine == nil || cfg.PreParams == nil || cfg.Store == nil || cfg.Registerer == nil {
		return nil, errors.New("ceremony: Config, State, Reporter, Engine, PreParams, Store and Registerer are required")
	}
	r := &Runner{cfg: cfg.Config, self: cfg.Config.NodeID, log: cfg.Logger, fsm: cfg.State, rep: cfg.Reporter, engine: cfg.Engine, pre: cfg.PreParams,
		ks: cfg.Store, blocked: cfg.Blocked, nowFn: cfg.Now, isLeader: cfg.IsLeader, phases: cfg.Phases,
		ceremonyDur:       prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "custos_ceremony_seconds", Help: "Ceremony durations on this node.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}, []string{"kind", "curve", "outcome"}),
		refusedCeremonies: prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_ceremonies_refused_total", Help: "Scheduled ceremonies this node refused to join (scheduled too late after submission, or its state not vouched for)."}),
		shareMismatch:     prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_share_mismatch_total", Help: "Signings refused because this node's share does not yield the key's public key in the replicated state."}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.blocked == nil {
		r.blocked = func() string { return "" }
	}
	if r.nowFn == nil {
		r.nowFn = time.Now
	}
	if r.isLeader == nil {
		r.isLeader = func() bool { return false }
	}
	cfg.Registerer.MustRegister(r.ceremonyDur, r.refusedCeremonies, r.shareMismatch)
	// Ceremonies run under the runner's own context, from New (a schedule may arrive
	// before Start, while raft replays its log) until Stop cancels it.
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Start runs the reconcile loop until Stop.
func (n *Runner) Start() {
	n.loop.Add(1)
	go func() {
		defer n.loop.Done()
		n.reconcileLoop(n.ctx)
	}()
}

// Stop cancels every ceremony running here and waits for them and the loop.
func (n *Runner) Stop() {
	n.mu.Lock()
	n.stopping = true
	n.mu.Unlock()
	n.cancel()
	n.loop.Wait()
	n.work.Wait()
}

// Active is how many ceremonies run on this node now.
func (n *Runner) Active() int64 { return n.activeN.Load() }

// spawn runs f in a goroutine that Stop waits for; after Stop began it runs nothing and
// returns false.
func (n *Runner) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
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

func (n *Runner) now() time.Time { return n.nowFn() }

// observe records one phase of a ceremony, if phase metrics are on.
func (n *Runner) observe(phase string, d time.Duration) {
	if n.phases == nil {
		return
	}
	role := "follower"
	if n.isLeader() {
		role = "leader"
	}
	n.phases.WithLabelValues("ceremony", phase, role).Observe(d.Seconds())
}

// Scheduled is told by the node when the FSM scheduled a request (an event): this node
// joins if it is in the committee.
func (n *Runner) Scheduled(requestID string) { n.maybeRun(requestID) }

// KeyFailed is told by the node when a key failed: its share here is erased.
func (n *Runner) KeyFailed(keyID string) { n.eraseShare(keyID) }

// KeyDeleted erases the share of a key whose deletion completed in this node's FSM: the
// data key and the share go in one synced batch (crypto-erase, keystore.DeleteShare).
func (n *Runner) KeyDeleted(keyID string) {
	if n.eraseShare(keyID) {
		n.log.Info("erased the share of a deleted key (crypto-erase)", "key", keyID)
	}
}

// maybeRun starts this node's party for a scheduled request if it is in the committee,
// the schedule is fresh, and the session has never run here.
func (n *Runner) maybeRun(requestID string) {
	r := n.fsm.Request(requestID)
	if r == nil || r.Status != state.StatusScheduled || !slices.Contains(r.Participants(), n.self) {
		return
	}
	skew := n.now().Sub(time.UnixMilli(r.ScheduledAt))
	if skew > state.MaxStampSkew || skew < -state.MaxStampSkew {
		n.log.Debug("not acting on a schedule stamped too far from this node's clock", "request", r.ID, "skew", skew.String())
		return
	}
	runKey := r.ID + "/" + strconv.Itoa(r.Attempt)
	if _, loaded := n.active.LoadOrStore(runKey, struct{}{}); loaded {
		return
	}
	if why := n.blocked(); why != "" {
		// This node's state is in doubt: it takes no part, and says so at once so that
		// the leader schedules another committee instead of waiting for a timeout.
		n.log.Warn("not joining a ceremony: this node's state is not vouched for", "request", r.ID, "why", why)
		n.refusedCeremonies.Inc()
		n.spawn(func() { n.reportFailure(r, "ceremony.refused", why, []string{n.self}) })
		return
	}
	seen := time.Now()
	n.log.Debug("joining a ceremony", "request", r.ID, "attempt", r.Attempt, "kind", r.Kind)
	if !n.spawn(func() {
		defer n.active.Delete(runKey)
		n.activeN.Add(1)
		defer n.activeN.Add(-1)
		n.run(r, seen)
	}) {
		n.active.Delete(runKey)
	}
}

// SessionParams are the inputs of a request attempt's ceremony session id.
func SessionParams(r *state.Request, k *state.Key) protocol.SessionParams {
	kind := "sign/"
	if r.Kind == state.KindKeygen {
		kind = "keygen/"
	}
	if k.Curve == state.CurveSecp256k1 {
		kind += "ecdsa"
	} else {
		kind += "eddsa"
	}
	var nonce [32]byte
	copy(nonce[:], r.Nonce)
	return protocol.SessionParams{Kind: kind, KeyID: k.ID, RequestID: r.ID, Payload: r.Message, Path: r.PathIdx, Committee: r.Committee, Nonce: nonce}
}

// SessionID is the current attempt's ceremony session id ("" before one is scheduled),
// for the request view and log correlation.
func SessionID(r *state.Request, k *state.Key) string {
	if r == nil || k == nil || len(r.Nonce) != 32 {
		return ""
	}
	return protocol.NewSessionID(SessionParams(r, k)).String()
}

// run executes one ceremony attempt and reports its outcome through raft. seen is when
// this node saw the schedule applied.
func (n *Runner) run(r *state.Request, seen time.Time) {
	k := n.fsm.Key(r.KeyID)
	if k == nil {
		return
	}
	sid := protocol.NewSessionID(SessionParams(r, k))
	if r.Kind == state.KindReshare {
		var ok bool
		if sid, ok = ReshareSessionID(r, k); !ok {
			return // the reshare ended before this node saw it
		}
	}
	log := n.log.With("request", r.ID, "session", sid.String()[:16], "kind", r.Kind, "curve", k.Curve)
	// A session id is never reused, also across restarts: its marker is persisted (a
	// synced write) before the party starts.
	marker := sessionMarkerPrefix + sid.String()
	if _, err := n.ks.GetMeta(marker); err == nil {
		log.Debug("session already ran on this node; not starting it again")
		return
	}
	// The request was authenticated and authorised by this node's own FSM when its entry
	// applied (the caller's signature, nonce, permission, key status, at the stamp);
	// what is left to check here is what the FSM cannot: time.
	if late := r.ScheduledAt - r.RunnableAt(); late > state.SignatureWindowS*1000 {
		log.Error("refusing to join a ceremony scheduled long after its submission", "late_ms", late)
		n.refusedCeremonies.Inc()
		n.reportFailure(r, "ceremony.refused", "scheduled more than the signature window after submission", nil)
		return
	}
	if err := n.ks.PutMeta(marker, []byte(strconv.FormatInt(r.ScheduledAt, 10))); err != nil {
		n.reportFailure(r, "ceremony.failed", "cannot persist session marker: "+err.Error(), nil)
		return
	}
	start := time.Now()
	var err error
	var ph phases
	switch r.Kind {
	case state.KindKeygen:
		err = n.runKeygen(r, k, sid)
	case state.KindSign:
		ph, err = n.runSign(r, k, sid)
	case state.KindReshare:
		err = n.runReshare(r, k, sid)
	}
	n.ceremonyDur.WithLabelValues(r.Kind, k.Curve, outcome(err)).Observe(time.Since(start).Seconds())
	if err != nil {
		var ce *protocol.CeremonyError
		var culprits []string
		if errors.As(err, &ce) {
			culprits = ce.Culprits
			if len(culprits) == 0 {
				// The retry's committee must avoid a member that gave up on us
				// (its own report, if it is honest, names the real culprit).
				culprits = ce.Aborted
			}
		}
		log.Warn("ceremony failed", "err", err, "culprits", culprits)
		n.reportFailure(r, "ceremony.failed", err.Error(), culprits)
		return
	}
	log.Info("ceremony done", "ms", time.Since(start).Milliseconds())
	if r.Kind == state.KindSign {
		// The committee member's phases: from the schedule's stamp to this node seeing
		// it applied (stamps have millisecond resolution), the marker, loading the
		// share, the MPC itself, and the result's commit (with its local apply).
		n.observe("sched_lag", time.Duration(seen.UnixMilli()-r.ScheduledAt)*time.Millisecond)
		n.observe("prep", start.Sub(seen))
		n.observe("load", ph.load)
		n.observe("mpc", ph.mpc)
		n.observe("report", ph.report)
	}
}

// phases are the durations of a sign attempt's parts on this node.
type phases struct{ load, mpc, report time.Duration }

func outcome(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}

func (n *Runner) ceremonyCtx(kind string) (context.Context, context.CancelFunc) {
	d := n.cfg.Ceremony.SignTimeout.Duration
	if kind == state.KindKeygen {
		d = n.cfg.Ceremony.KeygenTimeout.Duration
	}
	return context.WithTimeout(n.ctx, d)
}

func (n *Runner) runKeygen(r *state.Request, k *state.Key, sid protocol.SessionID) error {
	ctx, cancel := n.ceremonyCtx(r.Kind)
	defer cancel()
	var pre *protocol.PreParams
	inline := false
	if k.Curve == state.CurveSecp256k1 {
		var err error
		if pre, inline, err = n.pre.Take(ctx); err != nil {
			return fmt.Errorf("pre-parameters: %w", err)
		}
	}
	share, err := n.engine.Keygen(ctx, sid, k.Curve, r.Committee, k.Threshold, pre)
	if err != nil {
		return err
	}
	b, err := share.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode share: %w", err)
	}
	if err := n.ks.PutShare(k.ID, b); err != nil {
		return fmt.Errorf("store share: %w", err)
	}
	rctx, rcancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer rcancel()
	res, err := n.rep.Report(rctx, state.TypeShareStored, &state.ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n.self, PublicKey: share.PublicKey(), InlinePreParams: inline})
	if err != nil {
		return fmt.Errorf("report share stored: %w", err)
	}
	if !res.OK() {
		n.log.Warn("share report refused", "request", r.ID, "code", res.Code, "detail", res.Detail)
	}
	return nil
}

func (n *Runner) runSign(r *state.Request, k *state.Key, sid protocol.SessionID) (phases, error) {
	var ph phases
	ctx, cancel := n.ceremonyCtx(r.Kind)
	defer cancel()
	t0 := time.Now()
	share, err := n.currentShare(k)
	if err != nil {
		return ph, err
	}
	t1 := time.Now()
	ph.load = t1.Sub(t0)
	result := &state.CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: n.self}
	if r.PSBT != nil {
		sigs, err := n.signInputs(ctx, r, k, share)
		ph.mpc = time.Since(t1)
		if err != nil {
			return ph, err
		}
		result.Signatures = sigs
	} else {
		s, err := n.engine.Sign(ctx, sid, r.Committee, k.Threshold, share, r.Message, k.ChainCode, r.PathIdx)
		ph.mpc = time.Since(t1)
		if err != nil {
			return ph, err
		}
		result.Signature = state.Signature{R: s.R, S: s.S, RecoveryID: int(s.RecoveryID), DER: s.DER, Sig: s.Sig}
	}
	t2 := time.Now()
	rctx, rcancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer rcancel()
	res, err := n.rep.Report(rctx, state.TypeCeremonyResult, result)
	ph.report = time.Since(t2)
	if err != nil {
		return ph, fmt.Errorf("report signature: %w", err)
	}
	if !res.OK() {
		return ph, fmt.Errorf("signature refused by the cluster: %s", res.Detail)
	}
	return ph, nil
}

// errShareMismatch: this node's share does not yield the key's public key.
var errShareMismatch = errors.New("this node's share does not yield the key's public key in the replicated state")

// checkSharePublicKey refuses to use a share whose public key differs from the key's
// public key in this node's own state: a substituted key or a corrupted share must never
// sign. It is loud: an error log and a metric, for the operator to investigate.
func (n *Runner) checkSharePublicKey(k *state.Key, sharePub []byte) error {
	if bytes.Equal(sharePub, k.PublicKey) {
		return nil
	}
	n.shareMismatch.Inc()
	n.log.Error("REFUSING TO SIGN: the stored share's public key differs from the key's public key in the replicated state; investigate this node and the key's history",
		"key", k.ID)
	return fmt.Errorf("key %s: %w", k.ID, errShareMismatch)
}

func (n *Runner) reportFailure(r *state.Request, code, detail string, culprits []string) {
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	if _, err := n.rep.Report(ctx, state.TypeCeremonyFailed, &state.CeremonyFailed{
		RequestID: r.ID, Nonce: r.Nonce, Node: n.self, Code: code, Detail: detail, Culprits: culprits,
	}); err != nil {
		n.log.Warn("could not report a failed ceremony", "request", r.ID, "err", err)
	}
}

func (n *Runner) eraseShare(keyID string) bool {
	if keyID == "" {
		return true
	}
	if why := n.blocked(); why != "" {
		n.log.Warn("not erasing a key's share while this node's state is in doubt; the reconciler does it once the state is trusted", "key", keyID, "why", why)
		return false
	}
	if err := n.ks.DeleteShare(keyID); err != nil {
		n.log.Error("could not erase a key's share; the reconciler tries again", "key", keyID, "err", err)
		return false
	}
	return true
}

// Session markers (keystore meta "session-<id>", valued with the schedule's stamp) keep a
// session from running twice on this node, across restarts too. A schedule is acted on
// only within state.MaxStampSkew of its stamp, so a marker older than
// sessionMarkerRetention guards nothing any more: markers are pruned every
// sessionMarkerPrune.
const (
	sessionMarkerPrefix    = "session-"
	sessionMarkerRetention = 10 * time.Minute
	sessionMarkerPrune     = 5 * time.Minute
)

// pruneSessionMarkers deletes the session markers that can no longer matter.
func (n *Runner) pruneSessionMarkers() {
	cutoff := n.now().Add(-sessionMarkerRetention).UnixMilli()
	deleted, err := n.ks.PruneMeta(sessionMarkerPrefix, func(_ string, v []byte) bool {
		stamp, err := strconv.ParseInt(string(v), 10, 64)
		return err != nil || stamp >= cutoff // keep what it cannot read
	})
	if err != nil {
		n.log.Warn("pruning session markers", "err", err)
	}
	if deleted > 0 {
		n.log.Debug("pruned session markers", "deleted", deleted)
	}
}

// reconcileLoop catches up on what event hints may have missed (restarts, snapshots, a
// full queue): shares of failed keys are erased, fresh schedules are joined, old session
// markers pruned.
func (n *Runner) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	// A failed or deleted key's share is checked once per process: the key_failed and
	// key_deleted events erase it as it happens, so this only catches what a restart or a
	// snapshot skipped (a node that was down when a deletion completed erases here).
	erased := map[string]bool{}
	// Each key's shares are settled (reshare.go) once per generation, and shares kept
	// aside by reshares that did not commit are dropped once per process (then as
	// failures happen).
	settled := map[string]uint32{}
	staleChecked := false
	var pruned time.Time
	// The keys are gone over again only when one changed (state.FSM.KeysVersion) or
	// something was left to do at the last pass (an erase or a settling that failed, a
	// reshare running): while the cluster only signs, this costs nothing however many
	// keys it holds.
	var seen uint64
	var keysDone bool
	for {
		if time.Since(pruned) > sessionMarkerPrune {
			pruned = time.Now()
			n.pruneSessionMarkers()
		}
		// Erasing or replacing a share is irreversible, so it waits while this node's
		// state is in doubt (a snapshot not yet vouched for, which may call every key
		// deleted; a diverged state; a backup's restore guard): a full pass follows once
		// it is trusted.
		if n.blocked() != "" {
			keysDone, staleChecked = false, false
		} else {
			if v := n.fsm.KeysVersion(); !keysDone || v != seen {
				keysDone, seen = n.reconcileKeys(erased, settled), v
			}
			if !staleChecked {
				if names, err := n.ks.ListShares(); err == nil {
					staleChecked = n.dropStaleShares(names)
				}
			}
		}
		for _, r := range n.fsm.OpenRequests() {
			n.maybeRun(r.ID)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcileKeys erases the shares of failed and deleted keys not yet erased and settles
// every key's shares (reshare.go), recording what it did in erased and settled; done says
// nothing was left for a later pass.
func (n *Runner) reconcileKeys(erased map[string]bool, settled map[string]uint32) (done bool) {
	done = true
	for _, k := range n.fsm.AllKeys() {
		if (k.Status == state.KeyFailed || k.Status == state.KeyDeleted) && !erased[k.ID] {
			ok, err := n.ks.HasShare(k.ID)
			if err == nil && (!ok || n.eraseShare(k.ID)) {
				erased[k.ID] = true
				if ok && k.Status == state.KeyDeleted {
					n.log.Info("erased the share of a deleted key (crypto-erase)", "key", k.ID)
				}
			} else {
				done = false
			}
		}
		if g, ok := settled[k.ID]; ok && g == k.Generation && k.Resharing == nil {
			continue
		}
		if n.settleShares(k) && k.Resharing == nil {
			settled[k.ID] = k.Generation
		} else {
			done = false
		}
	}
	return done
}

// InputSessionParams are the session of a PSBT signing's i-th input: the request's
// session, bound to that input's index, sighash and derivation path.
func InputSessionParams(r *state.Request, k *state.Key, i int) (protocol.SessionParams, error) {
	p := SessionParams(r, k)
	msg, path, err := r.PSBT.Message(i)
	if err != nil {
		return p, err
	}
	p.Kind += "/psbt-input/" + strconv.Itoa(i)
	p.Payload, p.Path = msg, path
	return p, nil
}

// signInputs runs a PSBT signing's ceremonies, one per input, concurrently, and returns
// their signatures in the plan's order. Every committee member runs the same sessions
// (the plan is in the replicated state), so they meet whatever order they start in.
func (n *Runner) signInputs(ctx context.Context, r *state.Request, k *state.Key, share *protocol.Share) ([]state.Signature, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make([]state.Signature, len(r.PSBT.Plan.Inputs))
	errs := make([]error, len(sigs))
	var wg sync.WaitGroup
	for i := range sigs {
		p, err := InputSessionParams(r, k, i)
		if err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := n.engine.Sign(ctx, protocol.NewSessionID(p), r.Committee, k.Threshold, share, p.Payload, k.ChainCode, p.Path)
			if err != nil {
				errs[i] = fmt.Errorf("input %d: %w", r.PSBT.Plan.Inputs[i].Index, err)
				cancel() // one failed input fails the attempt: stop the others
				return
			}
			sigs[i] = state.Signature{R: s.R, S: s.S, RecoveryID: int(s.RecoveryID), DER: s.DER}
		}()
	}
	wg.Wait()
	// The first real failure (not one caused by cancelling the others).
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sigs, nil
}
