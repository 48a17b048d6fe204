//go:build linux

package cluster

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tcustosd\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\nThreads:\t12\nBad:\t12 MB\n"
	tests := []struct {
		field string
		want  int64
		err   bool
	}{
		{"VmHWM", 51234 * 1024, false},
		{"VmRSS", 40000 * 1024, false},
		{"Threads", 0, true},
		{"Bad", 0, true},
		{"VmSwap", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatusKB([]byte(status), tt.field)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%s: got %d, %v; want %d, error %v", tt.field, got, err, tt.want, tt.err)
		}
	}
	if _, err := parseStatusKB([]byte(status), "VmSwap"); !errors.Is(err, ErrNoField) {
		t.Errorf("missing field: %v, want ErrNoField", err)
	}
}

func TestReadVmHWMSelf(t *testing.T) {
	rss, err := ReadVmRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	hwm, err := ReadVmHWM(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if hwm <= 0 || rss <= 0 || rss > hwm {
		t.Fatalf("VmHWM %d, VmRSS %d: want 0 < RSS <= HWM", hwm, rss)
	}
}

// A process's RSS splits into its anonymous and file-backed parts (and shared memory,
// which a test binary has little of).
func TestReadRSSPartsSelf(t *testing.T) {
	anon, file, err := ReadRSSParts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, err := ReadVmRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if anon <= 0 || file <= 0 || anon+file > rss+(1<<20) {
		t.Fatalf("RssAnon %d + RssFile %d, VmRSS %d: want both positive, together at most the RSS", anon, file, rss)
	}
}

const netTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
`

const netTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:1F91 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 0 10 -1
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
`

func TestParseNetTCP(t *testing.T) {
	socks, err := parseNetTCP(strings.NewReader(netTCP))
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{Local: "127.0.0.1:8080", Remote: "0.0.0.0:0", LocalPort: 8080, RemotePort: 0, Established: false, Inode: 111},
		{Local: "127.0.0.1:8080", Remote: "127.0.0.1:50000", LocalPort: 8080, RemotePort: 50000, Established: true, Inode: 222},
	}
	if len(socks) != len(want) {
		t.Fatalf("got %d sockets, want %d", len(socks), len(want))
	}
	for i := range want {
		if socks[i] != want[i] {
			t.Errorf("socket %d: got %+v, want %+v", i, socks[i], want[i])
		}
	}
	socks, err = parseNetTCP(strings.NewReader(netTCP6))
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 || socks[0].Local != "127.0.0.1:8081" || socks[0].Remote != "127.0.0.1:54321" || !socks[0].Established {
		t.Fatalf("v4-mapped socket: %+v", socks[0])
	}
	if socks[1].Local != "::1:80" && socks[1].Local != "[::1]:80" {
		t.Fatalf("IPv6 loopback socket: %+v", socks[1])
	}
	for _, bad := range []string{
		"header\n 0: 0100007F:1F90\n",
		"header\n 0: 0100007F 00000000:0000 0A a b c d e 1\n",
		"header\n 0: 0100007Z:1F90 00000000:0000 0A a b c d e 1\n",
		"header\n 0: 0100007F:1F90 00000000:0000 0A a b c d e x\n",
	} {
		if _, err := parseNetTCP(strings.NewReader(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

// TestProcessSocketsSelf finds this process's own connection in the kernel's table.
func TestProcessSocketsSelf(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	socks, err := ProcessSockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var found int
	for _, s := range socks {
		if s.Established && s.Local == conn.LocalAddr().String() && s.Remote == ln.Addr().String() {
			found++
		}
		if s.Established && s.Local == ln.Addr().String() && s.Remote == conn.LocalAddr().String() {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("found %d of the 2 ends of a loopback connection in %d sockets", found, len(socks))
	}
}

func TestClassify(t *testing.T) {
	est := func(local, remote string) Socket {
		_, lp, _ := net.SplitHostPort(local)
		_, rp, _ := net.SplitHostPort(remote)
		l, _ := strconv.Atoi(lp)
		r, _ := strconv.Atoi(rp)
		return Socket{Local: local, Remote: remote, LocalPort: l, RemotePort: r, Established: true}
	}
	apiPorts := map[int]bool{7001: true, 7002: true}
	proxyPorts := map[int]bool{9001: true, 9002: true}
	upstream := map[string]bool{"127.0.0.1:40001": true}
	tests := []struct {
		name   string
		socks  []Socket
		want   NodeConns
		errSub string
	}{
		{"all proxied", []Socket{
			est("127.0.0.1:8001", "127.0.0.1:9002"),                                                // outbound to node2's proxy
			est("127.0.0.1:8001", "127.0.0.1:40001"),                                               // inbound from a proxy
			est("127.0.0.1:7001", "127.0.0.1:55555"),                                               // SDK on the API
			{Local: "127.0.0.1:8001", Remote: "127.0.0.1:8002", LocalPort: 8001, RemotePort: 8002}, // not established
		}, NodeConns{Node: "node1", Outbound: 1, Inbound: 1, API: 1}, ""},
		{"direct peer connection", []Socket{
			est("127.0.0.1:8001", "127.0.0.1:9002"),
			est("127.0.0.1:8001", "127.0.0.1:8002"),
		}, NodeConns{Node: "node1", Outbound: 1, Direct: []string{"127.0.0.1:8001->127.0.0.1:8002"}}, "direct connection"},
		{"too few peers", []Socket{est("127.0.0.1:7001", "127.0.0.1:55555")}, NodeConns{Node: "node1", API: 1}, "want at least 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify("node1", 7001, tt.socks, apiPorts, proxyPorts, upstream)
			if got.Outbound != tt.want.Outbound || got.Inbound != tt.want.Inbound || got.API != tt.want.API || strings.Join(got.Direct, ",") != strings.Join(tt.want.Direct, ",") {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			err := got.check(2)
			if tt.errSub == "" && err != nil || tt.errSub != "" && (err == nil || !strings.Contains(err.Error(), tt.errSub)) {
				t.Fatalf("check: %v, want error containing %q", err, tt.errSub)
			}
			if len(tt.want.Direct) > 0 && !errors.Is(err, ErrNotProxied) {
				t.Fatalf("check: %v, want ErrNotProxied", err)
			}
		})
	}
}

func FuzzParseNetTCP(f *testing.F) {
	f.Add(netTCP)
	f.Add(netTCP6)
	f.Add("h\n 0: 0100007F:1F90 00000000:0000 01 a b c d e 7\n")
	f.Fuzz(func(t *testing.T, s string) {
		socks, err := parseNetTCP(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, so := range socks {
			if so.LocalPort < 0 || so.LocalPort > 65535 || so.RemotePort < 0 || so.RemotePort > 65535 {
				t.Fatalf("port out of range: %+v", so)
			}
		}
	})
}

func FuzzParseStatusKB(f *testing.F) {
	f.Add("VmHWM:\t  1234 kB\n")
	f.Add("VmHWM: 99999999999999999999 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseStatusKB([]byte(s), "VmHWM")
		if err == nil && (v < 0 || v > 1<<50) {
			t.Fatalf("value %d out of range", v)
		}
	})
}
