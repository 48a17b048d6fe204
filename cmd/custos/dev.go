package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/custos/custos/internal/devcluster"
)

func cmdDev(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "up" {
		return errors.New("usage: custos dev up [--dir .devcluster] [--nodes 3] [--threshold 2] [--api-port 7701] [--p2p-port 7801] [--fixtures test/fixtures/preparams]")
	}
	fs := flag.NewFlagSet("dev up", flag.ContinueOnError)
	dir := fs.String("dir", ".devcluster", "directory for the dev cluster's data and configuration")
	nodes := fs.Int("nodes", 3, "number of nodes")
	threshold := fs.Int("threshold", 2, "signers needed (k)")
	apiPort := fs.Int("api-port", 7701, "HTTP API port of the first node (others follow)")
	p2pPort := fs.Int("p2p-port", 7801, "libp2p port of the first node (others follow)")
	fixtures := fs.String("fixtures", "test/fixtures/preparams", "INSECURE pre-generated ECDSA pre-parameters for a quick first start")
	custosd := fs.String("custosd", "", "path to the custosd binary (default: next to this binary, then PATH)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	bin, err := findCustosd(*custosd)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfgs, cl, err := prepareDev(bin, abs, *dir, *nodes, *threshold, *apiPort, *p2pPort, *fixtures)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "custos dev cluster %q: %d nodes, k=%d, data in %s\n", cl.Name, len(cl.Nodes), cl.Threshold, *dir)
	fmt.Fprintln(stdout, "WARNING: dev mode seeds ECDSA pre-parameters from INSECURE test fixtures and uses a shared admin key. Never hold real funds with it.")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var procs []*exec.Cmd
	exited := make(chan error, len(cfgs))
	for i, cfgPath := range cfgs {
		logPath := devcluster.LogPath(abs, cl.Nodes[i].ID)
		lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "run", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", cl.Nodes[i].ID, err)
		}
		procs = append(procs, cmd)
		go func(id string, c *exec.Cmd, f *os.File) {
			err := c.Wait()
			f.Close()
			exited <- fmt.Errorf("%s exited: %v (see %s)", id, err, logPath)
		}(cl.Nodes[i].ID, cmd, lf)
		fmt.Fprintf(stdout, "  %s  api %s  log %s\n", cl.Nodes[i].ID, cl.Nodes[i].API, logPath)
	}
	running := len(procs) // processes not yet reported on exited
	stopAll := func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		deadline := time.After(25 * time.Second)
		for ; running > 0; running-- {
			select {
			case <-exited:
			case <-deadline:
				for _, p := range procs {
					_ = p.Process.Kill()
				}
				return
			}
		}
	}
	if err := waitReady(ctx, cl, exited); err != nil {
		stopAll()
		return err
	}
	fmt.Fprintf(stdout, "ready: every node answers /readyz. Cluster file: %s. Press Ctrl-C to stop.\n", filepath.Join(*dir, "cluster.json"))
	// A node that exits (killed to try a failure, say) is reported; the others keep
	// running until Ctrl-C. When every node is gone, dev up ends.
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "stopping all nodes…")
			stopAll()
			fmt.Fprintln(stdout, "stopped.")
			return nil
		case err := <-exited:
			running--
			fmt.Fprintln(stderr, "custos dev:", err)
			if running == 0 {
				return errors.New("every node has exited")
			}
		}
	}
}

func findCustosd(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "custosd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("custosd")
	if err != nil {
		return "", errors.New("custosd binary not found next to custos or in PATH: run `make build`")
	}
	return p, nil
}

// prepareDev creates the dev cluster on first use (keys, identities, configurations) and
// reuses it afterwards, so that keys survive a second `make run`. custosd (`custosd init`)
// creates each node's data directory: the CLI links no node code.
func prepareDev(custosd, abs, rel string, nodes, threshold, apiPort, p2pPort int, fixtures string) ([]string, *devcluster.Cluster, error) {
	cl, err := devcluster.Load(abs)
	if errors.Is(err, os.ErrNotExist) {
		spec := devcluster.Spec{Dir: abs, RelDir: rel, Threshold: threshold, FixturesDir: fixtures, Custosd: custosd}
		for i := 0; i < nodes; i++ {
			spec.APIPorts = append(spec.APIPorts, apiPort+i)
			spec.P2PPorts = append(spec.P2PPorts, p2pPort+i)
		}
		cl, err = devcluster.Create(spec)
	}
	if err != nil {
		return nil, nil, err
	}
	var cfgs []string
	for _, n := range cl.Nodes {
		cfgs = append(cfgs, devcluster.ConfigPath(abs, n.ID))
	}
	return cfgs, cl, nil
}

func waitReady(ctx context.Context, cl *devcluster.Cluster, exited <-chan error) error {
	deadline := time.Now().Add(2 * time.Minute)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		ready := 0
		for _, n := range cl.Nodes {
			resp, err := hc.Get(n.API + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready++
				}
			}
		}
		if ready == len(cl.Nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the cluster did not become ready within 2 minutes; see the node logs")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return err
		case <-time.After(300 * time.Millisecond):
		}
	}
}
