//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	testcluster "github.com/custos/custos/test/cluster"
)

// custosd runs the custosd binary and returns its stdout (stderr in the error).
func custosd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bins.Custosd, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &cmdError{err: err, stderr: errb.String()}
	}
	return out.String(), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }

// signCount is node i's count of sign ceremonies of curve it completed with outcome ok.
func signCount(t *testing.T, c *cluster, i int, curve string) float64 {
	t.Helper()
	m, err := c.Metrics(context.Background(), i)
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for series, v := range m {
		if strings.HasPrefix(series, "custos_ceremony_seconds_count{") && strings.Contains(series, `kind="sign"`) &&
			strings.Contains(series, `outcome="ok"`) && strings.Contains(series, `curve="`+curve+`"`) {
			n += v
		}
	}
	return n
}

// TestBackupRestoreNode walks the disaster-recovery runbook on a real 3-node cluster:
// keys of both curves sign; node 3 is backed up while it runs (control socket, age
// recipient made here); node 3 is killed, its data directory wiped entirely (master key
// included), restored with custosd restore under a new master key, and started: it
// rejoins raft as the same member, catches up, and after the restore guard signs again,
// with node 1 and then with node 2. Meanwhile node 2's master key is rotated while it
// runs, the node restarted with the new key, and it signs through a committee that
// includes it.
func TestBackupRestoreNode(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := startCluster(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	u := c.newUser(ctx, "owner")
	ecKey, _, err := u.Clients[2].CreateKey(ctx, "secp256k1", 2, "ec", "")
	if err != nil || ecKey.Status != "active" {
		t.Fatalf("secp256k1 keygen: %v", err)
	}
	edKey, _, err := u.Clients[2].CreateKey(ctx, "ed25519", 2, "ed", "")
	if err != nil || edKey.Status != "active" {
		t.Fatalf("ed25519 keygen: %v", err)
	}
	edPub, _ := hex.DecodeString(edKey.PublicKey)
	// signVia signs with both keys through node i (whose committee then includes node i:
	// the leader and the entry node are preferred) and verifies both signatures; it
	// checks that node i itself took part in both ceremonies.
	signVia := func(i int, what string) {
		t.Helper()
		ec0, ed0 := signCount(t, c, i, "secp256k1"), signCount(t, c, i, "ed25519")
		digest := sha("backup test " + what)
		r, err := u.Clients[i].Sign(ctx, ecKey.KeyID, digest, "", "")
		if err != nil || r.Status != "signed" || r.Signature == nil {
			t.Fatalf("%s: ECDSA sign via node %d: %v %+v", what, i+1, err, r)
		}
		verifyECDSA(t, ecKey.PublicKey, digest, r.Signature)
		msg := []byte("backup test " + what)
		r, err = u.Clients[i].Sign(ctx, edKey.KeyID, msg, "", "")
		if err != nil || r.Status != "signed" || r.Signature == nil {
			t.Fatalf("%s: Ed25519 sign via node %d: %v %+v", what, i+1, err, r)
		}
		if sig, _ := hex.DecodeString(r.Signature.Signature); !ed25519.Verify(edPub, msg, sig) {
			t.Fatalf("%s: Ed25519 signature does not verify", what)
		}
		// Node i's party may finish (and count) a moment after the first result that
		// verified was committed and answered.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			ec1, ed1 := signCount(t, c, i, "secp256k1"), signCount(t, c, i, "ed25519")
			if ec1 > ec0 && ed1 > ed0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: node %d took no part in the signings (sign ceremonies %v→%v, %v→%v)", what, i+1, ec0, ec1, ed0, ed1)
			}
		}
		t.Logf("%s: signed via node %d (%v into the test)", what, i+1, time.Since(began).Round(time.Second))
	}
	signVia(2, "before the backup")

	// The operator's age key pair, made "on another machine".
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	opDir := t.TempDir()
	idFile := filepath.Join(opDir, "operator.key")
	if err := os.WriteFile(idFile, []byte("# operator key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backupFile := filepath.Join(opDir, "node3.age")

	// Back up node 3 while it runs.
	dir3 := filepath.Join(c.Dir(), c.NodeID(2))
	out, err := custosd(t, "backup", "--data-dir", dir3, "--recipient", id.Recipient().String(), "--out", backupFile)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	var bres struct {
		Bytes  int64  `json:"bytes"`
		PeerID string `json:"peer_id"`
		Via    string `json:"via"`
	}
	if err := json.Unmarshal([]byte(out), &bres); err != nil || !strings.Contains(bres.Via, "running node") || bres.Bytes == 0 {
		t.Fatalf("backup output %q: %v", out, err)
	}
	if st, err := os.Stat(backupFile); err != nil || st.Mode().Perm() != 0o600 || st.Size() != bres.Bytes {
		t.Fatalf("backup file: %v %v", st, err)
	}
	if _, err := custosd(t, "backup", "--data-dir", dir3, "--recipient", id.Recipient().String(), "--out", backupFile); err == nil {
		t.Fatal("backup overwrote an existing file")
	}
	if !c.Running(2) {
		t.Fatal("node 3 stopped during the backup")
	}

	// Node 3's disk is lost: kill it and wipe its data directory entirely. Its
	// configuration comes back from wherever the operator keeps configurations.
	cfgPath3 := c.ConfigPath(2)
	cfg3, err := os.ReadFile(cfgPath3)
	if err != nil {
		t.Fatal(err)
	}
	oldLog, _ := os.ReadFile(c.LogPath(2))
	c.kill(2)
	if err := os.RemoveAll(dir3); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir3, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath3, cfg3, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(opDir, "node3-before.log"), oldLog, 0o600); err != nil {
		t.Fatal(err)
	}
	// A wrong identity is refused and writes nothing.
	other, _ := age.GenerateX25519Identity()
	otherFile := filepath.Join(opDir, "other.key")
	if err := os.WriteFile(otherFile, []byte(other.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := custosd(t, "restore", "--in", backupFile, "--identity", otherFile, "--config", cfgPath3); err == nil {
		t.Fatal("restore with the wrong age identity")
	}
	if ents, _ := os.ReadDir(dir3); len(ents) != 1 {
		t.Fatalf("a failed restore left files in the data directory: %v", ents)
	}
	out, err = custosd(t, "restore", "--in", backupFile, "--identity", idFile, "--config", cfgPath3)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	var rres struct {
		PeerID  string `json:"peer_id"`
		Shares  int    `json:"shares"`
		Created bool   `json:"master_key_created"`
	}
	if err := json.Unmarshal([]byte(out), &rres); err != nil || rres.PeerID != bres.PeerID || rres.Shares != 2 || !rres.Created {
		t.Fatalf("restore output %q: %v", out, err)
	}
	c.start(2)
	t.Logf("node 3 restored and started (%v into the test)", time.Since(began).Round(time.Second))

	// Meanwhile (node 3 joins no ceremony for a minute after its restore): rotate node
	// 2's master key while it runs, then restart it with the new key.
	dir2 := filepath.Join(c.Dir(), c.NodeID(1))
	newKey := filepath.Join(dir2, "master.key.new")
	out, err = custosd(t, "rotate-master-key", "--config", c.ConfigPath(1), "--new-master-key-file", newKey)
	if err != nil || !strings.Contains(out, `"rotated":true`) || !strings.Contains(out, "running node") {
		t.Fatalf("rotate-master-key: %q %v", out, err)
	}
	signVia(1, "after rotating node 2's master key, before its restart")
	c.stop(1)
	// The old key no longer opens node 2's keystore (checked offline, node stopped).
	if _, err := custosd(t, "backup", "--data-dir", dir2, "--recipient", id.Recipient().String(), "--out", filepath.Join(opDir, "x.age")); err == nil || !strings.Contains(err.Error(), "master key does not match") {
		t.Fatalf("the old master key still opens node 2's keystore: %v", err)
	}
	if err := os.Rename(newKey, filepath.Join(dir2, "master.key")); err != nil {
		t.Fatal(err)
	}
	c.start(1)
	c.waitReady(1)
	signVia(1, "node 2 restarted with its new master key")

	// Node 3 is back: it caught up and its restore guard ended.
	c.waitReady(2)
	logb, err := os.ReadFile(c.LogPath(2))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logb), "restored from a backup: joining no ceremony until the restore guard ends") {
		t.Fatal("node 3 did not start under the restore guard")
	}
	if strings.Contains(string(logb), id.String()) {
		t.Fatal("node 3's log holds the operator's age identity")
	}
	ds1, err := c.DebugState(ctx, 0)
	c.must(err)
	ds3, err := c.DebugState(ctx, 2)
	c.must(err)
	if ds3.Shares != 2 || ds3.SharesHash != ds1.SharesHash {
		t.Fatalf("restored node 3 holds %d shares (hash %s), node 1 %d (%s)", ds3.Shares, ds3.SharesHash, ds1.Shares, ds1.SharesHash)
	}
	signVia(2, "restored node 3 with node 1 leading or in the committee")

	// Without node 1: the restored node and the rotated node sign together.
	c.stop(0)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = testcluster.Until(wctx, func() bool {
		l, err := c.Leader(wctx)
		return err == nil && l != 0
	})
	wcancel()
	if err != nil {
		t.Fatalf("no new leader without node 1: %v", err)
	}
	signVia(2, "restored node 3 with node 2, node 1 stopped")
	signVia(1, "node 2 with restored node 3, node 1 stopped")
	t.Logf("done in %v", time.Since(began).Round(time.Second))
}
