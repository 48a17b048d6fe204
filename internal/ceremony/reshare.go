package ceremony

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/protocol"
)

// Reshares on this node (state/reshare.go says the protocol). A new party stores its new
// share aside, under pendingShareID, and reports it; the current share stays in place
// and keeps signing. When this node's FSM commits the reshare (every new party reported
// the key), the new share is put in place (promote) and a node left out of the new
// committee erases its share; when the reshare fails, the share stored aside is
// dropped. The reconciler repeats both after a restart or a snapshot, so that an
// interrupted reshare leaves this node with exactly the share of the key's committee in
// its own state.

// pendingSep separates a key id from a pending share's generation in the keystore's
// share names ("key_…~g3"; '~' is a keystore name character and never in a key id).
const pendingSep = "~g"

// pendingShareID names the share a new party keeps aside until its reshare commits.
func pendingShareID(keyID string, gen uint32) string {
	return keyID + pendingSep + strconv.FormatUint(uint64(gen), 10)
}

// parsePendingShareID splits a pending share's name.
func parsePendingShareID(name string) (keyID string, gen uint32, ok bool) {
	i := strings.LastIndex(name, pendingSep)
	if i <= 0 {
		return "", 0, false
	}
	g, err := strconv.ParseUint(name[i+len(pendingSep):], 10, 32)
	if err != nil {
		return "", 0, false
	}
	return name[:i], uint32(g), true
}

// reshareSpec is the resharing a reshare request asks for, from this node's state.
func reshareSpec(r *state.Request, k *state.Key) (protocol.ReshareSpec, bool) {
	rs := k.Resharing
	if rs == nil || rs.RequestID != r.ID {
		return protocol.ReshareSpec{}, false
	}
	return protocol.ReshareSpec{
		Curve: k.Curve, PublicKey: k.PublicKey,
		OldCommittee: r.Committee, OldThreshold: k.Threshold, OldGeneration: k.Generation,
		NewCommittee: rs.Members, NewThreshold: rs.Threshold, NewGeneration: rs.Generation,
	}, true
}

// ReshareSessionID is a reshare's session id ("" when the key has no such reshare).
func ReshareSessionID(r *state.Request, k *state.Key) (protocol.SessionID, bool) {
	spec, ok := reshareSpec(r, k)
	if !ok || len(r.Nonce) != 32 {
		return protocol.SessionID{}, false
	}
	var nonce [32]byte
	copy(nonce[:], r.Nonce)
	return protocol.ReshareSessionID(k.ID, r.ID, spec, nonce), true
}

// runReshare runs this node's parts of a reshare: the old party with its current share,
// the new party with fresh pre-parameters (secp256k1), or both.
func (n *Runner) runReshare(r *state.Request, k *state.Key, sid protocol.SessionID) error {
	spec, ok := reshareSpec(r, k)
	if !ok {
		return errors.New("the key has no such reshare running")
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.Ceremony.KeygenTimeout.Duration)
	defer cancel()
	var old *protocol.Share
	if slices.Contains(spec.OldCommittee, n.self) {
		var err error
		if old, err = n.currentShare(k); err != nil {
			return err
		}
	}
	inNew := slices.Contains(spec.NewCommittee, n.self)
	var pre *protocol.PreParams
	if inNew && k.Curve == state.CurveSecp256k1 {
		var err error
		if pre, _, err = n.pre.Take(ctx); err != nil {
			return fmt.Errorf("pre-parameters: %w", err)
		}
	}
	share, err := n.engine.Reshare(ctx, sid, spec, old, pre)
	if err != nil {
		return err
	}
	if !inNew || share == nil {
		return nil // an old party only: it erases its share when the reshare commits
	}
	b, err := share.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode share: %w", err)
	}
	pending := pendingShareID(k.ID, spec.NewGeneration)
	if err := n.ks.PutShare(pending, b); err != nil {
		return fmt.Errorf("store the new share: %w", err)
	}
	// The reshare may have failed (another party's report refused) before the share was
	// put aside, and ReshareFailed then found nothing to drop: once the report is done,
	// whatever its outcome, the share stays aside only while this reshare still runs.
	defer n.dropStaleShares([]string{pending})
	rctx, rcancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer rcancel()
	res, err := n.rep.Report(rctx, state.TypeReshareStored, &state.ReshareStored{
		RequestID: r.ID, Nonce: r.Nonce, Node: n.self, PublicKey: share.PublicKey(), Generation: share.Generation()})
	if err != nil {
		return fmt.Errorf("report the new share: %w", err)
	}
	if !res.OK() {
		n.log.Warn("new share report refused", "request", r.ID, "code", res.Code, "detail", res.Detail)
	}
	return nil
}

// currentShare loads this node's share of k, which must be of the key's generation
// (putting a committed reshare's new share in place first if it is still aside) and
// yield the key's public key.
func (n *Runner) currentShare(k *state.Key) (*protocol.Share, error) {
	load := func() (*protocol.Share, error) {
		raw, err := n.ks.GetShare(k.ID)
		if err != nil {
			return nil, fmt.Errorf("load share: %w", err)
		}
		share, err := protocol.ParseShare(k.Curve, raw)
		if err != nil {
			return nil, fmt.Errorf("decode share: %w", err)
		}
		return share, nil
	}
	share, err := load()
	if (err != nil || share.Generation() != k.Generation) && n.promote(k) {
		share, err = load()
	}
	if err != nil {
		return nil, err
	}
	if share.Generation() != k.Generation {
		return nil, fmt.Errorf("key %s: this node holds a share of generation %d, the key is at generation %d", k.ID, share.Generation(), k.Generation)
	}
	if err := n.checkSharePublicKey(k, share.PublicKey()); err != nil {
		return nil, err
	}
	return share, nil
}

// promote puts a committed reshare's new share (kept aside) in place of the current one
// and reports whether it did. The new share must be of the key's generation and yield its
// public key; the old share's data key is retired by PutShare (a fresh data key per write).
func (n *Runner) promote(k *state.Key) bool {
	if why := n.blocked(); why != "" {
		n.log.Warn("not putting a reshared key's new share in place while this node's state is in doubt; the reconciler does it once the state is trusted", "key", k.ID, "why", why)
		return false
	}
	id := pendingShareID(k.ID, k.Generation)
	raw, err := n.ks.GetShare(id)
	if err != nil {
		return false
	}
	share, err := protocol.ParseShare(k.Curve, raw)
	if err != nil || share.Generation() != k.Generation || n.checkSharePublicKey(k, share.PublicKey()) != nil {
		n.log.Error("a new share kept aside does not match the key after its reshare; dropping it", "key", k.ID, "generation", k.Generation)
		n.eraseShare(id)
		return false
	}
	if err := n.ks.PutShare(k.ID, raw); err != nil {
		n.log.Error("could not put a reshared key's new share in place; the reconciler tries again", "key", k.ID, "err", err)
		return false
	}
	n.eraseShare(id)
	n.log.Info("new share in place after a reshare", "key", k.ID, "generation", k.Generation)
	return true
}

// Reshared acts on a committed reshare: a member of the key's new committee puts its new
// share in place; a node left out erases its share (crypto-erase).
func (n *Runner) Reshared(keyID string) {
	k := n.fsm.Key(keyID)
	if k == nil {
		return
	}
	n.settleShares(k)
}

// ReshareFailed drops the share a failed reshare left aside on this node.
func (n *Runner) ReshareFailed(keyID string) {
	names, err := n.ks.ListShares()
	if err != nil {
		n.log.Warn("listing shares to drop a failed reshare's; the reconciler tries again", "err", err)
		return
	}
	var mine []string
	for _, name := range names {
		if strings.HasPrefix(name, keyID+pendingSep) {
			mine = append(mine, name)
		}
	}
	n.dropStaleShares(mine)
}

// settleShares makes this node's shares of k what k's state says: a committed reshare's
// new share (kept aside) in place when this node is a member, no share when it is not.
// It reports whether nothing is left to do. It only asks the keystore whether records
// exist (no decryption): the reconciler calls it for every key at every start.
func (n *Runner) settleShares(k *state.Key) bool {
	if k.Status == state.KeyGenerating || k.Status == state.KeyFailed || k.Status == state.KeyDeleted {
		return true // keygen's own; the failed and deleted ones are erased elsewhere
	}
	if slices.Contains(k.Members, n.self) {
		if k.Generation == 0 {
			return true // never reshared: nothing can be aside
		}
		aside, err := n.ks.HasShare(pendingShareID(k.ID, k.Generation))
		if err != nil {
			return false
		}
		return !aside || n.promote(k)
	}
	ok, err := n.ks.HasShare(k.ID)
	switch {
	case err != nil:
		return false
	case !ok:
		return true
	case !n.eraseShare(k.ID):
		return false
	}
	n.log.Info("erased the share of a key reshared away from this node", "key", k.ID, "generation", k.Generation)
	return true
}

// dropStaleShares erases shares kept aside that no reshare will commit: of a
// generation that is neither the key's (promoted by settleShares) nor its running
// reshare's. Generations are never reused for a key (state gives every reshare attempt a
// new one), so a share aside is either the running attempt's or dead. It reports whether
// nothing was left to do.
func (n *Runner) dropStaleShares(names []string) (done bool) {
	done = true
	for _, name := range names {
		keyID, gen, ok := parsePendingShareID(name)
		if !ok {
			continue
		}
		if k := n.fsm.Key(keyID); k != nil && k.Status != state.KeyDeleted && k.Status != state.KeyFailed {
			if gen == k.Generation && slices.Contains(k.Members, n.self) {
				done = n.promote(k) && done
				continue
			}
			if k.Resharing != nil && k.Resharing.Generation == gen {
				continue // the running reshare's
			}
		}
		if n.eraseShare(name) {
			n.log.Info("dropped a new share of a reshare that did not commit", "key", keyID, "generation", gen)
		} else {
			done = false
		}
	}
	return done
}
