//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	testcluster "github.com/custos/custos/test/cluster"
)

// The e2e tests start their clusters with test/cluster; this file only adapts it to
// them: the binaries built once, the e2e defaults, and calls that fail the test instead
// of returning an error.

// bins are the programs the tests run, built once by TestMain.
var bins testcluster.Binaries

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "custos-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if bins, err = testcluster.BuildAll(ctx, "", dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// readyTimeout bounds a wait for nodes to be ready.
const readyTimeout = 90 * time.Second

// e2eExtra is the configuration every e2e cluster starts with; a section of a test's
// Options.Extra replaces the section of the same name whole.
func e2eExtra() map[string]any {
	return map[string]any{
		"log":      map[string]any{"level": "info"},
		"ceremony": map[string]any{"sign_timeout": "15s", "keygen_timeout": "90s"},
		"api":      map[string]any{"wait_timeout": "30s"},
	}
}

// cluster is a test's cluster.
type cluster struct {
	*testcluster.Cluster
	t *testing.T
}

// user is a user with one SDK client per node (test/cluster's).
type user struct{ *testcluster.User }

// startCluster starts o's cluster (3 nodes, threshold 2, bins.Custosd unless o says
// otherwise) with e2eExtra under o.Extra, in a directory of the test's; it stops with the
// test, and every node's log tail is printed if the test failed.
func startCluster(t *testing.T, o testcluster.Options) *cluster {
	t.Helper()
	extra := e2eExtra()
	for k, v := range o.Extra {
		extra[k] = v
	}
	o.Extra = extra
	if o.Binary == "" {
		o.Binary = bins.Custosd
	}
	o.Dir = t.TempDir()
	o.FixturesDir = filepath.Join(bins.Root, "test", "fixtures", "preparams")
	o.ReadyTimeout, o.StopTimeout = readyTimeout, 30*time.Second
	return &cluster{Cluster: testcluster.NewForTest(t, o), t: t}
}

func (c *cluster) must(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) start(i int) { c.t.Helper(); c.must(c.Start(i)) }
func (c *cluster) stop(i int)  { c.t.Helper(); c.must(c.Stop(i)) }
func (c *cluster) kill(i int)  { c.t.Helper(); c.must(c.Kill(i)) }

func (c *cluster) waitReady(nodes ...int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c.must(c.WaitReady(ctx, nodes...))
}

// forceRole restarts nodes until node i is the raft leader (asLeader) or a follower.
func (c *cluster) forceRole(ctx context.Context, i int, asLeader bool) {
	c.t.Helper()
	c.must(c.ForceRole(ctx, i, asLeader))
	c.t.Logf("node %d is the %s", i+1, map[bool]string{true: "leader", false: "follower"}[asLeader])
}

// adminKey is the cluster's shared ADMIN_KEY.
func (c *cluster) adminKey() []byte {
	c.t.Helper()
	key, err := c.AdminKey()
	c.must(err)
	return key
}

func (c *cluster) newUser(ctx context.Context, name string, perms ...string) *user {
	c.t.Helper()
	u, err := c.NewUser(ctx, name, time.Hour, perms...)
	c.must(err)
	return &user{u}
}

// custosCLI runs the custos binary and returns stdout.
func custosCLI(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bins.CLI, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.String(), nil
}
