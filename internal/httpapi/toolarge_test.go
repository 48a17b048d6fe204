package httpapi

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTooLargeBodyIsAnswered: a client that sends a body over the limit in one go (as
// Node's and Python's HTTP clients do, without Expect: 100-continue) reads the 413 —
// the node reads and drops the rest of the body before answering — instead of failing
// with a reset connection while it is still writing (net/http closes a connection with
// more than 256 KiB of its body unread).
func TestTooLargeBodyIsAnswered(t *testing.T) {
	h := newAuthHarness(t, true)
	srv := httptest.NewServer(h.s.Handler())
	defer srv.Close()
	for _, size := range []int{2 << 20, 5 << 20} {
		t.Run(fmt.Sprintf("%d MiB", size>>20), func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			body := bytes.Repeat([]byte("a"), size)
			head := fmt.Sprintf("POST /v1/keys HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", srv.Listener.Addr(), size)
			if _, err := c.Write(append([]byte(head), body...)); err != nil {
				t.Fatalf("writing the body: %v (the node did not read it before answering)", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Request-Id") == "" {
				t.Fatalf("answer %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
			}
		})
	}
}
