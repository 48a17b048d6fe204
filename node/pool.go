package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"

	"github.com/custos/custos/keystore"
)

// pool keeps this node's encrypted stock of ECDSA pre-parameters (Paillier keys and safe
// primes), filled in the background one set at a time so that keygen does not wait for
// primes when it is warm. Every keygen takes a fresh set: a set is never used for two keys
// — except in the dev cluster's insecure fixture mode, which recycles a few test sets.
type pool struct {
	n        *Node
	fixtures [][]byte // set once by seed, before any keygen

	mu   sync.Mutex // guards next
	next int        // the next fixture to hand out (fixture mode)
}

func newPool(n *Node) *pool { return &pool{n: n} }

// seed loads this node's share of the insecure fixtures (dev mode only; config validation
// refuses them in production) and puts them in an empty pool.
func (p *pool) seed() error {
	dir := p.n.cfg.PreParams.InsecureFixturesDir
	if dir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "preparams-*.json"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("preparams.insecure_fixtures_dir %s holds no preparams-*.json", dir)
	}
	sort.Strings(files)
	// Each node takes a disjoint slice of the fixtures, so no two parties share a
	// Paillier key.
	ids := make([]string, 0, len(p.n.cfg.Cluster.Members))
	for _, m := range p.n.cfg.Cluster.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	me := slices.Index(ids, p.n.cfg.NodeID)
	for i := me; i < len(files); i += len(ids) {
		b, err := os.ReadFile(files[i])
		if err != nil {
			return fmt.Errorf("fixture: %w", err)
		}
		p.fixtures = append(p.fixtures, b)
	}
	if len(p.fixtures) == 0 {
		return fmt.Errorf("too few fixtures in %s for %d nodes", dir, len(ids))
	}
	p.n.log.Warn("INSECURE: ECDSA pre-parameters come from shared test fixtures and are reused across keys; never use this mode for real keys", "sets", len(p.fixtures))
	if c, _ := p.n.ks.CountPreParams(); c == 0 {
		for _, b := range p.fixtures {
			if _, err := p.n.ks.AddPreParams(b); err != nil {
				return fmt.Errorf("seed pool: %w", err)
			}
		}
	}
	return nil
}

func (p *pool) size() int {
	c, _ := p.n.ks.CountPreParams()
	return c
}

// ready reports whether keygen can start without generating primes inline.
func (p *pool) ready() bool { return len(p.fixtures) > 0 || p.size() > 0 }

// take returns a validated set, generating one inline only when the pool is empty (and
// then reports inline).
func (p *pool) take(ctx context.Context) (_ *ecdsakeygen.LocalPreParams, inline bool, err error) {
	for {
		_, b, err := p.n.ks.TakePreParams()
		if errors.Is(err, keystore.ErrNotFound) {
			break
		}
		if errors.Is(err, keystore.ErrCorrupt) {
			p.n.log.Error("discarding a corrupt pre-parameter set", "err", err)
			continue
		}
		if err != nil {
			return nil, false, err
		}
		pre, err := decodePreParams(b)
		if err != nil {
			p.n.log.Error("discarding an invalid pre-parameter set", "err", err)
			continue
		}
		p.n.met.poolSize.Set(float64(p.size()))
		return pre, false, nil
	}
	if len(p.fixtures) > 0 {
		p.mu.Lock()
		b := p.fixtures[p.next%len(p.fixtures)]
		p.next++
		p.mu.Unlock()
		pre, err := decodePreParams(b)
		return pre, false, err
	}
	p.n.log.Warn("pre-parameter pool empty: generating a set inline; keygen will be slow")
	p.n.met.inlinePreParams.Inc()
	pre, err := ecdsakeygen.GeneratePreParamsWithContext(ctx, 1)
	return pre, true, err
}

func decodePreParams(b []byte) (*ecdsakeygen.LocalPreParams, error) {
	var pre ecdsakeygen.LocalPreParams
	if err := json.Unmarshal(b, &pre); err != nil {
		return nil, fmt.Errorf("decode pre-parameters: %w", err)
	}
	if !pre.ValidateWithProof() {
		return nil, errors.New("pre-parameters fail validation")
	}
	return &pre, nil
}

// run fills the pool up to its target, one set at a time on one core, pausing while
// ceremonies run here so that they never wait for CPU.
func (p *pool) run(ctx context.Context) {
	if len(p.fixtures) > 0 {
		return
	}
	for {
		if ctx.Err() != nil {
			return
		}
		size := p.size()
		p.n.met.poolSize.Set(float64(size))
		if size >= p.n.cfg.PreParams.Target || p.n.activeN.load() > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		start := time.Now()
		gctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		pre, err := ecdsakeygen.GeneratePreParamsWithContext(gctx, 1)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.n.log.Warn("pre-parameter generation failed", "err", err)
			}
			continue
		}
		b, err := json.Marshal(pre)
		if err != nil {
			continue
		}
		if _, err := p.n.ks.AddPreParams(b); err != nil {
			p.n.log.Error("could not store pre-parameters", "err", err)
			continue
		}
		p.n.met.poolGenerated.Inc()
		p.n.log.Info("pre-parameter set generated", "seconds", time.Since(start).Seconds(), "pool", size+1)
	}
}
