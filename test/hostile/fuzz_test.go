//go:build linux

package hostile

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzReadFrame: the hostile peer's parser of the frames honest nodes send it never
// panics, never returns more than the limit, and reads back what frameBytes wrote.
func FuzzReadFrame(f *testing.F) {
	f.Add(frameBytes([]byte("hello")))
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<31))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 16
		frame, err := readFrame(bytes.NewReader(b), limit)
		if err != nil {
			return
		}
		if len(frame) > limit {
			t.Fatalf("frame of %d bytes above the limit %d", len(frame), limit)
		}
		again, err := readFrame(bytes.NewReader(frameBytes(frame)), limit)
		if err != nil || !bytes.Equal(again, frame) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
