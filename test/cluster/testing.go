//go:build linux

package cluster

import (
	"context"
	"fmt"
	"strings"
)

// TB is the part of testing.TB that NewForTest uses (the package does not import
// testing: benchmarks and the chaos command link it too).
type TB interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// FailureLogLines is how much of every node's log NewForTest's cleanup prints when the
// test failed.
const FailureLogLines = 60

// NewForTest is New for a test: it fails t when the cluster does not start, and when t
// ends (t.Cleanup) it stops every node, prints the last FailureLogLines lines of each
// node's log if t failed, and closes the cluster. Give opts.Dir a t.TempDir() to keep the
// cluster's files until the testing package removes them.
func NewForTest(t TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.StopAll(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		if t.Failed() {
			t.Logf("%s", c.LogTails(FailureLogLines))
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// LogTails returns the last n lines of every node's log, each under a header naming the
// node.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for i := range c.N() {
		fmt.Fprintf(&b, "---- %s log (tail) ----\n%s\n", c.NodeID(i), c.LogTail(i, n))
	}
	return b.String()
}
