// Command custosd is the custos node daemon.
//
//	custosd init --data-dir DIR [--master-key-file FILE]   create the node's master key and identity
//	custosd run --config FILE                              run the node
//
// custosd only wires the node package to the process: flags, signals and exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	golog "github.com/ipfs/go-log"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/node"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "custosd:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  custosd init --data-dir DIR [--master-key-file FILE]
  custosd run --config FILE`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "init":
		return cmdInit(args[1:], stdout)
	case "run":
		return cmdRun(args[1:], stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

// cmdInit creates the master key file (mode 0600, never overwritten) and the node's
// libp2p identity, and prints the peer id to put in the cluster configuration.
func cmdInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "the node's data directory")
	mkFile := fs.String("master-key-file", "", "master key file to create (default DATA_DIR/master.key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" {
		return errors.New("init: --data-dir is required")
	}
	if *mkFile == "" {
		*mkFile = filepath.Join(*dataDir, "master.key")
	}
	peerID, err := node.InitDataDir(*dataDir, *mkFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "{\"peer_id\":%q,\"master_key_file\":%q}\n", peerID, *mkFile)
	return nil
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("run: --config is required")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: parseLevel(cfg.Log.Level)}))
	// tss-lib logs through go-log; at debug it prints protocol values. Keep it quiet
	// whatever GOLOG_LOG_LEVEL says: custos reports ceremony outcomes itself.
	if err := golog.SetLogLevel("tss-lib", "error"); err != nil {
		return fmt.Errorf("tss-lib logger: %w", err)
	}
	if cfg.Mode == config.ModeDev {
		log.Warn("running in dev mode: insecure settings are allowed; never hold real funds with this configuration")
	}
	n, err := node.New(cfg, node.Options{Logger: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := n.Start(ctx); err != nil {
		_ = n.Stop(context.Background())
		return err
	}
	var fatal error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case fatal = <-n.Fatal():
		log.Error("stopping: the node cannot go on safely; fix the cause and restart it", "err", fatal)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Stop(sctx); err != nil && fatal == nil {
		return err
	}
	return fatal
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
