package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/bnb-chain/tss-lib/v2/tss"
)

// MaxCommittee caps the number of parties in one ceremony.
const MaxCommittee = 32

// echoTag domain-separates the broadcast hashes carried in echoes.
const echoTag = "custos/protocol/echo/v1\x00"

// ceremony is one party of one session: the state shared between Deliver (the
// queue) and the inbox loop, which alone touches tss-lib and the rest.
type ceremony struct {
	e         *Engine
	sid       SessionID
	self      string
	members   []string // sorted node ids (in a resharing: old and new committees)
	memberSet map[string]bool
	roles     map[string]roleSet      // node id -> the committees it is in (RoleNone for keygen and signing)
	pids      map[string]*tss.PartyID // node id -> tss-lib party id (indexed), keygen and signing
	sorted    tss.SortedPartyIDs
	byKey     map[string]string // hex party key -> node id
	spec      *protoSpec
	check     checkFunc
	log       *slog.Logger

	// resharing: the parties of the old and the new committee, and which
	// role each party key plays
	reshare   bool
	oldPids   map[string]*tss.PartyID
	newPids   map[string]*tss.PartyID
	oldSorted tss.SortedPartyIDs
	newSorted tss.SortedPartyIDs
	keyRole   map[string]PartyRole

	// queue, filled by Deliver, drained by the inbox loop
	qmu     sync.Mutex
	queue   []*Message
	qbytes  int
	qcap    int
	qper    map[string]int // queued messages per sender
	qcapPer int
	notify  chan struct{}

	// inbox loop state
	locals   []*localParty       // this node's tss-lib parties (two in a resharing where it is in both committees)
	seen     map[msgKey][32]byte // every tss message taken: hash of its payload
	seenRaw  map[rawKey]struct{} // the same, by sender and payload hash only
	accepted map[msgKey]tss.ParsedMessage
	bcast    map[msgKey][32]byte // broadcasts received, as this node saw them
	echoes   map[echoKey][32]byte
	deferred []deferredMsg
	tssDone  bool // every local party has finished
	failed   *CeremonyError
	// peerAbort is set when another member said it gave up; the ceremony
	// fails with it after abortGrace unless first-hand evidence comes first.
	peerAbort  error
	abortFrom  string // the member whose MsgAbort set peerAbort
	abortTimer *time.Timer
	echoOut    chan outbound
}

type msgKey struct{ from, typ string }

// localParty is one of this node's tss-lib parties in a ceremony.
type localParty struct {
	role  PartyRole
	party tss.Party
	done  bool
}

// deferredMsg is a message whose checks wait for another one; to is the set
// of local parties it goes to.
type deferredMsg struct {
	from string
	msg  tss.ParsedMessage
	to   roleSet
}

type rawKey struct {
	from string
	h    [32]byte
}

type echoKey struct{ origin, typ, echoer string }

type outbound struct {
	to string
	m  *Message
}

// newCeremony checks a committee and builds the tss-lib party ids for it,
// with the party keys of generation 0.
func (e *Engine) newCeremony(sid SessionID, committee []string, spec *protoSpec) (*ceremony, error) {
	return e.newCeremonyAt(sid, committee, spec, 0)
}

// newCeremonyAt is newCeremony with the party keys of generation gen.
func (e *Engine) newCeremonyAt(sid SessionID, committee []string, spec *protoSpec, gen uint32) (*ceremony, error) {
	members, err := checkCommittee("committee", committee)
	if err != nil {
		return nil, err
	}
	c := e.ceremonyBase(sid, members, spec)
	var perr error
	c.pids, c.sorted, perr = c.addParties(members, RoleNone, gen)
	if perr != nil {
		return nil, perr
	}
	if !c.memberSet[c.self] {
		return nil, invalidArg("this node (%q) is not in the committee", c.self)
	}
	return c, nil
}

// checkCommittee returns a sorted copy of a committee after checking its
// size and ids.
func checkCommittee(what string, committee []string) ([]string, error) {
	members := slices.Clone(committee)
	slices.Sort(members)
	if len(members) < 2 || len(members) > MaxCommittee {
		return nil, invalidArg("%s of %d parties (want 2..%d)", what, len(members), MaxCommittee)
	}
	for i, id := range members {
		if id == "" || len(id) > MaxNodeIDLen {
			return nil, invalidArg("node id %q is empty or longer than %d bytes", id, MaxNodeIDLen)
		}
		if i > 0 && members[i-1] == id {
			return nil, invalidArg("node id %q appears twice in the %s", id, what)
		}
	}
	return members, nil
}

// ceremonyBase builds a ceremony of members (sorted, checked) without
// parties.
func (e *Engine) ceremonyBase(sid SessionID, members []string, spec *protoSpec) *ceremony {
	c := &ceremony{
		e:         e,
		sid:       sid,
		self:      e.cfg.Self,
		members:   members,
		memberSet: make(map[string]bool, len(members)),
		roles:     make(map[string]roleSet, len(members)),
		byKey:     make(map[string]string, len(members)),
		keyRole:   make(map[string]PartyRole, len(members)),
		spec:      spec,
		notify:    make(chan struct{}, 1),
		seen:      make(map[msgKey][32]byte),
		seenRaw:   make(map[rawKey]struct{}),
		accepted:  make(map[msgKey]tss.ParsedMessage),
		bcast:     make(map[msgKey][32]byte),
		echoes:    make(map[echoKey][32]byte),
		log:       e.log.With("session", shortID(sid), "kind", spec.kind),
	}
	for _, id := range members {
		c.memberSet[id] = true
	}
	c.qcap = 2*spec.expectedMessages(len(members)) + 64
	// What one member legitimately sends this node in a whole session, twice
	// over: a flooding member only ever crowds out its own messages.
	c.qcapPer = 2*(len(spec.types)+(len(members)-2)*len(spec.bcasts)+1) + 8
	c.qper = make(map[string]int, len(members))
	return c
}

// addParties builds the tss-lib party ids of ids (sorted, checked) in role,
// with the party keys of generation gen; every party key of the ceremony
// must be distinct (tss-lib tells parties and committees apart by key only).
func (c *ceremony) addParties(ids []string, role PartyRole, gen uint32) (map[string]*tss.PartyID, tss.SortedPartyIDs, error) {
	pids := make(map[string]*tss.PartyID, len(ids))
	unsorted := make(tss.UnSortedPartyIDs, 0, len(ids))
	for _, id := range ids {
		key := PartyKeyAt(id, gen)
		hk := hex.EncodeToString(key.Bytes())
		if _, dup := c.byKey[hk]; dup {
			return nil, nil, invalidArg("node ids %q and %q map to the same party key", c.byKey[hk], id)
		}
		c.byKey[hk] = id
		c.keyRole[hk] = role
		c.roles[id] |= rolesOf(role)
		pid := tss.NewPartyID(id, id, key)
		pids[id] = pid
		unsorted = append(unsorted, pid)
	}
	return pids, tss.SortPartyIDs(unsorted), nil
}

// pidOf returns the party id of node id in role.
func (c *ceremony) pidOf(role PartyRole, id string) *tss.PartyID {
	switch role {
	case RoleOld:
		return c.oldPids[id]
	case RoleNew:
		return c.newPids[id]
	default:
		return c.pids[id]
	}
}

// sends reports whether node origin sends messages of type typ in this
// ceremony.
func (c *ceremony) sends(origin, typ string) bool {
	s, ok := c.spec.types[typ]
	return ok && c.roles[origin].has(s.from)
}

// receives reports whether node gets a message of type typ from node origin
// (another node) over the network.
func (c *ceremony) receives(node, origin, typ string) bool {
	s, ok := c.spec.types[typ]
	return ok && node != origin && c.roles[origin].has(s.from) && c.roles[node]&s.to != 0
}

func (c *ceremony) isMember(id string) bool { return c.memberSet[id] }

// enqueue is called by Deliver; it returns a drop reason or "".
func (c *ceremony) enqueue(m *Message) string {
	c.qmu.Lock()
	if len(c.queue) >= c.qcap || c.qper[m.From] >= c.qcapPer || c.qbytes+len(m.Payload) > maxQueueBytes {
		c.qmu.Unlock()
		return DropQueueFull
	}
	c.queue = append(c.queue, m)
	c.qbytes += len(m.Payload)
	c.qper[m.From]++
	c.qmu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return ""
}

// enqueueLocal queues a message one local party sent to the other (in a
// resharing where this node is in both committees). It is bounded by what
// the local parties send, so it has no cap.
func (c *ceremony) enqueueLocal(m *Message) {
	c.qmu.Lock()
	c.queue = append(c.queue, m)
	c.qmu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *ceremony) takeQueue() []*Message {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	q := c.queue
	c.queue, c.qbytes = nil, 0
	clear(c.qper)
	return q
}

// safeCall runs f, turning a panic into an error wrapping ErrPanic.
func safeCall(log *slog.Logger, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("recovered panic from tss-lib", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	f()
	return nil
}

// fail records the first failure of the ceremony.
func (c *ceremony) fail(err error, culprits ...string) {
	if c.failed != nil {
		return
	}
	cs := make([]string, 0, len(culprits))
	for _, id := range culprits {
		if id != c.self && id != "" && !slices.Contains(cs, id) {
			cs = append(cs, id)
		}
	}
	slices.Sort(cs)
	c.failed = &CeremonyError{Culprits: cs, Err: err}
	c.log.Warn("ceremony aborted", "err", err, "culprits", cs)
}

func (c *ceremony) blame(id string, sentinel error, format string, args ...any) {
	c.fail(fmt.Errorf("%w from %s: %s", sentinel, id, fmt.Sprintf(format, args...)), id)
}

// tssFail maps a tss-lib error's culprits (party ids) to node ids.
func (c *ceremony) tssFail(err *tss.Error) {
	var culprits []string
	for _, pid := range err.Culprits() {
		if pid == nil {
			continue
		}
		if id, ok := c.byKey[hex.EncodeToString(pid.Key)]; ok {
			culprits = append(culprits, id)
		}
	}
	c.fail(err, culprits...)
}

func broadcastHash(sid SessionID, origin, typ string, payload []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(echoTag))
	h.Write(sid[:])
	var n [1]byte
	n[0] = byte(len(origin))
	h.Write(n[:])
	h.Write([]byte(origin))
	n[0] = byte(len(typ))
	h.Write(n[:])
	h.Write([]byte(typ))
	h.Write(payload)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// handle processes one queued message in the inbox loop.
func (c *ceremony) handle(m *Message) {
	switch m.Kind {
	case MsgTSS:
		c.handleTSS(m)
	case MsgEcho:
		c.handleEcho(m)
	case MsgAbort:
		reason, err := parseAbort(m.Payload)
		if err != nil {
			c.blame(m.From, ErrInvalidMessage, "%v", err)
			return
		}
		// Do not fail at once: the evidence that made the peer give up (a
		// garbage message, a conflicting echo) is usually on its way here
		// too, and blaming from first-hand evidence beats "someone gave up".
		if c.peerAbort == nil {
			c.peerAbort = fmt.Errorf("%w: %s gave up: %s", ErrPeerAborted, m.From, reason)
			c.abortFrom = m.From
			c.abortTimer = time.NewTimer(abortGrace)
		}
	default:
		c.blame(m.From, ErrInvalidMessage, "unknown message kind %d", m.Kind)
	}
}

func (c *ceremony) handleTSS(m *Message) {
	if m.local {
		c.handleLocal(m)
		return
	}
	// Exact duplicates are dropped before paying for a parse.
	rk := rawKey{m.From, sha256.Sum256(m.Payload)}
	if _, dup := c.seenRaw[rk]; dup {
		c.e.drop(DropDuplicate, m)
		return
	}
	// The role is the sender's claim of which of its parties spoke: it must
	// be in that committee (and the message type one that committee sends).
	switch {
	case !c.reshare && m.Role != RoleNone:
		c.blame(m.From, ErrInvalidMessage, "a %s-committee message outside a resharing", m.Role)
		return
	case c.reshare && m.Role != RoleOld && m.Role != RoleNew:
		c.blame(m.From, ErrInvalidMessage, "a resharing message without a committee role")
		return
	case !c.roles[m.From].has(m.Role):
		c.blame(m.From, ErrInvalidMessage, "claims to speak for the %s committee, which it is not in", m.Role)
		return
	}
	var parsed tss.ParsedMessage
	var perr error
	pid := c.pidOf(m.Role, m.From)
	if err := safeCall(c.log, func() { parsed, perr = tss.ParseWireMessage(m.Payload, pid, m.Broadcast) }); err != nil {
		perr = err
	}
	if perr != nil {
		c.blame(m.From, ErrInvalidMessage, "unparseable tss message: %v", perr)
		return
	}
	typ := parsed.Type()
	spec, ok := c.spec.types[typ]
	if !ok {
		c.blame(m.From, ErrInvalidMessage, "unexpected message type %q", typ)
		return
	}
	if spec.broadcast != m.Broadcast {
		c.blame(m.From, ErrInvalidMessage, "%s sent with broadcast=%v", typ, m.Broadcast)
		return
	}
	if spec.from != m.Role {
		c.blame(m.From, ErrInvalidMessage, "%s sent by its %s-committee party; it is the %s committee's", typ, m.Role, spec.from)
		return
	}
	if !c.receives(c.self, m.From, typ) {
		c.blame(m.From, ErrInvalidMessage, "%s is not addressed to this node", typ)
		return
	}
	key := msgKey{m.From, typ}
	h := broadcastHash(c.sid, m.From, typ, m.Payload)
	if prev, ok := c.seen[key]; ok {
		if prev == h {
			c.e.drop(DropDuplicate, m)
			return
		}
		c.blame(m.From, ErrEquivocation, "two different %s messages", typ)
		return
	}
	c.seen[key] = h
	c.seenRaw[rk] = struct{}{}
	if spec.broadcast {
		c.bcast[key] = h
		// Echo before comparing: when the echoes already here show that m.From sent the
		// others something else, they need this node's echo as first-hand evidence too
		// (the abort that follows alone would only make them give up, blaming no one).
		c.sendEchoes(m.From, typ, h)
		for _, q := range c.members {
			if q == c.self || !c.receives(q, m.From, typ) {
				continue
			}
			if prev, ok := c.echoes[echoKey{m.From, typ, q}]; ok && prev != h {
				c.blame(m.From, ErrEquivocation, "%s broadcast differs from what %s received", typ, q)
				return
			}
		}
	}
	var valid bool
	if err := safeCall(c.log, func() { valid = parsed.ValidateBasic() }); err != nil || !valid {
		c.blame(m.From, ErrInvalidMessage, "%s failed basic validation", typ)
		return
	}
	c.feed(m.From, parsed)
}

// handleLocal takes a message one of this node's parties sent to its other
// party (resharing, this node in both committees). It is this node's own
// output: no duplicate, echo or custos check applies.
func (c *ceremony) handleLocal(m *Message) {
	var parsed tss.ParsedMessage
	var perr error
	pid := c.pidOf(m.Role, c.self)
	if err := safeCall(c.log, func() { parsed, perr = tss.ParseWireMessage(m.Payload, pid, m.Broadcast) }); err != nil {
		perr = err
	}
	if perr != nil {
		c.fail(fmt.Errorf("own %s-committee message does not parse: %w", m.Role, perr))
		return
	}
	c.deliverLocal(parsed, rolesOf(m.toRole))
}

// feed runs custos's own checks and hands the message to tss-lib, then
// retries messages whose checks were waiting for this one.
func (c *ceremony) feed(from string, msg tss.ParsedMessage) {
	to := rolesOf(RoleNone)
	if s, ok := c.spec.types[msg.Type()]; ok {
		to = s.to
	}
	if wait := c.accept(from, msg, to); wait {
		c.deferred = append(c.deferred, deferredMsg{from: from, msg: msg, to: to})
		return
	}
	for progress := true; progress && c.failed == nil; {
		progress = false
		for i := 0; i < len(c.deferred) && c.failed == nil; i++ {
			d := c.deferred[i]
			if c.accept(d.from, d.msg, d.to) {
				continue
			}
			c.deferred = slices.Delete(c.deferred, i, i+1)
			i--
			progress = true
		}
	}
}

// accept checks msg and, if it passes, gives it to the local tss-lib parties
// whose roles are in to. It returns true if the check must wait for another
// message.
func (c *ceremony) accept(from string, msg tss.ParsedMessage, to roleSet) (wait bool) {
	lookup := func(from, typ string) tss.ParsedMessage { return c.accepted[msgKey{from, typ}] }
	var cerr error
	if err := safeCall(c.log, func() { wait, cerr = c.check(from, msg, lookup) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		c.blame(from, ErrInvalidMessage, "%s: %v", msg.Type(), cerr)
		return false
	}
	if wait {
		return true
	}
	c.accepted[msgKey{from, msg.Type()}] = msg
	c.deliverLocal(msg, to)
	return false
}

// deliverLocal gives msg to the local tss-lib parties whose roles are in to.
func (c *ceremony) deliverLocal(msg tss.ParsedMessage, to roleSet) {
	for _, lp := range c.locals {
		if lp.done || !to.has(lp.role) || c.failed != nil {
			continue
		}
		var terr *tss.Error
		if err := safeCall(c.log, func() { _, terr = lp.party.Update(msg) }); err != nil {
			c.fail(err)
			return
		}
		if terr != nil {
			c.tssFail(terr)
			return
		}
	}
}

func (c *ceremony) sendEchoes(origin, typ string, h [32]byte) {
	payload := echo{Origin: origin, Type: typ, Hash: h}.encode()
	m := &Message{Session: c.sid, Kind: MsgEcho, Payload: payload}
	for _, q := range c.members {
		if q == c.self || !c.receives(q, origin, typ) {
			continue
		}
		select {
		case c.echoOut <- outbound{to: q, m: m}:
		default: // cannot happen: echoOut holds every echo of the session
			c.log.Error("echo queue full; echo not sent", "to", q)
		}
	}
}

func (c *ceremony) handleEcho(m *Message) {
	e, err := parseEcho(m.Payload)
	if err != nil {
		c.blame(m.From, ErrInvalidMessage, "%v", err)
		return
	}
	if !c.memberSet[e.Origin] || e.Origin == m.From || e.Origin == c.self {
		c.blame(m.From, ErrInvalidMessage, "echo about %q, which it must not echo to this node", e.Origin)
		return
	}
	if spec, ok := c.spec.types[e.Type]; !ok || !spec.broadcast {
		c.blame(m.From, ErrInvalidMessage, "echo of %q, which is not a broadcast of this protocol", e.Type)
		return
	}
	if !c.receives(c.self, e.Origin, e.Type) || !c.receives(m.From, e.Origin, e.Type) {
		c.blame(m.From, ErrInvalidMessage, "echo of %s's %s, which it or this node does not receive", e.Origin, e.Type)
		return
	}
	k := echoKey{e.Origin, e.Type, m.From}
	if prev, ok := c.echoes[k]; ok {
		if prev == e.Hash {
			c.e.drop(DropDuplicate, m)
			return
		}
		c.blame(m.From, ErrEquivocation, "two different echoes of %s's %s", e.Origin, e.Type)
		return
	}
	c.echoes[k] = e.Hash
	if mine, ok := c.bcast[msgKey{e.Origin, e.Type}]; ok && mine != e.Hash {
		c.blame(e.Origin, ErrEquivocation, "%s broadcast differs from what %s received", e.Type, m.From)
	}
}

// echoesComplete reports whether this node holds, for every broadcast of
// every other member, a matching echo from every member other than itself
// and the sender (mismatches abort as soon as they are seen).
func (c *ceremony) echoesComplete() bool {
	for _, origin := range c.members {
		if origin == c.self {
			continue
		}
		for _, typ := range c.spec.bcasts {
			if !c.receives(c.self, origin, typ) {
				continue
			}
			if _, ok := c.bcast[msgKey{origin, typ}]; !ok {
				return false
			}
			for _, q := range c.members {
				if q == c.self || !c.receives(q, origin, typ) {
					continue
				}
				if _, ok := c.echoes[echoKey{origin, typ, q}]; !ok {
					return false
				}
			}
		}
	}
	return true
}

// silent names the members blamed for a timeout: while tss-lib runs, those
// from whom a message of the earliest incomplete round never came; after it
// finished, those whose echoes never came.
func (c *ceremony) silent() (culprits []string, where string) {
	if !c.tssDone {
		minRound := math.MaxInt
		missing := map[int][]string{}
		for _, id := range c.members {
			if id == c.self {
				continue
			}
			for typ, s := range c.spec.types {
				if !c.receives(c.self, id, typ) {
					continue
				}
				if _, ok := c.seen[msgKey{id, typ}]; ok {
					continue
				}
				if !slices.Contains(missing[s.round], id) {
					missing[s.round] = append(missing[s.round], id)
				}
				minRound = min(minRound, s.round)
			}
		}
		if minRound == math.MaxInt {
			return nil, "every message arrived; this node was still computing"
		}
		return missing[minRound], fmt.Sprintf("round %d messages missing", minRound)
	}
	for _, origin := range c.members {
		if origin == c.self {
			continue
		}
		for _, typ := range c.spec.bcasts {
			if !c.receives(c.self, origin, typ) {
				continue
			}
			for _, q := range c.members {
				if q == c.self || !c.receives(q, origin, typ) {
					continue
				}
				if _, ok := c.echoes[echoKey{origin, typ, q}]; !ok && !slices.Contains(culprits, q) {
					culprits = append(culprits, q)
				}
			}
		}
	}
	return culprits, "broadcast echoes missing"
}

// sendLoop drains tss-lib's out channel and the echo channel and hands every
// message to the sender goroutine of its recipient, so that a slow or dead
// peer never delays messages to the others. It runs until both channels are
// closed (tss-lib never blocks on out, even after the ceremony failed), then
// closes the per-peer queues and waits for the senders.
func (c *ceremony) sendLoop(ctx context.Context, out <-chan tss.Message, echoes <-chan outbound, errc chan<- error) {
	n := len(c.members)
	perPeer := len(c.spec.types) + (n-2)*len(c.spec.bcasts) + 4 // everything one peer gets from us
	queues := make(map[string]chan *Message, n-1)
	var wg sync.WaitGroup
	for _, q := range c.members {
		if q == c.self {
			continue
		}
		ch := make(chan *Message, perPeer)
		queues[q] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				c.send(ctx, q, m)
			}
		}()
	}
	enqueue := func(to string, m *Message) {
		select {
		case queues[to] <- m:
		default: // cannot happen: the queue holds everything we send to a peer
			c.log.Error("send queue full; message not sent", "to", to, "kind", m.Kind.String())
		}
	}
	for out != nil || echoes != nil {
		select {
		case m, ok := <-out:
			if !ok {
				out = nil
				continue
			}
			if err := c.routeTSS(m, enqueue); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		case o, ok := <-echoes:
			if !ok {
				echoes = nil
				continue
			}
			enqueue(o.to, o.m)
		}
	}
	for _, ch := range queues {
		close(ch)
	}
	wg.Wait()
}

// routeTSS encodes one of this party's tss-lib messages and queues it for
// its recipients (every other member for a broadcast).
func (c *ceremony) routeTSS(tm tss.Message, enqueue func(to string, m *Message)) error {
	var (
		payload []byte
		routing *tss.MessageRouting
		werr    error
	)
	if err := safeCall(c.log, func() { payload, routing, werr = tm.WireBytes() }); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("encode own tss message: %w", werr)
	}
	if len(payload) == 0 || len(payload) > MaxPayloadSize {
		return fmt.Errorf("own tss message of %d bytes cannot be sent", len(payload))
	}
	if c.reshare {
		return c.routeReshare(payload, routing, enqueue)
	}
	m := &Message{Session: c.sid, Broadcast: routing.IsBroadcast, Kind: MsgTSS, Payload: payload}
	if routing.To == nil {
		for _, q := range c.members {
			if q != c.self {
				enqueue(q, m)
			}
		}
		return nil
	}
	for _, pid := range routing.To {
		q, ok := c.byKey[hex.EncodeToString(pid.Key)]
		if !ok || q == c.self {
			return fmt.Errorf("tss-lib addressed a message to an unknown party %s", pid)
		}
		enqueue(q, m)
	}
	return nil
}

// routeReshare sends one of this node's resharing messages: once to every
// other node one of whose parties tss-lib addressed (the receiver gives it
// to its parties by type), and through the local queue to this node's other
// party. The envelope says which of this node's parties sent it.
func (c *ceremony) routeReshare(payload []byte, routing *tss.MessageRouting, enqueue func(to string, m *Message)) error {
	if routing.From == nil {
		return errors.New("tss-lib sent a message without a sender")
	}
	fk := hex.EncodeToString(routing.From.Key)
	role, ok := c.keyRole[fk]
	if !ok || c.byKey[fk] != c.self {
		return fmt.Errorf("tss-lib sent a message from an unknown party %s", routing.From)
	}
	m := &Message{Session: c.sid, Broadcast: routing.IsBroadcast, Kind: MsgTSS, Role: role, Payload: payload}
	if len(routing.To) == 0 {
		return errors.New("tss-lib sent a resharing message without recipients")
	}
	sent := make(map[string]bool, len(c.members))
	for _, pid := range routing.To {
		hk := hex.EncodeToString(pid.Key)
		q, ok := c.byKey[hk]
		if !ok {
			return fmt.Errorf("tss-lib addressed a message to an unknown party %s", pid)
		}
		to := c.keyRole[hk]
		if q == c.self {
			if to == role {
				continue // tss-lib addresses its final ACK to its own party too
			}
			c.enqueueLocal(&Message{Session: c.sid, From: c.self, Broadcast: routing.IsBroadcast, Kind: MsgTSS, Role: role, Payload: payload, local: true, toRole: to})
			continue
		}
		if !sent[q] {
			sent[q] = true
			enqueue(q, m)
		}
	}
	return nil
}

func (c *ceremony) send(ctx context.Context, to string, m *Message) {
	if ctx.Err() != nil {
		return
	}
	if err := c.e.cfg.Transport.Send(ctx, to, m); err != nil && ctx.Err() == nil {
		c.log.Debug("send failed", "to", to, "kind", m.Kind.String(), "err", err)
	}
}

// stopped records why the ceremony's context ended.
func (c *ceremony) stopped(ctx context.Context) {
	switch {
	case c.e.baseCtx.Err() != nil:
		c.fail(ErrEngineClosed)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		culprits, where := c.silent()
		c.fail(fmt.Errorf("%w: %s", context.DeadlineExceeded, where), culprits...)
	default:
		c.fail(ctx.Err())
	}
}

// abortGrace is how long a node keeps processing after a peer said it gave
// up, to blame from first-hand evidence if it arrives.
const abortGrace = 200 * time.Millisecond

// flushBudget bounds how long a finished ceremony keeps sending what it still
// has to send (its last messages and echoes, or its abort notices).
const flushBudget = 2 * time.Second

// runCeremony runs one party of a session to completion: it registers the
// session, starts the party (before any message is given to it), feeds it
// the queued messages in order from this one goroutine, drains out/end in
// their own goroutines, waits for echoes of every broadcast, and returns the
// party's result. Every goroutine it starts has exited when it returns.
func runCeremony[R any](ctx context.Context, c *ceremony, newParty func(out chan<- tss.Message, end chan<- R) tss.Party) (res R, err error) {
	rs, err := runCeremonyParties(ctx, c, partyMaker[R]{role: RoleNone, make: newParty})
	if err != nil {
		return res, err
	}
	return rs[0], nil
}

// partyMaker makes one of this node's tss-lib parties of a ceremony.
type partyMaker[R any] struct {
	role PartyRole
	make func(out chan<- tss.Message, end chan<- R) tss.Party
}

type partyResult[R any] struct {
	i int
	r R
}

// runCeremonyParties is runCeremony for one or more local parties (a node
// in both committees of a resharing runs two); it returns their results in
// the order of makers, once every one of them finished.
func runCeremonyParties[R any](ctx context.Context, c *ceremony, makers ...partyMaker[R]) (res []R, err error) {
	e := c.e
	if err := e.register(c); err != nil {
		return nil, fmt.Errorf("session %s: %w", shortID(c.sid), err)
	}
	defer e.unregister(c)

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.baseCtx, cancel)
	defer stop()
	// Sends use their own context: they must outlive cctx long enough to
	// flush the last echoes and the abort notices (bounded by flushBudget
	// once the inbox loop is over), and stop at once when the engine closes.
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	stopS := context.AfterFunc(e.baseCtx, scancel)
	defer stopS()

	n := len(c.members)
	// out and echoOut can hold everything this party will ever send in the
	// session, so neither tss-lib nor the inbox loop ever waits for the
	// transport.
	out := make(chan tss.Message, len(makers)*n*len(c.spec.types)+8)
	ends := make([]chan R, len(makers))
	c.echoOut = make(chan outbound, (n-1)*(n-2)*len(c.spec.bcasts)+n+1)
	sendErr := make(chan error, 1)
	results := make(chan partyResult[R], len(makers))

	var wg sync.WaitGroup
	wg.Add(1 + len(makers))
	go func() {
		defer wg.Done()
		c.sendLoop(sctx, out, c.echoOut, sendErr)
	}()
	for i := range makers {
		ends[i] = make(chan R, 1)
		go func() {
			defer wg.Done()
			first := true
			for r := range ends[i] {
				if first {
					results <- partyResult[R]{i, r}
					first = false
				}
			}
		}()
	}

	started := time.Now()
	c.log.Info("ceremony starting", "parties", n, "local_parties", len(makers))
	res = make([]R, len(makers))
	c.locals = make([]*localParty, 0, len(makers))
	for i, mk := range makers {
		var p tss.Party
		if perr := safeCall(c.log, func() { p = mk.make(out, ends[i]) }); perr != nil {
			c.fail(perr)
			break
		}
		c.locals = append(c.locals, &localParty{role: mk.role, party: p})
	}
	// Every party exists before any starts (a starting party may send to the
	// other at once), and starts before any message is given to it.
	for _, lp := range c.locals {
		if c.failed != nil {
			break
		}
		var terr *tss.Error
		if perr := safeCall(c.log, func() { terr = lp.party.Start() }); perr != nil {
			c.fail(perr)
		} else if terr != nil {
			c.tssFail(terr)
		}
	}

loop:
	for c.failed == nil {
		if c.tssDone && c.echoesComplete() {
			break
		}
		if cctx.Err() != nil { // a deadline takes precedence over queued messages
			c.stopped(cctx)
			break
		}
		var abort <-chan time.Time
		if c.abortTimer != nil {
			abort = c.abortTimer.C
		}
		select {
		case <-c.notify:
			for _, m := range c.takeQueue() {
				c.handle(m)
				if c.failed != nil {
					break loop
				}
			}
		case r := <-results:
			res[r.i] = r.r
			c.locals[r.i].done = true
			c.tssDone = true
			for _, lp := range c.locals {
				c.tssDone = c.tssDone && lp.done
			}
		case err := <-sendErr:
			c.fail(err)
		case <-abort:
			c.fail(c.peerAbort)
			c.failed.Aborted = []string{c.abortFrom}
		case <-cctx.Done():
			c.stopped(cctx)
		}
	}
	if c.abortTimer != nil {
		c.abortTimer.Stop()
	}
	if c.failed != nil && !errors.Is(c.failed, ErrPeerAborted) && !errors.Is(c.failed, ErrEngineClosed) {
		// Tell the others, after whatever is still queued (echoes are evidence).
		m := &Message{Session: c.sid, Kind: MsgAbort, Payload: abortPayload(c.failed.Error())}
		for _, q := range c.members {
			if q != c.self {
				select {
				case c.echoOut <- outbound{to: q, m: m}:
				default:
				}
			}
		}
	}
	close(out)
	for _, end := range ends {
		close(end)
	}
	close(c.echoOut)
	flush := time.AfterFunc(flushBudget, scancel)
	wg.Wait()
	flush.Stop()
	if c.failed != nil {
		return nil, c.failed
	}
	c.log.Info("ceremony finished", "ms", time.Since(started).Milliseconds())
	return res, nil
}
