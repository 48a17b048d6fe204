package p2p

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRPCCodec(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		timeout time.Duration
		payload []byte
		wantTO  time.Duration
	}{
		{"no timeout", "echo", 0, []byte("hi"), 0},
		{"timeout ms", "a.b/c-d_e", 1500 * time.Millisecond, nil, 1500 * time.Millisecond},
		{"sub-ms rounds up", "x", 10 * time.Microsecond, []byte{}, time.Millisecond},
		{"clamped", "x", time.Hour, []byte{1}, MaxRPCTimeout},
		{"large", "big", time.Second, make([]byte, MaxRPCSize), time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeRPCRequest(&buf, tt.method, tt.timeout, tt.payload); err != nil {
				t.Fatal(err)
			}
			m, to, p, err := readRPCRequest(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.method || to != tt.wantTO || !bytes.Equal(p, tt.payload) {
				t.Fatalf("got (%q, %v, %d bytes), want (%q, %v, %d bytes)", m, to, len(p), tt.method, tt.wantTO, len(tt.payload))
			}
		})
	}
}

func TestRPCRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrBadMessage},
		{"zero method length", []byte{0}, ErrBadMethod},
		{"method too long", []byte{MaxMethodSize + 1}, ErrBadMethod},
		{"bad method byte", append([]byte{1, ' '}, 0, 0, 0, 0, 0, 0, 0, 0), ErrBadMethod},
		{"truncated method", []byte{4, 'a', 'b'}, ErrBadMessage},
		{"no payload", []byte{1, 'a', 0, 0, 0, 0}, ErrBadMessage},
		{"oversize payload", []byte{1, 'a', 0, 0, 0, 0, 0x7f, 0, 0, 0}, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, _, err := readRPCRequest(bytes.NewReader(tt.in)); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRPCResponseCodec(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		status  byte
		want    []byte
		wantErr error
	}{
		{"ok", []byte{0, 0, 0, 0, 2, 'h', 'i'}, rpcStatusOK, []byte("hi"), nil},
		{"remote error", []byte{1, 0, 0, 0, 4, 'b', 'o', 'o', 'm'}, rpcStatusErr, []byte("boom"), nil},
		{"remote deadline", []byte{2, 0, 0, 0, 1, 'x'}, rpcStatusDeadline, []byte("x"), nil},
		{"bad status", []byte{3, 0, 0, 0, 0}, 0, nil, ErrBadMessage},
		{"error text too long", []byte{1, 0, 0, 0x10, 1}, 0, nil, ErrFrameTooLarge},
		{"truncated", []byte{0, 0, 0}, 0, nil, ErrBadMessage},
		{"empty", nil, 0, nil, ErrBadMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, err := readRPCResponse(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || status != tt.status || !bytes.Equal(body, tt.want) {
				t.Fatalf("got (%v, %q, %v)", status, body, err)
			}
		})
	}
}

func TestValidMethod(t *testing.T) {
	tests := []struct {
		method string
		ok     bool
	}{
		{"echo", true},
		{"state.forward/v1", true},
		{"A-Z_0.9", true},
		{"", false},
		{"with space", false},
		{"ünicode", false},
		{string(bytes.Repeat([]byte("m"), MaxMethodSize)), true},
		{string(bytes.Repeat([]byte("m"), MaxMethodSize+1)), false},
	}
	for _, tt := range tests {
		if err := validMethod(tt.method); (err == nil) != tt.ok {
			t.Errorf("validMethod(%q) = %v, want ok=%v", tt.method, err, tt.ok)
		}
	}
}

func FuzzReadRPCRequest(f *testing.F) {
	var seed bytes.Buffer
	_ = writeRPCRequest(&seed, "echo", time.Second, []byte("payload"))
	f.Add(seed.Bytes())
	f.Add([]byte{1, 'a', 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, to, p, err := readRPCRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if validMethod(m) != nil || len(p) > MaxRPCSize || cap(p) > MaxRPCSize || to < 0 || to > MaxRPCTimeout {
			t.Fatalf("accepted bad request: method %q timeout %v payload %d", m, to, len(p))
		}
	})
}

func FuzzReadRPCResponse(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 'h', 'i'})
	f.Add([]byte{1, 0, 0, 0, 1, 'x'})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		status, body, err := readRPCResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if status > rpcStatusDeadline || len(body) > MaxRPCSize || (status != rpcStatusOK && len(body) > MaxRemoteErrorSize) {
			t.Fatalf("accepted status %d with a %d-byte body", status, len(body))
		}
	})
}
