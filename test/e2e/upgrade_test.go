//go:build linux

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	testcluster "github.com/custos/custos/test/cluster"
)

// inMemoryStateCommit is the last commit whose nodes kept the replicated state in memory
// (JSON raft snapshots); TestUpgradeFromInMemoryState builds its custosd from the
// repository's history.
const inMemoryStateCommit = "5cfe981e82ec6668769855da2b882da14815beb7"

// buildAt builds ./cmd/custosd of the repository at commit into dir.
func buildAt(t *testing.T, ctx context.Context, commit, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o700); err != nil {
		t.Fatal(err)
	}
	archive := exec.CommandContext(ctx, "git", "-C", bins.Root, "archive", "--format=tar", commit)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	var errb strings.Builder
	archive.Stderr, untar.Stderr = &errb, &errb
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s (the repository's history is needed: a full clone): %v: %s", commit, err, errb.String())
	}
	if err := untar.Wait(); err != nil {
		t.Fatalf("untar: %v: %s", err, errb.String())
	}
	bin, err := testcluster.Build(ctx, src, dir)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestUpgradeFromInMemoryState: data directories written by the binary that kept the
// state in memory — JSON raft snapshots, a compacted raft log — upgrade in place on the
// first start of this one: each node restores its newest snapshot into its new state
// database (the log says so), replays the log after it, and then serves everything the
// old cluster held (users, keys, finished requests, the audit chain, which goes on from
// the old head) and signs again; the nodes agree on their state hash.
func TestUpgradeFromInMemoryState(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	old := buildAt(t, ctx, inMemoryStateCommit, t.TempDir())
	c := startCluster(t, testcluster.Options{Binary: old, Extra: map[string]any{
		"insecure_testing": map[string]any{"raft_snapshot_threshold": 16, "raft_trailing_logs": 8, "raft_snapshot_interval": "300ms"},
		"rate":             map[string]any{"per_caller_rps": 0},
		// The old binary knows no webhooks section nor fixture slots (its configuration
		// decoding is strict).
		"webhooks":  nil,
		"preparams": map[string]any{"insecure_fixture_slot": nil, "insecure_fixture_stride": nil},
	}})
	u := c.newUser(ctx, "before-upgrade")
	key, _, err := u.Clients[0].CreateKey(ctx, "ed25519", 2, "old", "")
	if err != nil || key.Status != "active" {
		t.Fatalf("keygen on the old binary: %v", err)
	}
	var reqs []string
	for i := 0; i < 40; i++ {
		r, err := u.Clients[i%3].Sign(ctx, key.KeyID, []byte{byte(i)}, "", "")
		if err != nil || r.Status != "signed" {
			t.Fatalf("sign %d on the old binary: %v", i, err)
		}
		reqs = append(reqs, r.RequestID)
	}
	adm := c.Admin()
	before, err := adm.Audit(ctx, 0, admin.MaxAuditPage)
	if err != nil {
		t.Fatal(err)
	}
	// Let every node take a snapshot that covers the signatures.
	time.Sleep(time.Second)
	c.must(c.StopAll())
	for i := 0; i < c.N(); i++ {
		snaps, _ := filepath.Glob(filepath.Join(c.Dir(), c.NodeID(i), "raft", "snapshots", "*"))
		if len(snaps) == 0 {
			t.Fatalf("%s wrote no raft snapshot before the upgrade", c.NodeID(i))
		}
	}

	c.SetBinary(bins.Custosd)
	for i := 0; i < c.N(); i++ {
		c.start(i)
	}
	c.waitReady(c.All()...)
	for i := 0; i < c.N(); i++ {
		b, err := os.ReadFile(c.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "state database is behind the newest raft snapshot: restoring it") {
			t.Errorf("%s did not restore its snapshot into the new state database", c.NodeID(i))
		}
	}
	for i := 0; i < c.N(); i++ {
		k, err := u.Clients[i].GetKey(ctx, key.KeyID)
		if err != nil || k.Status != "active" || k.PublicKey != key.PublicKey {
			t.Fatalf("%s after the upgrade: key %+v, %v", c.NodeID(i), k, err)
		}
		for _, id := range []string{reqs[0], reqs[len(reqs)-1]} {
			if r, err := u.Clients[i].GetRequest(ctx, id); err != nil || r.Status != "signed" {
				t.Fatalf("%s after the upgrade: request %s: %+v, %v", c.NodeID(i), id, r, err)
			}
		}
	}
	r, err := u.Clients[1].Sign(ctx, key.KeyID, []byte("after the upgrade"), "", "")
	if err != nil || r.Status != "signed" {
		t.Fatalf("sign after the upgrade: %v", err)
	}
	for i := 0; i < c.N(); i++ {
		a, err := admin.New(c.adminKey(), c.API(i))
		c.must(err)
		v, err := a.VerifyAudit(ctx, 0)
		if err != nil || v.Broken != nil {
			t.Fatalf("%s: audit after the upgrade: %+v, %v", c.NodeID(i), v, err)
		}
		after, err := a.Audit(ctx, 0, len(before))
		c.must(err)
		for j := range before {
			if after[j] != before[j] {
				t.Fatalf("%s: audit entry %d changed in the upgrade: %+v, was %+v", c.NodeID(i), j+1, after[j], before[j])
			}
		}
		if v.HeadSeq <= uint64(len(before)) {
			t.Fatalf("%s: the audit did not go on after the upgrade (head %d)", c.NodeID(i), v.HeadSeq)
		}
	}
	c.must(c.WaitIdle(ctx))
	var hash string
	var index uint64
	for i := 0; i < c.N(); i++ {
		st, err := c.DebugState(ctx, i)
		c.must(err)
		if i == 0 {
			hash, index = st.StateHash, st.Index
		} else if st.Index == index && st.StateHash != hash {
			t.Fatalf("%s: state hash %s at index %d, node 1 %s", c.NodeID(i), st.StateHash, st.Index, hash)
		}
	}
}
