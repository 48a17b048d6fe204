package p2p

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestRPC(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	handlerCtxEnded := make(chan time.Duration, 1)
	b.HandleRPC("echo", func(_ context.Context, from peer.ID, req []byte) ([]byte, error) {
		if from != a.ID() {
			return nil, errors.New("wrong sender")
		}
		return req, nil
	})
	b.HandleRPC("fail", func(context.Context, peer.ID, []byte) ([]byte, error) {
		return nil, errors.New("policy says no")
	})
	b.HandleRPC("panic", func(context.Context, peer.ID, []byte) ([]byte, error) {
		panic("handler bug")
	})
	b.HandleRPC("slow", func(ctx context.Context, _ peer.ID, _ []byte) ([]byte, error) {
		start := time.Now()
		<-ctx.Done()
		handlerCtxEnded <- time.Since(start)
		return nil, ctx.Err()
	})
	b.HandleRPC("huge", func(context.Context, peer.ID, []byte) ([]byte, error) {
		return make([]byte, MaxRPCSize+1), nil
	})

	big := payload(9, 3<<20)
	tests := []struct {
		name       string
		method     string
		req        []byte
		timeout    time.Duration
		want       []byte
		wantRemote string // substring of RemoteError.Message
		wantErr    error
	}{
		{"echo", "echo", []byte("hello"), 5 * time.Second, []byte("hello"), "", nil},
		{"empty echo", "echo", nil, 5 * time.Second, []byte{}, "", nil},
		{"3 MiB echo", "echo", big, 8 * time.Second, big, "", nil},
		{"remote error", "fail", nil, 5 * time.Second, nil, "policy says no", nil},
		{"handler panic", "panic", nil, 5 * time.Second, nil, "internal error", nil},
		{"unknown method", "nope", nil, 5 * time.Second, nil, "unknown method", nil},
		{"oversize response", "huge", nil, 5 * time.Second, nil, "exceeds the limit", nil},
		{"ctx deadline", "slow", nil, 300 * time.Millisecond, nil, "", context.DeadlineExceeded},
		{"oversize request", "echo", make([]byte, MaxRPCSize+1), time.Second, nil, "", ErrFrameTooLarge},
		{"bad method", "no spaces", nil, time.Second, nil, "", ErrBadMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			resp, err := a.Call(ctxTimeout(t, tt.timeout), b.ID(), tt.method, tt.req)
			switch {
			case tt.wantRemote != "":
				var re *RemoteError
				if !errors.As(err, &re) || !bytes.Contains([]byte(re.Message), []byte(tt.wantRemote)) || re.Method != tt.method {
					t.Fatalf("err = %v, want RemoteError containing %q", err, tt.wantRemote)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if elapsed := time.Since(start); elapsed > tt.timeout+time.Second {
					t.Fatalf("call took %v with a %v deadline", elapsed, tt.timeout)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(resp, tt.want) {
					t.Fatalf("response %d bytes, want %d", len(resp), len(tt.want))
				}
			}
		})
	}
	// The caller's deadline travelled: the slow handler's context ended near 300 ms, not
	// after the server's default RPC timeout.
	select {
	case d := <-handlerCtxEnded:
		if d > 2*time.Second {
			t.Fatalf("handler context ended after %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("slow handler's context never ended")
	}
}

func TestHandleRPCPanicsOnMisuse(t *testing.T) {
	a := newTestHost(t)
	ok := func(context.Context, peer.ID, []byte) ([]byte, error) { return nil, nil }
	tests := []struct {
		name   string
		method string
		fn     RPCHandler
	}{
		{"reserved", "p2p.ping", ok},
		{"empty", "", ok},
		{"bad byte", "a b", ok},
		{"nil handler", "x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			a.HandleRPC(tt.method, tt.fn)
		})
	}
}

func TestPingAndLiveness(t *testing.T) {
	a, b := newTestHost(t), newTestHost(t)
	mesh(t, a, b)
	rtt, err := a.Ping(ctxTimeout(t, 5*time.Second), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("rtt = %v", rtt)
	}
	if !a.Connected(b.ID()) || !b.Connected(a.ID()) {
		t.Fatal("not connected after ping")
	}
	if peers := a.Peers(); len(peers) != 1 || peers[0] != b.ID() {
		t.Fatalf("Peers() = %v", peers)
	}
	if _, err := a.Ping(ctxTimeout(t, time.Second), a.ID()); !errors.Is(err, ErrSelf) {
		t.Fatalf("ping self: err = %v", err)
	}
}
