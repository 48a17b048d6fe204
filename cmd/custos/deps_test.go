package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoNodeLibraries holds issue 10's line: the CLI and the quickstart link no
// tss-lib, libp2p, raft or Pebble (nor the node, protocol or keystore packages that wrap
// them). `custos dev up` has `custosd init` create the nodes' data directories instead.
func TestLinksNoNodeLibraries(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	forbidden := []string{
		"github.com/bnb-chain/tss-lib",
		"github.com/libp2p",
		"github.com/hashicorp/raft",
		"github.com/cockroachdb/pebble",
		"github.com/custos/custos/node",
		"github.com/custos/custos/protocol",
		"github.com/custos/custos/keystore",
	}
	allowed := map[string]bool{"github.com/custos/custos/node/client": true}
	isForbidden := func(pkg string) bool {
		if allowed[pkg] {
			return false
		}
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				return true
			}
		}
		return false
	}
	for _, root := range []string{"github.com/custos/custos/cmd/custos", "github.com/custos/custos/examples/quickstart"} {
		out, err := exec.Command(goTool, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, root).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("go list -deps %s: %v\n%s", root, err, stderr)
		}
		imports := map[string][]string{}
		var bad []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			imports[f[0]] = f[1:]
			if isForbidden(f[0]) {
				bad = append(bad, f[0])
			}
		}
		t.Logf("%s links %d packages", root, len(imports))
		if len(bad) > 0 {
			t.Errorf("%s links %d forbidden packages (e.g. %s) through %s", root, len(bad), bad[0], strings.Join(importChain(imports, root, isForbidden), " → "))
		}
	}
}

// importChain is a shortest import path from root to a package that bad accepts.
func importChain(imports map[string][]string, root string, bad func(string) bool) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if bad(p) {
			var chain []string
			for ; p != ""; p = prev[p] {
				chain = append([]string{p}, chain...)
			}
			return chain
		}
		for _, q := range imports[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}
