package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// The clock check (issue 9, finding 6). Stamps never decrease, so one entry stamped in the
// future by a leader whose clock runs ahead (broken NTP is enough) is inherited by every
// later entry, under every later leader, until real time catches up: followers do not act
// on entries stamped more than state.MaxStampSkew (30 s) from their clocks, and fresh client signatures
// look stale. So every node compares its clock with the other voters' (the clock RPC, every
// clockProbeInterval), and judges it (judgeClock): found off — more than clockBound ahead
// of a majority of the voters, or ahead of a voter that answered when no majority vouches
// for it, or behind a majority — it stamps nothing (proposeLocal's stampGuard), reports
// itself not ready, and, as leader, hands leadership over. A new leader stamps nothing
// until it has compared its clock during its leadership. With too few answers to tell,
// nothing changes.

const (
	rpcClock = "clock"

	// clockBound is how far a node's clock may be from a majority of the voters' clocks
	// for it to stamp entries as leader. It is a third of state.MaxStampSkew, the limit
	// beyond which followers refuse to act on an entry, so that a leader whose clock drifts
	// is replaced well before its stamps become unusable; and far above what hosts kept in
	// step by NTP differ by (milliseconds) plus the measurement's error (half the probe's
	// round trip: at most clockProbeTimeout/2).
	clockBound = 10 * time.Second
	// clockProbeInterval is how often every node measures the other voters' clocks; a
	// new leader measures them at once, before its first stamp.
	clockProbeInterval = 2 * time.Second
	// clockProbeTimeout bounds one measurement: slower answers are not counted.
	clockProbeTimeout = 2 * time.Second
	// clockPoll is how often the loop looks for a new leadership of this node.
	clockPoll = 100 * time.Millisecond
	// maxClockRequest bounds the clock RPC's request (it carries nothing today).
	maxClockRequest = 64
)

// clockReply is the clock RPC's answer: the node's wall clock (n.now, with the test-only
// clock offset) in unix milliseconds, the unit of stamps.
type clockReply struct {
	UnixMS int64 `json:"unix_ms"`
}

// handleClock serves the clock RPC.
func (n *Node) handleClock(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	if len(req) > maxClockRequest {
		return nil, fmt.Errorf("clock request of %d bytes, limit %d", len(req), maxClockRequest)
	}
	return json.Marshal(clockReply{UnixMS: n.now().UnixMilli()})
}

// clockVerdict is what one round of measurements says about this node's clock.
type clockVerdict int

const (
	// clockNoEvidence: too few answers to tell, and none behind this clock by more than
	// the bound. Nothing changes.
	clockNoEvidence clockVerdict = iota
	// clockAgree: a majority of the voters (this node included) is within the bound.
	clockAgree
	// clockAhead: this clock runs ahead by more than the bound of a majority of the
	// voters or, when no majority vouches for it, of a voter that answered.
	clockAhead
	// clockBehind: a majority of the voters runs ahead of this clock by more than the
	// bound.
	clockBehind
)

func (v clockVerdict) String() string {
	switch v {
	case clockAgree:
		return "agree"
	case clockAhead:
		return "ahead"
	case clockBehind:
		return "behind"
	}
	return "no_evidence"
}

// clockJudgement is judgeClock's result.
type clockJudgement struct {
	Verdict clockVerdict
	// Lead is how far this clock runs ahead of the median clock of the voters that
	// answered, this node included (negative: behind).
	Lead time.Duration
	// Confirmed is set when a majority of all voters decided the verdict, not only the
	// voters that answered.
	Confirmed bool
	// Answers counts the voters whose clocks were compared, this node included.
	Answers int
}

// judgeClock decides, from the offsets of the other voters that answered (each: its clock
// minus this node's), whether this node's clock is fit to stamp entries. voters counts
// all voters, this node included; this node counts as a voter at offset 0, and voters
// that did not answer are not counted.
//
//   - agree: a majority of the voters is within bound of this clock;
//   - ahead: a majority is behind it by more than bound; or no majority is within bound
//     and a voter that answered is behind it by more than bound — with too few answers
//     to tell who is wrong, the slower clock is preferred, since a stamp ahead is
//     inherited by every later entry and one behind is not;
//   - behind: a majority runs ahead of it by more than bound (its stamps would look old
//     to the nodes that act on them);
//   - otherwise there is no evidence either way.
func judgeClock(voters int, peers []time.Duration, bound time.Duration) clockJudgement {
	all := append([]time.Duration{0}, peers...)
	quorum := voters/2 + 1
	var within, below, above int // clocks within bound, behind this one, ahead of it
	for _, o := range all {
		switch {
		case o < -bound:
			below++
		case o > bound:
			above++
		default:
			within++
		}
	}
	slices.Sort(all)
	j := clockJudgement{Lead: -all[(len(all)-1)/2], Answers: len(all)}
	switch {
	case within >= quorum:
		j.Verdict = clockAgree
	case below >= quorum:
		j.Verdict, j.Confirmed = clockAhead, true
	case above >= quorum:
		j.Verdict, j.Confirmed = clockBehind, true
	case below > 0:
		j.Verdict = clockAhead
	}
	return j
}

// decided reports whether more answers could not change the verdict: a majority of all
// voters decided it.
func (j clockJudgement) decided() bool { return j.Verdict == clockAgree || j.Confirmed }

// fit reports whether a node with this verdict may stamp entries; clockNoEvidence keeps
// what the node knew before.
func (j clockJudgement) fit(before bool) bool {
	switch j.Verdict {
	case clockAgree:
		return true
	case clockAhead, clockBehind:
		return false
	}
	return before
}

// clockAnswer is one voter's measured clock.
type clockAnswer struct {
	ID     raft.ServerID
	Addr   raft.ServerAddress
	Offset time.Duration // its clock minus this node's
}

// estimateOffset is a peer's clock minus this node's, from the RTT midpoint: the peer
// read its clock (theirs) about halfway through the round trip that started at sent (by
// this node's clock).
func estimateOffset(sent time.Time, rtt time.Duration, theirs time.Time) time.Duration {
	return theirs.Sub(sent.Add(rtt / 2))
}

// transferTarget picks where a leader whose clock is off hands leadership: the voter
// that answered whose clock is nearest the median of all the clocks measured (this
// node's included, the lower median with an even count), the slower one on a tie.
func transferTarget(answers []clockAnswer) (clockAnswer, bool) {
	if len(answers) == 0 {
		return clockAnswer{}, false
	}
	offs := []time.Duration{0}
	for _, a := range answers {
		offs = append(offs, a.Offset)
	}
	slices.Sort(offs)
	median := offs[(len(offs)-1)/2]
	dist := func(o time.Duration) time.Duration {
		if d := o - median; d >= 0 {
			return d
		}
		return median - o
	}
	best := answers[0]
	for _, a := range answers[1:] {
		da, db := dist(a.Offset), dist(best.Offset)
		if da < db || (da == db && (a.Offset < best.Offset || (a.Offset == best.Offset && a.ID < best.ID))) {
			best = a
		}
	}
	return best, true
}

// clockCheck is a node's knowledge of its own clock.
type clockCheck struct {
	mu  sync.Mutex
	fit bool
	// last is the last round's judgement that changed or confirmed fit (not
	// clockNoEvidence).
	last clockJudgement
	// checkedTerm is the raft term of the last round that started while this node led:
	// a leader stamps only once its clock has been checked during its leadership.
	checkedTerm uint64

	kick      chan struct{}
	unfit     prometheus.Gauge
	lead      prometheus.Gauge
	stepdowns *prometheus.CounterVec
}

func newClockCheck(reg prometheus.Registerer) *clockCheck {
	c := &clockCheck{
		fit:       true,
		kick:      make(chan struct{}, 1),
		unfit:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_clock_unfit", Help: fmt.Sprintf("1 while this node's clock is found more than %v away from a majority of the voters' clocks: it stamps no entries and does not keep raft leadership. Fix NTP on the host.", clockBound)}),
		lead:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_clock_lead_seconds", Help: "How far this node's clock runs ahead of the median clock of the voters that last answered (negative: behind)."}),
		stepdowns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "custos_clock_stepdowns_total", Help: "Times this node, as raft leader, handed leadership over because its clock was off the voters' clocks (direction: ahead or behind)."}, []string{"direction"}),
	}
	reg.MustRegister(c.unfit, c.lead, c.stepdowns)
	return c
}

func (c *clockCheck) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stampGuard is proposeLocal's gate: the leader stamps nothing until its clock has been
// checked during its leadership, nor while it is found off the voters' clocks. The
// error is ErrUnavailable, so that callers retry, in the end against the next leader.
func (n *Node) stampGuard() error {
	c := n.clock
	if c == nil {
		return nil
	}
	term := n.raft.CurrentTerm()
	c.mu.Lock()
	fit, checked, last := c.fit, c.checkedTerm == term, c.last
	c.mu.Unlock()
	if fit && !checked {
		c.wake()
	}
	return stampRefusal(fit, checked, last)
}

// stampRefusal is stampGuard's decision.
func stampRefusal(fit, checked bool, last clockJudgement) error {
	if !fit {
		return fmt.Errorf("%w: this node's clock is %s; it stamps no entries and hands leadership over", ErrUnavailable, describeClock(last))
	}
	if !checked {
		return fmt.Errorf("%w: the new leader is checking its clock against the other voters' before it stamps entries", ErrUnavailable)
	}
	return nil
}

// clockNotReady is NotReady's clock reason, if any.
func (n *Node) clockNotReady() []string {
	c := n.clock
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fit {
		return nil
	}
	return []string{fmt.Sprintf("this node's clock is %s: it stamps no entries and does not keep raft leadership; fix NTP on this host", describeClock(c.last))}
}

func describeClock(j clockJudgement) string {
	lead := j.Lead.Round(time.Millisecond)
	switch {
	case j.Verdict == clockBehind:
		return fmt.Sprintf("%v behind a majority of the voters' clocks (more than %v)", -lead, clockBound)
	case j.Verdict == clockAhead && j.Confirmed:
		return fmt.Sprintf("%v ahead of a majority of the voters' clocks (more than %v)", lead, clockBound)
	case j.Verdict == clockAhead:
		return fmt.Sprintf("%v ahead of the clock of a voter that answered, and no majority vouches for it (bound %v)", lead, clockBound)
	}
	return "in agreement with the voters' clocks"
}

// clockLoop measures the other voters' clocks every clockProbeInterval, and at once when
// this node becomes leader; a leader found off hands leadership over.
func (n *Node) clockLoop(ctx context.Context) {
	t := time.NewTicker(clockPoll)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.clock.kick:
		}
		leader := n.raft.State() == raft.Leader
		term := n.raft.CurrentTerm()
		n.clock.mu.Lock()
		unchecked := n.clock.checkedTerm != term
		n.clock.mu.Unlock()
		if time.Since(last) < clockProbeInterval && !(leader && unchecked) {
			continue
		}
		last = time.Now()
		n.clockRound(ctx, leader, term)
	}
}

// clockRound runs one round: measure, judge, record, and hand leadership over when this
// node leads with a clock found off.
func (n *Node) clockRound(ctx context.Context, leader bool, term uint64) {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	voters := 0
	var peers []raft.Server
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID != raft.ServerID(n.cfg.NodeID) {
			peers = append(peers, s)
		}
	}
	answers := n.measureClocks(ctx, voters, peers)
	if ctx.Err() != nil {
		return
	}
	offs := make([]time.Duration, len(answers))
	for i, a := range answers {
		offs[i] = a.Offset
	}
	j := judgeClock(voters, offs, clockBound)

	c := n.clock
	c.mu.Lock()
	was := c.fit
	c.fit = j.fit(was)
	if j.Verdict != clockNoEvidence {
		c.last = j
	}
	if leader {
		c.checkedTerm = term
	}
	fit := c.fit
	c.mu.Unlock()

	if j.Answers > 1 {
		c.lead.Set(j.Lead.Seconds())
	}
	if fit {
		c.unfit.Set(0)
	} else {
		c.unfit.Set(1)
	}
	switch {
	case was && !fit:
		n.log.Error("this node's clock is off the other voters' clocks: fix NTP on this host; until then it stamps no entries and does not keep raft leadership",
			"clock", describeClock(j), "lead", j.Lead.String(), "bound", clockBound.String(), "voters_answered", j.Answers, "voters", voters)
	case !was && fit:
		n.log.Info("this node's clock agrees with the other voters' clocks again", "lead", j.Lead.String(), "voters_answered", j.Answers)
	}
	if !fit && leader && n.raft.State() == raft.Leader {
		n.handOverLeadership(answers)
	}
}

// measureClocks asks every other voter for its time, in parallel, and returns the
// answers that came within clockProbeTimeout; it stops early once a majority of the
// voters has decided the verdict. Unreachable voters and voters without the clock RPC
// (older versions) are not counted.
func (n *Node) measureClocks(ctx context.Context, voters int, peers []raft.Server) []clockAnswer {
	if len(peers) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, clockProbeTimeout)
	defer cancel()
	type result struct {
		a   clockAnswer
		err error
	}
	ch := make(chan result, len(peers))
	for _, s := range peers {
		go func() {
			off, err := n.measureClock(ctx, s)
			ch <- result{clockAnswer{ID: s.ID, Addr: s.Address, Offset: off}, err}
		}()
	}
	var answers []clockAnswer
	var offs []time.Duration
	for range peers {
		r := <-ch
		if r.err != nil {
			if ctx.Err() == nil {
				n.log.Debug("clock probe failed", "peer", string(r.a.ID), "err", r.err)
			}
			continue
		}
		answers = append(answers, r.a)
		offs = append(offs, r.a.Offset)
		if judgeClock(voters, offs, clockBound).decided() {
			break
		}
	}
	slices.SortFunc(answers, func(a, b clockAnswer) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return answers
}

// measureClock asks one voter for its time and returns its offset from this node's clock.
func (n *Node) measureClock(ctx context.Context, s raft.Server) (time.Duration, error) {
	pid, err := peer.Decode(string(s.Address))
	if err != nil {
		return 0, err
	}
	return n.offsetOf(func() ([]byte, error) { return n.host.Call(ctx, pid, rpcClock, nil) })
}

// offsetOf makes one clock call and returns the answering clock minus this node's.
func (n *Node) offsetOf(call func() ([]byte, error)) (time.Duration, error) {
	sent := n.now()
	out, err := call()
	// Both readings come from n.now, whose monotonic reading is shifted by the clock
	// offset too: time.Since(sent) would be off by the offset.
	rtt := n.now().Sub(sent)
	if err != nil {
		return 0, err
	}
	if rtt < 0 || rtt > clockProbeTimeout {
		return 0, fmt.Errorf("round trip of %v", rtt)
	}
	var r clockReply
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("clock answer: %w", err)
	}
	if r.UnixMS <= 0 {
		return 0, errors.New("clock answer without a time")
	}
	return estimateOffset(sent, rtt, time.UnixMilli(r.UnixMS)), nil
}

// handOverLeadership transfers raft leadership away from this node, to the voter whose
// clock is nearest the others' when one answered, else to raft's choice.
func (n *Node) handOverLeadership(answers []clockAnswer) {
	c := n.clock
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	c.stepdowns.WithLabelValues(last.Verdict.String()).Inc()
	var err error
	if tgt, ok := transferTarget(answers); ok {
		n.log.Error("handing raft leadership over because this node's clock is off: fix NTP on this host",
			"clock", describeClock(last), "to", string(tgt.ID), "its_offset", tgt.Offset.String())
		if err = n.raft.LeadershipTransferToServer(tgt.ID, tgt.Addr).Error(); err == nil {
			return
		}
		n.log.Warn("leadership transfer to the chosen voter failed; letting raft choose", "to", string(tgt.ID), "err", err)
	} else {
		n.log.Error("handing raft leadership over because this node's clock is off: fix NTP on this host", "clock", describeClock(last))
	}
	if err = n.raft.LeadershipTransfer().Error(); err != nil {
		n.log.Warn("leadership transfer failed; retrying at the next clock check", "err", err)
	}
}
