package node

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// TestShareMustMatchTheKey: a node never uses a share whose public key differs from the
// key's public key in its own state (a substituted key, a corrupted or swapped share); it
// refuses, counts it and logs it.
func TestShareMustMatchTheKey(t *testing.T) {
	n := &Node{met: newMetrics(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	k := &state.Key{ID: "key_1", PublicKey: []byte{2, 1, 2, 3}}
	if err := n.checkSharePublicKey(k, []byte{2, 1, 2, 3}); err != nil {
		t.Fatalf("matching share refused: %v", err)
	}
	for _, pub := range [][]byte{{2, 1, 2, 4}, nil, {3, 1, 2, 3}} {
		if err := n.checkSharePublicKey(k, pub); !errors.Is(err, errShareMismatch) {
			t.Fatalf("share %x: %v", pub, err)
		}
	}
	var m dto.Metric
	if err := n.met.shareMismatch.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Fatalf("custos_share_mismatch_total = %v, want 3", got)
	}
}

func TestCheckpointVerdict(t *testing.T) {
	votes := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name              string
		own               string
		votes             map[string]string
		k                 int
		vouched, diverged bool
	}{
		{"k others agree", "A", votes("n1", "A", "n2", "A", "n3", "A"), 2, true, false},
		{"own vote does not count", "A", votes("n3", "A", "n1", "A"), 2, false, false},
		{"one compromised member agrees with a forged state", "F", votes("n1", "F", "n2", "A", "n3", "F"), 2, false, false},
		{"k others signed another state", "F", votes("n1", "A", "n2", "A", "n3", "F"), 2, false, true},
		{"k-1 others cannot make a node diverge", "A", votes("n1", "B", "n2", "A"), 2, false, false},
		{"no own hash", "", votes("n1", "A", "n2", "A"), 2, false, false},
		{"5 nodes, two colluding", "F", votes("n1", "F", "n2", "F", "n4", "A", "n5", "A"), 3, false, false},
		{"5 nodes, three honest", "A", votes("n1", "F", "n2", "A", "n4", "A", "n5", "A"), 3, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, d := checkpointVerdict(tt.own, tt.votes, "n3", tt.k)
			if v != tt.vouched || d != tt.diverged {
				t.Fatalf("vouched %v diverged %v, want %v %v", v, d, tt.vouched, tt.diverged)
			}
		})
	}
}

// TestSessionMarkersPruned: markers of sessions too old to be acted on are deleted;
// recent ones, and ones that cannot be read, are kept.
func TestSessionMarkersPruned(t *testing.T) {
	ks, err := keystore.Open(t.TempDir(), bytes.Repeat([]byte{7}, keystore.MasterKeySize), keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	n := &Node{ks: ks, log: slog.New(slog.DiscardHandler)}
	now := time.Now()
	markers := map[string]string{
		"session-old":     strconv.FormatInt(now.Add(-sessionMarkerRetention-time.Minute).UnixMilli(), 10),
		"session-recent":  strconv.FormatInt(now.Add(-time.Minute).UnixMilli(), 10),
		"session-garbled": "not a stamp",
		"identity-like":   strconv.FormatInt(now.Add(-24*time.Hour).UnixMilli(), 10),
	}
	for k, v := range markers {
		if err := ks.PutMeta(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	n.pruneSessionMarkers()
	for k, keep := range map[string]bool{"session-old": false, "session-recent": true, "session-garbled": true, "identity-like": true} {
		if _, err := ks.GetMeta(k); (err == nil) != keep {
			t.Errorf("%s: kept %v, want %v", k, err == nil, keep)
		}
	}
}

func TestChooseCommittee(t *testing.T) {
	all := []string{"n1", "n2", "n3", "n4", "n5"}
	up := func(down ...string) func(string) bool {
		return func(m string) bool { return !slices.Contains(down, m) }
	}
	keep := func([]string) {} // deterministic: no shuffling
	reverse := func(s []string) { slices.Reverse(s) }
	tests := []struct {
		name    string
		k       int
		live    func(string) bool
		prefer  []string
		avoid   []string
		shuffle func([]string)
		want    []string
	}{
		{"leader and entry node first", 2, up(), []string{"n4", "n2"}, nil, keep, []string{"n2", "n4"}},
		{"then the others", 3, up(), []string{"n4", "n2"}, nil, keep, []string{"n1", "n2", "n4"}},
		{"the others in shuffled order", 3, up(), []string{"n4", "n2"}, nil, reverse, []string{"n2", "n4", "n5"}},
		{"down parties never", 3, up("n1", "n3"), []string{"n2"}, nil, keep, []string{"n2", "n4", "n5"}},
		{"culprits avoided", 2, up(), []string{"n1"}, []string{"n2", "n3"}, keep, []string{"n1", "n4"}},
		{"culprits when nothing else", 3, up("n4", "n5"), []string{"n1"}, []string{"n2"}, keep, []string{"n1", "n2", "n3"}},
		{"a preferred culprit is still avoided", 2, up(), []string{"n1", "n2"}, []string{"n1"}, keep, []string{"n2", "n3"}},
		{"too few live", 3, up("n1", "n2", "n3"), nil, nil, keep, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseCommittee(all, tt.k, tt.live, tt.prefer, tt.avoid, tt.shuffle)
			if !slices.Equal(got, tt.want) || ok != (tt.want != nil) {
				t.Fatalf("got %v %v, want %v", got, ok, tt.want)
			}
		})
	}
}
