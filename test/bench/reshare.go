//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/protocol/baseline"
	"github.com/custos/custos/test/cluster"
)

// The reshare cells (issue: "Reshare of one ECDSA key 2-of-3 → 2-of-3 (refresh) within
// 1.2× of tss-lib's in-process resharing measured in the same run"; "resharing 100 keys
// to a new member completes and shows its progress (say how long it took)"):
//
//   - reshare, a latency cell of the loopback run: cluster = the admin's RefreshKey
//     (POST /v1/admin/keys/{key_id}/refresh, through a random node) of one secp256k1 key
//     of the bench's cluster made for the cell (k-of-n → the same k-of-n, same members),
//     from the call until the reshare request is active (an answer still scheduled is
//     polled with WaitRequest); the key in the answer is checked (same public key and
//     members, a later generation, nothing resharing) after the clock stops. baseline =
//     protocol/baseline's ReshareECDSA: the n old and the n new tss-lib parties in this
//     process, same n and k. Samples alternate like the other latency cells.
//   - reshare_N_to_new_member (N = -member-keys), once and without a baseline: a cluster
//     of its own (the cell changes its membership, so never the shared one; torn down at
//     the end) of -nodes nodes gets N keys of -member-curve, then one more node, started
//     with cluster.join (test/cluster AddNode) and added with the admin's AddMember. The
//     change request is polled every second and its progress (status, phase, keys
//     reshared of the total, time since the AddMember call) printed to stderr whenever it
//     moved, and at least every memberHeartbeat. Reported: the total time (AddMember until
//     the request is active), the time in the joining phase (until the first poll that
//     saw another phase: up to a second late), the keys reshared per second, and whether
//     every key's members (a user's GetKey of each) and the member list include the new
//     node at the end.
const (
	reshareCellName = "reshare"
	targetReshare   = 1.2
	// reshareSampleTimeout bounds one sample of the reshare cell, either side.
	reshareSampleTimeout = 5 * time.Minute

	// maxMemberKeys bounds -member-keys.
	maxMemberKeys = 1000
	// memberMaxNodes: the dev cluster's pre-parameter fixtures have slots for six nodes
	// created in all (internal/devcluster), the added one included.
	memberMaxNodes = 6
	// memberCreateConc keygens run at once while the member cell creates its keys.
	memberCreateConc = 4
	// memberPoll is how often the change request is polled, memberHeartbeat how often its
	// progress line is printed when nothing moved.
	memberPoll      = time.Second
	memberHeartbeat = 10 * time.Second
	// memberJoinTimeout bounds the joining phase; memberPollTimeout one poll;
	// memberPollErrors how many polls in a row may fail before the cell gives up.
	memberJoinTimeout = 3 * time.Minute
	memberPollTimeout = 15 * time.Second
	memberPollErrors  = 10
	// memberVerifyTimeout bounds the final reads of every key and the member list.
	memberVerifyTimeout = 2 * time.Minute
	// memberPhaseJoining is a membership change's first phase (internal/state's
	// PhaseJoining): the new node catches up; then "resharing": keys move.
	memberPhaseJoining = "joining"
)

func memberCellName(o *options) string { return fmt.Sprintf("reshare_%d_to_new_member", o.memberKeys) }

// memberBudgets are the member cell's bounds for creating its keys and for the whole
// change: generous per-key allowances (keygens run memberCreateConc at once, reshares a
// few at once), so that only a stuck cluster reaches them.
func memberBudgets(curve string, keys int) (create, change time.Duration) {
	perKeygen, perReshare := 2*time.Second, 5*time.Second
	if curve == curveSecp256k1 {
		perKeygen, perReshare = 20*time.Second, 30*time.Second
	}
	n := time.Duration(keys)
	return 2*time.Minute + n*perKeygen, memberJoinTimeout + n*perReshare
}

// reshareSide refreshes one secp256k1 key of the bench's cluster.
type reshareSide struct {
	cs  *clusterSide
	key *client.Key
	gen uint32 // the key's generation after the last refresh
}

// newReshareSide creates the cell's key (k-of-n, like the bench's other keys).
func newReshareSide(ctx context.Context, cs *clusterSide) (*reshareSide, error) {
	key, _, err := cs.createKey(ctx, cs.randomEntry(), curveSecp256k1)
	if err != nil {
		return nil, fmt.Errorf("keygen of the key to refresh: %w", err)
	}
	return &reshareSide{cs: cs, key: key, gen: key.Generation}, nil
}

// refresh asks a random node, as the admin, to refresh the key and waits until the
// reshare is active; the key in the answer is checked after the clock stops.
func (s *reshareSide) refresh(ctx context.Context) (time.Duration, error) {
	entry := s.cs.randomEntry()
	a, err := s.cs.c.AdminFor(entry)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, reshareSampleTimeout)
	defer cancel()
	start := time.Now()
	r, err := a.RefreshKey(ctx, s.key.KeyID)
	if err == nil && !client.Final(r.Status) {
		r, err = a.WaitRequest(ctx, r.RequestID, pollInterval, nil)
	}
	took := time.Since(start)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("refresh of key %s through %s: not active within %v: %w", s.key.KeyID, s.cs.c.NodeID(entry), reshareSampleTimeout, err)
		}
		return 0, fmt.Errorf("refresh of key %s through %s: %w", s.key.KeyID, s.cs.c.NodeID(entry), err)
	}
	if err := s.check(r); err != nil {
		return 0, err
	}
	return took, nil
}

// check verifies a refresh's final answer: active, the same public key, threshold and
// members, a later generation, no reshare left running.
func (s *reshareSide) check(r *client.Request) error {
	if r.Status != client.StatusActive || r.Key == nil {
		return requestFailure(r)
	}
	k := r.Key
	switch {
	case k.PublicKey != s.key.PublicKey:
		return fmt.Errorf("refresh %s: public key %s, not %s", r.RequestID, k.PublicKey, s.key.PublicKey)
	case k.Threshold != s.key.Threshold:
		return fmt.Errorf("refresh %s: threshold %d, not %d", r.RequestID, k.Threshold, s.key.Threshold)
	case len(s.key.Members) > 0 && !sameMembers(k.Members, s.key.Members):
		return fmt.Errorf("refresh %s: members %v, not %v", r.RequestID, k.Members, s.key.Members)
	case k.Generation <= s.gen:
		return fmt.Errorf("refresh %s: generation %d, not after %d", r.RequestID, k.Generation, s.gen)
	case k.Resharing != "":
		return fmt.Errorf("refresh %s: active, but the key still shows reshare %s running", r.RequestID, k.Resharing)
	}
	s.gen = k.Generation
	return nil
}

func sameMembers(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// reshareBaseline is one in-process resharing, bounded like the cluster's.
func reshareBaseline(ctx context.Context, base *baseline.Baseline) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, reshareSampleTimeout)
	defer cancel()
	took, err := base.ReshareECDSA(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return 0, fmt.Errorf("in-process resharing not done within %v: %w", reshareSampleTimeout, err)
	}
	return took, err
}

// reshareCell is the reshare row: a refresh through the cluster against tss-lib's
// in-process resharing of the same sizes.
func reshareCell(o *options, base *baseline.Baseline, rs *reshareSide) cellDef {
	kn := fmt.Sprintf("%d-of-%d", o.k, o.nodes)
	return cellDef{
		name: reshareCellName, title: fmt.Sprintf("ECDSA reshare %s → %s (refresh)", kn, kn),
		kind: kindLatency, conc: 1, samples: o.reshareSamples,
		base: func(ctx context.Context) (time.Duration, error) { return reshareBaseline(ctx, base) },
		clu:  rs.refresh,
		baseOp: fmt.Sprintf("protocol/baseline ReshareECDSA: %d old and %d new tss-lib parties in this process (every node runs both), threshold %d → %d, new parties on fixture pre-parameters, until the last new share",
			o.nodes, o.nodes, o.k, o.k),
		cluOp:  "admin RefreshKey of a secp256k1 key (same members and threshold) through a random node, until the reshare request is active",
		target: &target{Metric: "ratio_p50", Op: "<=", Value: targetReshare},
	}
}

// memberReport is the member cell's result (it runs once, without a baseline).
type memberReport struct {
	Name      string `json:"name"`
	Curve     string `json:"curve"`
	Keys      int    `json:"keys"`
	Nodes     int    `json:"nodes"` // before the member was added
	Threshold int    `json:"threshold"`
	NewMember string `json:"new_member,omitempty"`
	// KeygenS is how long creating the keys took (before the change; not a figure of it).
	KeygenS float64 `json:"keygen_s"`
	// Status is the change request's final status ("" when it never ended).
	RequestID string `json:"request_id,omitempty"`
	Status    string `json:"status,omitempty"`
	// TotalS runs from the AddMember call to the poll that saw the request final;
	// JoiningS to the first poll that saw a phase other than joining (both up to
	// memberPoll late); ResharingS is the rest.
	TotalS     float64 `json:"total_s"`
	JoiningS   float64 `json:"joining_s"`
	ResharingS float64 `json:"resharing_s"`
	KeysDone   int     `json:"keys_done"`
	KeysTotal  int     `json:"keys_total"`
	// KeysPerS is KeysDone / ResharingS; KeysPerSTotal KeysDone / TotalS.
	KeysPerS      float64 `json:"keys_per_s"`
	KeysPerSTotal float64 `json:"keys_per_s_total"`
	// KeysWithMember is how many of the keys list the new node among their members at
	// the end (a user's GetKey of each), with the same public key and no reshare running.
	KeysWithMember int    `json:"keys_with_new_member"`
	MemberActive   bool   `json:"member_active"` // GET /v1/admin/members lists it active
	Completed      bool   `json:"completed"`     // active, every key includes it, listed active
	Polls          int    `json:"polls"`
	Error          string `json:"error,omitempty"`
}

// print writes the cell's line.
func (m *memberReport) print(w io.Writer) {
	kn := fmt.Sprintf("%d-of-%d", m.Threshold, m.Nodes)
	fmt.Fprintf(w, "%s (runs once, no baseline; -reps does not apply): %d %s keys %s, %s added: ", m.Name, m.Keys, m.Curve, kn, orDash(m.NewMember))
	if m.Status == "" {
		fmt.Fprintf(w, "the change did not end")
	} else {
		fmt.Fprintf(w, "change %s in %.1f s (joining %.1f s, resharing %.1f s; polled every %v), %d of %d keys reshared, %.2f keys/s in the resharing phase (%.2f over the whole change)",
			m.Status, m.TotalS, m.JoiningS, m.ResharingS, memberPoll, m.KeysDone, m.KeysTotal, m.KeysPerS, m.KeysPerSTotal)
	}
	fmt.Fprintf(w, "; every key's members include %s: %s (%d of %d); listed active: %s; completed: %s (keys created beforehand in %.1f s, not counted)\n",
		orDash(m.NewMember), yesNo(m.KeysWithMember == m.Keys && m.Keys > 0), m.KeysWithMember, m.Keys, yesNo(m.MemberActive), yesNo(m.Completed), m.KeygenS)
	if m.Error != "" {
		fmt.Fprintf(w, "%s: error: %s\n", m.Name, m.Error)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// changeTracker follows a membership change request through its polls.
type changeTracker struct {
	name      string
	start     time.Time // the AddMember call
	joinedAt  time.Time // the first poll out of the joining phase (or final)
	last      string    // the last progress printed, without the time
	lastPrint time.Time
	polls     int
}

// membership returns a request's phase and key counts ("", 0, 0 without any).
func membership(r *client.Request) (phase string, done, total int) {
	if m := r.Membership; m != nil {
		return m.Phase, m.KeysDone, m.KeysTotal
	}
	return "", 0, 0
}

// observe records the request as seen at now and returns the progress line to print:
// "" when nothing moved since the last line and the heartbeat is not due.
func (t *changeTracker) observe(r *client.Request, now time.Time) string {
	t.polls++
	phase, done, total := membership(r)
	if t.joinedAt.IsZero() && (phase != "" && phase != memberPhaseJoining || client.Final(r.Status)) {
		t.joinedAt = now
	}
	state := fmt.Sprintf("%s %s, phase %s, keys %d/%d reshared", r.RequestID, r.Status, orDash(phase), done, total)
	if state == t.last && now.Sub(t.lastPrint) < memberHeartbeat {
		return ""
	}
	t.last, t.lastPrint = state, now
	return fmt.Sprintf("%s: %s, %.1f s elapsed", t.name, state, now.Sub(t.start).Seconds())
}

// finish fills the timing figures of out from the tracker and the end time.
func (t *changeTracker) finish(out *memberReport, r *client.Request, end time.Time) {
	out.Polls = t.polls
	out.RequestID, out.Status = r.RequestID, r.Status
	_, out.KeysDone, out.KeysTotal = membership(r)
	joined := t.joinedAt
	if joined.IsZero() {
		joined = end
	}
	total, joining := end.Sub(t.start), joined.Sub(t.start)
	out.TotalS, out.JoiningS, out.ResharingS = round2(total.Seconds()), round2(joining.Seconds()), round2((total - joining).Seconds())
	if s := (total - joining).Seconds(); s > 0 {
		out.KeysPerS = round2(float64(out.KeysDone) / s)
	}
	if s := total.Seconds(); s > 0 {
		out.KeysPerSTotal = round2(float64(out.KeysDone) / s)
	}
}

// runMemberCell runs the member cell on a cluster of its own and adds it to the report
// (also when it fails, with the error); progress lines go to progress.
func runMemberCell(ctx context.Context, o *options, bin string, rep *report, progress io.Writer, log *slog.Logger) error {
	name := memberCellName(o)
	out := &memberReport{Name: name, Curve: o.memberCurve, Keys: o.memberKeys, Nodes: o.nodes, Threshold: o.k}
	if o.nodes+1 > memberMaxNodes {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s skipped: the dev cluster's fixtures have slots for %d nodes in all, and -nodes %d plus the new member is more", name, memberMaxNodes, o.nodes))
		log.Warn("member cell skipped", "cell", name, "nodes", o.nodes, "max", memberMaxNodes-1)
		return nil
	}
	err := memberCell(ctx, o, bin, out, progress, log)
	if err != nil {
		out.Error = err.Error()
	}
	rep.Member = out
	rep.Targets = append(rep.Targets, targetState{Name: name + ".keys_with_new_member", Actual: float64(out.KeysWithMember), Op: ">=", Value: float64(out.Keys), Met: out.Completed})
	return err
}

func memberCell(ctx context.Context, o *options, bin string, out *memberReport, progress io.Writer, log *slog.Logger) error {
	log.Info("member cell: starting its own cluster", "cell", out.Name, "nodes", o.nodes, "k", o.k)
	c, err := cluster.New(ctx, cluster.Options{Nodes: o.nodes, Threshold: o.k, Binary: bin, KeepDir: o.keep, Extra: clusterExtra(o), Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			log.Info("member cell's cluster directory kept", "dir", c.Dir())
		}
		if err := c.Close(); err != nil {
			log.Warn("closing the member cell's cluster", "err", err)
		}
	}()
	u, err := c.NewUser(ctx, "bench-member", 4*time.Hour)
	if err != nil {
		return err
	}
	createBudget, changeBudget := memberBudgets(o.memberCurve, o.memberKeys)
	log.Info("member cell: creating keys", "keys", o.memberKeys, "curve", o.memberCurve, "concurrency", memberCreateConc, "timeout", createBudget)
	began := time.Now()
	keys, err := createKeys(ctx, u, o.memberCurve, o.k, o.memberKeys, createBudget)
	out.KeygenS = round2(time.Since(began).Seconds())
	if err != nil {
		return err
	}
	log.Info("member cell: keys created", "keys", len(keys), "took", time.Since(began).Round(time.Millisecond))

	_, m, err := c.AddNode(ctx)
	if err != nil {
		return fmt.Errorf("start the new node: %w", err)
	}
	out.NewMember = m.ID
	a := c.Admin()
	cctx, cancel := context.WithTimeout(ctx, changeBudget)
	defer cancel()
	log.Info("member cell: adding the member", "member", m.ID, "timeout", changeBudget)
	t := &changeTracker{name: out.Name, start: time.Now()}
	r, err := a.AddMember(cctx, admin.MemberBody(m))
	if err != nil {
		return fmt.Errorf("AddMember %s: %w", m.ID, err)
	}
	r, end, err := followChange(cctx, a, r, t, changeBudget, progress, log)
	if r != nil {
		t.finish(out, r, end)
	}
	if err != nil {
		return err
	}
	if r.Status != client.StatusActive {
		return fmt.Errorf("membership change %s ended %s: %w", r.RequestID, r.Status, requestFailure(r))
	}

	vctx, vcancel := context.WithTimeout(ctx, memberVerifyTimeout)
	defer vcancel()
	var bad []string
	for _, k := range keys {
		got, err := u.Clients[0].GetKey(vctx, k.KeyID)
		if err != nil {
			return fmt.Errorf("read key %s after the change: %w", k.KeyID, err)
		}
		if slices.Contains(got.Members, m.ID) && got.PublicKey == k.PublicKey && got.Resharing == "" {
			out.KeysWithMember++
		} else if len(bad) < 3 {
			bad = append(bad, fmt.Sprintf("%s: members %v, resharing %q, public key kept %v", k.KeyID, got.Members, got.Resharing, got.PublicKey == k.PublicKey))
		}
	}
	ml, err := a.ListMembers(vctx)
	if err != nil {
		return fmt.Errorf("list members after the change: %w", err)
	}
	for _, mm := range ml.Members {
		if mm.ID == m.ID && mm.Status == api.MemberActive {
			out.MemberActive = true
		}
	}
	out.Completed = out.KeysWithMember == len(keys) && out.MemberActive
	if !out.Completed {
		return fmt.Errorf("after the change %d of %d keys include %s (first misses: %v); listed active: %v", out.KeysWithMember, len(keys), m.ID, bad, out.MemberActive)
	}
	log.Info("member cell done", "cell", out.Name, "total_s", out.TotalS, "joining_s", out.JoiningS, "keys_per_s", out.KeysPerS)
	return nil
}

// followChange polls the change request every memberPoll until it is final, printing its
// progress; it returns the last request seen and when it was seen final.
func followChange(ctx context.Context, a *admin.Admin, r *client.Request, t *changeTracker, budget time.Duration, progress io.Writer, log *slog.Logger) (*client.Request, time.Time, error) {
	fails := 0
	for {
		now := time.Now()
		if line := t.observe(r, now); line != "" {
			fmt.Fprintln(progress, line)
		}
		if client.Final(r.Status) {
			return r, now, nil
		}
		phase, done, total := membership(r)
		if t.joinedAt.IsZero() && now.Sub(t.start) > memberJoinTimeout {
			return r, now, fmt.Errorf("membership change %s still in phase %s after %v (status %s)", r.RequestID, orDash(phase), memberJoinTimeout, r.Status)
		}
		sleepCtx(ctx, memberPoll)
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return r, now, fmt.Errorf("membership change %s not done within %v: last seen %s, phase %s, %d of %d keys reshared", r.RequestID, budget, r.Status, orDash(phase), done, total)
			}
			return r, now, ctx.Err()
		}
		pctx, cancel := context.WithTimeout(ctx, memberPollTimeout)
		next, err := a.GetRequest(pctx, r.RequestID)
		cancel()
		if err != nil {
			if fails++; fails >= memberPollErrors {
				return r, now, fmt.Errorf("polling membership change %s: %d failures in a row, the last: %w", r.RequestID, fails, err)
			}
			log.Warn("polling the membership change failed", "request", r.RequestID, "err", err)
			continue
		}
		fails, r = 0, next
	}
}

// createKeys creates n keys of curve and threshold k through the user's clients (entry
// node i mod N for key i), conc at once, within budget; it stops at the first failure.
func createKeys(ctx context.Context, u *cluster.User, curve string, k, n int, budget time.Duration) ([]*client.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	keys := make([]*client.Key, n)
	var (
		mu    sync.Mutex
		first error
		next  int
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	for range min(memberCreateConc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || ctx.Err() != nil {
					return
				}
				cl := u.Clients[i%len(u.Clients)]
				key, req, err := cl.CreateKey(ctx, curve, k, fmt.Sprintf("bench-member-%d", i), "")
				if err == nil && key == nil {
					var r *client.Request
					if r, err = cl.WaitRequest(ctx, req.RequestID, pollInterval); err == nil {
						if r.Status != client.StatusActive || r.Key == nil {
							err = requestFailure(r)
						}
						key = r.Key
					}
				}
				if err == nil && key.Status != client.StatusActive {
					err = fmt.Errorf("key %s is %s", key.KeyID, key.Status)
				}
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						err = fmt.Errorf("not all %d keys created within %v: %w", n, budget, err)
					}
					fail(fmt.Errorf("create %s key %d of %d: %w", curve, i+1, n, err))
					return
				}
				keys[i] = key
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if slices.Contains(keys, nil) { // the parent context ended
		return nil, fmt.Errorf("create %s keys: %w", curve, context.Cause(ctx))
	}
	return keys, nil
}
