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
	"sync"
)

// ErrNoModule is returned when the harness is not run from inside the custos module.
var ErrNoModule = errors.New("cluster: not inside a Go module (run from the custos work tree)")

// HooksTag is the build tag that compiles custosd's test-only misbehaviour hooks
// (CUSTOS_TEST_MISBEHAVE): a node built with it can play a compromised member.
const HooksTag = "custos_testhooks"

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
	return BuildProgram(ctx, root, outDir, "./cmd/custosd", "custosd")
}

// BuildProgram compiles the main package pkg (a path relative to the module, such as
// "./cmd/custos") of the module at root into outDir/name with the given build tags, and
// returns the binary's path. An empty root means ModuleRoot.
func BuildProgram(ctx context.Context, root, outDir, pkg, name string, tags ...string) (string, error) {
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
	bin := filepath.Join(outDir, name)
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	// As the Makefile builds it: pure Go, Pebble's memory on the Go heap.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cluster: go %s: %w\n%s", strings.Join(append(args, pkg), " "), err, out)
	}
	return bin, nil
}

// Binaries are the programs a system-test package runs.
type Binaries struct {
	// Root is the module the binaries were built from.
	Root string
	// Custosd is ./cmd/custosd, the node (Options.Binary's default).
	Custosd string
	// CustosdHooks is ./cmd/custosd built with HooksTag: a node that misbehaves as
	// CUSTOS_TEST_MISBEHAVE (Options.Env or NodeEnv) tells it to.
	CustosdHooks string
	// CLI is ./cmd/custos, the command-line client.
	CLI string
}

// BuildAll compiles custosd, custosd with HooksTag and the custos CLI of the module at
// root (empty: ModuleRoot) into outDir, concurrently. A test package builds them once,
// in TestMain, and passes Binaries.Custosd or CustosdHooks as Options.Binary.
func BuildAll(ctx context.Context, root, outDir string) (Binaries, error) {
	if root == "" {
		r, err := ModuleRoot(ctx)
		if err != nil {
			return Binaries{}, err
		}
		root = r
	}
	b := Binaries{Root: root}
	targets := []struct {
		out       *string
		pkg, name string
		tags      []string
	}{
		{&b.Custosd, "./cmd/custosd", "custosd", nil},
		{&b.CustosdHooks, "./cmd/custosd", "custosd-hooks", []string{HooksTag}},
		{&b.CLI, "./cmd/custos", "custos", nil},
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			*tg.out, errs[i] = BuildProgram(ctx, root, outDir, tg.pkg, tg.name, tg.tags...)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Binaries{}, err
	}
	return b, nil
}
