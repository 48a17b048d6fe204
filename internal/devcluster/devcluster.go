// Package devcluster creates and describes a local custos cluster on loopback: keys,
// identities, per-node configurations and the cluster.json of API.md's dev cluster
// contract. `custos dev up` and the end-to-end tests use it. It only writes dev-mode
// configurations (insecure fixtures, shared admin key) and never starts nodes.
//
// It must not import node (nor anything that links tss-lib, libp2p, raft or Pebble): the
// custos CLI links it. A node's data directory (master key, keystore, libp2p identity) is
// custosd's format, so Create has `custosd init` write it and reads back the peer id.
package devcluster

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/custos/custos/internal/config"
)

// Cluster is cluster.json.
type Cluster struct {
	Name         string `json:"name"`
	Threshold    int    `json:"threshold"`
	Nodes        []Node `json:"nodes"`
	AdminKeyFile string `json:"admin_key_file"`
}

// Node is one node of cluster.json.
type Node struct {
	ID  string `json:"id"`
	API string `json:"api"`
}

// Spec says what to create.
type Spec struct {
	// Dir is where the cluster lives; AdminKeyFile in cluster.json is written relative to
	// RelDir when it is set (the dev contract's ".devcluster/admin.key"), else absolute.
	Dir, RelDir string
	Threshold   int
	APIPorts    []int
	P2PPorts    []int
	// FixturesDir seeds ECDSA pre-parameters (INSECURE; dev mode only).
	FixturesDir string
	// Extra is merged into every node's configuration (for tests: timeouts, log level);
	// a section given as nil is left out.
	Extra map[string]any
	// Custosd is the custosd binary that creates each node's data directory
	// (`custosd init`); required.
	Custosd string
}

// ConfigPath is the configuration file of a node.
func ConfigPath(dir, nodeID string) string { return filepath.Join(dir, nodeID, "config.json") }

// LogPath is where a node's log goes.
func LogPath(dir, nodeID string) string { return filepath.Join(dir, nodeID, "custosd.log") }

// Load reads an existing cluster.json, or returns os.ErrNotExist.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	var cl Cluster
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, fmt.Errorf("%s/cluster.json: %w", dir, err)
	}
	return &cl, nil
}

// AdminKey reads the cluster's ADMIN_KEY (32 bytes).
func (c *Cluster) AdminKey(base string) ([]byte, error) {
	p := c.AdminKeyFile
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(string(trimNL(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%s must hold 64 hex characters", p)
	}
	return k, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Create makes a new cluster in spec.Dir: admin key, per-node master keys, identities and
// configurations, and cluster.json.
func Create(spec Spec) (*Cluster, error) {
	n := len(spec.APIPorts)
	if n < 2 || len(spec.P2PPorts) != n || spec.Threshold < 2 || spec.Threshold > n {
		return nil, errors.New("devcluster: need at least 2 nodes, a p2p port per node and 2 ≤ threshold ≤ nodes")
	}
	if spec.Custosd == "" {
		return nil, errors.New("devcluster: Spec.Custosd (the custosd binary) is required")
	}
	fixtures, err := filepath.Abs(spec.FixturesDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return nil, err
	}
	adminKey := make([]byte, 32)
	if _, err := rand.Read(adminKey); err != nil {
		return nil, err
	}
	adminKeyFile := filepath.Join(spec.Dir, "admin.key")
	if err := os.WriteFile(adminKeyFile, []byte(hex.EncodeToString(adminKey)+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The cluster's webhook key: the same on every node (webhook secrets are sealed under
	// it in the replicated state).
	webhookKey := make([]byte, 32)
	if _, err := rand.Read(webhookKey); err != nil {
		return nil, err
	}
	webhookKeyFile := filepath.Join(spec.Dir, "webhook.key")
	if err := os.WriteFile(webhookKeyFile, []byte(hex.EncodeToString(webhookKey)+"\n"), 0o600); err != nil {
		return nil, err
	}
	cl := &Cluster{Name: "dev", Threshold: spec.Threshold, AdminKeyFile: adminKeyFile}
	if spec.RelDir != "" {
		cl.AdminKeyFile = filepath.Join(spec.RelDir, "admin.key")
	}
	var members []config.Member
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("node%d", i+1)
		dataDir := filepath.Join(spec.Dir, id)
		peerID, err := initDataDir(spec.Custosd, dataDir, filepath.Join(dataDir, "master.key"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		api := fmt.Sprintf("http://127.0.0.1:%d", spec.APIPorts[i])
		members = append(members, config.Member{ID: id, PeerID: peerID, P2PAddrs: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", spec.P2PPorts[i])}, API: api})
		cl.Nodes = append(cl.Nodes, Node{ID: id, API: api})
	}
	for i, m := range members {
		if err := writeNodeConfig(spec, cl.Name, m, m.P2PAddrs, fmt.Sprintf("127.0.0.1:%d", spec.APIPorts[i]), members, false, fixtures, i, adminKeyFile, webhookKeyFile); err != nil {
			return nil, err
		}
	}
	b, _ := json.MarshalIndent(cl, "", "  ")
	if err := os.WriteFile(filepath.Join(spec.Dir, "cluster.json"), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return cl, nil
}

// fixtureStride is the number of fixture slots (test/fixtures/preparams holds twelve
// files: two sets per slot).
const fixtureStride = 6

// writeNodeConfig writes node m's configuration: listening on p2pListen and apiListen,
// with members as cluster.members and cluster.join when join, then spec.Extra merged in.
//
// Every node gets its own slot of the insecure pre-parameter fixtures for the life of the
// cluster (slot = the node's number − 1, stride 6: twelve fixture files, up to six nodes
// created, joined ones included), so that no two parties of a ceremony share a Paillier
// key also after nodes joined.
func writeNodeConfig(spec Spec, name string, m config.Member, p2pListen []string, apiListen string, members []config.Member, join bool, fixtures string, slot int, adminKeyFile, webhookKeyFile string) error {
	cluster := map[string]any{"name": name, "threshold": spec.Threshold, "members": members}
	if join {
		cluster["join"] = true
	}
	c := map[string]any{
		"mode":       config.ModeDev,
		"node_id":    m.ID,
		"data_dir":   filepath.Join(spec.Dir, m.ID),
		"cluster":    cluster,
		"api":        map[string]any{"listen": apiListen, "debug": true},
		"p2p":        map[string]any{"listen": p2pListen},
		"master_key": map[string]any{"file": filepath.Join(spec.Dir, m.ID, "master.key")},
		"admin":      map[string]any{"key_file": adminKeyFile, "allow_shared_key": true},
		"preparams":  map[string]any{"insecure_fixtures_dir": fixtures, "insecure_fixture_slot": slot, "insecure_fixture_stride": fixtureStride},
		// Receivers of a dev cluster's webhooks run on this machine.
		"webhooks": map[string]any{"secret_key_file": webhookKeyFile, "allow_loopback": true},
	}
	for k, v := range spec.Extra {
		if v == nil {
			// A section given as nil is left out (a binary from before it knows no
			// such section and would refuse the configuration).
			delete(c, k)
			continue
		}
		base, isMap := c[k].(map[string]any)
		add, addMap := v.(map[string]any)
		if isMap && addMap {
			// A copy: the same Extra section is merged into every node's map.
			merged := make(map[string]any, len(base)+len(add))
			for kk, vv := range base {
				merged[kk] = vv
			}
			for kk, vv := range add {
				if vv == nil {
					// A key given as nil is left out of the section (as above, for an
					// older binary that does not know it).
					delete(merged, kk)
					continue
				}
				merged[kk] = vv
			}
			c[k] = merged
			continue
		}
		c[k] = v
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return os.WriteFile(ConfigPath(spec.Dir, m.ID), append(b, '\n'), 0o600)
}

// NewNode describes a node AddNode adds to an existing cluster.
type NewNode struct {
	// ID is the new node's id; it must not be taken.
	ID string
	// APIPort and P2PPort are the ports it listens on (127.0.0.1).
	APIPort, P2PPort int
	// P2PAddrs are the addresses the members dial it at; empty means its listen address.
	P2PAddrs []string
	// API is its API base URL; empty means http://127.0.0.1:APIPort.
	API string
	// Members are the running members as the new node dials them.
	Members []config.Member
}

// AddNode creates one more node for the cluster Create made in spec.Dir (spec as given
// to Create; its ports are not used): its data directory (custosd init) and a
// configuration like the other nodes' (same mode, admin and webhook keys, fixtures and
// spec.Extra) whose cluster.members are nn.Members and itself, with cluster.join set: it
// waits to be added by the cluster's leader. The other nodes' configurations are not
// changed (they learn the member from the replicated state); cluster.json lists it. It
// returns the new member as the admin adds it.
func AddNode(spec Spec, nn NewNode) (config.Member, error) {
	if spec.Custosd == "" {
		return config.Member{}, errors.New("devcluster: Spec.Custosd (the custosd binary) is required")
	}
	cl, err := Load(spec.Dir)
	if err != nil {
		return config.Member{}, fmt.Errorf("devcluster: %w", err)
	}
	if nn.ID == "" || len(nn.Members) < 2 {
		return config.Member{}, errors.New("devcluster: a new node needs an id and at least 2 members to join")
	}
	for _, m := range nn.Members {
		if m.ID == nn.ID {
			return config.Member{}, fmt.Errorf("devcluster: node id %s is taken", nn.ID)
		}
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, nn.ID)); err == nil {
		return config.Member{}, fmt.Errorf("devcluster: %s already exists", filepath.Join(spec.Dir, nn.ID))
	}
	if spec.Threshold == 0 {
		spec.Threshold = cl.Threshold
	}
	fixtures, err := filepath.Abs(spec.FixturesDir)
	if err != nil {
		return config.Member{}, err
	}
	dataDir := filepath.Join(spec.Dir, nn.ID)
	peerID, err := initDataDir(spec.Custosd, dataDir, filepath.Join(dataDir, "master.key"))
	if err != nil {
		return config.Member{}, fmt.Errorf("%s: %w", nn.ID, err)
	}
	listen := []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", nn.P2PPort)}
	self := config.Member{ID: nn.ID, PeerID: peerID, P2PAddrs: nn.P2PAddrs, API: nn.API}
	if len(self.P2PAddrs) == 0 {
		self.P2PAddrs = listen
	}
	if self.API == "" {
		self.API = fmt.Sprintf("http://127.0.0.1:%d", nn.APIPort)
	}
	members := append(slices.Clone(nn.Members), self)
	adminKeyFile, webhookKeyFile := filepath.Join(spec.Dir, "admin.key"), filepath.Join(spec.Dir, "webhook.key")
	if len(cl.Nodes) >= fixtureStride {
		return config.Member{}, fmt.Errorf("devcluster: at most %d nodes (the pre-parameter fixtures' slots)", fixtureStride)
	}
	if err := writeNodeConfig(spec, cl.Name, self, listen, fmt.Sprintf("127.0.0.1:%d", nn.APIPort), members, true, fixtures, len(cl.Nodes), adminKeyFile, webhookKeyFile); err != nil {
		return config.Member{}, err
	}
	cl.Nodes = append(cl.Nodes, Node{ID: self.ID, API: self.API})
	b, _ := json.MarshalIndent(cl, "", "  ")
	if err := os.WriteFile(filepath.Join(spec.Dir, "cluster.json"), append(b, '\n'), 0o600); err != nil {
		return config.Member{}, err
	}
	return self, nil
}

// initDataDir runs `custosd init`, which creates the node's master key file and libp2p
// identity (or keeps those already there), and returns the peer id it prints.
func initDataDir(custosd, dataDir, masterKeyFile string) (string, error) {
	cmd := exec.Command(custosd, "init", "--data-dir", dataDir, "--master-key-file", masterKeyFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s init: %w: %s", custosd, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var out struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out.PeerID == "" {
		return "", fmt.Errorf("%s init printed no peer id: %q", custosd, stdout.Bytes())
	}
	return out.PeerID, nil
}
