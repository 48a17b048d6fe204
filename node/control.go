package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/custos/custos/keystore"
)

// The control socket lets `custosd backup` and `custosd rotate-master-key` act on the
// keystore of a running node, which holds the keystore's Pebble lock: without it, both
// would need the node stopped.
//
// It is a unix socket, ControlSocketName in the data directory, mode 0600, served while
// the node runs. A connection is accepted only from a process of the node's own user (or
// root), checked with SO_PEERCRED, on top of the file mode. The protocol is one request
// per connection, one operation at a time in the whole node (a second gets "busy"):
//
//	client → node   one JSON line (at most controlMaxLine bytes):
//	                {"op":"backup","recipients":["age1…",…]}
//	                {"op":"rotate-master-key","new_master_key_file":"/abs/path"}
//	                {"op":"ping"}
//	node → client   one JSON line: {"ok":true} or {"ok":false,"error":"…"}
//	                backup only, after {"ok":true}: the age-encrypted backup as frames
//	                (4-byte big-endian length, 1–controlMaxFrame bytes), a frame of
//	                length 0, then a final JSON line: {"ok":true,"peer_id":"…",
//	                "bytes":N} or {"ok":false,"error":"…"} (the frames sent before are
//	                then worthless; the client discards them).
//
// Nothing secret crosses the socket in either direction: the node reads the new master
// key from the file named in the request, and a backup leaves the node already
// encrypted to the recipients. Every connection has a deadline (controlRequestTimeout
// for the request line, then controlBackupTimeout or controlRotateTimeout in all).

// ControlSocketName is the control socket's file name in the data directory.
const ControlSocketName = "control.sock"

const (
	controlMaxLine        = 64 << 10
	controlMaxFrame       = 64 << 10
	controlMaxRecipients  = 32
	controlRequestTimeout = 10 * time.Second
	controlBackupTimeout  = 30 * time.Minute
	controlRotateTimeout  = 2 * time.Minute
	// maxSocketPath is the longest path a unix socket can be bound to (sun_path).
	maxSocketPath = 107
)

// ErrNoNode means no node answers on the control socket (the socket does not exist, or
// nothing listens on it): the caller may open the keystore directly.
var ErrNoNode = errors.New("no running node answers on the control socket")

// ControlSocketPath is the control socket of a data directory.
func ControlSocketPath(dataDir string) string { return filepath.Join(dataDir, ControlSocketName) }

// controlRequest is the request line.
type controlRequest struct {
	Op               string   `json:"op"`
	Recipients       []string `json:"recipients,omitempty"`
	NewMasterKeyFile string   `json:"new_master_key_file,omitempty"`
}

// ControlResult is the node's answer (and, for a backup, its final line).
type ControlResult struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	PeerID string `json:"peer_id,omitempty"`
	// Bytes is the size of the encrypted backup the node sent.
	Bytes int64 `json:"bytes,omitempty"`
}

// controlServer serves the control socket of a running node.
type controlServer struct {
	n    *Node
	log  *slog.Logger
	path string
	ln   *net.UnixListener
	busy chan struct{} // one operation at a time
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startControl binds the control socket and serves it until stopControl. A path that
// exists and is not a socket, or a socket another process serves, is an error (the node
// does not start); a stale socket (nothing listens) is replaced. A data directory whose
// path is too long for a unix socket gets no control socket, with a warning: the node
// runs, and backup and rotation then need it stopped.
func (n *Node) startControl() error {
	path := ControlSocketPath(n.cfg.DataDir)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	log := n.log.With("component", "control")
	if len(path) > maxSocketPath {
		log.Warn("data directory path too long for the control socket: backup and rotate-master-key need the node stopped; use a shorter data_dir", "path", path)
		return nil
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("control socket: %s exists and is not a socket; move it away", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return fmt.Errorf("control socket: another process serves %s; is another node running on this data directory?", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("control socket: remove stale %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	// Between bind and chmod the socket has the umask's mode; the peer check below
	// refuses other users whatever the mode.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("control socket: chmod %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	s := &controlServer{n: n, log: log, path: path, ln: ln, busy: make(chan struct{}, 1), conns: map[net.Conn]struct{}{}}
	n.control = s
	s.wg.Add(1)
	go s.serve()
	log.Info("control socket listening", "path", path)
	return nil
}

// stopControl closes the socket and every connection, and waits for the operation in
// progress (a rotation finishes; a backup stops at its next write).
func (n *Node) stopControl() {
	s := n.control
	if s == nil {
		return
	}
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket stopped", "err", err)
			}
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.handle(c)
		}()
	}
}

// handle serves one connection.
func (s *controlServer) handle(c *net.UnixConn) {
	if uid, err := peerUID(c); err != nil {
		s.log.Warn("control connection refused: cannot read the peer's credentials", "err", err)
		return
	} else if uid != os.Getuid() && uid != 0 {
		s.log.Warn("control connection refused: another user", "uid", uid)
		return
	}
	_ = c.SetDeadline(time.Now().Add(controlRequestTimeout))
	req, err := readControlRequest(bufio.NewReaderSize(c, 4096))
	if err != nil {
		writeControlLine(c, ControlResult{Error: err.Error()})
		return
	}
	select {
	case s.busy <- struct{}{}:
		defer func() { <-s.busy }()
	default:
		writeControlLine(c, ControlResult{Error: "busy: another control operation is running on this node; try again when it is done"})
		return
	}
	switch req.Op {
	case "ping":
		writeControlLine(c, ControlResult{OK: true, PeerID: s.peerID()})
	case "backup":
		_ = c.SetDeadline(time.Now().Add(controlBackupTimeout))
		s.backup(c, req.Recipients)
	case "rotate-master-key":
		_ = c.SetDeadline(time.Now().Add(controlRotateTimeout))
		s.rotate(c, req.NewMasterKeyFile)
	default:
		writeControlLine(c, ControlResult{Error: fmt.Sprintf("unknown operation %q", req.Op)})
	}
}

func (s *controlServer) peerID() string {
	pid, _ := peerIDOf(s.n.ks)
	return pid
}

// backup streams the age-encrypted backup of the keystore to c.
func (s *controlServer) backup(c net.Conn, recipients []string) {
	rs, err := ParseRecipients(recipients)
	if err != nil {
		writeControlLine(c, ControlResult{Error: err.Error()})
		return
	}
	if !writeControlLine(c, ControlResult{OK: true}) {
		return
	}
	fw := &frameWriter{w: bufio.NewWriterSize(c, controlMaxFrame+4)}
	start := time.Now()
	peerID, err := WriteBackup(s.n.ks, rs, fw)
	if err == nil {
		err = fw.end()
	}
	if err != nil {
		s.log.Error("backup through the control socket failed", "err", err)
		// The frames already sent are worthless; the client learns it from this line
		// (when the connection still works).
		_ = fw.end()
		writeControlLine(c, ControlResult{Error: "backup failed: " + err.Error()})
		return
	}
	s.log.Info("backup written through the control socket", "bytes", fw.total, "recipients", len(rs), "ms", time.Since(start).Milliseconds())
	writeControlLine(c, ControlResult{OK: true, PeerID: peerID, Bytes: fw.total})
}

// rotate re-wraps the keystore under the master key in file.
func (s *controlServer) rotate(c net.Conn, file string) {
	if !filepath.IsAbs(file) {
		writeControlLine(c, ControlResult{Error: "new_master_key_file must be an absolute path"})
		return
	}
	key, err := keystore.MasterKeyFromFile(file)
	if err != nil {
		writeControlLine(c, ControlResult{Error: "new master key: " + err.Error()})
		return
	}
	err = s.n.ks.RotateMasterKey(key)
	clear(key)
	if err != nil {
		s.log.Error("master key rotation through the control socket failed; nothing changed", "err", err)
		writeControlLine(c, ControlResult{Error: "rotation failed, nothing changed: " + err.Error()})
		return
	}
	s.log.Warn("master key rotated: replace this node's master key source with the new key before it restarts", "new_master_key_file", file)
	writeControlLine(c, ControlResult{OK: true, PeerID: s.peerID()})
}

// readControlRequest reads and checks the request line.
func readControlRequest(r *bufio.Reader) (*controlRequest, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	var req controlRequest
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("malformed request: %v", err)
	}
	if len(req.Recipients) > controlMaxRecipients {
		return nil, fmt.Errorf("at most %d recipients", controlMaxRecipients)
	}
	return &req, nil
}

// readLine reads one line of at most controlMaxLine bytes (without its "\n").
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > controlMaxLine {
			return nil, fmt.Errorf("line longer than %d bytes", controlMaxLine)
		}
		if err == nil {
			return line[:len(line)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("read: %w", err)
		}
	}
}

// writeControlLine writes one JSON line; it reports whether that worked.
func writeControlLine(w io.Writer, r ControlResult) bool {
	b, _ := json.Marshal(r)
	_, err := w.Write(append(b, '\n'))
	return err == nil
}

// frameWriter cuts a stream into length-prefixed frames.
type frameWriter struct {
	w     *bufio.Writer
	total int64
	ended bool
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), controlMaxFrame)
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], uint32(c))
		if _, err := f.w.Write(h[:]); err != nil {
			return n, err
		}
		if _, err := f.w.Write(p[:c]); err != nil {
			return n, err
		}
		n += c
		f.total += int64(c)
		p = p[c:]
	}
	return n, nil
}

// end writes the terminating empty frame (once) and flushes.
func (f *frameWriter) end() error {
	if !f.ended {
		f.ended = true
		if _, err := f.w.Write([]byte{0, 0, 0, 0}); err != nil {
			return err
		}
	}
	return f.w.Flush()
}

// dialControl connects to the control socket of dataDir, or returns ErrNoNode when no
// node answers there.
func dialControl(ctx context.Context, dataDir string) (net.Conn, error) {
	path := ControlSocketPath(dataDir)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%w (%s)", ErrNoNode, path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return c, nil
}

// controlCall sends req and reads the first answer line.
func controlCall(ctx context.Context, dataDir string, req controlRequest, timeout time.Duration) (net.Conn, *bufio.Reader, *ControlResult, error) {
	c, err := dialControl(ctx, dataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		_ = c.Close()
		return nil, nil, nil, fmt.Errorf("control socket: %w", err)
	}
	r := bufio.NewReaderSize(c, controlMaxFrame+4)
	res, err := readControlResult(r)
	if err != nil {
		_ = c.Close()
		return nil, nil, nil, err
	}
	if !res.OK {
		_ = c.Close()
		return nil, nil, nil, fmt.Errorf("the node refused: %s", res.Error)
	}
	return c, r, res, nil
}

func readControlResult(r *bufio.Reader) (*ControlResult, error) {
	line, err := readLine(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("control socket: the node closed the connection without an answer (is this process's user the node's?)")
		}
		return nil, fmt.Errorf("control socket: %w", err)
	}
	var res ControlResult
	if err := json.Unmarshal(line, &res); err != nil {
		return nil, fmt.Errorf("control socket: malformed answer: %v", err)
	}
	return &res, nil
}

// ControlBackup asks the node running on dataDir for a backup encrypted to recipients
// (age recipient strings) and writes it to out. ErrNoNode: no node runs there. out holds
// a whole backup only when the error is nil.
func ControlBackup(ctx context.Context, dataDir string, recipients []string, out io.Writer) (*ControlResult, error) {
	c, r, _, err := controlCall(ctx, dataDir, controlRequest{Op: "backup", Recipients: recipients}, controlBackupTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, controlMaxFrame)
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, fmt.Errorf("control socket: backup stream cut short: %w", err)
		}
		n := binary.BigEndian.Uint32(h[:])
		if n == 0 {
			break
		}
		if n > controlMaxFrame {
			return nil, fmt.Errorf("control socket: frame of %d bytes, limit %d", n, controlMaxFrame)
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, fmt.Errorf("control socket: backup stream cut short: %w", err)
		}
		if _, err := out.Write(buf[:n]); err != nil {
			return nil, fmt.Errorf("write backup: %w", err)
		}
	}
	res, err := readControlResult(r)
	if err != nil {
		return nil, err
	}
	if !res.OK {
		return nil, fmt.Errorf("the node could not make the backup: %s", res.Error)
	}
	return res, nil
}

// ControlRotateMasterKey asks the node running on dataDir to re-wrap its keystore under
// the master key in newKeyFile (an absolute path the node can read). ErrNoNode: no node
// runs there.
func ControlRotateMasterKey(ctx context.Context, dataDir, newKeyFile string) (*ControlResult, error) {
	c, _, res, err := controlCall(ctx, dataDir, controlRequest{Op: "rotate-master-key", NewMasterKeyFile: newKeyFile}, controlRotateTimeout)
	if err != nil {
		return nil, err
	}
	_ = c.Close()
	return res, nil
}
