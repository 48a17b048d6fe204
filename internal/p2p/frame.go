package p2p

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrameSize caps one /custos/tss/1 frame (4 MiB). tss-lib's largest messages (resharing)
// are about 170 KiB, so the cap leaves ample room while bounding what a peer can make this
// node buffer. A sender refuses a bigger frame; a receiver resets the stream on one.
const MaxFrameSize = 4 << 20

const (
	// frameHeaderSize is the length prefix: a 4-byte big-endian payload length.
	frameHeaderSize = 4
	// frameChunk is how much of a frame body is allocated ahead of the bytes actually
	// received, so that a peer announcing a large frame and sending nothing costs little.
	frameChunk = 64 << 10
	// smallFrame is the size up to which header and payload go out in a single write.
	smallFrame = 16 << 10
)

// writeFrame writes prefix (may be nil) and one length-prefixed frame, in a single write
// when the frame is small. The caller enforces the size cap.
func writeFrame(w io.Writer, prefix, frame []byte) error {
	hdr := make([]byte, 0, len(prefix)+frameHeaderSize+min(len(frame), smallFrame))
	hdr = append(hdr, prefix...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(frame)))
	if len(frame) <= smallFrame {
		_, err := w.Write(append(hdr, frame...))
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(frame)
	return err
}

// readFrameHeader reads a length prefix and checks it against limit. It returns io.EOF
// only when the stream ended cleanly before the first header byte.
func readFrameHeader(r io.Reader, limit int) (int, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return 0, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, n, limit)
	}
	return int(n), nil
}

// readBody reads exactly n bytes. Memory grows with the bytes actually received (in
// chunks, doubling up to n), never beyond n per allocation.
func readBody(r io.Reader, n int) ([]byte, error) {
	if n <= frameChunk {
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpectedEOF(err)
		}
		return buf, nil
	}
	buf := make([]byte, 0, frameChunk)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), n))
			copy(grown, buf)
			buf = grown
		}
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	return buf, nil
}

// readFrame reads one length-prefixed frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	n, err := readFrameHeader(r, limit)
	if err != nil {
		return nil, err
	}
	return readBody(r, n)
}

// unexpectedEOF turns an EOF in the middle of a message into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
