//go:build linux

package chaos

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node"
	"github.com/custos/custos/node/client"
)

// Leak bounds: a surviving process may end with at most this many more goroutines and
// descriptors than it had when idle before the load (connections and pools vary a little;
// a leak per request grows by thousands over a run).
const (
	goroutineSlack = 150
	fdSlack        = 40
	// minorityGrace is how long after a partition starts a request to the cut-off node
	// may still succeed (it may have been committed before the cut).
	minorityGrace = 2 * time.Second
	// settleTimeout bounds the wait for acknowledged requests still running after the
	// load (a keygen's retries: up to three attempts of the keygen timeout).
	settleTimeout = 4 * time.Minute
	// maxAuditEntries bounds how much of the audit log the check reads.
	maxAuditEntries = 2_000_000
)

// Invariant is one checked promise.
type Invariant struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail"`
	Errors []string `json:"errors,omitempty"`
}

func (h *harness) check(ctx context.Context) *Report {
	h.log.Info("load over; resending unanswered requests")
	h.resolve(ctx)
	h.log.Info("checking invariants", "resolved", h.resolved, "awaited", h.awaited)
	recs := h.snapshotRecords()
	rep := h.summarise(recs)
	add := func(name string, detail string, errs []string) {
		if len(errs) > 20 {
			errs = append(errs[:20], fmt.Sprintf("… and %d more", len(errs)-20))
		}
		rep.Invariants = append(rep.Invariants, Invariant{Name: name, OK: len(errs) == 0, Detail: detail, Errors: errs})
	}
	keys, err := h.keyIndex(ctx)

	// 1. Every acknowledged signature verifies.
	var errs []string
	if err != nil {
		// Without the key list nothing below can be checked: say so, never pass vacuously.
		errs = append(errs, err.Error())
	}
	verified := 0
	for _, r := range recs {
		if r.Signature == nil {
			continue
		}
		k, ok := keys[r.KeyID]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: key %s unknown", r.RequestID, r.KeyID))
			continue
		}
		if err := verify(k, r); err != nil {
			errs = append(errs, fmt.Sprintf("%s (%s): %v", r.RequestID, r.Op, err))
			continue
		}
		verified++
	}
	add("1 acknowledged signatures verify", fmt.Sprintf("%d signatures verified", verified), errs)

	// 2. One idempotency key: one request, one signature; one request: one idempotency key.
	errs = nil
	byReq := map[string]string{}
	for _, r := range recs {
		ids := map[string]bool{}
		for _, a := range r.Attempts {
			if a.RequestID != "" {
				ids[a.RequestID] = true
			}
		}
		if len(ids) > 1 {
			errs = append(errs, fmt.Sprintf("idempotency key %s answered with %d requests", r.Idem, len(ids)))
		}
		for id := range ids {
			if other, ok := byReq[id]; ok && other != r.Idem {
				errs = append(errs, fmt.Sprintf("request %s answered two idempotency keys", id))
			}
			byReq[id] = r.Idem
		}
	}
	signedIDs, sigErrs := h.auditSigned(ctx)
	errs = append(errs, sigErrs...)
	for _, r := range recs {
		if r.Signature != nil && r.RequestID != "" && !signedIDs[r.RequestID] {
			errs = append(errs, fmt.Sprintf("request %s returned a signature the audit log does not record", r.RequestID))
		}
	}
	add("2 no idempotency key or nonce produced two signatures", fmt.Sprintf("%d requests, %d signed in the audit log, each once", len(byReq), len(signedIDs)), errs)

	// 3. Nothing refused, blocked or unlogged was signed.
	errs = nil
	refused := 0
	for _, r := range recs {
		if r.Op == OpRefused {
			refused++
			if r.Outcome != OutcomeRefused && r.Outcome != OutcomeTimeout || r.Signature != nil || r.RequestID != "" {
				errs = append(errs, fmt.Sprintf("read-only user's sign %s ended %s %s request %q", r.Idem, r.Outcome, r.Code, r.RequestID))
			}
		}
	}
	for id := range signedIDs {
		if _, ok := byReq[id]; !ok {
			errs = append(errs, fmt.Sprintf("the audit log records signature %s for no request a client sent", id))
		}
	}
	add("3 no signature for a refused, blocked or unlogged request", fmt.Sprintf("%d refused requests, none signed; every signed request was sent by a client", refused), errs)

	// 4. A minority signed nothing and answered 503.
	errs = nil
	minorityAttempts := 0
	for _, f := range h.faultsCopy() {
		if !f.Minority {
			continue
		}
		for _, r := range recs {
			for _, a := range r.Attempts {
				// Attempts that began once the cut had taken effect and were answered
				// before it healed (one still waiting at the heal may then commit).
				if a.Node != f.node || a.Start.Before(f.Start.Add(minorityGrace)) || a.Start.Add(a.Took).After(f.End) {
					continue
				}
				minorityAttempts++
				if a.Status == client.StatusSigned || a.Status == client.StatusActive {
					if r.Op == OpKeygen || !signedBefore(r, f.Start) {
						errs = append(errs, fmt.Sprintf("%s (cut off by %s) answered %s for %s", f.Node, f.Kind, a.Status, r.Idem))
					}
					continue
				}
				if r.Op == OpRefused && a.HTTP >= 400 && a.HTTP < 500 {
					continue // refused before anything is replicated: fine anywhere
				}
				if a.HTTP != 503 || a.Code == "" {
					errs = append(errs, fmt.Sprintf("%s (cut off by %s) answered HTTP %d %q %s after %v", f.Node, f.Kind, a.HTTP, a.Code, a.Err, a.Took.Round(time.Millisecond)))
				}
			}
		}
	}
	add("4 a minority signs nothing and answers 503", fmt.Sprintf("%d attempts on cut-off nodes", minorityAttempts), errs)

	// 5 and 6. Active keys have a share on every node and sign; no keygen half done.
	errs = h.checkShares(ctx, recs, keys)
	add("5+6 active keys on all nodes and signing; keygens all or nothing", fmt.Sprintf("%d keys", len(keys)), errs)

	// 7. Same state hash and audit head at the same index.
	cps, err := h.converged(ctx)
	errs = nil
	if err != nil {
		errs = append(errs, err.Error())
	}
	add("7 state hash and audit head equal on all nodes", cps, errs)

	// 8. No leaks, no crashes.
	errs = h.crashes()
	final := h.health(ctx)
	detail := []string{}
	h.faultMu.Lock()
	for i, b := range h.baseline {
		f := final[i]
		if h.restarted[i] || b.PID != f.PID {
			detail = append(detail, fmt.Sprintf("%s restarted", h.c.NodeID(i)))
			continue
		}
		detail = append(detail, fmt.Sprintf("%s goroutines %d→%d fds %d→%d", h.c.NodeID(i), b.Goroutines, f.Goroutines, b.OpenFDs, f.OpenFDs))
		if f.Goroutines < 0 || f.Goroutines > b.Goroutines+goroutineSlack || f.OpenFDs > b.OpenFDs+fdSlack {
			errs = append(errs, fmt.Sprintf("%s: goroutines %d→%d, fds %d→%d", h.c.NodeID(i), b.Goroutines, f.Goroutines, b.OpenFDs, f.OpenFDs))
		}
	}
	h.faultMu.Unlock()
	add("8 no goroutine or fd leak, no crash", strings.Join(detail, "; "), errs)

	// The proxies are still the only path between the nodes after all the restarts.
	errs = nil
	conns, err := h.c.VerifyProxied()
	if err != nil {
		errs = append(errs, err.Error())
	}
	proxied := 0
	for _, nc := range conns {
		proxied += nc.Inbound + nc.Outbound
	}
	add("every peer connection crosses a fault proxy", fmt.Sprintf("%d proxied peer connections, none direct (QUIC off, per-peer dial addresses)", proxied), errs)

	// Availability and answer-time targets.
	errs = nil
	if rep.NoFault.Requests > 0 && rep.NoFault.Availability < 0.98 {
		errs = append(errs, fmt.Sprintf("no-fault availability %.3f < 0.98", rep.NoFault.Availability))
	}
	if rep.DuringFaults.Requests > 0 && rep.DuringFaults.Availability < 0.80 {
		errs = append(errs, fmt.Sprintf("availability during faults %.3f < 0.80", rep.DuringFaults.Availability))
	}
	for _, r := range recs {
		if d := r.End.Sub(r.Start); d > RequestBudget+AttemptTimeout/3 {
			errs = append(errs, fmt.Sprintf("%s took %v to end (%s)", r.Idem, d.Round(time.Second), r.Code))
		}
	}
	add("availability ≥98% without faults, ≥80% during faults, every failure answered within 60 s",
		fmt.Sprintf("%.1f%% / %.1f%%", 100*rep.NoFault.Availability, 100*rep.DuringFaults.Availability), errs)
	for _, inv := range rep.Invariants {
		if !inv.OK {
			rep.Failures = append(rep.Failures, inv.Name+": "+strings.Join(inv.Errors, "; "))
		}
	}
	return rep
}

// resolve does what a client does with a request it never got an answer for: sends it
// again, same body and idempotency key, on the healed cluster. A request that reached the
// log answers with its id (and its result); one that never did is created now.
func (h *harness) resolve(ctx context.Context) {
	for _, r := range h.snapshotRecords() {
		// A probe of a cut-off node that got a 503 may still have been committed after
		// the heal (its forward was held in the partition): a client learns that the
		// same way, by sending it again.
		if r.RequestID != "" || r.Op == OpRefused || r.Outcome == OutcomeRefused || r.Outcome == OutcomeFailed && r.Op != OpProbeMinority {
			continue
		}
		h.resolved++
		saved := *r
		r.Start = time.Now()
		switch r.Op {
		case OpKeygen:
			h.retry(ctx, r, h.main, func(actx context.Context, cl *client.Client) (*client.Request, *client.Key, error) {
				k, q, err := cl.CreateKey(actx, r.Curve, h.cfg.Threshold, r.Label, r.Idem)
				return q, k, err
			})
		default:
			h.retry(ctx, r, h.main, func(actx context.Context, cl *client.Client) (*client.Request, *client.Key, error) {
				q, err := cl.Sign(actx, r.KeyID, r.Message, r.Path, r.Idem)
				return q, nil, err
			})
		}
		// Keep the original timing and outcome for the availability figures.
		r.Start, r.End, r.Outcome, r.Code = saved.Start, saved.End, saved.Outcome, saved.Code
	}
	// Acknowledged requests still running (a keygen retried after a crash) are awaited,
	// as a client polling GET /v1/requests would.
	wctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	for _, r := range h.snapshotRecords() {
		if r.RequestID == "" || r.Outcome != OutcomeTimeout {
			continue
		}
		for i := 0; wctx.Err() == nil; i = (i + 1) % h.c.N() {
			q, err := h.main.Clients[i].WaitRequest(wctx, r.RequestID, 500*time.Millisecond)
			if err != nil {
				sleepCtx(wctx, 500*time.Millisecond)
				continue
			}
			h.awaited++
			r.FinalStatus = q.Status
			if q.Signature != nil {
				r.Signature = q.Signature
			}
			if q.Key != nil {
				r.Key = q.Key
			}
			break
		}
	}
}

// signedBefore reports whether an earlier attempt of r had already got the signature
// before t (a replay of a finished request is not a new signature).
func signedBefore(r *Record, t time.Time) bool {
	for _, a := range r.Attempts {
		if a.Start.Before(t) && a.Status == client.StatusSigned {
			return true
		}
	}
	return false
}

func (h *harness) faultsCopy() []FaultRecord {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	out := make([]FaultRecord, len(h.faults))
	for i, f := range h.faults {
		out[i] = *f
	}
	return out
}

// keyIndex lists the main user's keys (from the first node that answers).
func (h *harness) keyIndex(ctx context.Context) (map[string]client.Key, error) {
	var errs []error
	for i := range h.c.N() {
		ks, err := h.main.Clients[i].ListKeys(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out := make(map[string]client.Key, len(ks))
		for _, k := range ks {
			out[k.KeyID] = k
		}
		return out, nil
	}
	return map[string]client.Key{}, fmt.Errorf("list keys on every node: %w", errors.Join(errs...))
}

func verify(k client.Key, r *Record) error {
	pubHex := k.PublicKey
	if k.Curve == "ed25519" {
		pub, err := hex.DecodeString(pubHex)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("bad public key")
		}
		sig, err := hex.DecodeString(r.Signature.Signature)
		if err != nil {
			return err
		}
		if !ed25519.Verify(pub, r.Message, sig) {
			return errors.New("Ed25519 signature does not verify")
		}
		return nil
	}
	if r.Path != "" {
		var err error
		if pubHex, err = derive(k, r.Path); err != nil {
			return err
		}
	}
	pb, err := hex.DecodeString(pubHex)
	if err != nil {
		return err
	}
	pub, err := btcec.ParsePubKey(pb)
	if err != nil {
		return err
	}
	der, err := hex.DecodeString(r.Signature.DER)
	if err != nil {
		return err
	}
	sig, err := btcecdsa.ParseDERSignature(der)
	if err != nil {
		return err
	}
	if !sig.Verify(r.Message, pub) {
		return errors.New("ECDSA signature does not verify")
	}
	return nil
}

// derive computes the non-hardened child public key with btcutil's hdkeychain.
func derive(k client.Key, path string) (string, error) {
	pub, _ := hex.DecodeString(k.PublicKey)
	cc, err := hex.DecodeString(k.ChainCode)
	if err != nil || len(cc) != 32 {
		return "", fmt.Errorf("key %s has no chain code", k.KeyID)
	}
	ek := hdkeychain.NewExtendedKey(chaincfg.MainNetParams.HDPublicKeyID[:], pub, cc, []byte{0, 0, 0, 0}, 0, 0, false)
	for _, part := range strings.Split(strings.TrimPrefix(path, "m/"), "/") {
		i, err := strconv.ParseUint(part, 10, 31)
		if err != nil {
			return "", fmt.Errorf("path %s: %w", path, err)
		}
		if ek, err = ek.Derive(uint32(i)); err != nil {
			return "", err
		}
	}
	pk, err := ek.ECPubKey()
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(pk.SerializeCompressed()), nil
}

// auditSigned reads the whole audit log (verifying its chain) and returns the request ids
// with a sign.signed entry; a request signed twice, or a read-only caller's sign that was
// allowed, is an error.
func (h *harness) auditSigned(ctx context.Context) (map[string]bool, []string) {
	var adm *admin.Admin
	var entries []admin.AuditEntry
	var err error
	for i := range h.c.N() {
		if adm, err = h.c.AdminFor(i); err != nil {
			continue
		}
		var after uint64
		entries = entries[:0]
		for len(entries) < maxAuditEntries {
			var page []admin.AuditEntry
			page, err = adm.Audit(ctx, after, 1000)
			if err != nil || len(page) == 0 {
				break
			}
			entries = append(entries, page...)
			after = page[len(page)-1].Seq
			if len(page) < 1000 {
				break // reading a page appends an entry itself: stop at the first short page
			}
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, []string{"read the audit log: " + err.Error()}
	}
	var errs []string
	if v, err := adm.VerifyAudit(ctx, 1000); err != nil {
		errs = append(errs, "audit chain: "+err.Error())
	} else if v.Broken != nil {
		errs = append(errs, fmt.Sprintf("audit chain broken: %+v", *v.Broken))
	}
	actions := map[string]int{}
	for _, e := range entries {
		actions[e.Action]++
	}
	h.log.Info("audit log", "entries", len(entries), "actions", actions)
	signed := map[string]bool{}
	reader := fmt.Sprintf("user:%d", h.reader.ID)
	for _, e := range entries {
		switch {
		case e.Action == "sign.signed":
			if signed[e.Object] {
				errs = append(errs, fmt.Sprintf("request %s signed twice in the audit log", e.Object))
			}
			signed[e.Object] = true
		case e.Actor == reader && e.Action == "keys.sign" && e.Outcome != "refused":
			errs = append(errs, fmt.Sprintf("read-only user's sign was %s (audit seq %d)", e.Outcome, e.Seq))
		}
	}
	return signed, errs
}

// checkShares checks invariants 5 and 6: every key's status is final and the same on all
// nodes; a node holds a share exactly for the active keys; each active key signs with
// every node taking part (each node in turn is stopped and the others sign).
func (h *harness) checkShares(ctx context.Context, recs []*Record, keys map[string]client.Key) []string {
	var errs []string
	active := []string{}
	for id, k := range keys {
		switch k.Status {
		case client.StatusActive:
			active = append(active, id)
		case client.StatusFailed:
		default:
			errs = append(errs, fmt.Sprintf("key %s is %q after the faults healed", id, k.Status))
		}
	}
	slices.Sort(active)
	for _, r := range recs {
		if r.Op == OpKeygen && r.KeyID != "" {
			if _, ok := keys[r.KeyID]; !ok {
				errs = append(errs, fmt.Sprintf("keygen %s names key %s that the cluster does not list", r.Idem, r.KeyID))
			}
		}
	}
	// Shares, once reconcile has had time to erase failed keygens' leftovers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var bad []string
		for i := range h.c.N() {
			ds, err := h.debugState(ctx, i)
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			if ds.Shares != len(active) || ds.SharesHash != node.SharesHash(active) {
				bad = append(bad, fmt.Sprintf("%s holds %d shares (hash %.12s…), the %d active keys %v hash to %.12s…",
					h.c.NodeID(i), ds.Shares, ds.SharesHash, len(active), active, node.SharesHash(active)))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, bad...)
			break
		}
		sleepCtx(ctx, time.Second)
	}
	// Every committee of k among the n nodes can sign: stop each node in turn (n = 3,
	// k = 2: the other two must sign with every active key).
	if h.c.N() == 3 && h.cfg.Threshold == 2 {
		for down := range h.c.N() {
			if err := h.c.Stop(down); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			for _, id := range active {
				k := keys[id]
				rec := h.sign(ctx, keyInfo{ID: k.KeyID, Curve: k.Curve, PublicKey: k.PublicKey, ChainCode: k.ChainCode})
				if rec.Outcome != OutcomeOK {
					errs = append(errs, fmt.Sprintf("with %s stopped, key %s did not sign: %s %s", h.c.NodeID(down), id, rec.Outcome, rec.Code))
				} else if err := verify(k, rec); err != nil {
					errs = append(errs, fmt.Sprintf("with %s stopped, key %s: %v", h.c.NodeID(down), id, err))
				}
			}
			h.faultMu.Lock()
			h.restarted[down] = true
			h.faultMu.Unlock()
			if err := h.c.Start(down); err != nil {
				errs = append(errs, err.Error())
			}
			if err := h.waitAllReady(ctx); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	return errs
}

// converged waits until every node reports the same applied index, then compares the
// state hash and the audit head.
func (h *harness) converged(ctx context.Context) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		var states []*node.DebugState
		for i := range h.c.N() {
			ds, err := h.debugState(ctx, i)
			if err != nil {
				last = err.Error()
				break
			}
			states = append(states, ds)
		}
		if len(states) == h.c.N() {
			same := true
			for _, s := range states[1:] {
				same = same && s.Index == states[0].Index
			}
			if same {
				for _, s := range states[1:] {
					if s.StateHash != states[0].StateHash || s.AuditHead != states[0].AuditHead || s.AuditSeq != states[0].AuditSeq {
						return "", fmt.Errorf("at index %d: %s state %s audit %d/%s, %s state %s audit %d/%s", s.Index,
							states[0].Node, states[0].StateHash, states[0].AuditSeq, states[0].AuditHead, s.Node, s.StateHash, s.AuditSeq, s.AuditHead)
					}
				}
				return fmt.Sprintf("index %d, state %s…, audit seq %d head %s…", states[0].Index, states[0].StateHash[:12], states[0].AuditSeq, states[0].AuditHead[:12]), nil
			}
			last = fmt.Sprintf("indexes differ: %d %d …", states[0].Index, states[1].Index)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("nodes did not converge within 60 s: %s", last)
		}
		sleepCtx(ctx, 300*time.Millisecond)
	}
}
