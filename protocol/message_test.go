package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func validEcho() []byte {
	var h [32]byte
	h[0] = 7
	return echo{Origin: "node-b", Type: "binance.tsslib.eddsa.keygen.KGRound1Message", Hash: h}.encode()
}

func TestMessageRoundTrip(t *testing.T) {
	sid := NewSessionID(SessionParams{Kind: KindSignEdDSA, Committee: []string{"a", "b"}})
	tests := []struct {
		name string
		m    Message
	}{
		{"tss broadcast", Message{Session: sid, Broadcast: true, Kind: MsgTSS, Payload: []byte{1, 2, 3}}},
		{"tss p2p", Message{Session: sid, Kind: MsgTSS, Payload: bytes.Repeat([]byte{9}, 1000)}},
		{"echo", Message{Session: sid, Kind: MsgEcho, Payload: validEcho()}},
		{"abort", Message{Session: sid, Kind: MsgAbort, Payload: abortPayload("timeout: round 2 messages missing")}},
		{"largest payload", Message{Session: sid, Kind: MsgTSS, Payload: make([]byte, MaxPayloadSize)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.From = "ignored-by-encoding"
			b, err := tc.m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(tc.m.From)) {
				t.Fatal("From was encoded")
			}
			got, err := UnmarshalMessage(b, "node-x")
			if err != nil {
				t.Fatal(err)
			}
			if got.From != "node-x" || got.Session != tc.m.Session || got.Broadcast != tc.m.Broadcast || got.Kind != tc.m.Kind || !bytes.Equal(got.Payload, tc.m.Payload) {
				t.Fatalf("round trip changed the message: %+v", got)
			}
			b[len(b)-1] ^= 0xff // the payload was copied
			if got.Payload[len(got.Payload)-1] == b[len(b)-1] {
				t.Fatal("payload aliases the input buffer")
			}
		})
	}
}

func TestMarshalRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Message
		want error
	}{
		{"unknown kind", Message{Kind: 0, Payload: []byte{1}}, ErrMalformed},
		{"broadcast echo", Message{Kind: MsgEcho, Broadcast: true, Payload: validEcho()}, ErrMalformed},
		{"too large", Message{Kind: MsgTSS, Payload: make([]byte, MaxPayloadSize+1)}, ErrMessageTooLarge},
	} {
		if _, err := tc.m.MarshalBinary(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good, err := (&Message{Kind: MsgTSS, Broadcast: true, Payload: []byte{1, 2, 3}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	echoMsg := func(payload []byte, bcast bool) []byte {
		b, _ := (&Message{Kind: MsgEcho, Payload: payload}).MarshalBinary()
		if bcast {
			b[34] = flagBroadcast
		}
		return b
	}
	abortMsg := func(payload []byte) []byte {
		b, _ := (&Message{Kind: MsgAbort, Payload: []byte("x")}).MarshalBinary()
		b = append(b[:headerSize], payload...)
		b[35], b[36], b[37], b[38] = 0, 0, byte(len(payload)>>8), byte(len(payload))
		return b
	}
	tests := []struct {
		name string
		b    []byte
		from string
		want error
	}{
		{"empty", nil, "a", ErrMalformed},
		{"header only", good[:headerSize], "a", ErrMalformed},
		{"truncated", good[:len(good)-1], "a", ErrMalformed},
		{"trailing byte", append(append([]byte(nil), good...), 0), "a", ErrMalformed},
		{"bad version", mut(func(b []byte) []byte { b[0] = 2; return b }), "a", ErrMalformed},
		{"bad kind", mut(func(b []byte) []byte { b[33] = 0; return b }), "a", ErrMalformed},
		{"unknown flag", mut(func(b []byte) []byte { b[34] = 0x08; return b }), "a", ErrMalformed},
		{"length overflow", mut(func(b []byte) []byte { b[35] = 0xff; return b }), "a", ErrMalformed},
		{"no sender", good, "", ErrMalformed},
		{"sender id too long", good, strings.Repeat("x", MaxNodeIDLen+1), ErrMalformed},
		{"oversize", make([]byte, MaxMessageSize+1), "a", ErrMessageTooLarge},
		{"broadcast echo", echoMsg(validEcho(), true), "a", ErrMalformed},
		{"echo without hash", echoMsg(validEcho()[:len(validEcho())-1], false), "a", ErrMalformed},
		{"echo with extra byte", echoMsg(append(validEcho(), 0), false), "a", ErrMalformed},
		{"echo with empty origin", echoMsg(append([]byte{0}, validEcho()[1:]...), false), "a", ErrMalformed},
		{"abort with control characters", abortMsg([]byte("bad\nreason")), "a", ErrMalformed},
		{"abort reason too long", abortMsg(bytes.Repeat([]byte("x"), MaxAbortReason+1)), "a", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UnmarshalMessage(tc.b, tc.from); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAbortPayloadIsSanitised(t *testing.T) {
	p := abortPayload("évil\x00\n" + strings.Repeat("y", 400))
	if _, err := parseAbort(p); err != nil {
		t.Fatalf("sanitised reason does not parse: %v", err)
	}
	if len(p) != MaxAbortReason {
		t.Fatalf("reason of %d bytes", len(p))
	}
}

func FuzzUnmarshalMessage(f *testing.F) {
	for _, m := range []*Message{
		{Kind: MsgTSS, Broadcast: true, Payload: []byte{1, 2, 3}},
		{Kind: MsgEcho, Payload: validEcho()},
		{Kind: MsgAbort, Payload: []byte("gave up")},
	} {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalMessage(b, "peer")
		if err != nil {
			if m != nil {
				t.Fatal("message returned with an error")
			}
			return
		}
		if m.From != "peer" || len(m.Payload) == 0 || len(m.Payload) > MaxPayloadSize {
			t.Fatalf("accepted an invalid message: %+v", m)
		}
		// Strict: what was accepted re-encodes to exactly the same bytes.
		again, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
		}
	})
}
