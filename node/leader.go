package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/state"
)

// newID returns prefix + 16 random bytes in hex: URL-safe and unguessable.
func newID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// live reports whether a member is reachable from the leader now.
func (n *Node) live(nodeID string) bool {
	if nodeID == n.cfg.NodeID {
		return true
	}
	pid, ok := n.host.PeerIDOf(nodeID)
	return ok && n.host.Connected(pid)
}

// schedule fills in what only the leader may choose for a keygen, sign or access-key
// request: ids, the committee and the fresh session nonce (tss-lib v2.0.2's own SSID nonce
// is fixed at 0). What the request asks for is read from the signed form, as the FSM
// will read it; the FSM bounds every choice made here.
func (n *Node) schedule(s *state.Submit, origin string) {
	var b state.SubmitBody
	if json.Unmarshal(s.Body, &b) != nil || b.Signed == nil {
		return // the FSM refuses it
	}
	c := state.ParseRequest(b.Signed)
	switch c.Op {
	case state.OpAccessCreate:
		s.Schedule = &state.Schedule{AccessKeyID: newID("ak_")}
	case state.OpKeyCreate:
		_, _, members := n.fsm.Cluster()
		var ids, down []string
		for _, m := range members {
			ids = append(ids, m.ID)
			if !n.live(m.ID) {
				down = append(down, m.ID)
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
	case state.OpKeySign:
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
func (n *Node) pickCommittee(k *state.Key, origin string, avoid []string) ([]string, bool) {
	return chooseCommittee(k.Members, k.Threshold, n.live, []string{n.cfg.NodeID, origin}, avoid, shuffle)
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

func (n *Node) kickLeader() {
	select {
	case n.leaderKick <- struct{}{}:
	default:
	}
}

// leaderLoop, on the leader only, writes the cluster definition once, reschedules failed
// or timed-out sign attempts with a new committee and session, and fails what cannot
// finish, so that no request waits forever.
func (n *Node) leaderLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	inflight := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.leaderKick:
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		if name, _, _ := n.fsm.Cluster(); name == "" {
			n.initCluster(ctx)
			continue
		}
		if !n.fsm.Strict() {
			// A log that predates signed entries: from here on only signed ones.
			n.proposeQuiet(ctx, state.TypeUpgrade, &state.Upgrade{AdminPublicKey: n.adminPub})
			continue
		}
		now := n.now().UnixMilli()
		for _, r := range n.fsm.OpenRequests() {
			key := r.ID + "/" + strconv.Itoa(r.Attempt)
			if inflight[key] {
				continue
			}
			age := time.Duration(now-r.ScheduledAt) * time.Millisecond
			switch r.Kind {
			case state.KindKeygen:
				if age > n.cfg.Ceremony.KeygenTimeout.Duration+5*time.Second {
					inflight[key] = true
					n.spawn(func() {
						n.reportQuiet(ctx, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "ceremony.failed", Detail: "keygen timed out"})
					})
				}
			case state.KindSign:
				timedOut := age > n.cfg.Ceremony.SignTimeout.Duration+2*time.Second
				if !r.Retry && !timedOut {
					continue
				}
				inflight[key] = true
				n.spawn(func() { n.retry(ctx, r, timedOut) })
			}
		}
		if len(inflight) > 4096 {
			clear(inflight)
		}
	}
}

func (n *Node) retry(ctx context.Context, r *state.Request, timedOut bool) {
	detail := "signing timed out"
	var avoid []string
	for _, f := range r.Failures {
		if f.Attempt == r.Attempt {
			detail = f.Detail
			avoid = append(avoid, f.Culprits...)
		}
	}
	if r.Attempt >= state.MaxAttempts {
		n.reportQuiet(ctx, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "ceremony.failed", Detail: fmt.Sprintf("%d attempts failed; last: %s", r.Attempt, detail)})
		return
	}
	if timedOut {
		// Parties that never reported are the likely silent ones.
		for _, m := range r.Committee {
			if !n.live(m) {
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
		n.reportQuiet(ctx, state.TypeFail, &state.Fail{RequestID: r.ID, Code: "cluster.unavailable", Detail: fmt.Sprintf("fewer than %d nodes reachable to retry", k.Threshold)})
		return
	}
	n.reportQuiet(ctx, state.TypeReschedule, &state.Reschedule{RequestID: r.ID, Attempt: r.Attempt, Committee: committee, Nonce: randomBytes(32)})
}

// reportQuiet proposes one of the leader's decisions as its signed report.
func (n *Node) reportQuiet(ctx context.Context, typ string, payload any) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if res, err := n.report(cctx, typ, payload); err != nil {
		n.log.Warn("leader report failed", "type", typ, "err", err)
	} else if !res.OK() {
		n.log.Debug("leader report refused", "type", typ, "code", res.Code, "detail", res.Detail)
	}
}

func (n *Node) proposeQuiet(ctx context.Context, typ string, payload any) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if res, err := n.propose(cctx, typ, payload); err != nil {
		n.log.Warn("leader proposal failed", "type", typ, "err", err)
	} else if !res.OK() {
		n.log.Debug("leader proposal refused", "type", typ, "code", res.Code, "detail", res.Detail)
	}
}

func (n *Node) initCluster(ctx context.Context) {
	ci := &state.ClusterInit{Name: n.cfg.Cluster.Name, Threshold: n.cfg.Cluster.Threshold, Strict: true, AdminPublicKey: n.adminPub}
	for _, m := range n.cfg.Cluster.Members {
		ci.Members = append(ci.Members, state.Member{ID: m.ID, PeerID: m.PeerID, P2PAddrs: m.P2PAddrs, API: m.API})
	}
	n.proposeQuiet(ctx, state.TypeClusterInit, ci)
}
