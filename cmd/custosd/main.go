// Command custosd is the custos node daemon.
//
//	custosd init --data-dir DIR [--master-key-file FILE]   create the node's master key and identity
//	custosd run --config FILE                              run the node
//	custosd backup ...                                     age-encrypted backup of the node's keystore
//	custosd restore ...                                    restore a lost node's keystore from a backup
//	custosd rotate-master-key ...                          re-wrap the keystore under a new master key
//
// backup and rotate-master-key work while the node runs (through its control socket in
// the data directory) and also when it does not (they then open the keystore directly).
//
// custosd only wires the node package to the process: flags, signals and exit codes.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/custos/custos/internal/durable"
	"github.com/custos/custos/internal/memtune"
	"github.com/custos/custos/keystore"
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
  custosd run --config FILE
  custosd backup (--config FILE | --data-dir DIR [--master-key-file FILE])
                 (--recipient AGE_PUBLIC_KEY ... | --recipients-file FILE) --out FILE
  custosd restore --in FILE --identity AGE_IDENTITY_FILE
                  (--config FILE | --data-dir DIR [--master-key-file FILE])
  custosd rotate-master-key (--config FILE | --data-dir DIR [--master-key-file FILE])
                            --new-master-key-file FILE
  custosd help [COMMAND]`

// Help of the backup, restore and rotate-master-key commands (custosd help COMMAND).
const (
	backupHelp = `custosd backup (--config FILE | --data-dir DIR [--master-key-file FILE])
               (--recipient AGE_PUBLIC_KEY ... | --recipients-file FILE) --out FILE

Writes an age-encrypted backup of this node's keystore to FILE (created, never
overwritten, mode 0600): every key share, the node's libp2p identity and its other
keystore records (ECDSA pre-parameters are left out: the node makes new ones). It is
encrypted to the age recipients given (public keys "age1..."); make the key pair on
another machine (age-keygen -o operator.key, or go run filippo.io/age/cmd/age-keygen)
and keep its private key off every node. The node's master key is not in the backup
and is not needed to restore it.

While the node runs, the backup is made by the node through its control socket
(DATA_DIR/control.sock), without stopping it. When no node runs, the keystore is
opened directly with the master key (--master-key-file, default DATA_DIR/master.key,
or the configuration's master_key).

Prints {"out":...,"bytes":...,"sha256":...,"peer_id":...}. Store the file offline;
restore it with custosd restore.`

	restoreHelp = `custosd restore --in FILE --identity AGE_IDENTITY_FILE
                (--config FILE | --data-dir DIR [--master-key-file FILE])

Restores a node whose data directory was lost from a backup made by custosd backup:
decrypts FILE with the age identity file (the operator's private key, mode 0600) and
writes a new keystore in DATA_DIR/keystore, sealed under the node's master key. The
master key file (--master-key-file, default DATA_DIR/master.key, or the configuration's
master_key.file) is used if it exists and created (mode 0600) if it does not; with
master_key.env the variable must be set. DATA_DIR must hold no keystore, raft or state
directory. Nothing is written unless the whole backup decrypts and checks out.

Then start the node with its configuration (custosd run --config FILE): it rejoins the
cluster as the same member (the peer id printed must be the one in the configuration),
catches up from the leader, and joins no ceremony for about a minute after the restore
(see GET /readyz). Delete the identity file from the node once done.`

	rotateHelp = `custosd rotate-master-key (--config FILE | --data-dir DIR [--master-key-file FILE])
                          --new-master-key-file FILE

Re-wraps every data key of the node's keystore under the master key in FILE (64 hex
digits, mode 0600); FILE is created with a fresh random key if it does not exist. Share
ciphertexts are not touched; the change is one atomic write. While the node runs, it
is done by the node through its control socket, with no downtime; otherwise the
keystore is opened directly with the current master key.

From then on only the new key opens the keystore. Before the node next restarts:
  1. replace its master key: mv FILE CURRENT_MASTER_KEY_FILE (the file that
     master_key.file names), or point master_key.file at FILE, or put the new key in the
     master_key.env variable;
  2. keep a copy of the new key where you keep master keys, then destroy every copy of
     the old one.
A node restarted with the old key refuses to start ("the master key does not open ...")
and changes nothing: give it the new key.`
)

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "init":
		return cmdInit(args[1:], stdout)
	case "run":
		return cmdRun(args[1:], stderr)
	case "backup":
		return cmdBackup(args[1:], stdout)
	case "restore":
		return cmdRestore(args[1:], stdout, stderr)
	case "rotate-master-key":
		return cmdRotate(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 {
			if h, ok := map[string]string{"backup": backupHelp, "restore": restoreHelp, "rotate-master-key": rotateHelp}[args[1]]; ok {
				fmt.Fprintln(stdout, h)
				return nil
			}
		}
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
	// Collector headroom (internal/memtune), unless the operator set GOGC: this is the
	// process's setting, so the binary owns it, not the node.
	if os.Getenv("GOGC") == "" {
		tu := &memtune.Tuner{Held: n.PebbleMemory, Logger: log}
		go tu.Run(ctx)
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

// target is the node a backup, restore or rotation is about: its data directory and
// where its master key comes from.
type target struct {
	dataDir string
	// mkFile is the master key file; "" when the configuration takes the key from an
	// environment variable (cfg then says which).
	mkFile string
	cfg    *config.Config
}

// targetFlags adds --config, --data-dir and --master-key-file to fs.
func targetFlags(fs *flag.FlagSet) (cfgPath, dataDir, mkFile *string) {
	cfgPath = fs.String("config", "", "the node's configuration file (gives data_dir and master_key)")
	dataDir = fs.String("data-dir", "", "the node's data directory (instead of --config)")
	mkFile = fs.String("master-key-file", "", "the node's master key file (default DATA_DIR/master.key, or the configuration's)")
	return
}

func resolveTarget(cmd, cfgPath, dataDir, mkFile string) (*target, error) {
	switch {
	case cfgPath != "" && dataDir != "":
		return nil, fmt.Errorf("%s: give --config or --data-dir, not both", cmd)
	case cfgPath == "" && dataDir == "":
		return nil, fmt.Errorf("%s: --config FILE or --data-dir DIR is required (custosd help %s)", cmd, cmd)
	}
	t := &target{dataDir: dataDir, mkFile: mkFile}
	if cfgPath != "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		t.cfg, t.dataDir = cfg, cfg.DataDir
		if t.mkFile == "" {
			t.mkFile = cfg.MasterKey.File
		}
	} else if t.mkFile == "" {
		t.mkFile = filepath.Join(dataDir, "master.key")
	}
	return t, nil
}

// masterKey loads the target's current master key.
func (t *target) masterKey() ([]byte, error) {
	if t.mkFile != "" {
		k, err := keystore.MasterKeyFromFile(t.mkFile)
		if err != nil {
			return nil, fmt.Errorf("master key: %w", err)
		}
		return k, nil
	}
	return node.MasterKeyOf(t.cfg)
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// readRecipientsFile reads an age recipients file: one public key a line, blank lines
// and "#" comments ignored.
func readRecipientsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recipients file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("recipients file: %w", err)
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("recipients file %s is larger than 1 MiB", path)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

// controlContext bounds a control-socket call and ends it on Ctrl-C.
func controlContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

// cmdBackup writes an age-encrypted backup of a node's keystore (see backupHelp).
func cmdBackup(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), backupHelp) }
	cfgPath, dataDir, mkFile := targetFlags(fs)
	var recipients multiFlag
	fs.Var(&recipients, "recipient", "age public key (age1...) to encrypt to; repeatable")
	recFile := fs.String("recipients-file", "", "file of age public keys, one a line")
	out := fs.String("out", "", "backup file to create")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("backup: unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("backup: --out FILE is required (custosd help backup)")
	}
	lines := []string(recipients)
	if *recFile != "" {
		more, err := readRecipientsFile(*recFile)
		if err != nil {
			return err
		}
		lines = append(lines, more...)
	}
	rs, err := node.ParseRecipients(lines)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	t, err := resolveTarget("backup", *cfgPath, *dataDir, *mkFile)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("backup: %s exists; a backup is never overwritten: choose another --out", *out)
	}
	partial := *out + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w (a %s left by an interrupted backup can be deleted)", err, partial)
	}
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(partial)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	ctx, cancel := controlContext()
	defer cancel()
	via := "running node (control socket)"
	var peerID string
	res, err := node.ControlBackup(ctx, t.dataDir, lines, cw)
	if errors.Is(err, node.ErrNoNode) {
		via = "keystore (no node running)"
		key, kerr := t.masterKey()
		if kerr != nil {
			return fmt.Errorf("backup: no node runs on %s, and the keystore cannot be opened: %w", t.dataDir, kerr)
		}
		peerID, err = node.BackupOffline(t.dataDir, key, rs, cw)
		clear(key)
	} else if err == nil {
		peerID = res.PeerID
	}
	if err != nil {
		return fmt.Errorf("backup: %w; no backup was written", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done = true
	// Link, not rename: never replaces a file that appeared meanwhile.
	if err := os.Link(partial, *out); err != nil {
		_ = os.Remove(partial)
		return fmt.Errorf("backup: %w", err)
	}
	_ = os.Remove(partial)
	_ = durable.SyncDir(filepath.Dir(*out)) // best effort: some filesystems cannot
	b, _ := json.Marshal(map[string]any{"out": *out, "bytes": cw.n, "sha256": hex.EncodeToString(h.Sum(nil)), "peer_id": peerID, "via": via})
	fmt.Fprintln(stdout, string(b))
	return nil
}

// cmdRestore restores a lost node's keystore from a backup (see restoreHelp).
func cmdRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), restoreHelp) }
	cfgPath, dataDir, mkFile := targetFlags(fs)
	in := fs.String("in", "", "the backup file (custosd backup --out)")
	identity := fs.String("identity", "", "age identity file: the private key the backup was encrypted to (mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("restore: unexpected argument %q", fs.Arg(0))
	}
	if *in == "" || *identity == "" {
		return errors.New("restore: --in FILE and --identity AGE_IDENTITY_FILE are required (custosd help restore)")
	}
	t, err := resolveTarget("restore", *cfgPath, *dataDir, *mkFile)
	if err != nil {
		return err
	}
	idb, err := keystore.ReadSecretFile(*identity, 64<<10)
	if err != nil {
		return fmt.Errorf("restore: age identity file: %w", err)
	}
	defer clear(idb)
	bf, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer bf.Close()
	if err := os.MkdirAll(t.dataDir, 0o700); err != nil {
		return fmt.Errorf("restore: data dir: %w", err)
	}
	var key []byte
	created := false
	if t.mkFile != "" {
		key, err = keystore.MasterKeyFromFile(t.mkFile)
		if errors.Is(err, os.ErrNotExist) {
			key, err = keystore.WriteNewMasterKeyFile(t.mkFile)
			created = err == nil
		}
	} else {
		key, err = node.MasterKeyOf(t.cfg)
	}
	if err != nil {
		return fmt.Errorf("restore: master key: %w", err)
	}
	defer clear(key)
	want := ""
	if t.cfg != nil {
		want = t.cfg.Self().PeerID
	}
	res, err := node.RestoreDataDir(t.dataDir, key, bf, bytes.NewReader(idb), want)
	if err != nil {
		if created {
			_ = os.Remove(t.mkFile)
		}
		return fmt.Errorf("restore: %w", err)
	}
	b, _ := json.Marshal(map[string]any{"peer_id": res.PeerID, "shares": res.Shares, "data_dir": t.dataDir, "master_key_file": t.mkFile, "master_key_created": created})
	fmt.Fprintln(stdout, string(b))
	fmt.Fprintf(stderr, `restored %d key shares for peer %s into %s.
Next: check that this peer id is the node's in the cluster configuration, then start the
node (custosd run --config FILE). It catches up from the cluster and joins no ceremony
for about a minute (GET /readyz says until when). Remove the age identity file from this
machine.
`, res.Shares, res.PeerID, filepath.Join(t.dataDir, "keystore"))
	return nil
}

// cmdRotate re-wraps a node's keystore under a new master key (see rotateHelp).
func cmdRotate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotate-master-key", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), rotateHelp) }
	cfgPath, dataDir, mkFile := targetFlags(fs)
	newFile := fs.String("new-master-key-file", "", "the new master key file (created with a fresh key if absent)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("rotate-master-key: unexpected argument %q", fs.Arg(0))
	}
	if *newFile == "" {
		return errors.New("rotate-master-key: --new-master-key-file FILE is required (custosd help rotate-master-key)")
	}
	t, err := resolveTarget("rotate-master-key", *cfgPath, *dataDir, *mkFile)
	if err != nil {
		return err
	}
	newAbs, err := filepath.Abs(*newFile)
	if err != nil {
		return err
	}
	if t.mkFile != "" {
		if a, st1, st2 := absOr(t.mkFile), statOr(t.mkFile), statOr(newAbs); a == newAbs || (st1 != nil && st2 != nil && os.SameFile(st1, st2)) {
			return errors.New("rotate-master-key: the new master key file is the current one; give a new path (it is created if absent)")
		}
	}
	newKey, err := keystore.MasterKeyFromFile(newAbs)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		newKey, err = keystore.WriteNewMasterKeyFile(newAbs)
		created = err == nil
	}
	if err != nil {
		return fmt.Errorf("rotate-master-key: new master key: %w", err)
	}
	defer clear(newKey)
	ctx, cancel := controlContext()
	defer cancel()
	via := "running node (control socket)"
	var peerID string
	res, err := node.ControlRotateMasterKey(ctx, t.dataDir, newAbs)
	if errors.Is(err, node.ErrNoNode) {
		via = "keystore (no node running)"
		old, kerr := t.masterKey()
		if kerr != nil {
			err = fmt.Errorf("no node runs on %s, and the current master key cannot be loaded: %w", t.dataDir, kerr)
		} else {
			peerID, err = node.RotateMasterKeyOffline(t.dataDir, old, newKey)
			clear(old)
		}
	} else if err == nil {
		peerID = res.PeerID
	}
	if err != nil {
		hint := ""
		if created {
			hint = fmt.Sprintf(" (keep %s until the node answers again: if the rotation did complete, only it opens the keystore)", newAbs)
		}
		return fmt.Errorf("rotate-master-key: %w%s", err, hint)
	}
	b, _ := json.Marshal(map[string]any{"rotated": true, "new_master_key_file": newAbs, "new_key_created": created, "peer_id": peerID, "via": via})
	fmt.Fprintln(stdout, string(b))
	switch {
	case t.mkFile != "":
		fmt.Fprintf(stderr, `master key rotated: only %s opens the keystore of %s now.
Before the node restarts, replace its master key file:
  mv %s %s
and destroy every other copy of the old master key.
`, newAbs, t.dataDir, newAbs, t.mkFile)
	default:
		fmt.Fprintf(stderr, `master key rotated: only the key in %s opens the keystore of %s now.
Before the node restarts, put that key in the %s environment variable (or point
master_key.file at %s), then destroy every copy of the old master key.
`, newAbs, t.dataDir, t.cfg.MasterKey.Env, newAbs)
	}
	return nil
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func statOr(p string) os.FileInfo {
	st, err := os.Stat(p)
	if err != nil {
		return nil
	}
	return st
}

// countWriter counts what passes through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
