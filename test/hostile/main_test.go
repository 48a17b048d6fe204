//go:build linux

package hostile

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/custos/custos/test/cluster"
)

// custosdBin is the custosd every test of the package runs, built once by TestMain (empty
// with -short, where no test starts a cluster).
var custosdBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "custos-hostile-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if custosdBin, err = cluster.Build(ctx, "", dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
