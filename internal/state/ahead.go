package state

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
)

// Checking signatures ahead of Apply.
//
// Apply verifies every signature an entry carries (DESIGN.md: the FSM believes
// signatures, never proposers); for a sign request that is three Ed25519 verifications
// and the threshold signature's (for secp256k1, its key's derivation and a recovery),
// most of what applying it costs. Entries apply one after the other, but their
// signatures need nothing from the entries before them to be checked, so ApplyBatch hands
// the batch to workers (one per core) that decode each entry and verify its signatures
// into the batch's authn.Memo while Apply works through the entries in order; Apply then
// makes every check itself as before, and finds the verifications done. Nothing the
// workers conclude is believed: a memo hit is an exact (public key, message, signature)
// triple that verified, so Apply's verdicts are the ones it would reach alone, on every
// node, whatever the workers did or did not finish. The workers read only the last
// committed state (members' peer ids, access keys, the admin key, a result's request and
// key) — when the batch changes those, a guess made from the older state simply misses
// and Apply verifies. Threshold signatures go through their own memo (sigMemo), which
// keeps the same promise.

// prepared is one entry of the batch, decoded by a worker.
type prepared struct {
	env    *Envelope
	e      entry
	reason string        // why the entry cannot be decoded ("" when it can)
	done   chan struct{} // closed once decoded and checked
}

// wait returns the entry once its worker is done with it (or decodes l now, if no
// worker was given it).
func (p *prepared) wait(l *raft.Log) (*Envelope, entry, string) {
	if p.done == nil {
		return decodeEntry(l)
	}
	<-p.done
	return p.env, p.e, p.reason
}

// checker is the workers' view for checking ahead: the committed state and the memos.
type checker struct {
	f     *FSM // for reads of the committed state
	m     *meta
	dir   authn.Directory
	memo  *authn.Memo
	an    *authn.Verifier // the FSM's verifier through memo
	sigs  *sigMemo        // the FSM's threshold-signature verifier, through its memo (nil: none)
	stamp int64           // the entry's stamp
}

// node verifies member id's signature of a statement of kind domain, if id is a member
// of the committed state, and reports whether it verified.
func (c *checker) node(id, domain string, body, sig []byte) bool {
	if m := c.m.member(id); m != nil {
		return c.memo.VerifyNode(m.PeerID, domain, body, sig) == nil
	}
	return false
}

// request authenticates a caller's signed request as Apply will, at the entry's stamp;
// the verdict is dropped, the verified signatures stay in the memo.
func (c *checker) request(f *SignedForm) {
	if f != nil && c.an != nil {
		_, _ = c.an.Verify(f, time.UnixMilli(c.stamp), c.dir)
	}
}

// result verifies a ceremony result's threshold signature as Apply will, against the
// committed sign request and key it names. A result arrives a ceremony after its
// request was applied, so both are nearly always committed; when they are not (or
// change in the batch), the arguments differ and Apply verifies itself.
func (c *checker) result(r *CeremonyResult) {
	if c.sigs == nil {
		return
	}
	var req *Request
	var k *Key
	c.f.read(func(kv readKV, _ *meta) {
		req, _ = load[Request](kv, keyStr(tRequest, r.RequestID))
		if req != nil && req.Kind == KindSign && req.PSBT == nil && req.Status == StatusScheduled {
			k, _ = load[Key](kv, keyStr(tKey, req.KeyID))
		}
	})
	if k != nil {
		_ = c.sigs.VerifySignature(k.Curve, k.PublicKey, k.ChainCode, req.PathIdx, req.Message, &r.Signature)
	}
}

// prepare starts decoding and checking logs ahead of Apply, through an (the FSM's
// verifier with the batch's memo): entries at or below skip (already applied) and
// non-commands are left alone. Entry i is ready once out[i].done is closed (nil for
// entries left alone, which Apply decodes itself); wait returns once the workers stopped.
// A batch with a single command is left to Apply alone: there is nothing to overlap, and
// checking it ahead would only repeat the non-Ed25519 part of its checks.
func (f *FSM) prepare(logs []*raft.Log, skip uint64, memo *authn.Memo, an *authn.Verifier, sigs *sigMemo) (out []prepared, wait func()) {
	out = make([]prepared, len(logs))
	wait = func() {}
	var todo []int
	for i, l := range logs {
		if l.Index > skip && l.Type == raft.LogCommand {
			todo = append(todo, i)
		}
	}
	if len(todo) < 2 {
		return out, wait
	}
	for _, i := range todo {
		out[i].done = make(chan struct{})
	}
	ck := checker{f: f, m: f.meta(), dir: f.Directory(), memo: memo, an: an, sigs: sigs}
	one := func(i int) {
		defer close(out[i].done)
		p := &out[i]
		p.env, p.e, p.reason = decodeEntry(logs[i])
		if p.reason != "" || p.e.check == nil {
			return
		}
		c := ck
		c.stamp = p.env.Stamp
		// A check is an optimisation: whatever goes wrong in one (it parses hostile
		// bytes, and reads the committed state's views, whose faults Apply handles)
		// leaves the verification to Apply, which runs the same checks itself.
		defer func() { _ = recover() }()
		p.e.check(&c)
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(todo) {
					return
				}
				one(todo[k])
			}
		}()
	}
	return out, wg.Wait
}
