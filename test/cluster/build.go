//go:build linux

package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNoModule is returned when the harness is not run from inside the custos module.
var ErrNoModule = errors.New("cluster: not inside a Go module (run from the custos work tree)")

// ModuleRoot returns the directory of the go.mod that `go env GOMOD` reports for the
// current working directory.
func ModuleRoot(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOMOD")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cluster: go env GOMOD: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	mod := strings.TrimSpace(out.String())
	if mod == "" || mod == os.DevNull {
		return "", ErrNoModule
	}
	return filepath.Dir(mod), nil
}

// Build compiles ./cmd/custosd of the module at root into outDir and returns the
// binary's path. An empty root means ModuleRoot.
func Build(ctx context.Context, root, outDir string) (string, error) {
	if root == "" {
		r, err := ModuleRoot(ctx)
		if err != nil {
			return "", err
		}
		root = r
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", fmt.Errorf("cluster: build dir: %w", err)
	}
	bin := filepath.Join(outDir, "custosd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/custosd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cluster: go build ./cmd/custosd: %w\n%s", err, out)
	}
	return bin, nil
}
