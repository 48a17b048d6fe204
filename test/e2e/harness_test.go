package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/devcluster"
	"github.com/custos/custos/node/client"
)

// bins are the binaries TestMain builds once.
var bins struct{ custosd, custosdHooks, custos, root string }

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	bins.root = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	dir, err := os.MkdirTemp("", "custos-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.custosd = filepath.Join(dir, "custosd")
	bins.custosdHooks = filepath.Join(dir, "custosd-hooks")
	bins.custos = filepath.Join(dir, "custos")
	for _, b := range [][]string{
		{"build", "-o", bins.custosd, "./cmd/custosd"},
		{"build", "-tags", "custos_testhooks", "-o", bins.custosdHooks, "./cmd/custosd"},
		{"build", "-o", bins.custos, "./cmd/custos"},
	} {
		cmd := exec.Command("go", b...)
		cmd.Dir = bins.root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %v: %v\n%s", b, err, out)
			return 1
		}
	}
	return m.Run()
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

type clusterOpts struct {
	nodes, threshold int
	bin              string   // custosd binary (default bins.custosd)
	env              []string // extra environment for every node
	nodeEnv          map[int][]string
	extra            map[string]any
}

// cluster is a running set of custosd processes.
type cluster struct {
	t   *testing.T
	dir string
	cl  *devcluster.Cluster
	bin string
	env []string
	// nodeEnv is extra environment for some nodes only (by index).
	nodeEnv map[int][]string
	procs   []*exec.Cmd
	logs    []*os.File
	adm     *admin.Admin
	key     []byte
}

func startCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	if o.nodes == 0 {
		o.nodes, o.threshold = 3, 2
	}
	if o.bin == "" {
		o.bin = bins.custosd
	}
	ports := freePorts(t, 2*o.nodes)
	dir := t.TempDir()
	extra := map[string]any{"log": map[string]any{"level": "info"}, "ceremony": map[string]any{"sign_timeout": "15s", "keygen_timeout": "90s"}, "api": map[string]any{"wait_timeout": "30s"}}
	for k, v := range o.extra {
		extra[k] = v
	}
	spec := devcluster.Spec{Dir: dir, Threshold: o.threshold, APIPorts: ports[:o.nodes], P2PPorts: ports[o.nodes:],
		FixturesDir: filepath.Join(bins.root, "test", "fixtures", "preparams"), Extra: extra}
	cl, err := devcluster.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, cl: cl, bin: o.bin, env: o.env, nodeEnv: o.nodeEnv, procs: make([]*exec.Cmd, o.nodes), logs: make([]*os.File, o.nodes)}
	key, err := cl.AdminKey("/")
	if err != nil {
		t.Fatal(err)
	}
	c.key = key
	c.adm, err = admin.New(key, cl.Nodes[0].API)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	for i := range cl.Nodes {
		c.start(i)
	}
	c.waitReady(allNodes(o.nodes)...)
	return c
}

func allNodes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (c *cluster) start(i int) {
	c.t.Helper()
	id := c.cl.Nodes[i].ID
	lf, err := os.OpenFile(devcluster.LogPath(c.dir, id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, "run", "--config", devcluster.ConfigPath(c.dir, id))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(append(os.Environ(), c.env...), c.nodeEnv[i]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs[i], c.logs[i] = cmd, lf
}

// stop sends SIGTERM and waits; kill sends SIGKILL.
func (c *cluster) stop(i int) { c.signal(i, syscall.SIGTERM) }
func (c *cluster) kill(i int) { c.signal(i, syscall.SIGKILL) }

func (c *cluster) signal(i int, sig syscall.Signal) {
	p := c.procs[i]
	if p == nil {
		return
	}
	_ = p.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.Process.Kill()
		<-done
	}
	c.logs[i].Close()
	c.procs[i] = nil
}

func (c *cluster) stopAll() {
	for i := range c.procs {
		c.stop(i)
	}
	if c.t.Failed() {
		for _, n := range c.cl.Nodes {
			b, _ := os.ReadFile(devcluster.LogPath(c.dir, n.ID))
			lines := strings.Split(string(b), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			c.t.Logf("---- %s log (tail) ----\n%s", n.ID, strings.Join(lines, "\n"))
		}
	}
}

func (c *cluster) waitReady(nodes ...int) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, i := range nodes {
		for {
			resp, err := http.Get(c.cl.Nodes[i].API + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d not ready", i+1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func (c *cluster) api(i int) string { return c.cl.Nodes[i].API }

// user is a user with its request-signing key and one SDK client per node.
type user struct {
	id      uint64
	priv    ed25519.PrivateKey
	token   string
	clients []*client.Client
}

func (c *cluster) newUser(ctx context.Context, name string, perms ...string) *user {
	c.t.Helper()
	id, err := c.adm.CreateUser(ctx, name, perms...)
	if err != nil {
		c.t.Fatalf("create user: %v", err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tok, err := c.adm.GenUserToken(id, hex.EncodeToString(pub), time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	u := &user{id: id, priv: priv, token: tok}
	for i := range c.cl.Nodes {
		cl, err := client.New(c.api(i), tok, priv)
		if err != nil {
			c.t.Fatal(err)
		}
		u.clients = append(u.clients, cl)
	}
	return u
}

// custosCLI runs the custos binary and returns stdout.
func custosCLI(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bins.custos, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.String(), nil
}
