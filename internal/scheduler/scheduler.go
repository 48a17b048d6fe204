// Package scheduler is the leader's side of a request's life: at stamping time it fills in
// what only the leader chooses (ids, the committee, a fresh session nonce, the chain code
// of a new key), and its loop, on the leader only, writes the cluster's first entry,
// upgrades an old log to signed entries, reschedules failed or timed-out sign attempts
// with another committee, and fails what cannot finish.
//
// It must never decide whether a request is allowed (the FSM does, from the signed form,
// and bounds every choice made here), never touch a share, and never act on a follower.
package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"time"

	"crypto/ed25519"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/btc"
	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/ids"
	"github.com/custos/custos/internal/state"
)

// State is what the scheduler reads of this node's replicated state (*state.FSM).
type State interface {
	Cluster() (name string, threshold int, members []state.Member)
	Strict() bool
	EventsOn() bool
	OpenRequests() []*state.Request
	Key(id string) *state.Key
	Approval(id string) *state.Approval
	PendingBroadcasts(limit int) []*state.Request
	ActiveMembers() []string
	MemberChange() string
	Request(id string) *state.Request
	AllKeys() []*state.Key
}

// Proposer commits the leader's own entries and signed reports (raftnode.Node).
type Proposer interface {
	Propose(ctx context.Context, typ string, payload any) (state.Result, error)
	Report(ctx context.Context, kind string, payload any) (state.Result, error)
}

// Config is what a scheduler needs.
type Config struct {
	// Config is the node's configuration: its id, the cluster's definition for the first
	// entry, the ceremony timeouts.
	Config *config.Config
	Logger *slog.Logger
	State  State
	// IsLeader reports whether this node leads raft now; the loop acts only then.
	IsLeader func() bool
	// Live reports whether a member is reachable from this node now.
	Live func(nodeID string) bool
	// Now is the node's wall clock; nil means time.Now.
	Now func() time.Time
	// AdminPublicKey is this node's configured admin public key (key-pair mode), written
	// into the cluster's first entry and the upgrade entry.
	AdminPublicKey ed25519.PublicKey
	// Broadcast sends a signed transaction to the configured Bitcoin node and returns its
	// txid; nil when none is configured (a broadcast is then reported failed).
	Broadcast func(ctx context.Context, txHex string) (string, error)
	// SealWebhookSecret makes a new webhook's secret and seals it under the cluster's
	// webhook key, bound to the webhook's id; nil when this node has no webhook key.
	SealWebhookSecret func(webhookID string) ([]byte, error)
	// Raft changes raft's membership (members.go); nil: membership changes are not
	// driven by this node.
	Raft Raft
}

// Scheduler is the leader's scheduling: Schedule at stamping time, and the loop.
type Scheduler struct {
	cfg      *config.Config
	log      *slog.Logger
	fsm      State
	isLeader func() bool
	live     func(string) bool
	nowFn    func() time.Time
	adminPub ed25519.PublicKey
	// broadcastTx sends a signed transaction (nil: no Bitcoin node configured).
	broadcastTx func(ctx context.Context, txHex string) (string, error)
	// sealSecret makes and seals a new webhook's secret (nil: no webhook key).
	sealSecret func(webhookID string) ([]byte, error)
	// shuffle orders the candidates of a committee (random; fixed in tests).
	shuffle func([]string)
	kick    chan struct{}
	// raft is the membership handle (nil: none); membersBusy keeps one driver step at a
	// time; memberDrive is that step's bookkeeping (only it touches it).
	raft        Raft
	membersBusy atomic.Bool
	memberDrive memberDriver

	// mu guards stopping; work counts the loop's reports in flight, which Stop waits
	// for. go refuses new ones once Stop began, so that work.Add never races work.Wait.
	mu       sync.Mutex
	stopping bool
	work     sync.WaitGroup
	cancel   context.CancelFunc
	loop     sync.WaitGroup
}

// New prepares a scheduler; Start runs its loop.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Config == nil || cfg.State == nil || cfg.IsLeader == nil || cfg.Live == nil {
		return nil, errors.New("scheduler: Config, State, IsLeader and Live are required")
	}
	s := &Scheduler{cfg: cfg.Config, log: cfg.Logger, fsm: cfg.State, isLeader: cfg.IsLeader, live: cfg.Live, nowFn: cfg.Now,
		adminPub: cfg.AdminPublicKey, broadcastTx: cfg.Broadcast, sealSecret: cfg.SealWebhookSecret, shuffle: shuffle, kick: make(chan struct{}, 1),
		raft: cfg.Raft}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.nowFn == nil {
		s.nowFn = time.Now
	}
	return s, nil
}

// Start runs the leader loop, proposing through p, until Stop.
func (s *Scheduler) Start(ctx context.Context, p Proposer) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.loop.Add(1)
	go func() {
		defer s.loop.Done()
		s.run(ctx, p)
	}()
}

// Stop ends the loop and waits for it and for the reports it started.
func (s *Scheduler) Stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	s.loop.Wait()
	s.work.Wait()
}

// spawn runs f in a goroutine Stop waits for; after Stop began it runs nothing.
func (s *Scheduler) spawn(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		f()
	}()
}

// newID returns prefix + a fresh id (package ids: time-ordered, 80 random bits).
func newID(prefix string) string { return prefix + ids.New() }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// Schedule fills in what only the leader may choose for a keygen, sign or access-key
// request: ids, the committee and the fresh session nonce (tss-lib v2.0.2's own SSID nonce
// is fixed at 0). What the request asks for is read from the signed form, as the FSM
// will read it; the FSM bounds every choice made here.
func (n *Scheduler) Schedule(s *state.Submit, origin string) {
	var b state.SubmitBody
	if json.Unmarshal(s.Body, &b) != nil || b.Signed == nil {
		return // the FSM refuses it
	}
	c := state.ParseRequest(b.Signed)
	switch c.Op {
	case state.OpAccessCreate:
		s.Schedule = &state.Schedule{AccessKeyID: newID("ak_")}
	case state.OpWebhookCreate:
		if n.sealSecret == nil {
			s.Unschedulable = "the leader has no webhook key: set webhooks.secret_key_file (the same 64 hex characters) on every node"
			return
		}
		id := newID("wh_")
		ct, err := n.sealSecret(id)
		if err != nil {
			s.Unschedulable = "the leader could not seal the webhook's secret: " + err.Error()
			return
		}
		s.Schedule = &state.Schedule{WebhookID: id, WebhookSecret: ct}
	case state.OpMemberAdd, state.OpMemberRemove, state.OpMemberReplace:
		s.Schedule = &state.Schedule{RequestID: newID("req_")}
	case state.OpKeyCreate:
		var ids, down []string
		for _, m := range n.fsm.ActiveMembers() {
			ids = append(ids, m)
			if !n.isLive(m) {
				down = append(down, m)
			}
		}
		if len(down) > 0 {
			s.Unschedulable = fmt.Sprintf("keygen needs every node; unreachable: %v", down)
			return
		}
		s.Schedule = &state.Schedule{RequestID: newID("req_"), KeyID: newID("key_"), Committee: ids, Nonce: randomBytes(32)}
		if c.Curve == state.CurveSecp256k1 {
			s.Schedule.ChainCode = randomBytes(32)
		}
	case state.OpKeyReshare, state.OpKeyRefresh:
		k := n.fsm.Key(c.KeyID)
		if k == nil {
			return // the FSM answers key.not_found
		}
		members := k.Members
		if c.Reshare != nil && len(c.Reshare.Members) > 0 {
			members = c.Reshare.Members
		}
		var down []string
		for _, m := range members {
			if !n.isLive(m) {
				down = append(down, m)
			}
		}
		if len(down) > 0 {
			// NEAR's lesson: a reshare must not wait for an offline newcomer.
			s.Unschedulable = fmt.Sprintf("a reshare needs every node of the new committee; unreachable: %v", down)
			return
		}
		committee, ok := n.pickCommittee(k, origin, nil)
		if !ok {
			s.Unschedulable = fmt.Sprintf("a reshare needs %d reachable nodes of the key's current committee %v", k.Threshold, k.Members)
			return
		}
		s.Schedule = &state.Schedule{RequestID: newID("req_"), Committee: committee, Nonce: randomBytes(32)}
	case state.OpKeySign, state.OpKeyPSBT:
		k := n.fsm.Key(c.KeyID)
		if k == nil {
			return // the FSM answers key.not_found
		}
		committee, ok := n.pickCommittee(k, origin, nil)
		if !ok {
			s.Unschedulable = fmt.Sprintf("signing needs %d reachable nodes", k.Threshold)
			return
		}
		s.Schedule = &state.Schedule{RequestID: newID("req_"), Committee: committee, Nonce: randomBytes(32)}
	}
}

// pickCommittee chooses exactly k live parties of a key: the leader and the entry node
// first (both known to be up), then others at random; avoid lists nodes to leave out if
// possible (culprits and silent parties of earlier attempts).
func (n *Scheduler) pickCommittee(k *state.Key, origin string, avoid []string) ([]string, bool) {
	return chooseCommittee(k.Members, k.Threshold, n.isLive, []string{n.cfg.NodeID, origin}, avoid, n.shuffle)
}

// chooseCommittee is the committee choice as a pure function: threshold live parties,
// preferring those in prefer, then the others in the order shuffle leaves them, and
// those in avoid only when there are not enough others. The result is sorted.
func chooseCommittee(parties []string, threshold int, live func(string) bool, prefer, avoid []string, shuffle func([]string)) ([]string, bool) {
	var first, rest, avoided []string
	for _, m := range parties {
		switch {
		case !live(m):
		case slices.Contains(avoid, m):
			avoided = append(avoided, m)
		case slices.Contains(prefer, m):
			first = append(first, m)
		default:
			rest = append(rest, m)
		}
	}
	shuffle(rest)
	shuffle(avoided)
	all := append(append(first, rest...), avoided...)
	if len(all) < threshold {
		return nil, false
	}
	c := slices.Clone(all[:threshold])
	slices.Sort(c)
	return c, true
}

func shuffle(s []string) {
	for i := len(s) - 1; i > 0; i-- {
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		s[i], s[j.Int64()] = s[j.Int64()], s[i]
	}
}

// isLive: this node is live; the others when the node says they are reachable.
func (n *Scheduler) isLive(nodeID string) bool { return nodeID == n.cfg.NodeID || n.live(nodeID) }

// Kick wakes the loop at once (a sign attempt failed and waits to be retried).
func (n *Scheduler) Kick() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// run, on the leader only, writes the cluster definition once, reschedules failed
// or timed-out sign attempts with a new committee and session, and fails what cannot
// finish, so that no request waits forever.
func (n *Scheduler) run(ctx context.Context, p Proposer) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	inflight := map[string]bool{}
	var lastMembers int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		if !n.isLeader() {
			continue
		}
		if name, _, _ := n.fsm.Cluster(); name == "" {
			n.initCluster(ctx, p)
			continue
		}
		if !n.fsm.Strict() || !n.fsm.EventsOn() {
			// A log that predates signed entries, or the event log: from here on only
			// signed entries, and every change recorded as an event.
			n.proposeQuiet(ctx, p, state.TypeUpgrade, &state.Upgrade{AdminPublicKey: n.adminPub, Events: true})
			continue
		}
		now := n.nowFn().UnixMilli()
		for _, r := range n.fsm.OpenRequests() {
			key := r.ID + "/" + strconv.Itoa(r.Attempt)
			if inflight[key] {
				continue
			}
			if r.Kind == state.KindDelete && r.Attempt > 0 {
				// A scheduled deletion completes at the first entry stamped at or after its
				// delete_at (the FSM deletes it before applying that entry): the leader
				// writes one when it is due — a report the FSM then refuses, the
				// deletion being done. At most one every 5 s per request.
				gkey := key + "/" + strconv.FormatInt(now/5000, 10)
				if now >= r.NotBefore && !inflight[gkey] {
					inflight[gkey] = true
					n.spawn(func() {
						n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: r.ID, Code: api.CodeKeyNotActive, Detail: "deletion due"})
					})
				}
				continue
			}
			if r.ApprovalID != "" && r.Attempt == 0 {
				// Governed requests (state/governance.go): one waiting for approval needs
				// an entry once its approval expired (the FSM closes expired approvals at
				// every entry); an approved one is run once its delay is over.
				// At most one try per request every 5 s (a refused one is tried again).
				gkey := key + "/" + strconv.FormatInt(now/5000, 10)
				if !inflight[gkey] && n.governed(ctx, p, r, now) {
					inflight[gkey] = true
				}
				continue
			}
			age := time.Duration(now-r.ScheduledAt) * time.Millisecond
			switch r.Kind {
			case state.KindKeygen, state.KindReshare:
				if age > n.cfg.Ceremony.KeygenTimeout.Duration+5*time.Second {
					inflight[key] = true
					n.spawn(func() {
						n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "ceremony.failed", Detail: r.Kind + " timed out"})
					})
				}
			case state.KindSign:
				timedOut := age > n.cfg.Ceremony.SignTimeout.Duration+2*time.Second
				if !r.Retry && !timedOut {
					continue
				}
				inflight[key] = true
				n.spawn(func() { n.retry(ctx, p, r, timedOut) })
			}
		}
		if n.raft != nil && now/2000 != lastMembers && n.membersBusy.CompareAndSwap(false, true) {
			lastMembers = now / 2000
			n.spawn(func() {
				defer n.membersBusy.Store(false)
				n.members(ctx, p)
			})
		}
		for _, r := range n.fsm.PendingBroadcasts(16) {
			bkey := "broadcast/" + r.ID + "/" + strconv.FormatInt(now/10000, 10)
			if inflight[bkey] {
				continue
			}
			inflight[bkey] = true
			n.spawn(func() { n.broadcast(ctx, p, r) })
		}
		if len(inflight) > 4096 {
			clear(inflight)
		}
	}
}

func (n *Scheduler) retry(ctx context.Context, p Proposer, r *state.Request, timedOut bool) {
	detail := "signing timed out"
	var avoid []string
	for _, f := range r.Failures {
		if f.Attempt == r.Attempt {
			detail = f.Detail
			avoid = append(avoid, f.Culprits...)
		}
	}
	if r.Attempt >= state.MaxAttempts {
		n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "ceremony.failed", Detail: fmt.Sprintf("%d attempts failed; last: %s", r.Attempt, detail)})
		return
	}
	if timedOut {
		// Parties that never reported are the likely silent ones.
		for _, m := range r.Committee {
			if !n.isLive(m) {
				avoid = append(avoid, m)
			}
		}
	}
	k := n.fsm.Key(r.KeyID)
	if k == nil {
		return
	}
	committee, ok := n.pickCommittee(k, "", avoid)
	if !ok {
		n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "cluster.unavailable", Detail: fmt.Sprintf("fewer than %d nodes reachable to retry", k.Threshold)})
		return
	}
	n.reportQuiet(ctx, p, state.TypeReschedule, &state.Reschedule{RequestID: r.ID, Attempt: r.Attempt, Committee: committee, Nonce: randomBytes(32)})
}

// reportQuiet proposes one of the leader's decisions as its signed report.
func (n *Scheduler) reportQuiet(ctx context.Context, p Proposer, typ string, payload any) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if res, err := p.Report(cctx, typ, payload); err != nil {
		n.log.Warn("leader report failed", "type", typ, "err", err)
	} else if !res.OK() {
		n.log.Debug("leader report refused", "type", typ, "code", res.Code, "detail", res.Detail)
	}
}

func (n *Scheduler) proposeQuiet(ctx context.Context, p Proposer, typ string, payload any) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if res, err := p.Propose(cctx, typ, payload); err != nil {
		n.log.Warn("leader proposal failed", "type", typ, "err", err)
	} else if !res.OK() {
		n.log.Debug("leader proposal refused", "type", typ, "code", res.Code, "detail", res.Detail)
	}
}

func (n *Scheduler) initCluster(ctx context.Context, p Proposer) {
	ci := &state.ClusterInit{Name: n.cfg.Cluster.Name, Threshold: n.cfg.Cluster.Threshold, Strict: true, AdminPublicKey: n.adminPub, Events: true}
	for _, m := range n.cfg.Cluster.Members {
		ci.Members = append(ci.Members, state.Member{ID: m.ID, PeerID: m.PeerID, P2PAddrs: m.P2PAddrs, API: m.API})
	}
	n.proposeQuiet(ctx, p, state.TypeClusterInit, ci)
}

// governed acts for a request of the governance layer, on the leader: it reports whether
// it started something (so that the loop does not start it twice).
func (n *Scheduler) governed(ctx context.Context, p Proposer, r *state.Request, now int64) bool {
	switch r.Status {
	case state.StatusPendingApproval:
		ap := n.fsm.Approval(r.ApprovalID)
		if ap == nil || now < ap.ExpiresAt {
			return false
		}
		// Any entry lets the FSM close it (at the entry's stamp, before applying it): the
		// leader's fail report, which the FSM refuses for a request still pending.
		n.spawn(func() {
			n.reportQuiet(ctx, p, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "approval.expired", Detail: "approval expired"})
		})
		return true
	case state.StatusScheduled:
		if now < r.NotBefore {
			return false
		}
		rs := &state.Reschedule{RequestID: r.ID, Attempt: 0}
		switch r.Kind {
		case state.KindSign:
			k := n.fsm.Key(r.KeyID)
			if k == nil {
				return false
			}
			committee, ok := n.pickCommittee(k, "", nil)
			if !ok {
				return false // retried at the next tick, while the approval's window lasts
			}
			rs.Committee, rs.Nonce = committee, randomBytes(32)
		case state.KindKeygen:
			for _, m := range n.fsm.ActiveMembers() {
				if !n.isLive(m) {
					return false
				}
				rs.Committee = append(rs.Committee, m)
			}
			rs.Nonce = randomBytes(32)
		}
		n.spawn(func() { n.reportQuiet(ctx, p, state.TypeReschedule, rs) })
		return true
	}
	return false
}

// broadcastPatience is how long the leader tries to reach the Bitcoin node for one
// transaction before it reports the broadcast failed.
const broadcastPatience = 2 * time.Minute

// broadcast sends a signed PSBT transaction to the Bitcoin node and reports what it said
// (the FSM records it; the transaction is the one the FSM finalized). A node that cannot
// be reached is tried again at a later tick (a refusal is final: the node said why).
func (n *Scheduler) broadcast(ctx context.Context, p Proposer, r *state.Request) {
	if r.PSBT == nil || r.PSBT.TxHex == "" {
		return
	}
	res := &state.BroadcastResult{RequestID: r.ID}
	if n.broadcastTx == nil {
		res.Detail = "no Bitcoin node is configured on this cluster's leader (bitcoin.rpc_url); broadcast the returned tx_hex yourself"
	} else {
		bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		txid, err := n.broadcastTx(bctx, r.PSBT.TxHex)
		cancel()
		var rpcErr *btc.RPCError
		switch {
		case err == nil:
			res.TxID = txid
		case errors.As(err, &rpcErr):
			res.Detail = err.Error()
		case n.nowFn().UnixMilli()-r.UpdatedAt > broadcastPatience.Milliseconds():
			res.Detail = "the Bitcoin node could not be reached: " + err.Error()
		default:
			n.log.Warn("broadcast: the Bitcoin node could not be reached; trying again", "request", r.ID, "err", err)
			return
		}
	}
	n.reportQuiet(ctx, p, state.TypeBroadcast, res)
}
