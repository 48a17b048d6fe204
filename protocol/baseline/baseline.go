package baseline

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/bnb-chain/tss-lib/v2/common"
	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"

	"github.com/custos/custos/protocol"
)

// inboxCap bounds the messages queued for one in-process party: more than any
// ceremony sends one party (ECDSA signing: 10 types from each other party).
const inboxCap = 1024

// Baseline runs tss-lib parties in this process: the reference the cluster is compared
// with. It holds one ECDSA and one EdDSA key of n parties (made in-process) and the
// fixture pre-parameters of every party. Its methods may be called concurrently (the
// benchmark's throughput cells do): each ceremony builds its own parties, over subsets
// copied from the keys, and only reads what New made.
type Baseline struct {
	n, k   int
	ids    []string // node ids, as custos names parties
	pre    []ecdsakeygen.LocalPreParams
	ecKeys []*ecdsakeygen.LocalPartySaveData // index = position in ids
	edKeys []*eddsakeygen.LocalPartySaveData // index = position in ids
}

// loadPreParams reads preparams-00.json … for n parties (a distinct set per party).
func loadPreParams(dir string, n int) ([]ecdsakeygen.LocalPreParams, error) {
	out := make([]ecdsakeygen.LocalPreParams, n)
	for i := range out {
		p := filepath.Join(dir, fmt.Sprintf("preparams-%02d.json", i))
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("pre-parameter fixture: %w", err)
		}
		if len(b) > 1<<20 {
			return nil, fmt.Errorf("%s: larger than 1 MiB", p)
		}
		if err := json.Unmarshal(b, &out[i]); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if !out[i].ValidateWithProof() {
			return nil, fmt.Errorf("%s: pre-parameters fail validation", p)
		}
	}
	return out, nil
}

// New reads the pre-parameters of n parties from fixturesDir (preparams-00.json …, as
// test/fixtures/preparams holds them) and runs an n-party ECDSA and an n-party EdDSA
// keygen of threshold k (k signers per ceremony), untimed. Parties are named node1 …
// noden, as a cluster names its nodes.
func New(ctx context.Context, fixturesDir string, n, k int) (*Baseline, error) {
	if n < 2 || k < 2 || k > n {
		return nil, fmt.Errorf("baseline: need 2 <= k <= n, got k=%d, n=%d", k, n)
	}
	pre, err := loadPreParams(fixturesDir, n)
	if err != nil {
		return nil, err
	}
	b := &Baseline{n: n, k: k, pre: pre}
	for i := range n {
		b.ids = append(b.ids, fmt.Sprintf("node%d", i+1))
	}
	if b.ecKeys, err = b.keygenECDSA(ctx); err != nil {
		return nil, fmt.Errorf("baseline ECDSA keygen: %w", err)
	}
	if b.edKeys, err = b.keygenEdDSA(ctx); err != nil {
		return nil, fmt.Errorf("baseline EdDSA keygen: %w", err)
	}
	return b, nil
}

// partyIDs returns fresh, sorted tss-lib party ids for the given node ids, keyed as
// custos keys them (protocol.PartyKey).
func partyIDs(ids []string) tss.SortedPartyIDs {
	u := make(tss.UnSortedPartyIDs, 0, len(ids))
	for _, id := range ids {
		u = append(u, tss.NewPartyID(id, id, protocol.PartyKey(id)))
	}
	return tss.SortPartyIDs(u)
}

// signers picks k of the n parties at random, like a committee.
func (b *Baseline) signers() []int {
	idx := rand.Perm(b.n)[:b.k]
	slices.Sort(idx)
	return idx
}

// keygenECDSA runs an n-party GG18 keygen with the fixture pre-parameters.
func (b *Baseline) keygenECDSA(ctx context.Context) ([]*ecdsakeygen.LocalPartySaveData, error) {
	pids := partyIDs(b.ids)
	pc := tss.NewPeerContext(pids)
	res, err := runParties(ctx, pids, func(i int, out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
		params := tss.NewParameters(tss.S256(), pc, pids[i], b.n, b.k-1)
		return ecdsakeygen.NewLocalParty(params, out, end, b.pre[b.index(pids[i])])
	})
	if err != nil {
		return nil, err
	}
	return byNode(b, pids, res), nil
}

// byNode reorders per-party results (in the order of the sorted party ids) into the
// order of b.ids.
func byNode[T any](b *Baseline, pids tss.SortedPartyIDs, res []T) []T {
	out := make([]T, len(res))
	for i, pid := range pids {
		out[b.index(pid)] = res[i]
	}
	return out
}

// keygenEdDSA runs an n-party EdDSA keygen.
func (b *Baseline) keygenEdDSA(ctx context.Context) ([]*eddsakeygen.LocalPartySaveData, error) {
	pids := partyIDs(b.ids)
	pc := tss.NewPeerContext(pids)
	res, err := runParties(ctx, pids, func(i int, out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
		params := tss.NewParameters(tss.Edwards(), pc, pids[i], b.n, b.k-1)
		return eddsakeygen.NewLocalParty(params, out, end)
	})
	if err != nil {
		return nil, err
	}
	return byNode(b, pids, res), nil
}

// index maps a party id back to its node's position in b.ids.
func (b *Baseline) index(pid *tss.PartyID) int { return slices.Index(b.ids, pid.Id) }

// signerParties picks k random parties and returns their sorted ids and peer context.
func (b *Baseline) signerParties() (tss.SortedPartyIDs, *tss.PeerContext) {
	who := b.signers()
	ids := make([]string, len(who))
	for j, i := range who {
		ids[j] = b.ids[i]
	}
	pids := partyIDs(ids)
	return pids, tss.NewPeerContext(pids)
}

// SignECDSA signs a 32-byte digest with k random parties, verifies the result (not
// timed) and returns the ceremony's time: from building the parties to the last result.
func (b *Baseline) SignECDSA(ctx context.Context, digest []byte) (time.Duration, error) {
	pids, pc := b.signerParties()
	m := new(big.Int).SetBytes(digest)
	start := time.Now()
	res, err := runParties(ctx, pids, func(i int, out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		params := tss.NewParameters(tss.S256(), pc, pids[i], len(pids), b.k-1)
		key := ecdsakeygen.BuildLocalSaveDataSubset(*b.ecKeys[b.index(pids[i])], pids)
		return ecdsasigning.NewLocalParty(m, params, key, out, end, len(digest))
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	pub := b.ecKeys[0].ECDSAPub
	pk := ecdsa.PublicKey{Curve: tss.S256(), X: pub.X(), Y: pub.Y()}
	if !ecdsa.Verify(&pk, digest, new(big.Int).SetBytes(res[0].R), new(big.Int).SetBytes(res[0].S)) {
		return 0, errors.New("baseline ECDSA signature does not verify")
	}
	return took, nil
}

// SignEdDSA signs msg with k random parties, verifies the result (not timed) and returns
// the ceremony's time: from building the parties to the last result.
func (b *Baseline) SignEdDSA(ctx context.Context, msg []byte) (time.Duration, error) {
	pids, pc := b.signerParties()
	m := new(big.Int).SetBytes(msg)
	start := time.Now()
	res, err := runParties(ctx, pids, func(i int, out chan<- tss.Message, end chan<- *common.SignatureData) tss.Party {
		params := tss.NewParameters(tss.Edwards(), pc, pids[i], len(pids), b.k-1)
		key := eddsakeygen.BuildLocalSaveDataSubset(*b.edKeys[b.index(pids[i])], pids)
		return eddsasigning.NewLocalParty(m, params, key, out, end, len(msg))
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if !ed25519.Verify(b.edPub(), msg, res[0].Signature) {
		return 0, errors.New("baseline Ed25519 signature does not verify")
	}
	return took, nil
}

// edPub is the Ed25519 public key of the baseline's EdDSA key, in its RFC 8032
// encoding: y little-endian, the sign of x in the top bit.
func (b *Baseline) edPub() ed25519.PublicKey {
	pub := b.edKeys[0].EDDSAPub
	out := make([]byte, ed25519.PublicKeySize)
	pub.Y().FillBytes(out)
	slices.Reverse(out)
	out[len(out)-1] |= byte(pub.X().Bit(0)) << 7
	return out
}

// delivery is one message on its way to a party's inbox.
type delivery struct {
	wire  []byte
	from  *tss.PartyID
	bcast bool
}

// runParties drives one in-process ceremony the way custos drives a party (minus the
// network): each party has one inbox goroutine that calls Start and then, in order,
// UpdateFromBytes for every message; tss-lib's out channel is drained by its own
// goroutine that serialises each message with WireBytes and routes it (a broadcast to
// every other party); the end channel is buffered. It returns every party's result, in
// the order of pids.
func runParties[T any](ctx context.Context, pids tss.SortedPartyIDs, mk func(i int, out chan<- tss.Message, end chan<- T) tss.Party) ([]T, error) {
	n := len(pids)
	done := make(chan struct{})
	errc := make(chan error, 4*n)
	inbox := make([]chan delivery, n)
	outs := make([]chan tss.Message, n)
	ends := make([]chan T, n)
	parties := make([]tss.Party, n)
	for i := range n {
		inbox[i] = make(chan delivery, inboxCap)
		outs[i] = make(chan tss.Message, inboxCap)
		ends[i] = make(chan T, 1)
	}
	// Construction may panic (tss-lib panics on bad pre-parameters or signer sets).
	if err := safe(func() {
		for i := range n {
			parties[i] = mk(i, outs[i], ends[i])
		}
	}); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	for i := range n {
		wg.Add(2)
		go func() { // inbox: Start, then every message in order
			defer wg.Done()
			var terr *tss.Error
			if err := safe(func() { terr = parties[i].Start() }); err != nil {
				report(err)
				return
			}
			if terr != nil {
				report(terr)
				return
			}
			for {
				select {
				case <-done:
					return
				case d := <-inbox[i]:
					var uerr *tss.Error
					if err := safe(func() { _, uerr = parties[i].UpdateFromBytes(d.wire, d.from, d.bcast) }); err != nil {
						report(err)
						return
					}
					if uerr != nil {
						report(uerr)
						return
					}
				}
			}
		}()
		go func() { // out: serialise and route
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case m := <-outs[i]:
					wire, r, err := m.WireBytes()
					if err != nil {
						report(err)
						return
					}
					d := delivery{wire: wire, from: r.From, bcast: r.IsBroadcast}
					var to []int
					if r.To == nil {
						for j := range n {
							if j != r.From.Index {
								to = append(to, j)
							}
						}
					}
					for _, p := range r.To {
						to = append(to, p.Index)
					}
					for _, j := range to {
						select {
						case inbox[j] <- d:
						case <-done:
							return
						}
					}
				}
			}
		}()
	}
	return collect(ctx, ends, errc, done, &wg)
}

// collect waits for every party's result (or the first error, or ctx), then stops the
// routers (done) and waits for every goroutine (wg).
func collect[T any](ctx context.Context, ends []chan T, errc <-chan error, done chan struct{}, wg *sync.WaitGroup) ([]T, error) {
	res := make([]T, len(ends))
	var err error
	for i := 0; i < len(ends) && err == nil; i++ {
		select {
		case res[i] = <-ends[i]:
		case err = <-errc:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	close(done)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return res, nil
}

// safe runs f, turning a panic into an error.
func safe(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("tss-lib panic: %v", r)
		}
	}()
	f()
	return nil
}

// KeygenECDSA runs an n-party ECDSA keygen with ready pre-parameters (the fixtures) and
// returns its time, from the call (party ids and construction included) to the last
// result. The shares are checked (not timed) and dropped; the key New made stays the
// one that signs.
func (b *Baseline) KeygenECDSA(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	saves, err := b.keygenECDSA(ctx)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	for _, s := range saves {
		if s == nil || s.ECDSAPub == nil || !s.ECDSAPub.ValidateBasic() || !s.ECDSAPub.Equals(saves[0].ECDSAPub) {
			return 0, errors.New("baseline ECDSA keygen: parties disagree on the public key")
		}
	}
	return took, nil
}

// KeygenEdDSA runs an n-party EdDSA keygen and returns its time, from the call (party
// ids and construction included) to the last result. The shares are checked (not
// timed) and dropped; the key New made stays the one that signs.
func (b *Baseline) KeygenEdDSA(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	saves, err := b.keygenEdDSA(ctx)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	for _, s := range saves {
		if s == nil || s.EDDSAPub == nil || !s.EDDSAPub.ValidateBasic() || !s.EDDSAPub.Equals(saves[0].EDDSAPub) {
			return 0, errors.New("baseline EdDSA keygen: parties disagree on the public key")
		}
	}
	return took, nil
}

// ReshareECDSA refreshes the ECDSA key in-process: the n parties of the key (party keys
// of generation 0) reshare it to the same n nodes at generation 1 (party keys
// protocol.PartyKeyAt(id, 1), so a node's old and new parties differ, as custos runs
// them) with the same threshold; every node runs its old and its new party. New parties
// take the fixture pre-parameters again (fine for a benchmark, never for a node). It
// returns the ceremony's time, from building the parties to the last result; the new
// shares are checked (not timed) for the original public key and dropped.
func (b *Baseline) ReshareECDSA(ctx context.Context) (time.Duration, error) {
	oldPids := partyIDs(b.ids)
	u := make(tss.UnSortedPartyIDs, 0, b.n)
	for _, id := range b.ids {
		u = append(u, tss.NewPartyID(id, id, protocol.PartyKeyAt(id, 1)))
	}
	newPids := tss.SortPartyIDs(u)
	oldPC, newPC := tss.NewPeerContext(oldPids), tss.NewPeerContext(newPids)
	all := append(slices.Clone(oldPids), newPids...)
	start := time.Now()
	res, err := runReshare(ctx, all, func(i int, out chan<- tss.Message, end chan<- *ecdsakeygen.LocalPartySaveData) tss.Party {
		if i < b.n {
			params := tss.NewReSharingParameters(tss.S256(), oldPC, newPC, oldPids[i], b.n, b.k-1, b.n, b.k-1)
			key := cloneSave(b.ecKeys[b.index(oldPids[i])])
			return resharing.NewLocalParty(params, key, out, end)
		}
		p := newPids[i-b.n]
		params := tss.NewReSharingParameters(tss.S256(), oldPC, newPC, p, b.n, b.k-1, b.n, b.k-1)
		key := ecdsakeygen.NewLocalPartySaveData(b.n)
		key.LocalPreParams = b.pre[b.index(p)]
		return resharing.NewLocalParty(params, key, out, end)
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	for _, s := range res[b.n:] {
		if s == nil || s.ECDSAPub == nil || !s.ECDSAPub.Equals(b.ecKeys[0].ECDSAPub) || s.Xi == nil {
			return 0, errors.New("baseline ECDSA resharing: a new share does not hold the original key")
		}
	}
	return took, nil
}

// cloneSave deep-copies what resharing mutates (the old party zeroes its secret share
// in place) through a JSON round trip, so that the baseline's key stays usable.
func cloneSave(s *ecdsakeygen.LocalPartySaveData) ecdsakeygen.LocalPartySaveData {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	var out ecdsakeygen.LocalPartySaveData
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

// runReshare is runParties for a resharing: the parties are those of the old committee
// then those of the new one, and messages are routed by the recipients' party keys
// (a party index is an index within its own committee).
func runReshare[T any](ctx context.Context, all []*tss.PartyID, mk func(i int, out chan<- tss.Message, end chan<- T) tss.Party) ([]T, error) {
	n := len(all)
	slot := make(map[string]int, n)
	for i, p := range all {
		slot[string(p.Key)] = i
	}
	done := make(chan struct{})
	errc := make(chan error, 4*n)
	inbox := make([]chan delivery, n)
	outs := make([]chan tss.Message, n)
	ends := make([]chan T, n)
	parties := make([]tss.Party, n)
	for i := range n {
		inbox[i] = make(chan delivery, inboxCap)
		outs[i] = make(chan tss.Message, inboxCap)
		ends[i] = make(chan T, 1)
	}
	if err := safe(func() {
		for i := range n {
			parties[i] = mk(i, outs[i], ends[i])
		}
	}); err != nil {
		return nil, err
	}
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var terr *tss.Error
			if err := safe(func() { terr = parties[i].Start() }); err != nil {
				report(err)
				return
			}
			if terr != nil {
				report(terr)
				return
			}
			for {
				select {
				case <-done:
					return
				case d := <-inbox[i]:
					var uerr *tss.Error
					if err := safe(func() { _, uerr = parties[i].UpdateFromBytes(d.wire, d.from, d.bcast) }); err != nil {
						report(err)
						return
					}
					if uerr != nil {
						report(uerr)
						return
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case m := <-outs[i]:
					wire, r, err := m.WireBytes()
					if err != nil {
						report(err)
						return
					}
					d := delivery{wire: wire, from: r.From, bcast: r.IsBroadcast}
					for _, p := range r.To {
						j, ok := slot[string(p.Key)]
						if !ok || j == i {
							continue
						}
						select {
						case inbox[j] <- d:
						case <-done:
							return
						}
					}
				}
			}
		}()
	}
	return collect(ctx, ends, errc, done, &wg)
}
