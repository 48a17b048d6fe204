package protocol

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Transport sends ceremony messages to other nodes. It is owned by its
// consumer, the node, which implements it over libp2p. The engine calls Send
// from one goroutine per (ceremony, recipient), in order; a slow Send delays
// only later messages to the same recipient. Send must not modify m (the same
// *Message may go to several peers) and must return promptly when ctx is done:
// ctx ends when the engine closes, or a short flush budget after the ceremony
// itself ended. The receiving side must set Message.From from the
// authenticated peer and hand the message to Engine.Deliver.
type Transport interface {
	Send(ctx context.Context, to string, m *Message) error
}

// Defaults for EngineConfig.
const (
	DefaultMaxSessions          = 64
	DefaultMaxPendingPerSession = 256
	DefaultPendingTTL           = 30 * time.Second
	DefaultMaxPendingBytes      = 64 << 20
	DefaultMaxClosedSessions    = 1 << 17
	DefaultClosedSessionTTL     = 10 * time.Minute
	// maxQueueBytes caps the bytes queued for one running session.
	maxQueueBytes = 64 << 20
)

// Drop reasons passed to EngineConfig.OnDrop.
const (
	DropOversize       = "oversize"
	DropInvalid        = "invalid"
	DropClosedSession  = "closed_session"
	DropNotMember      = "not_member"
	DropFromSelf       = "from_self"
	DropPendingFull    = "pending_full"
	DropPendingExpired = "pending_expired"
	DropQueueFull      = "queue_full"
	DropDuplicate      = "duplicate"
	DropEngineClosed   = "engine_closed"
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Self is this node's id; it must be in every committee it takes part in.
	Self string
	// Transport sends messages to the other nodes.
	Transport Transport
	// Logger receives structured logs (never payloads, shares or signatures).
	// Nil means slog.Default().
	Logger *slog.Logger
	// MaxSessions caps concurrently running ceremonies, and separately the
	// number of not-yet-started sessions for which one sender's messages are
	// held (default 64; the hold area as a whole takes pendingShares times as
	// many, so that one member cannot fill it for the others).
	MaxSessions int
	// MaxPendingPerSession caps the messages held for a session that has not
	// started yet (default 256).
	MaxPendingPerSession int
	// PendingTTL is how long such messages are held (default 30s).
	PendingTTL time.Duration
	// MaxPendingBytes caps the bytes held for all not-yet-started sessions
	// together (default 64 MiB).
	MaxPendingBytes int
	// MaxClosedSessions is how many finished session ids are remembered to
	// refuse their reuse and drop their late messages (default 131072, oldest
	// forgotten first), and ClosedSessionTTL for how long (default 10 minutes:
	// late messages come within seconds, and after that a forgotten session's
	// are held and dropped like any unknown session's). The node persists session
	// ids across restarts and refuses their reuse itself; this is the in-process
	// second line. The time bound keeps memory to what recent signing needs: a
	// count bound alone filled for hours at a steady 20 signatures/s (11 MiB at
	// 131072 ids), which a soak took for growth.
	MaxClosedSessions int
	ClosedSessionTTL  time.Duration
	// OnDrop, if set, is called (synchronously, so it must be cheap) with a
	// Drop* reason for every message the engine drops.
	OnDrop func(reason string)
}

// Engine runs ceremonies for one node and routes incoming messages to them.
// It is safe for concurrent use.
type Engine struct {
	cfg EngineConfig
	log *slog.Logger

	baseCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu           sync.Mutex
	closed       bool
	active       map[SessionID]*ceremony
	pending      map[SessionID]*pendingBucket
	pendingBytes int
	// held tracks, per sender, the not-yet-started sessions it has messages held in and
	// their bytes, so that one member cannot fill the hold area for the others.
	held      map[string]*senderHold
	lastPurge time.Time
	done      map[SessionID]struct{}
	doneOrder []doneSession // the ids in done, oldest first
	now       func() time.Time
}

// doneSession is a finished session id and when it finished.
type doneSession struct {
	sid SessionID
	at  time.Time
}

type heldMessage struct {
	m  *Message
	at time.Time
}

// senderHold is one sender's share of the hold area.
type senderHold struct{ sessions, bytes int }

// pendingShares is how many senders' worth of room the hold area has: each sender may use
// MaxSessions sessions and MaxPendingBytes/pendingShares bytes of it, and the area holds
// pendingShares*MaxSessions sessions, so fewer than pendingShares misbehaving members
// cannot make it refuse an honest member's early messages.
const pendingShares = 4

type pendingBucket struct {
	msgs      []heldMessage
	bytes     int
	perSender map[string]int
}

// maxPendingPerSender caps the messages held from one sender for one session
// that has not started (before it starts a member can only have sent its
// first rounds and their echoes), so that one member cannot crowd out the
// others' held messages.
const maxPendingPerSender = 64

// NewEngine returns an Engine; call Close when done.
func NewEngine(cfg EngineConfig) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxPendingPerSession <= 0 {
		cfg.MaxPendingPerSession = DefaultMaxPendingPerSession
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.MaxClosedSessions <= 0 {
		cfg.MaxClosedSessions = DefaultMaxClosedSessions
	}
	if cfg.ClosedSessionTTL <= 0 {
		cfg.ClosedSessionTTL = DefaultClosedSessionTTL
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "protocol"),
		baseCtx: ctx,
		cancel:  cancel,
		active:  make(map[SessionID]*ceremony),
		pending: make(map[SessionID]*pendingBucket),
		held:    make(map[string]*senderHold),
		done:    make(map[SessionID]struct{}),
		now:     time.Now,
	}
}

// Close aborts every running ceremony (they return a CeremonyError wrapping
// ErrEngineClosed), waits for them to unwind, drops held messages and refuses
// new ceremonies. It is idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.wg.Wait()
		return
	}
	e.closed = true
	e.pending = make(map[SessionID]*pendingBucket)
	e.pendingBytes = 0
	e.held = make(map[string]*senderHold)
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}

func (e *Engine) drop(reason string, m *Message) {
	if e.cfg.OnDrop != nil {
		e.cfg.OnDrop(reason)
	}
	if m != nil {
		e.log.Debug("dropped ceremony message", "reason", reason, "session", shortID(m.Session), "from", m.From, "kind", m.Kind.String())
	}
}

func shortID(s SessionID) string { return s.String()[:16] }

// Deliver hands an incoming message to its session. It never blocks for long:
// messages for running sessions are queued (bounded) for the session's inbox
// goroutine; messages for sessions that have not started yet are held
// (bounded, for PendingTTL); messages for finished sessions, from non-members,
// from this node itself, oversize or malformed ones are dropped and counted.
func (e *Engine) Deliver(m *Message) {
	if m == nil {
		e.drop(DropInvalid, nil)
		return
	}
	if len(m.Payload) > MaxPayloadSize {
		e.drop(DropOversize, m)
		return
	}
	if m.From == "" || len(m.From) > MaxNodeIDLen || !m.Kind.valid() || len(m.Payload) == 0 || (m.Kind != MsgTSS && (m.Broadcast || m.Role != RoleNone)) || !m.Role.valid() || m.local {
		e.drop(DropInvalid, m)
		return
	}
	if m.From == e.cfg.Self {
		e.drop(DropFromSelf, m)
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.drop(DropEngineClosed, m)
		return
	}
	if c, ok := e.active[m.Session]; ok {
		e.mu.Unlock()
		if !c.isMember(m.From) {
			e.drop(DropNotMember, m)
			return
		}
		if reason := c.enqueue(m); reason != "" {
			e.drop(reason, m)
		}
		return
	}
	if _, ok := e.done[m.Session]; ok {
		e.mu.Unlock()
		e.drop(DropClosedSession, m)
		return
	}
	reason := e.holdLocked(m)
	e.mu.Unlock()
	if reason != "" {
		e.drop(reason, m)
	}
}

// holdLocked keeps a message for a session that has not started yet.
func (e *Engine) holdLocked(m *Message) string {
	now := e.now()
	if now.Sub(e.lastPurge) >= time.Second {
		e.purgeLocked(now)
	}
	size := len(m.Payload)
	sh := e.held[m.From]
	if sh == nil {
		sh = &senderHold{}
	}
	b := e.pending[m.Session]
	newForSender := b == nil || b.perSender[m.From] == 0
	if (newForSender && sh.sessions >= e.cfg.MaxSessions) || sh.bytes+size > e.cfg.MaxPendingBytes/pendingShares {
		return DropPendingFull
	}
	if b == nil {
		if len(e.pending) >= pendingShares*e.cfg.MaxSessions {
			return DropPendingFull
		}
		b = &pendingBucket{perSender: map[string]int{}}
		e.pending[m.Session] = b
	}
	if len(b.msgs) >= e.cfg.MaxPendingPerSession || b.perSender[m.From] >= maxPendingPerSender || e.pendingBytes+size > e.cfg.MaxPendingBytes {
		if len(b.msgs) == 0 {
			delete(e.pending, m.Session)
		}
		return DropPendingFull
	}
	b.msgs = append(b.msgs, heldMessage{m: m, at: now})
	b.bytes += size
	b.perSender[m.From]++
	e.pendingBytes += size
	if newForSender {
		sh.sessions++
	}
	sh.bytes += size
	e.held[m.From] = sh
	return ""
}

// releaseLocked gives back the hold-area share of one held message.
func (e *Engine) releaseLocked(b *pendingBucket, m *Message) {
	size := len(m.Payload)
	b.bytes -= size
	e.pendingBytes -= size
	b.perSender[m.From]--
	sh := e.held[m.From]
	if sh == nil {
		return
	}
	sh.bytes -= size
	if b.perSender[m.From] == 0 {
		delete(b.perSender, m.From)
		sh.sessions--
	}
	if sh.sessions == 0 && sh.bytes == 0 {
		delete(e.held, m.From)
	}
}

// purgeLocked forgets held messages older than PendingTTL.
func (e *Engine) purgeLocked(now time.Time) {
	e.lastPurge = now
	for sid, b := range e.pending {
		keep := b.msgs[:0]
		for _, h := range b.msgs {
			if now.Sub(h.at) > e.cfg.PendingTTL {
				e.releaseLocked(b, h.m)
				e.drop(DropPendingExpired, h.m)
				continue
			}
			keep = append(keep, h)
		}
		b.msgs = keep
		if len(b.msgs) == 0 {
			delete(e.pending, sid)
		}
	}
}

// register makes c the running ceremony for its session id and moves the
// messages held for it (still fresh, in arrival order) into its queue.
func (e *Engine) register(c *ceremony) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrEngineClosed
	}
	if _, ok := e.active[c.sid]; ok {
		return ErrSessionReused
	}
	if _, ok := e.done[c.sid]; ok {
		return ErrSessionReused
	}
	if len(e.active) >= e.cfg.MaxSessions {
		return ErrTooManySessions
	}
	e.active[c.sid] = c
	e.wg.Add(1)
	if b := e.pending[c.sid]; b != nil {
		delete(e.pending, c.sid)
		for _, h := range b.msgs {
			e.releaseLocked(b, h.m)
		}
		now := e.now()
		for _, h := range b.msgs {
			switch {
			case now.Sub(h.at) > e.cfg.PendingTTL:
				e.drop(DropPendingExpired, h.m)
			case !c.isMember(h.m.From):
				e.drop(DropNotMember, h.m)
			default:
				if reason := c.enqueue(h.m); reason != "" {
					e.drop(reason, h.m)
				}
			}
		}
	}
	return nil
}

// unregister retires a ceremony's session id for good.
func (e *Engine) unregister(c *ceremony) {
	e.mu.Lock()
	delete(e.active, c.sid)
	e.markDoneLocked(c.sid)
	e.mu.Unlock()
	e.wg.Done()
}

func (e *Engine) markDoneLocked(sid SessionID) {
	if _, ok := e.done[sid]; ok {
		return
	}
	now := e.now()
	for len(e.doneOrder) > 0 && (len(e.doneOrder) >= e.cfg.MaxClosedSessions || now.Sub(e.doneOrder[0].at) > e.cfg.ClosedSessionTTL) {
		delete(e.done, e.doneOrder[0].sid)
		e.doneOrder[0] = doneSession{}
		e.doneOrder = e.doneOrder[1:] // append reallocates with the live ids only
	}
	e.doneOrder = append(e.doneOrder, doneSession{sid: sid, at: now})
	e.done[sid] = struct{}{}
}
