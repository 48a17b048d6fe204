package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestFramesRoundTripInOrder(t *testing.T) {
	tests := []struct {
		name string
		opts []hostOpt
	}{
		{"tcp", nil},
		{"quic", []hostOpt{withQUIC()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newTestHost(t, tt.opts...), newTestHost(t, tt.opts...)
			mesh(t, a, b)
			var sink frameSink
			b.SetFrameHandler(sink.handle)

			sizes := []int{0, 1, 100, smallFrame + 1, frameChunk + 3, 3 << 20, 7}
			const n = 60
			var want [][]byte
			for i := range n {
				want = append(want, payload(i, sizes[i%len(sizes)]))
			}
			ctx := ctxTimeout(t, 8*time.Second)
			for _, f := range want {
				if err := a.SendFrame(ctx, b.ID(), f); err != nil {
					t.Fatalf("SendFrame: %v", err)
				}
			}
			waitFor(t, 5*time.Second, "all frames", func() bool { return sink.count() == n })
			for i, got := range sink.snapshot() {
				if got.from != a.ID() {
					t.Fatalf("frame %d from %s, want %s", i, got.from, a.ID())
				}
				if !bytes.Equal(got.frame, want[i]) {
					t.Fatalf("frame %d: %d bytes, want %d (order or content changed)", i, len(got.frame), len(want[i]))
				}
			}
			if st := a.Stats(); st.FramesSent != n || st.SendFailures != 0 {
				t.Fatalf("sender stats %+v", st)
			}
			if st := b.Stats(); st.FramesReceived != n {
				t.Fatalf("receiver stats %+v", st)
			}
			// All frames went over one long-lived stream.
			a.outMu.Lock()
			o := a.out[b.ID()]
			a.outMu.Unlock()
			if o == nil || o.s == nil {
				t.Fatal("no long-lived outbound stream kept")
			}
		})
	}
}

func TestFrameOversize(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	var sink frameSink
	b.SetFrameHandler(sink.handle)
	ctx := ctxTimeout(t, 5*time.Second)

	// The sender refuses.
	err := a.SendFrame(ctx, b.ID(), make([]byte, MaxFrameSize+1))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("SendFrame(oversize) err = %v", err)
	}
	if a.Stats().FramesOversizeOut != 1 {
		t.Fatalf("FramesOversizeOut = %d", a.Stats().FramesOversizeOut)
	}
	// A frame of exactly the cap passes.
	if err := a.SendFrame(ctx, b.ID(), make([]byte, MaxFrameSize)); err != nil {
		t.Fatalf("SendFrame(cap) err = %v", err)
	}
	waitFor(t, 5*time.Second, "frame at the cap", func() bool { return sink.count() == 1 })

	// The receiver resets a stream announcing more, without delivering anything.
	s, err := a.h.NewStream(ctx, b.ID(), ProtocolTSS)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	hdr := binary.BigEndian.AppendUint32(nil, MaxFrameSize+1)
	if _, err := s.Write(append(hdr, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "oversize counted", func() bool { return b.Stats().FramesOversizeIn == 1 })
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still readable after oversize frame")
	}
	if sink.count() != 1 {
		t.Fatalf("handler saw %d frames, want 1", sink.count())
	}
}

func TestSendFrameRefusals(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	ctx := ctxTimeout(t, 5*time.Second)
	stranger := testPeerID(t)
	tests := []struct {
		name string
		to   func() error
		want error
	}{
		{"self", func() error { return a.SendFrame(ctx, a.ID(), []byte("x")) }, ErrSelf},
		{"non-member", func() error { return a.SendFrame(ctx, stranger, []byte("x")) }, ErrNotMember},
		{"too large", func() error { return a.SendFrame(ctx, b.ID(), make([]byte, MaxFrameSize+1)) }, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.to(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFramesWithoutHandlerAreCountedAsDropped(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	if err := a.SendFrame(ctxTimeout(t, 5*time.Second), b.ID(), []byte("lost")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "dropped frame counted", func() bool { return b.Stats().FramesDropped == 1 })
}
