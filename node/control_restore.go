package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/keystore"
)

// Backup and restore of one node.
//
// A backup is the node's keystore export (keystore.Export: every share, the libp2p
// identity and every other metadata record, pre-parameters left out) encrypted with age
// to one or more operator recipients, whose private keys never are on the node. The
// node's master key is not in it and not needed to restore: RestoreDataDir seals
// everything afresh under whichever master key the restored node is given.
//
// A restored data directory holds only the keystore: no raft log, no state database.
// The node then starts like a member on its first start: it bootstraps raft with the
// configured members, which writes locally the very configuration entry (index 1, term
// 1, the same servers) every member wrote at its own first start, so it conflicts with
// nothing; with a log that ends there it cannot win an election against members that
// hold the cluster's log, and the leader brings it up to date by replicating its log, or
// by InstallSnapshot when the log was compacted (that snapshot is adopted only once k
// members vouch for its state, as for any node that fell behind). The raft term and vote
// the node had are lost with its disk; raft's safety needs a member not to vote twice in
// one term, which a node restored mid-election could in principle do. Restores take far
// longer than an election (seconds), and the restored node learns the current term from
// the first message it gets, so this is noted rather than guarded against.
//
// Session markers ("session-<id>" metadata records: a ceremony session never runs twice
// on a node) are in the backup, but the markers of sessions the node joined after the
// backup was made are not. A schedule is acted on only within state.MaxStampSkew of its
// stamp, and the lost node ran such a session at the latest when its disk was lost, so
// before the restore; its schedule was stamped at most MaxStampSkew after that. So a
// restored node joins no ceremony until RestoreGuard after the restore
// (keystore.ImportedAtMeta): by then none of those schedules is fresh enough to be acted
// on. It says so on /readyz, and refuses scheduled ceremonies at once (as a node whose
// state is not vouched for does), so the leader picks another committee without waiting
// for a timeout.

// RestoreGuard is how long after a restore the node joins no ceremony: twice the stamp
// skew a schedule may have (it may be stamped ahead of the node's clock, and acted on
// until it is that far behind), and a margin.
const RestoreGuard = 2*state.MaxStampSkew + 5*time.Second

// loadRestoreGuard reads when the keystore was restored from a backup, if it was, and
// sets the guard's end.
func (n *Node) loadRestoreGuard() {
	b, err := n.ks.GetMeta(keystore.ImportedAtMeta)
	if err != nil {
		if !errors.Is(err, keystore.ErrNotFound) {
			// Unknown restore time: guard as if it was just now.
			n.log.Warn("cannot read when this keystore was restored; joining no ceremony for the restore guard", "err", err)
			n.restoreUntil = time.Now().Add(RestoreGuard)
		}
		return
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		n.restoreUntil = time.Now().Add(RestoreGuard)
		return
	}
	until := time.UnixMilli(ms).Add(RestoreGuard)
	if time.Until(until) > 0 {
		n.restoreUntil = until
		n.log.Warn("restored from a backup: joining no ceremony until the restore guard ends", "restored_at", time.UnixMilli(ms).UTC().Format(time.RFC3339), "until", until.UTC().Format(time.RFC3339))
	}
}

// restoreGuard says why this node joins no ceremony yet after a restore, or "".
func (n *Node) restoreGuard() string {
	if n.restoreUntil.IsZero() || !time.Now().Before(n.restoreUntil) {
		return ""
	}
	return fmt.Sprintf("restored from a backup: joining no ceremony until %s (sessions run after the backup was made must not run twice)", n.restoreUntil.UTC().Format(time.RFC3339))
}

// ceremonyBlocked is the runner's Blocked: the restore guard, then vouching.
func (n *Node) ceremonyBlocked() string {
	if r := n.restoreGuard(); r != "" {
		return r
	}
	return n.vouch.Blocked()
}

// readiness is GET /readyz's reasons: notReady's and the restore guard.
func (n *Node) readiness() []string {
	reasons := n.notReady()
	if r := n.restoreGuard(); r != "" {
		reasons = append(reasons, r)
	}
	return reasons
}

// MasterKeyOf loads the master key a configuration names (file or environment).
func MasterKeyOf(cfg *config.Config) ([]byte, error) { return loadMasterKey(cfg) }

// ParseRecipients parses age recipients ("age1…" X25519 keys, or "age1pq1…" hybrid
// post-quantum ones), at most controlMaxRecipients.
func ParseRecipients(lines []string) ([]age.Recipient, error) {
	if len(lines) == 0 {
		return nil, errors.New("no age recipient: give the operator's public key (age1…), made with age-keygen on another machine")
	}
	if len(lines) > controlMaxRecipients {
		return nil, fmt.Errorf("at most %d age recipients", controlMaxRecipients)
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\n\r") || strings.HasPrefix(strings.TrimSpace(l), "#") || strings.TrimSpace(l) == "" {
			return nil, errors.New("age recipient: one public key per value, no comments or blank values")
		}
		if strings.HasPrefix(strings.TrimSpace(l), "AGE-SECRET-KEY-") {
			return nil, errors.New("age recipient: that is a private key (AGE-SECRET-KEY-…); give its public key (age1…), and keep the private key off this machine")
		}
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		return nil, fmt.Errorf("age recipient: %v", err)
	}
	return rs, nil
}

// peerIDOf is the peer id of the identity stored in ks.
func peerIDOf(ks *keystore.Store) (string, error) {
	b, err := ks.GetMeta("identity")
	if err != nil {
		return "", err
	}
	priv, err := p2p.UnmarshalIdentity(b)
	clear(b)
	if err != nil {
		return "", err
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return "", err
	}
	return pid.String(), nil
}

// WriteBackup writes the age-encrypted backup of ks to w and returns the node's peer id.
// The plaintext exists only inside the age writer.
func WriteBackup(ks *keystore.Store, recipients []age.Recipient, w io.Writer) (string, error) {
	peerID, err := peerIDOf(ks)
	if err != nil {
		return "", fmt.Errorf("the keystore holds no node identity (run custosd init first?): %w", err)
	}
	aw, err := age.Encrypt(w, recipients...)
	if err != nil {
		return "", fmt.Errorf("age: %w", err)
	}
	if err := ks.Export(aw); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", fmt.Errorf("age: %w", err)
	}
	return peerID, nil
}

// openOffline opens the keystore of a data directory no node runs on.
func openOffline(dataDir string, masterKey []byte) (*keystore.Store, error) {
	dir := filepath.Join(dataDir, "keystore")
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("keystore %s: %w", dir, err)
	}
	ks, err := keystore.Open(dir, masterKey, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || strings.Contains(err.Error(), "lock held") {
			return nil, fmt.Errorf("%w: a process holds the keystore but no node answers on %s; stop it, or wait for it to finish starting", err, ControlSocketPath(dataDir))
		}
		return nil, err
	}
	return ks, nil
}

// BackupOffline writes the age-encrypted backup of a data directory no node runs on.
func BackupOffline(dataDir string, masterKey []byte, recipients []age.Recipient, w io.Writer) (string, error) {
	ks, err := openOffline(dataDir, masterKey)
	if err != nil {
		return "", err
	}
	defer ks.Close()
	return WriteBackup(ks, recipients, w)
}

// RotateMasterKeyOffline re-wraps the keystore of a data directory no node runs on.
func RotateMasterKeyOffline(dataDir string, oldKey, newKey []byte) (string, error) {
	ks, err := openOffline(dataDir, oldKey)
	if err != nil {
		return "", err
	}
	defer ks.Close()
	if err := ks.RotateMasterKey(newKey); err != nil {
		return "", err
	}
	return peerIDOf(ks)
}

// RestoreResult describes a restored data directory.
type RestoreResult struct {
	PeerID string `json:"peer_id"`
	Shares int    `json:"shares"`
}

// RestoreDataDir decrypts an age-encrypted backup with the identities (an age identity
// file's contents) and imports it into dataDir/keystore under masterKey. The data
// directory must hold no keystore, raft log or state database (a restore is for a lost
// disk: move those aside first); nothing is created unless the backup is whole and
// holds a node identity, and, when wantPeerID is not "", that identity's peer id is
// wantPeerID (the configuration's: a backup of another node is refused).
func RestoreDataDir(dataDir string, masterKey []byte, backup io.Reader, identities io.Reader, wantPeerID string) (*RestoreResult, error) {
	for _, sub := range []string{"keystore", "raft", "state"} {
		p := filepath.Join(dataDir, sub)
		ents, err := os.ReadDir(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("%s is not empty: restore is for a node whose data directory was lost; move %s aside (the node catches up from the cluster) and run restore again", p, p)
		}
	}
	if _, err := os.Stat(ControlSocketPath(dataDir)); err == nil {
		if c, err := dialControl(context.Background(), dataDir); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("a node is running on %s: stop it first", dataDir)
		}
	}
	ids, err := age.ParseIdentities(identities)
	if err != nil {
		return nil, fmt.Errorf("age identity file: %v", err)
	}
	pr, err := age.Decrypt(backup, ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, errors.New("this age identity cannot decrypt the backup: use the private key whose public key (age1…) the backup was made for")
		}
		return nil, fmt.Errorf("not an age-encrypted custos backup, or damaged: %v", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	dir := filepath.Join(dataDir, "keystore")
	if err := keystore.Import(dir, masterKey, pr, keystore.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		return nil, fmt.Errorf("nothing restored (a damaged or truncated backup file fails here): %w", err)
	}
	ks, err := keystore.Open(dir, masterKey, keystore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{}
	res.PeerID, err = peerIDOf(ks)
	if err == nil {
		var ids []string
		ids, err = ks.ListShares()
		res.Shares = len(ids)
	}
	_ = ks.Close()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("the backup holds no usable node identity, nothing restored: %w", err)
	}
	if wantPeerID != "" && res.PeerID != wantPeerID {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("the backup is of peer %s but the configuration names %s for this node: wrong backup file or configuration; nothing restored", res.PeerID, wantPeerID)
	}
	return res, nil
}
