//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Kind names a fault.
type Kind string

// The faults the harness injects.
const (
	KillLeader            Kind = "kill-leader"         // kill -9 the raft leader, restart it on heal
	KillMidSign           Kind = "kill-mid-sign"       // kill -9 a follower while it runs a ceremony
	KillMidKeygen         Kind = "kill-mid-keygen"     // start an ECDSA keygen, kill -9 a follower during it
	IsolateFollower       Kind = "isolate-follower"    // two-way partition of one follower
	IsolateLeader         Kind = "isolate-leader"      // two-way partition of the leader
	CutLeaderOut          Kind = "cut-leader-outbound" // one-way: the leader's bytes never reach the others
	SlowLinks             Kind = "slow-links"          // every link: 80 ms delay, 40 ms jitter, 256 KiB/s
	ResetLinks            Kind = "reset-links"         // every peer connection reset (RST) every 3 s
	DiskWriteFaults       Kind = "disk-write-faults"   // a follower's keystore writes fail (Pebble vfs)
	FreezeFollower        Kind = "freeze-follower"     // SIGSTOP a follower, SIGCONT on heal
	FreezeLeader          Kind = "freeze-leader"       // SIGSTOP the leader, SIGCONT on heal
	slowDelay                  = 80 * time.Millisecond
	slowJitter                 = 40 * time.Millisecond
	slowBandwidth              = 256 << 10
	resetEvery                 = 3 * time.Second
	keygenKillDelay            = 1500 * time.Millisecond
	readyAfterHealTimeout      = 2 * time.Minute
)

// DefaultSchedule is every fault once.
func DefaultSchedule() []Kind {
	return []Kind{KillLeader, IsolateFollower, SlowLinks, FreezeFollower, KillMidSign, CutLeaderOut,
		DiskWriteFaults, IsolateLeader, ResetLinks, KillMidKeygen, FreezeLeader}
}

// ShortSchedule is the scenario `make test` runs: one of each class (crash, partition of
// the leader, hung node, disk).
func ShortSchedule() []Kind {
	return []Kind{KillLeader, IsolateLeader, FreezeFollower, DiskWriteFaults}
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind Kind   `json:"kind"`
	Node string `json:"node,omitempty"` // the node it hit; empty for link-wide faults
	// Minority is true when Node was cut off from the majority (it must sign nothing and
	// answer 503).
	Minority bool      `json:"minority"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`   // heal began
	Ready    time.Time `json:"ready"` // every node ready again
	Note     string    `json:"note,omitempty"`
	node     int
}

type faultSpec struct {
	// apply injects the fault and returns its heal.
	apply func(ctx context.Context, h *harness, f *FaultRecord) (heal func(ctx context.Context) error, err error)
}

var faultSpecs = map[Kind]faultSpec{
	KillLeader:      {apply: killNode(true, false)},
	KillMidSign:     {apply: killNode(false, true)},
	KillMidKeygen:   {apply: killMidKeygen},
	IsolateFollower: {apply: isolate(false, true, true)},
	IsolateLeader:   {apply: isolate(true, true, true)},
	CutLeaderOut:    {apply: isolate(true, true, false)},
	SlowLinks:       {apply: slowLinks},
	ResetLinks:      {apply: resetLinks},
	DiskWriteFaults: {apply: diskFaults},
	FreezeFollower:  {apply: freeze(false)},
	FreezeLeader:    {apply: freeze(true)},
}

// target picks the leader or a random follower (-1 when there is no leader to ask).
func (h *harness) target(ctx context.Context, leader bool) (int, error) {
	var l int
	var err error
	for range 50 {
		if l, err = h.leader(ctx); err == nil {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	if err != nil {
		return -1, err
	}
	if leader {
		return l, nil
	}
	for {
		if i := h.intn(h.c.N()); i != l {
			return i, nil
		}
	}
}

// leader asks every running node in turn for the leader.
func (h *harness) leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range h.c.N() {
		ds, err := h.debugState(ctx, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if j := h.c.Index(ds.Leader); j >= 0 {
			return j, nil
		}
	}
	return -1, fmt.Errorf("chaos: no leader: %w", errors.Join(errs...))
}

func (h *harness) restartFn(i int) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if h.c.Running(i) {
			return nil
		}
		h.faultMu.Lock()
		h.restarted[i] = true
		h.faultMu.Unlock()
		return h.c.Start(i)
	}
}

func (h *harness) kill(i int) error {
	h.faultMu.Lock()
	h.expectedExit[i] = true
	h.faultMu.Unlock()
	return h.c.Kill(i)
}

func killNode(leader, busy bool) func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	return func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
		i, err := h.target(ctx, leader)
		if err != nil {
			return nil, err
		}
		if busy {
			// Prefer a follower that is in a ceremony right now (mid-signing).
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				found := false
				for j := range h.c.N() {
					if ds, err := h.debugState(ctx, j); err == nil && ds.Ceremonies > 0 && j != h.c.Index(ds.Leader) {
						i, found = j, true
						f.Note = fmt.Sprintf("%d ceremonies running on it", ds.Ceremonies)
						break
					}
				}
				if found {
					break
				}
				sleepCtx(ctx, 50*time.Millisecond)
			}
		}
		f.node = i
		if err := h.kill(i); err != nil {
			return nil, err
		}
		return h.restartFn(i), nil
	}
}

func killMidKeygen(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	i, err := h.target(ctx, false)
	if err != nil {
		return nil, err
	}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		rec := h.keygen(context.WithoutCancel(ctx), "secp256k1", "mid-keygen")
		h.faultMu.Lock()
		f.Note = fmt.Sprintf("keygen ended %s %s after %.1f s", rec.Outcome, rec.Code, rec.End.Sub(rec.Start).Seconds())
		h.faultMu.Unlock()
	}()
	sleepCtx(ctx, keygenKillDelay)
	f.node = i
	if err := h.kill(i); err != nil {
		return nil, err
	}
	return h.restartFn(i), nil
}

func isolate(leader, out, in bool) func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	return func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
		i, err := h.target(ctx, leader)
		if err != nil {
			return nil, err
		}
		f.node, f.Minority = i, true
		if err := h.c.Isolate(i, out, in, true); err != nil {
			return nil, err
		}
		// A client that only knows the cut-off node keeps asking it for signatures: it
		// must get 503s with a clear code, never a signature.
		pctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.probeMinority(pctx, i)
		}()
		return func(context.Context) error {
			stop()
			<-done
			return h.c.Isolate(i, out, in, false)
		}, nil
	}
}

func slowLinks(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	f.node = -1
	for _, p := range h.c.Proxies() {
		if err := p.SetDelay(slowDelay); err != nil {
			return nil, err
		}
		if err := p.SetJitter(slowJitter); err != nil {
			return nil, err
		}
		if err := p.SetBandwidth(slowBandwidth); err != nil {
			return nil, err
		}
	}
	return func(context.Context) error {
		for _, p := range h.c.Proxies() {
			if err := p.SetDelay(0); err != nil {
				return err
			}
		}
		h.c.HealAll()
		return nil
	}, nil
}

func resetLinks(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	f.node = -1
	rctx, stop := context.WithCancel(ctx)
	done := make(chan int)
	go func() {
		resets := 0
		for {
			for _, p := range h.c.Proxies() {
				resets += p.Reset()
			}
			if !sleepCtx(rctx, resetEvery) {
				done <- resets
				return
			}
		}
	}()
	return func(context.Context) error {
		stop()
		n := <-done
		h.faultMu.Lock()
		f.Note = fmt.Sprintf("%d connections reset", n)
		h.faultMu.Unlock()
		return nil
	}, nil
}

func diskFaults(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	i, err := h.target(ctx, false)
	if err != nil {
		return nil, err
	}
	f.node = i
	file := h.faultFiles[i]
	if err := os.WriteFile(file, []byte("fail keystore writes\n"), 0o600); err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	// A node whose keystore fails stops by design (fail-stop); that exit is expected.
	h.faultMu.Lock()
	h.expectedExit[i] = true
	h.faultMu.Unlock()
	return func(ctx context.Context) error {
		if err := os.Remove(file); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		// A node whose keystore failed is on its way out (it finishes its shutdown
		// first); one whose keystore is fine stays.
		stopped := false
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); sleepCtx(ctx, 200*time.Millisecond) {
			if !h.c.Running(i) {
				stopped = true
				break
			}
			if ds, err := h.debugState(ctx, i); err == nil && ds.Keystore == "ok" {
				break
			}
		}
		h.faultMu.Lock()
		if stopped {
			f.Note = "the node stopped on its failed keystore (fail-stop) and was restarted"
		} else {
			f.Note = "the node kept running (no keystore write during the fault)"
		}
		h.faultMu.Unlock()
		if stopped {
			// Reap it through the harness so that Start sees it gone.
			_ = h.c.Kill(i)
		}
		return h.restartFn(i)(ctx)
	}, nil
}

func freeze(leader bool) func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
	return func(ctx context.Context, h *harness, f *FaultRecord) (func(context.Context) error, error) {
		i, err := h.target(ctx, leader)
		if err != nil {
			return nil, err
		}
		f.node = i
		if err := h.c.Freeze(i, true); err != nil {
			return nil, err
		}
		return func(context.Context) error { return h.c.Freeze(i, false) }, nil
	}
}

// runFaults runs the schedule: warm-up, then each fault for Hold, heal, wait until every
// node is ready, settle.
func (h *harness) runFaults(ctx context.Context) error {
	if !sleepCtx(ctx, h.cfg.Warmup) {
		return ctx.Err()
	}
	for _, k := range h.cfg.Faults {
		if err := h.checkExits(); err != nil {
			return err
		}
		f := &FaultRecord{Kind: k, Start: time.Now(), node: -1}
		heal, err := faultSpecs[k].apply(ctx, h, f)
		if err != nil {
			return fmt.Errorf("chaos: inject %s: %w", k, err)
		}
		if f.node >= 0 {
			f.Node = h.c.NodeID(f.node)
		}
		h.faultMu.Lock()
		h.faults = append(h.faults, f)
		h.faultMu.Unlock()
		h.log.Info("fault injected", "kind", k, "node", f.Node)
		sleepCtx(ctx, h.cfg.Hold)
		f.End = time.Now()
		if err := heal(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("chaos: heal %s: %w", k, err)
		}
		if err := h.waitAllReady(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("chaos: after %s: %w", k, err)
		}
		f.Ready = time.Now()
		h.log.Info("fault healed", "kind", k, "node", f.Node, "recovery_s", f.Ready.Sub(f.End).Seconds(), "note", f.Note)
		if !sleepCtx(ctx, h.cfg.Settle) {
			return ctx.Err()
		}
	}
	return nil
}

// checkExits reports a node that exited when the harness did not make it.
func (h *harness) checkExits() error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	for i := range h.c.N() {
		if !h.c.Running(i) && !h.expectedExit[i] {
			return fmt.Errorf("chaos: %s exited on its own (crash?):\n%s", h.c.NodeID(i), h.c.LogTail(i, 40))
		}
	}
	for i := range h.expectedExit {
		if h.c.Running(i) {
			delete(h.expectedExit, i)
		}
	}
	return nil
}

// waitAllReady restarts any node the harness stopped and waits for every /readyz.
func (h *harness) waitAllReady(ctx context.Context) error {
	for i := range h.c.N() {
		if err := h.checkExits(); err != nil {
			return err
		}
		if !h.c.Running(i) {
			if err := h.restartFn(i)(ctx); err != nil {
				return err
			}
		}
	}
	rctx, cancel := context.WithTimeout(ctx, readyAfterHealTimeout)
	defer cancel()
	all := make([]int, h.c.N())
	for i := range all {
		all[i] = i
	}
	return h.c.WaitReady(rctx, all...)
}

// healAll removes every fault left (after an interrupted schedule) and waits for the
// cluster.
func (h *harness) healAll(ctx context.Context) error {
	h.c.HealAll()
	for _, p := range h.c.Proxies() {
		_ = p.SetDelay(0)
	}
	for i, ff := range h.faultFiles {
		_ = os.Remove(ff)
		if h.c.Running(i) {
			_ = h.c.Freeze(i, false)
		}
	}
	return h.waitAllReady(ctx)
}

// probeMinority sends one-attempt sign requests to node i until ctx ends (the partition
// heals), one after the other, starting once the partition has had minorityGrace to take
// effect.
func (h *harness) probeMinority(ctx context.Context, i int) {
	if !sleepCtx(ctx, minorityGrace) {
		return
	}
	for ctx.Err() == nil {
		k, ok := h.pickKey(h.intn(2) == 0)
		if !ok {
			return
		}
		rec := &Record{Op: OpProbeMinority, Curve: k.Curve, KeyID: k.ID, Idem: newIdem(), Start: time.Now(), Message: h.bytes(32)}
		at := Attempt{Node: i, Start: time.Now()}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AttemptTimeout)
		r, err := h.main.Clients[i].Sign(actx, k.ID, rec.Message, "", rec.Idem)
		cancel()
		at.Took = time.Since(at.Start)
		h.classify(rec, &at, r, nil, err)
		rec.Attempts = append(rec.Attempts, at)
		if rec.Outcome == "" {
			rec.Outcome = OutcomeTimeout
		}
		rec.End = time.Now()
		h.addRecord(rec)
		sleepCtx(ctx, 200*time.Millisecond)
	}
}
