package p2p

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testLogger discards logs; set P2P_TEST_LOG=1 to see them on stderr.
func testLogger() *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type hostOpt func(*Config)

func withQUIC() hostOpt {
	return func(c *Config) {
		c.EnableQUIC = true
		c.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	}
}

func withKey(k crypto.PrivKey) hostOpt { return func(c *Config) { c.Identity = k } }

func withListen(addrs ...string) hostOpt { return func(c *Config) { c.ListenAddrs = addrs } }

// newTestHost starts a host on a loopback port 0 with a fresh identity and a fast
// reconnect loop, closed when the test ends.
func newTestHost(t *testing.T, opts ...hostOpt) *Host {
	t.Helper()
	k, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Identity:          k,
		ListenAddrs:       []string{"/ip4/127.0.0.1/tcp/0"},
		ReconnectInterval: 200 * time.Millisecond,
		DialTimeout:       2 * time.Second,
		Logger:            testLogger(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// memberOf describes h as a member named nodeID, at its real listen addresses.
func memberOf(nodeID string, h *Host) Member {
	return Member{NodeID: nodeID, PeerID: h.ID(), Addrs: h.ListenAddrs()}
}

// mesh makes every host a member of every host's set and waits until every pair is
// connected. The sets are installed one host after the other, so a host that learns its
// peers first may dial one that does not admit it yet; that dial is refused mid-handshake,
// and a stream opened while it is in flight would share its failure. Waiting for the
// reconnect loop to connect every pair keeps the tests from racing it.
func mesh(t *testing.T, hosts ...*Host) []Member {
	t.Helper()
	var ms []Member
	for i, h := range hosts {
		ms = append(ms, memberOf(string(rune('a'+i)), h))
	}
	for _, h := range hosts {
		if err := h.SetMembers(ms); err != nil {
			t.Fatalf("SetMembers: %v", err)
		}
	}
	waitFor(t, 10*time.Second, "every pair of hosts connected", func() bool {
		for _, h := range hosts {
			if len(h.Peers()) < len(hosts)-1 {
				return false
			}
		}
		return true
	})
	return ms
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type recvFrame struct {
	from  peer.ID
	frame []byte
}

// frameSink records frames; its handler never blocks for long.
type frameSink struct {
	mu     sync.Mutex
	frames []recvFrame
}

func (s *frameSink) handle(from peer.ID, frame []byte) {
	s.mu.Lock()
	s.frames = append(s.frames, recvFrame{from, frame})
	s.mu.Unlock()
}

func (s *frameSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.frames)
}

func (s *frameSink) countFrom(p peer.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.frames {
		if f.from == p {
			n++
		}
	}
	return n
}

func (s *frameSink) snapshot() []recvFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recvFrame(nil), s.frames...)
}

// payload returns a deterministic n-byte payload tagged with i.
func payload(i, n int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, n)
	if n >= 4 {
		b[0], b[1], b[2], b[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	}
	return b
}
