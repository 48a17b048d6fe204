package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/keystore"
	"github.com/custos/custos/protocol"
)

// preParamStore is the pool's store over the keystore: the sets are sealed like shares.
type preParamStore struct{ ks *keystore.Store }

func (s preParamStore) CountPreParams() (int, error) { return s.ks.CountPreParams() }

func (s preParamStore) AddPreParams(b []byte) error {
	_, err := s.ks.AddPreParams(b)
	return err
}

func (s preParamStore) TakePreParams() ([]byte, error) {
	_, b, err := s.ks.TakePreParams()
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return nil, fmt.Errorf("%w: %w", protocol.ErrPoolStoreEmpty, err)
	case errors.Is(err, keystore.ErrCorrupt):
		return nil, fmt.Errorf("%w: %w", protocol.ErrPoolStoreCorrupt, err)
	}
	return b, err
}

// newPool builds this node's pre-parameter pool: the keystore as its store, the
// configured target, and in dev mode this node's disjoint slice of the insecure fixtures.
// busy reports whether ceremonies run here (the filler waits for them).
func newPool(cfg *config.Config, ks *keystore.Store, log *slog.Logger, met *metrics, busy func() bool) (*protocol.Pool, error) {
	fixtures, err := loadFixtures(cfg)
	if err != nil {
		return nil, err
	}
	return protocol.NewPool(protocol.PoolConfig{
		Store: preParamStore{ks}, Target: cfg.PreParams.Target, Fixtures: fixtures, Busy: busy, Logger: log,
		OnGenerated: func(time.Duration) { met.poolGenerated.Inc() },
		OnInline:    met.inlinePreParams.Inc,
		OnSize:      func(n int) { met.poolSize.Set(float64(n)) },
	})
}

// loadFixtures reads this node's share of preparams.insecure_fixtures_dir (dev mode only;
// configuration validation refuses it in production): each node takes a disjoint slice
// of the files, so that no two parties share a Paillier key.
func loadFixtures(cfg *config.Config) ([][]byte, error) {
	dir := cfg.PreParams.InsecureFixturesDir
	if dir == "" {
		return nil, nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "preparams-*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("preparams.insecure_fixtures_dir %s holds no preparams-*.json", dir)
	}
	sort.Strings(files)
	ids := make([]string, 0, len(cfg.Cluster.Members))
	for _, m := range cfg.Cluster.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	start, stride := slices.Index(ids, cfg.NodeID), len(ids)
	if slot := cfg.PreParams.InsecureFixtureSlot; slot != nil {
		start, stride = *slot, cfg.PreParams.InsecureFixtureStride
		if stride <= 0 {
			stride = 6
		}
	}
	var out [][]byte
	for i := start; i >= 0 && i < len(files); i += stride {
		b, err := os.ReadFile(files[i])
		if err != nil {
			return nil, fmt.Errorf("fixture: %w", err)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("too few fixtures in %s for %d nodes", dir, len(ids))
	}
	return out, nil
}
