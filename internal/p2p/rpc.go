package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// RPC limits. Requests and responses are capped at MaxRPCSize (4 MiB): a forwarded
// command carries an HTTP body of at most 1 MiB (API.md) plus its envelope, and the cap
// keeps what one call can make a node buffer bounded.
const (
	// MaxRPCSize caps an RPC request payload and an RPC response payload.
	MaxRPCSize = 4 << 20
	// MaxRemoteErrorSize caps the error text sent back by a failing handler; longer
	// messages are truncated by the server.
	MaxRemoteErrorSize = 4 << 10
	// MaxMethodSize caps an RPC method name, in bytes.
	MaxMethodSize = 64
	// MaxRPCTimeout caps the handler timeout a caller can ask for.
	MaxRPCTimeout = 10 * time.Minute
)

// pingMethod is the built-in liveness method; names starting with "p2p." are reserved.
const (
	pingMethod     = "p2p.ping"
	reservedPrefix = "p2p."
	maxPingSize    = 64
)

// Response status bytes.
const (
	rpcStatusOK  byte = 0
	rpcStatusErr byte = 1
	// rpcStatusDeadline: the handler failed because the deadline sent by the caller
	// passed; the caller reports context.DeadlineExceeded.
	rpcStatusDeadline byte = 2
)

// RPCHandler serves one RPC method. from is the authenticated remote peer. ctx ends when
// the caller's deadline (sent along with the request) passes, after the host's RPCTimeout
// when the caller sent none, or when the host closes. A returned error travels back as a
// *RemoteError with err.Error() as text: it must not contain secrets.
type RPCHandler func(ctx context.Context, from peer.ID, req []byte) ([]byte, error)

// HandleRPC registers h for method; registering a method again replaces its handler.
// Method names are 1..MaxMethodSize bytes of [A-Za-z0-9._/-] and must not start with
// "p2p." (reserved for built-ins such as ping). An invalid name or a nil handler is a
// programming error and panics, as net/http does.
func (h *Host) HandleRPC(method string, fn RPCHandler) {
	if err := validMethod(method); err != nil {
		panic(err)
	}
	if strings.HasPrefix(method, reservedPrefix) {
		panic(fmt.Sprintf("p2p: rpc method %q uses the reserved prefix %q", method, reservedPrefix))
	}
	if fn == nil {
		panic("p2p: nil rpc handler for " + method)
	}
	h.rpcMu.Lock()
	h.rpcHandlers[method] = fn
	h.rpcMu.Unlock()
}

// Call invokes method on member to with req and returns its response. It opens one
// /custos/rpc/1 stream per call: calls are rare (forwarding a command to the leader,
// pings), concurrent calls must not queue behind each other, and once identify has run
// the protocol negotiation travels with the request, so a fresh stream costs no extra
// round trip. ctx bounds the whole call (DefaultRPCTimeout / Config.RPCTimeout without a
// deadline) and its remaining time is sent to the server, which bounds the handler with
// it. A handler error comes back as *RemoteError; transport failures are wrapped errors.
func (h *Host) Call(ctx context.Context, to peer.ID, method string, req []byte) ([]byte, error) {
	if err := validMethod(method); err != nil {
		return nil, err
	}
	if len(req) > MaxRPCSize {
		return nil, fmt.Errorf("%w: rpc request of %d bytes, limit %d", ErrFrameTooLarge, len(req), MaxRPCSize)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.rpcTimeout)
		defer cancel()
	}
	s, err := h.newStream(ctx, to, ProtocolRPC)
	if err != nil {
		return nil, fmt.Errorf("p2p: call %s on %s: %w", method, to, err)
	}
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	resp, err := roundTrip(s, method, time.Until(deadline), req)
	var re *RemoteError
	switch {
	case err == nil:
		_ = s.Close()
		return resp, nil
	case errors.As(err, &re):
		_ = s.Close()
		return nil, re
	case errors.Is(err, errRemoteDeadline):
		_ = s.Close()
		return nil, fmt.Errorf("p2p: call %s on %s: %w", method, to, context.DeadlineExceeded)
	}
	_ = s.Reset()
	if cerr := ctx.Err(); cerr != nil {
		return nil, fmt.Errorf("p2p: call %s on %s: %w", method, to, cerr)
	}
	if !time.Now().Before(deadline) {
		// The stream deadline (the context's) fired a moment before the context did.
		return nil, fmt.Errorf("p2p: call %s on %s: %w", method, to, context.DeadlineExceeded)
	}
	return nil, fmt.Errorf("p2p: call %s on %s: %w", method, to, err)
}

// errRemoteDeadline marks a response saying the handler ran out of the caller's time.
var errRemoteDeadline = errors.New("remote handler deadline exceeded")

// roundTrip writes the request, half-closes and reads the response.
func roundTrip(s network.Stream, method string, timeout time.Duration, req []byte) ([]byte, error) {
	if err := writeRPCRequest(s, method, timeout, req); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, fmt.Errorf("close request: %w", err)
	}
	status, body, err := readRPCResponse(s)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	switch status {
	case rpcStatusErr:
		return nil, &RemoteError{Method: method, Message: string(body)}
	case rpcStatusDeadline:
		return nil, errRemoteDeadline
	}
	return body, nil
}

// Ping measures the round trip of a built-in RPC to member p (stream open, request,
// echo). It dials p if needed.
func (h *Host) Ping(ctx context.Context, p peer.ID) (time.Duration, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return 0, fmt.Errorf("p2p: ping nonce: %w", err)
	}
	start := time.Now()
	resp, err := h.Call(ctx, p, pingMethod, nonce)
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	if !bytes.Equal(resp, nonce) {
		return 0, fmt.Errorf("p2p: ping %s: %w: echo mismatch", p, ErrBadMessage)
	}
	return rtt, nil
}

func (h *Host) servePing(_ context.Context, _ peer.ID, req []byte) ([]byte, error) {
	if len(req) > maxPingSize {
		return nil, fmt.Errorf("ping payload of %d bytes, limit %d", len(req), maxPingSize)
	}
	return req, nil
}

// handleRPC serves one call on an inbound stream.
func (h *Host) handleRPC(s network.Stream) {
	if !h.track() {
		_ = s.Reset()
		return
	}
	defer h.wg.Done()
	if !h.admit(s) {
		return
	}
	from := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(frameBodyTimeout))
	method, timeout, req, err := readRPCRequest(s)
	if err != nil {
		_ = s.ResetWithError(network.StreamProtocolViolation)
		if !h.isClosed() {
			h.stats.streamsDropped.Add(1)
			h.log.Warn("reset rpc stream: bad request", "peer_id", from.String(), "err", err)
		}
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	if timeout <= 0 {
		timeout = h.rpcTimeout
	}
	ctx, cancel := context.WithTimeout(h.ctx, timeout)
	defer cancel()

	h.rpcMu.RLock()
	fn := h.rpcHandlers[method]
	h.rpcMu.RUnlock()
	var resp []byte
	if fn == nil {
		err = fmt.Errorf("unknown method %q", method)
	} else {
		resp, err = h.runHandler(ctx, fn, method, from, req)
	}
	if err == nil && len(resp) > MaxRPCSize {
		err = fmt.Errorf("response of %d bytes exceeds the limit of %d", len(resp), MaxRPCSize)
	}
	_ = s.SetWriteDeadline(time.Now().Add(DefaultWriteTimeout))
	if err != nil {
		status := rpcStatusErr
		if errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			status = rpcStatusDeadline
		}
		msg := err.Error()
		if len(msg) > MaxRemoteErrorSize {
			msg = msg[:MaxRemoteErrorSize]
		}
		err = writeRPCResponse(s, status, []byte(msg))
	} else {
		err = writeRPCResponse(s, rpcStatusOK, resp)
	}
	h.stats.rpcServed.Add(1)
	if err != nil {
		_ = s.Reset()
		h.log.Debug("write rpc response", "peer_id", from.String(), "method", method, "err", err)
		return
	}
	_ = s.Close()
}

// runHandler calls fn, turning a panic into an error.
func (h *Host) runHandler(ctx context.Context, fn RPCHandler, method string, from peer.ID, req []byte) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("rpc handler panicked", "method", method, "peer_id", from.String(), "stack", string(debug.Stack()))
			resp, err = nil, errors.New("internal error")
		}
	}()
	return fn(ctx, from, req)
}

// validMethod checks an RPC method name.
func validMethod(m string) error {
	if len(m) == 0 || len(m) > MaxMethodSize {
		return fmt.Errorf("%w: length %d, want 1..%d", ErrBadMethod, len(m), MaxMethodSize)
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '/', c == '-':
		default:
			return fmt.Errorf("%w: byte 0x%02x at %d", ErrBadMethod, c, i)
		}
	}
	return nil
}

// Wire format of /custos/rpc/1 (all integers big-endian):
//
//	request:  method length (1 byte, 1..64) | method | timeout ms (4 bytes, 0 = none) |
//	          payload length (4 bytes, ≤ MaxRPCSize) | payload; then the caller half-closes
//	response: status (1 byte: 0 ok, 1 error, 2 deadline exceeded) | length (4 bytes) |
//	          body (ok: ≤ MaxRPCSize; otherwise UTF-8 text ≤ MaxRemoteErrorSize)

func writeRPCRequest(w io.Writer, method string, timeout time.Duration, payload []byte) error {
	ms := timeout.Milliseconds()
	switch {
	case timeout <= 0:
		ms = 0
	case ms < 1:
		ms = 1
	case ms > MaxRPCTimeout.Milliseconds():
		ms = MaxRPCTimeout.Milliseconds()
	}
	hdr := make([]byte, 0, 1+len(method)+4)
	hdr = append(hdr, byte(len(method)))
	hdr = append(hdr, method...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(ms))
	return writeFrame(w, hdr, payload)
}

// readRPCRequest parses one request; every field is bounded before it is allocated.
func readRPCRequest(r io.Reader) (method string, timeout time.Duration, payload []byte, err error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", 0, nil, fmt.Errorf("%w: method length: %w", ErrBadMessage, err)
	}
	if n[0] == 0 || int(n[0]) > MaxMethodSize {
		return "", 0, nil, fmt.Errorf("%w: length %d", ErrBadMethod, n[0])
	}
	buf := make([]byte, int(n[0])+4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", 0, nil, fmt.Errorf("%w: method: %w", ErrBadMessage, unexpectedEOF(err))
	}
	method = string(buf[:n[0]])
	if err := validMethod(method); err != nil {
		return "", 0, nil, err
	}
	ms := binary.BigEndian.Uint32(buf[n[0]:])
	timeout = min(time.Duration(ms)*time.Millisecond, MaxRPCTimeout)
	payload, err = readFrame(r, MaxRPCSize)
	if err != nil {
		return "", 0, nil, fmt.Errorf("%w: payload: %w", ErrBadMessage, unexpectedEOF(err))
	}
	return method, timeout, payload, nil
}

func writeRPCResponse(w io.Writer, status byte, body []byte) error {
	return writeFrame(w, []byte{status}, body)
}

// readRPCResponse parses one response: its status byte and body (the payload for
// rpcStatusOK, the remote error text otherwise).
func readRPCResponse(r io.Reader) (status byte, body []byte, err error) {
	var st [1]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return 0, nil, fmt.Errorf("%w: status: %w", ErrBadMessage, unexpectedEOF(err))
	}
	limit := MaxRPCSize
	switch st[0] {
	case rpcStatusOK:
	case rpcStatusErr, rpcStatusDeadline:
		limit = MaxRemoteErrorSize
	default:
		return 0, nil, fmt.Errorf("%w: status %d", ErrBadMessage, st[0])
	}
	body, err = readFrame(r, limit)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: body: %w", ErrBadMessage, unexpectedEOF(err))
	}
	return st[0], body, nil
}
