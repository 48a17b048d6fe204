//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/devcluster"
	testcluster "github.com/custos/custos/test/cluster"
)

// listeningPorts returns the TCP ports a process listens on and how many UDP sockets it
// has bound, from /proc.
func listeningPorts(t *testing.T, pid int) (tcp []int, udp int) {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc on this system: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	scan := func(file string, f func(fields []string)) {
		fh, err := os.Open(file)
		if err != nil {
			return
		}
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		sc.Scan()
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && inodes[fields[9]] {
				f(fields)
			}
		}
	}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		scan(file, func(fields []string) {
			if fields[3] == "0A" { // LISTEN
				port, _ := strconv.ParseUint(fields[1][strings.LastIndexByte(fields[1], ':')+1:], 16, 32)
				tcp = append(tcp, int(port))
			}
		})
	}
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		scan(file, func([]string) { udp++ })
	}
	return tcp, udp
}

// TestOnePortForPeers checks that a node listens on exactly its HTTP API port and its one
// libp2p port (raft, ceremonies and RPC share it), and on nothing else.
func TestOnePortForPeers(t *testing.T) {
	c := startCluster(t, testcluster.Options{})
	cfgPorts := map[int]bool{}
	for i := range c.N() {
		u := c.API(i)
		p, _ := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
		cfgPorts[p] = true
	}
	for i := range c.N() {
		tcp, udp := listeningPorts(t, c.PID(i))
		if len(tcp) != 2 || udp != 0 {
			t.Fatalf("node %d listens on TCP %v and %d UDP sockets; want exactly the API and libp2p ports", i+1, tcp, udp)
		}
		api := 0
		for _, port := range tcp {
			if cfgPorts[port] {
				api++
			}
		}
		if api != 1 {
			t.Fatalf("node %d: TCP %v does not include exactly one API port", i+1, tcp)
		}
	}
}

// TestProductionRefusesFixtures starts a node whose configuration is production but asks
// for the insecure pre-parameter fixtures: it must exit non-zero with a clear message.
func TestProductionRefusesFixtures(t *testing.T) {
	dir := t.TempDir()
	ports, err := testcluster.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := devcluster.Create(devcluster.Spec{Dir: dir, Threshold: 2, APIPorts: ports[:2], P2PPorts: ports[2:],
		FixturesDir: filepath.Join(bins.Root, "test", "fixtures", "preparams"), Extra: map[string]any{"mode": "production"}, Custosd: bins.Custosd})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.Custosd, "run", "--config", devcluster.ConfigPath(dir, cl.Nodes[0].ID)).CombinedOutput()
	if err == nil {
		t.Fatal("custosd started with insecure fixtures in a production configuration")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("unexpected exit: %v", err)
	}
	if !strings.Contains(string(out), "insecure_fixtures_dir") || !strings.Contains(string(out), "production") {
		t.Fatalf("message does not say what is wrong: %s", out)
	}
}
