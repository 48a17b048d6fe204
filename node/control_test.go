package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/keystore"
)

// controlNode is a Node with only what the control socket uses: configuration, log and
// an open keystore holding an identity and a share.
func controlNode(t *testing.T) (*Node, []byte) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mk := bytes.Repeat([]byte{7}, keystore.MasterKeySize)
	ks, err := keystore.Open(filepath.Join(dir, "keystore"), mk, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	if _, err := Identity(ks); err != nil {
		t.Fatal(err)
	}
	if err := ks.PutShare("key_1", []byte("the share")); err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: &config.Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), ks: ks}
	return n, mk
}

// TestControlBackupAndRotate: through the control socket of a "running" node, a backup
// arrives encrypted to the recipient and restores; a rotation re-wraps the keystore under
// the new key file.
func TestControlBackupAndRotate(t *testing.T) {
	n, _ := controlNode(t)
	if err := n.startControl(); err != nil {
		t.Fatal(err)
	}
	defer n.stopControl()
	sock := ControlSocketPath(n.cfg.DataDir)
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st, err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := ControlBackup(context.Background(), n.cfg.DataDir, []string{id.Recipient().String()}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := peerIDOf(n.ks)
	if res.PeerID != want || res.Bytes != int64(buf.Len()) {
		t.Fatalf("result %+v, want peer %s and %d bytes", res, want, buf.Len())
	}
	if bytes.Contains(buf.Bytes(), []byte("the share")) {
		t.Fatal("plaintext share in the backup")
	}
	restored := t.TempDir()
	got, err := RestoreDataDir(restored, bytes.Repeat([]byte{9}, 32), bytes.NewReader(buf.Bytes()), strings.NewReader(id.String()), want)
	if err != nil || got.PeerID != want || got.Shares != 1 {
		t.Fatalf("restore: %+v %v", got, err)
	}
	// Restoring again into the same directory is refused; so is another node's backup.
	if _, err := RestoreDataDir(restored, bytes.Repeat([]byte{9}, 32), bytes.NewReader(buf.Bytes()), strings.NewReader(id.String()), ""); err == nil {
		t.Fatal("restore over a restored keystore")
	}
	if _, err := RestoreDataDir(t.TempDir(), bytes.Repeat([]byte{9}, 32), bytes.NewReader(buf.Bytes()), strings.NewReader(id.String()), "12D3KooWother"); err == nil {
		t.Fatal("restore of another peer's backup")
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := RestoreDataDir(t.TempDir(), bytes.Repeat([]byte{9}, 32), bytes.NewReader(buf.Bytes()), strings.NewReader(other.String()), ""); err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Fatalf("restore with the wrong identity: %v", err)
	}
	trunc := t.TempDir()
	if _, err := RestoreDataDir(trunc, bytes.Repeat([]byte{9}, 32), bytes.NewReader(buf.Bytes()[:buf.Len()-10]), strings.NewReader(id.String()), ""); err == nil {
		t.Fatal("restore of a truncated backup")
	}
	if _, err := os.Stat(filepath.Join(trunc, "keystore")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("truncated restore left a keystore: %v", err)
	}

	// A bad recipient is refused before anything is sent.
	if _, err := ControlBackup(context.Background(), n.cfg.DataDir, []string{"age1nope"}, &bytes.Buffer{}); err == nil {
		t.Fatal("bad recipient accepted")
	}

	// Rotation.
	newKey := filepath.Join(t.TempDir(), "new.key")
	nk, err := keystore.WriteNewMasterKeyFile(newKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ControlRotateMasterKey(context.Background(), n.cfg.DataDir, "relative.key"); err == nil {
		t.Fatal("relative key path accepted")
	}
	if _, err := ControlRotateMasterKey(context.Background(), n.cfg.DataDir, newKey); err != nil {
		t.Fatal(err)
	}
	if s, err := n.ks.GetShare("key_1"); err != nil || string(s) != "the share" {
		t.Fatalf("share after rotation: %v", err)
	}
	n.stopControl()
	n.control = nil
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after stop: %v", err)
	}
	if _, err := ControlBackup(context.Background(), n.cfg.DataDir, []string{id.Recipient().String()}, &bytes.Buffer{}); !errors.Is(err, ErrNoNode) {
		t.Fatalf("no node: %v", err)
	}
	n.ks.Close()
	if _, err := keystore.Open(filepath.Join(n.cfg.DataDir, "keystore"), nk, keystore.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatalf("keystore does not open under the new key: %v", err)
	}
}

// TestControlSocketPath: a non-socket at the path stops the node from starting; a stale
// socket is replaced.
func TestControlSocketPath(t *testing.T) {
	n, _ := controlNode(t)
	sock := ControlSocketPath(n.cfg.DataDir)
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.startControl(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at the socket path: %v", err)
	}
	os.Remove(sock)
	if err := n.startControl(); err != nil {
		t.Fatal(err)
	}
	// A second server on the same directory is refused while the first serves.
	n2 := &Node{cfg: n.cfg, log: n.log, ks: n.ks}
	if err := n2.startControl(); err == nil {
		t.Fatal("second control server started")
	}
	// Leave a stale socket behind: close without unlinking.
	n.control.ln.SetUnlinkOnClose(false)
	n.stopControl()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal("stale socket missing")
	}
	if err := n2.startControl(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	n2.stopControl()
}

// TestControlBusyAndBounds: one operation at a time; an oversized or unknown request is
// answered with an error.
func TestControlBusyAndBounds(t *testing.T) {
	n, _ := controlNode(t)
	if err := n.startControl(); err != nil {
		t.Fatal(err)
	}
	defer n.stopControl()
	n.control.busy <- struct{}{}
	_, err := ControlRotateMasterKey(context.Background(), n.cfg.DataDir, "/nonexistent")
	<-n.control.busy
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("busy: %v", err)
	}
	for _, line := range []string{strings.Repeat("x", controlMaxLine+10) + "\n", `{"op":"nope"}` + "\n", `{"op":"ping","extra":1}` + "\n"} {
		c, err := dialControl(context.Background(), n.cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		go c.Write([]byte(line))
		res, err := readControlResult(bufioReader(c))
		c.Close()
		if err != nil || res.OK {
			t.Fatalf("request %.20q: %+v %v", line, res, err)
		}
	}
}

// TestRestoreGuard: a keystore restored just now blocks ceremonies and readiness until
// RestoreGuard has passed; one restored long ago does not.
func TestRestoreGuard(t *testing.T) {
	n, _ := controlNode(t)
	n.loadRestoreGuard()
	if r := n.restoreGuard(); r != "" {
		t.Fatalf("guard on a keystore never restored: %q", r)
	}
	if err := n.ks.PutMeta(keystore.ImportedAtMeta, []byte("1000")); err != nil {
		t.Fatal(err)
	}
	n.loadRestoreGuard()
	if r := n.restoreGuard(); r != "" {
		t.Fatalf("guard long after the restore: %q", r)
	}
	if err := n.ks.PutMeta(keystore.ImportedAtMeta, []byte(strconvMs(time.Now()))); err != nil {
		t.Fatal(err)
	}
	n.loadRestoreGuard()
	if r := n.restoreGuard(); !strings.Contains(r, "restored from a backup") {
		t.Fatalf("no guard right after a restore: %q", r)
	}
	if d := time.Until(n.restoreUntil); d < RestoreGuard-5*time.Second || d > RestoreGuard {
		t.Fatalf("guard ends in %v", d)
	}
}

func strconvMs(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
