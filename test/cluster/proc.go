//go:build linux

package cluster

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// Limits on what is read from /proc.
const (
	maxStatusBytes = 64 << 10
	maxNetTCPBytes = 64 << 20
	maxProcFDs     = 1 << 16
	maxNetTCPLine  = 4 << 10
	tcpEstablished = "01"
	statusUnit     = "kB"
)

// ErrNoField is returned when /proc/PID/status lacks the field asked for.
var ErrNoField = errors.New("cluster: field not in /proc status")

// ReadVmHWM returns the peak resident set size ("high water mark") of process pid in
// bytes, from /proc/PID/status.
func ReadVmHWM(pid int) (int64, error) { return readStatusKB(pid, "VmHWM") }

// ReadVmRSS returns the current resident set size of process pid in bytes.
func ReadVmRSS(pid int) (int64, error) { return readStatusKB(pid, "VmRSS") }

// ReadRSSParts returns what of process pid's resident set is anonymous memory (its heap,
// stacks, runtime) and what is file-backed (mostly its binary's pages, touched as code
// runs), in bytes (Linux 4.5+).
func ReadRSSParts(pid int) (anon, file int64, err error) {
	if anon, err = readStatusKB(pid, "RssAnon"); err != nil {
		return 0, 0, err
	}
	if file, err = readStatusKB(pid, "RssFile"); err != nil {
		return 0, 0, err
	}
	return anon, file, nil
}

// ResetPeakRSS resets the kernel's VmHWM of process pid to its current RSS (writes "5"
// to /proc/PID/clear_refs, Linux 4.0+), so that a later ReadVmHWM reports the peak of
// what ran in between.
func ResetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("cluster: reset peak RSS of %d: %w", pid, err)
	}
	return nil
}

func readStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cluster: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStatusBytes))
	if err != nil {
		return 0, fmt.Errorf("cluster: read /proc/%d/status: %w", pid, err)
	}
	v, err := parseStatusKB(b, field)
	if err != nil {
		return 0, fmt.Errorf("cluster: /proc/%d/status: %w", pid, err)
	}
	return v, nil
}

// parseStatusKB finds "Field:   123 kB" in a /proc/PID/status text and returns bytes.
func parseStatusKB(status []byte, field string) (int64, error) {
	for line := range bytes.Lines(status) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(name) != field {
			continue
		}
		fs := strings.Fields(string(rest))
		if len(fs) != 2 || fs[1] != statusUnit {
			return 0, fmt.Errorf("%s: unexpected value %q", field, strings.TrimSpace(string(rest)))
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<40 {
			return 0, fmt.Errorf("%s: bad number %q", field, fs[0])
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%w: %s", ErrNoField, field)
}

// Socket is one TCP socket of the kernel's table (/proc/net/tcp or tcp6).
type Socket struct {
	Local, Remote string // host:port; IPv4-mapped IPv6 addresses are shown as IPv4
	LocalPort     int
	RemotePort    int
	Established   bool
	Inode         uint64
}

// socketInodes returns the inodes of the sockets process pid has open.
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if len(ents) > maxProcFDs {
		ents = ents[:maxProcFDs]
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if v, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[v] = true
			}
		}
	}
	return out, nil
}

// ProcessSockets returns the TCP sockets (IPv4 and IPv6) that process pid has open.
func ProcessSockets(pid int) ([]Socket, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, err
	}
	var out []Socket
	for _, name := range []string{"tcp", "tcp6"} {
		path := fmt.Sprintf("/proc/%d/net/%s", pid, name)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		socks, err := parseNetTCP(io.LimitReader(f, maxNetTCPBytes))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cluster: %s: %w", path, err)
		}
		for _, s := range socks {
			if inodes[s.Inode] {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// parseNetTCP parses the /proc/net/tcp(6) format: a header line, then one socket per
// line, "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...".
func parseNetTCP(r io.Reader) ([]Socket, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxNetTCPLine)
	var out []Socket
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) < 10 {
			return nil, fmt.Errorf("short line %q", sc.Text())
		}
		lip, lport, err := parseHexAddr(fs[1])
		if err != nil {
			return nil, err
		}
		rip, rport, err := parseHexAddr(fs[2])
		if err != nil {
			return nil, err
		}
		inode, err := strconv.ParseUint(fs[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad inode %q", fs[9])
		}
		out = append(out, Socket{
			Local: net.JoinHostPort(lip.String(), strconv.Itoa(lport)), LocalPort: lport,
			Remote: net.JoinHostPort(rip.String(), strconv.Itoa(rport)), RemotePort: rport,
			Established: fs[3] == tcpEstablished, Inode: inode,
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseHexAddr decodes "0100007F:1F90": an IPv4 (4 bytes) or IPv6 (16 bytes) address
// written as 32-bit words in host (little-endian) order, and a big-endian hex port.
func parseHexAddr(s string) (net.IP, int, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) || len(p) != 4 {
		return nil, 0, fmt.Errorf("bad socket address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return nil, 0, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad socket port %q", s)
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 {
		ip[w], ip[w+1], ip[w+2], ip[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return ip, int(port), nil
}
