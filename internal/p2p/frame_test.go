package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

func TestFrameCodec(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"small", 100},
		{"single write limit", smallFrame},
		{"two writes", smallFrame + 1},
		{"above chunk", frameChunk + 1},
		{"one MiB and a bit", 1<<20 + 7},
		{"at cap", MaxFrameSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			want := payload(tt.size, tt.size)
			if err := writeFrame(&buf, nil, want); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != frameHeaderSize+tt.size {
				t.Fatalf("encoded %d bytes, want %d", buf.Len(), frameHeaderSize+tt.size)
			}
			got, err := readFrame(&buf, MaxFrameSize)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("payload mismatch")
			}
			if _, err := readFrame(&buf, MaxFrameSize); !errors.Is(err, io.EOF) {
				t.Fatalf("after last frame: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	hdr := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"clean end", nil, 10, io.EOF},
		{"half header", []byte{0, 0}, 10, io.ErrUnexpectedEOF},
		{"over limit", hdr(11), 10, ErrFrameTooLarge},
		{"over max", hdr(MaxFrameSize + 1), MaxFrameSize, ErrFrameTooLarge},
		{"huge", hdr(0xffffffff), MaxFrameSize, ErrFrameTooLarge},
		{"truncated small body", append(hdr(5), 1, 2), 10, io.ErrUnexpectedEOF},
		{"truncated large body", append(hdr(MaxFrameSize), make([]byte, 100000)...), MaxFrameSize, io.ErrUnexpectedEOF},
		{"header only", hdr(3), 10, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readFrame(bytes.NewReader(tt.in), tt.limit)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// A peer announcing a maximal frame and sending little must cost about what it sent, not
// the announced size.
func TestReadFrameAllocationFollowsData(t *testing.T) {
	in := append(binary.BigEndian.AppendUint32(nil, MaxFrameSize), make([]byte, 1000)...)
	const rounds = 50
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range rounds {
		if _, err := readFrame(bytes.NewReader(in), MaxFrameSize); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	perRead := (after.TotalAlloc - before.TotalAlloc) / rounds
	if perRead > 2*frameChunk {
		t.Fatalf("allocated %d bytes per truncated read, want at most %d", perRead, 2*frameChunk)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c'}, uint16(10))
	f.Add([]byte{0, 0, 0, 0}, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint16(100))
	f.Add([]byte{0, 1, 0, 0, 1, 2, 3}, uint16(0xffff))
	f.Add([]byte{0, 0}, uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, limit16 uint16) {
		limit := int(limit16)
		r := bytes.NewReader(data)
		frame, err := readFrame(r, limit)
		if err != nil {
			if frame != nil {
				t.Fatal("frame returned with an error")
			}
			return
		}
		if len(frame) > limit || cap(frame) > limit {
			t.Fatalf("frame len %d cap %d over limit %d", len(frame), cap(frame), limit)
		}
		if len(data) < frameHeaderSize || int(binary.BigEndian.Uint32(data)) != len(frame) {
			t.Fatal("frame length differs from its header")
		}
		if !bytes.Equal(frame, data[frameHeaderSize:frameHeaderSize+len(frame)]) {
			t.Fatal("frame content differs from input")
		}
		// Re-encoding gives back the consumed bytes.
		var buf bytes.Buffer
		if err := writeFrame(&buf, nil, frame); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), data[:frameHeaderSize+len(frame)]) {
			t.Fatal("re-encoding differs")
		}
	})
}
