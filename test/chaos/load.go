//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/cluster"
)

// Operation kinds.
const (
	OpSignECDSA   = "sign-secp256k1"
	OpSignEd25519 = "sign-ed25519"
	OpKeygen      = "keygen"
	OpRefused     = "sign-without-permission"
	// OpProbeMinority is a one-attempt sign sent only to a node cut off from the
	// majority: it must fail with 503 (invariant 4).
	OpProbeMinority = "probe-minority"
)

// Outcomes of a logical request.
const (
	OutcomeOK      = "ok"      // signed, or the key is active
	OutcomeFailed  = "failed"  // the cluster answered with a final failure (a code)
	OutcomeRefused = "refused" // a definitive 4xx refusal
	OutcomeTimeout = "timeout" // no final answer within RequestBudget
)

// Attempt is one HTTP call of a logical request.
type Attempt struct {
	Node      int           `json:"node"`
	Start     time.Time     `json:"start"`
	Took      time.Duration `json:"took_ns"`
	HTTP      int           `json:"http"` // 0: no answer (transport error or timeout)
	Code      string        `json:"code,omitempty"`
	RequestID string        `json:"request_id,omitempty"`
	Status    string        `json:"status,omitempty"` // the request's status in the answer
	Err       string        `json:"err,omitempty"`
}

// Record is one logical request: the client's view across its retries.
type Record struct {
	Op        string            `json:"op"`
	Curve     string            `json:"curve,omitempty"`
	KeyID     string            `json:"key_id,omitempty"`
	Message   []byte            `json:"message,omitempty"`
	Path      string            `json:"derivation_path,omitempty"`
	Label     string            `json:"label,omitempty"`
	Idem      string            `json:"idempotency_key"`
	Start     time.Time         `json:"start"`
	End       time.Time         `json:"end"`
	Attempts  []Attempt         `json:"attempts"`
	RequestID string            `json:"request_id,omitempty"`
	Outcome   string            `json:"outcome"`
	Code      string            `json:"code,omitempty"`
	Signature *client.Signature `json:"signature,omitempty"`
	Key       *client.Key       `json:"key,omitempty"`
	// Ack is true once any answer carried a request id (the API acknowledged it).
	Ack bool `json:"acknowledged"`
	// FinalStatus is the status found by polling after the load, for a request that had
	// no final answer within the budget.
	FinalStatus string `json:"final_status,omitempty"`
}

func (h *harness) addRecord(r *Record) {
	h.recMu.Lock()
	h.records = append(h.records, r)
	h.recMu.Unlock()
}

func (h *harness) snapshotRecords() []*Record {
	h.recMu.Lock()
	defer h.recMu.Unlock()
	return append([]*Record(nil), h.records...)
}

// worker sends requests until ctx ends: signatures on both curves with the keys known so
// far (ECDSA sometimes with a derivation path) and, now and then, a request the caller
// has no permission for.
func (h *harness) worker(ctx context.Context, w int) {
	for ctx.Err() == nil {
		p := h.intn(100)
		switch {
		case p < 6:
			h.refused(context.WithoutCancel(ctx))
		default:
			k, ok := h.pickKey(p%2 == 0)
			if !ok {
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			// A request once started runs to its end (the load stopping does not cut
			// it): a client does not abandon a request halfway.
			h.sign(context.WithoutCancel(ctx), k)
		}
	}
}

func (h *harness) pickKey(ecdsa bool) (keyInfo, bool) {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	var cands []keyInfo
	for _, k := range h.keys {
		if (k.Curve == "secp256k1") == ecdsa {
			cands = append(cands, k)
		}
	}
	if len(cands) == 0 {
		return keyInfo{}, false
	}
	return cands[h.intn(len(cands))], true
}

// sign runs one logical sign request with retries until a final answer or the budget.
func (h *harness) sign(ctx context.Context, k keyInfo) *Record {
	rec := &Record{Op: OpSignEd25519, Curve: k.Curve, KeyID: k.ID, Idem: newIdem(), Start: time.Now()}
	if k.Curve == "secp256k1" {
		rec.Op = OpSignECDSA
		rec.Message = h.bytes(32)
		if h.intn(3) == 0 {
			rec.Path = fmt.Sprintf("m/%d/%d", h.intn(5), h.intn(1000))
		}
	} else {
		rec.Message = h.bytes(1 + h.intn(512))
	}
	h.retry(ctx, rec, h.main, func(actx context.Context, cl *client.Client) (*client.Request, *client.Key, error) {
		r, err := cl.Sign(actx, k.ID, rec.Message, rec.Path, rec.Idem)
		return r, nil, err
	})
	h.addRecord(rec)
	return rec
}

// refused asks for a signature as the read-only user: every answer must be a refusal.
func (h *harness) refused(ctx context.Context) *Record {
	k, ok := h.pickKey(h.intn(2) == 0)
	if !ok {
		return nil
	}
	rec := &Record{Op: OpRefused, Curve: k.Curve, KeyID: k.ID, Idem: newIdem(), Start: time.Now(), Message: h.bytes(32)}
	h.retry(ctx, rec, h.reader, func(actx context.Context, cl *client.Client) (*client.Request, *client.Key, error) {
		r, err := cl.Sign(actx, k.ID, rec.Message, "", rec.Idem)
		return r, nil, err
	})
	h.addRecord(rec)
	return rec
}

// keygen runs one logical keygen; an active key joins the signing pool.
func (h *harness) keygen(ctx context.Context, curve, why string) *Record {
	rec := &Record{Op: OpKeygen, Curve: curve, Idem: newIdem(), Start: time.Now(), Label: "chaos-" + why}
	label := rec.Label
	h.retry(ctx, rec, h.main, func(actx context.Context, cl *client.Client) (*client.Request, *client.Key, error) {
		k, r, err := cl.CreateKey(actx, curve, h.cfg.Threshold, label, rec.Idem)
		return r, k, err
	})
	if rec.Outcome == OutcomeOK && rec.Key != nil {
		h.keysMu.Lock()
		h.keys = append(h.keys, keyInfo{ID: rec.Key.KeyID, Curve: rec.Key.Curve, PublicKey: rec.Key.PublicKey, ChainCode: rec.Key.ChainCode})
		h.keysMu.Unlock()
	}
	h.addRecord(rec)
	h.log.Info("keygen", "curve", curve, "why", why, "outcome", rec.Outcome, "code", rec.Code, "key", rec.KeyID, "seconds", rec.End.Sub(rec.Start).Seconds())
	return rec
}

// retry is the client's loop: an attempt on a random node; a final answer ends it; an
// answer that may change (503, 5xx, 429, no answer, still running) is retried on another
// node with the same idempotency key after a short pause, until RequestBudget.
func (h *harness) retry(ctx context.Context, rec *Record, u *cluster.User, call func(context.Context, *client.Client) (*client.Request, *client.Key, error)) {
	deadline := rec.Start.Add(RequestBudget)
	node := h.intn(h.c.N())
	defer func() { rec.End = time.Now() }()
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			rec.Outcome = OutcomeTimeout
			if rec.Code == "" {
				rec.Code = "client.no_final_answer"
			}
			return
		}
		actx, cancel := context.WithTimeout(ctx, min(AttemptTimeout, left))
		at := Attempt{Node: node, Start: time.Now()}
		r, k, err := call(actx, u.Clients[node])
		cancel()
		at.Took = time.Since(at.Start)
		final := h.classify(rec, &at, r, k, err)
		rec.Attempts = append(rec.Attempts, at)
		if final {
			return
		}
		// Another node next time; a short pause so that a dead cluster is not hammered.
		node = (node + 1 + h.intn(h.c.N()-1)) % h.c.N()
		if !sleepCtx(ctx, time.Duration(100+h.intn(400))*time.Millisecond) {
			continue
		}
	}
}

// classify records one attempt's answer into rec and reports whether it is final.
func (h *harness) classify(rec *Record, at *Attempt, r *client.Request, k *client.Key, err error) bool {
	if k != nil {
		at.HTTP, at.Status = http.StatusCreated, client.StatusActive
		rec.Ack, rec.KeyID, rec.Key = true, k.KeyID, k
		rec.Outcome, rec.Code = OutcomeOK, ""
		return true
	}
	var ae *client.APIError
	if err != nil && errors.As(err, &ae) {
		at.HTTP, at.Code = ae.Status, ae.Code
		rec.Code = ae.Code
		if ae.Request != nil {
			r = ae.Request
		}
	} else if err != nil {
		at.Err = err.Error()
		if rec.Code == "" || rec.Code == "client.unreachable" || rec.Code == "client.no_final_answer" {
			rec.Code = "client.unreachable"
		}
		return false
	} else {
		at.HTTP = http.StatusOK
	}
	if r != nil {
		at.RequestID, at.Status = r.RequestID, r.Status
		rec.Ack = true
		if rec.RequestID == "" {
			rec.RequestID = r.RequestID
		} else if rec.RequestID != r.RequestID && r.RequestID != "" {
			// Recorded; check() reports it (one idempotency key, two requests).
			rec.Code = "harness.idempotency_split"
		}
		if rec.Op == OpKeygen && r.KeyID != "" {
			rec.KeyID = r.KeyID
		}
		switch r.Status {
		case client.StatusSigned:
			rec.Outcome, rec.Code, rec.Signature = OutcomeOK, "", r.Signature
			return true
		case client.StatusActive:
			rec.Outcome, rec.Code, rec.Key = OutcomeOK, "", r.Key
			return true
		case client.StatusFailed, client.StatusBlocked, client.StatusDenied:
			rec.Outcome = OutcomeFailed
			if r.Error != nil {
				rec.Code = r.Error.Code
			}
			return true
		}
		if ae == nil {
			return false // still running: ask again (same idempotency key)
		}
	}
	if ae == nil {
		return false
	}
	switch {
	case ae.Status == http.StatusTooManyRequests || ae.Status >= 500:
		return false
	case ae.Status >= 400:
		rec.Outcome = OutcomeRefused
		return true
	}
	return false
}
