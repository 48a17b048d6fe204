package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// FrameHandler receives one ceremony frame from a member. from is the authenticated remote
// peer of the stream (never a field of the payload). Frames from one stream are delivered
// in order, one at a time, from that stream's goroutine: the handler must not block — copy
// the frame into the caller's own bounded queue and return. While it blocks, that peer's
// sender stalls (and after its write timeout resets the stream, losing frames). The frame
// slice is owned by the handler.
type FrameHandler func(from peer.ID, frame []byte)

// SetFrameHandler installs the handler for /custos/tss/1 frames; nil removes it. Frames
// that arrive while no handler is installed are dropped and counted (Stats.FramesDropped).
func (h *Host) SetFrameHandler(fn FrameHandler) {
	if fn == nil {
		h.frameHandler.Store(nil)
		return
	}
	h.frameHandler.Store(&fn)
}

// outStream is the long-lived outbound tss stream to one peer; mu serialises frames.
type outStream struct {
	mu sync.Mutex
	s  network.Stream
}

// reset discards the stream; the caller holds mu.
func (o *outStream) reset() {
	if o.s != nil {
		_ = o.s.Reset()
		o.s = nil
	}
}

func (h *Host) outFor(p peer.ID) *outStream {
	h.outMu.Lock()
	defer h.outMu.Unlock()
	o, ok := h.out[p]
	if !ok {
		o = &outStream{}
		h.out[p] = o
	}
	return o
}

// dropOutbound forgets the outbound stream to p. Its connection is closed by the caller,
// which also kills a write in progress; a sender still holding it finds the peer is no
// longer a member when it tries to re-open.
func (h *Host) dropOutbound(p peer.ID) {
	h.outMu.Lock()
	delete(h.out, p)
	h.outMu.Unlock()
}

// SendFrame writes one frame to member to on the long-lived /custos/tss/1 stream, opening
// (and dialling) it if needed. Frames to the same peer are serialised and keep their order;
// each is written (flushed) before SendFrame returns, without batching. On a write error the
// stream is re-opened once and the frame written again, so a receiver may in rare cases see
// a frame twice (the ceremony layer drops duplicates). A nil error means the frame was handed
// to the local stream, not that the peer processed it.
//
// The write is bounded by ctx (its deadline, or DefaultWriteTimeout without one, and its
// cancellation). Frames above MaxFrameSize are refused with ErrFrameTooLarge; targets that
// are not members with ErrNotMember; this host itself with ErrSelf.
func (h *Host) SendFrame(ctx context.Context, to peer.ID, frame []byte) error {
	if len(frame) > MaxFrameSize {
		h.stats.framesOversizeOut.Add(1)
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(frame), MaxFrameSize)
	}
	if err := h.checkPeer(to); err != nil {
		return err
	}
	o := h.outFor(to)
	o.mu.Lock()
	defer o.mu.Unlock()

	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if err := ctx.Err(); err != nil {
			lastErr = err
			break
		}
		if o.s != nil && o.s.Conn().IsClosed() {
			o.reset()
		}
		if o.s == nil {
			s, err := h.newStream(ctx, to, ProtocolTSS)
			if err != nil {
				lastErr = err
				if errors.Is(err, ErrClosed) || errors.Is(err, ErrNotMember) {
					break
				}
				continue
			}
			o.s = s
		}
		if err := writeFrameCtx(ctx, o.s, frame); err != nil {
			o.reset()
			lastErr = err
			continue
		}
		h.stats.framesSent.Add(1)
		return nil
	}
	h.stats.sendFailures.Add(1)
	return fmt.Errorf("p2p: send frame to %s: %w", to, lastErr)
}

// writeFrameCtx writes one frame with a write deadline taken from ctx (DefaultWriteTimeout
// without one); cancelling ctx interrupts the write.
func writeFrameCtx(ctx context.Context, s network.Stream, frame []byte) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultWriteTimeout)
	}
	_ = s.SetWriteDeadline(deadline)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = s.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := writeFrame(s, nil, frame)
	if !stop() {
		<-fired
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("write frame: %w (%w)", cerr, err)
		}
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// handleTSS reads frames from one inbound stream until it ends.
func (h *Host) handleTSS(s network.Stream) {
	if !h.track() {
		_ = s.Reset()
		return
	}
	defer h.wg.Done()
	if !h.admit(s) {
		return
	}
	from := s.Conn().RemotePeer()
	for {
		n, err := readFrameHeader(s, MaxFrameSize)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				_ = s.Close()
			case errors.Is(err, ErrFrameTooLarge):
				h.stats.framesOversizeIn.Add(1)
				_ = s.ResetWithError(network.StreamProtocolViolation)
				h.log.Warn("reset tss stream: oversize frame", "peer_id", from.String(), "err", err)
			default:
				_ = s.Reset()
			}
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(frameBodyTimeout))
		frame, err := readBody(s, n)
		if err != nil {
			_ = s.Reset()
			if !h.isClosed() {
				h.stats.streamsDropped.Add(1)
				h.log.Debug("tss stream ended inside a frame", "peer_id", from.String(), "err", err)
			}
			return
		}
		_ = s.SetReadDeadline(time.Time{})
		// The member set may have changed since the stream was opened.
		if !h.members.isMember(from) {
			h.stats.streamsRefused.Add(1)
			_ = s.ResetWithError(network.StreamGated)
			h.log.Warn("reset tss stream: peer is no longer a member", "peer_id", from.String())
			return
		}
		h.deliverFrame(from, frame)
	}
}

// deliverFrame hands a frame to the installed handler, containing a panic in it.
func (h *Host) deliverFrame(from peer.ID, frame []byte) {
	fn := h.frameHandler.Load()
	if fn == nil {
		h.stats.framesDropped.Add(1)
		return
	}
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("frame handler panicked", "peer_id", from.String(), "stack", string(debug.Stack()))
		}
	}()
	h.stats.framesReceived.Add(1)
	(*fn)(from, frame)
}
