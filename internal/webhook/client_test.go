package webhook

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGuardCheckIP(t *testing.T) {
	none, loop, link, both := Guard{}, Guard{AllowLoopback: true}, Guard{AllowLinkLocal: true}, Guard{AllowLoopback: true, AllowLinkLocal: true}
	for _, tc := range []struct {
		ip string
		g  Guard
		ok bool
	}{
		{"203.0.113.7", none, true},
		{"10.1.2.3", none, true},
		{"2001:db8::1", none, true},
		{"127.0.0.1", none, false},
		{"127.0.0.1", loop, true},
		{"127.9.9.9", none, false},
		{"::1", none, false},
		{"::1", loop, true},
		{"::ffff:127.0.0.1", none, false},
		{"::ffff:127.0.0.1", loop, true},
		{"::127.0.0.1", none, false},
		{"64:ff9b::127.0.0.1", none, false},
		{"64:ff9b::169.254.169.254", both, false},
		{"64:ff9b::203.0.113.7", none, true},
		{"169.254.169.254", none, false},
		{"169.254.169.254", both, false},
		{"::ffff:169.254.169.254", both, false},
		{"fd00:ec2::254", both, false},
		{"100.100.100.200", both, false},
		{"192.0.0.192", both, false},
		{"169.254.1.1", none, false},
		{"169.254.1.1", link, true},
		{"169.254.1.1", loop, false},
		{"fe80::1", none, false},
		{"fe80::1%eth0", none, false},
		{"fe80::1", link, true},
		{"0.0.0.0", both, false},
		{"0.1.2.3", both, false},
		{"::", both, false},
		{"::ffff:0.0.0.0", both, false},
		{"224.0.0.1", both, false},
		{"239.255.255.250", both, false},
		{"ff02::1", both, false},
		{"ff05::1", both, false},
		{"255.255.255.255", both, false},
	} {
		t.Run(tc.ip+"/"+guardName(tc.g), func(t *testing.T) {
			err := tc.g.CheckIP(netip.MustParseAddr(tc.ip))
			if tc.ok != (err == nil) {
				t.Fatalf("CheckIP(%s) = %v, want ok=%v", tc.ip, err, tc.ok)
			}
		})
	}
	if (Guard{}).CheckIP(netip.Addr{}) == nil {
		t.Fatal("the zero address was accepted")
	}
}

func guardName(g Guard) string {
	s := "refuse"
	if g.AllowLoopback {
		s += "+loopback"
	}
	if g.AllowLinkLocal {
		s += "+linklocal"
	}
	return s
}

func TestGuardCheckURL(t *testing.T) {
	none, loop := Guard{}, Guard{AllowLoopback: true}
	for _, tc := range []struct {
		url string
		g   Guard
		ok  bool
	}{
		{"https://hooks.example.com/custos?t=1", none, true},
		{"http://hooks.example.com:8080/x", none, true},
		{"HTTPS://Hooks.Example.COM/", none, true},
		{"https://203.0.113.7/x", none, true},
		{"https://[2001:db8::1]:8443/x", none, true},
		{"ftp://hooks.example.com/", none, false},
		{"file:///etc/passwd", none, false},
		{"gopher://hooks.example.com/", none, false},
		{"javascript:alert(1)", none, false},
		{"mailto:a@example.com", none, false},
		{"hooks.example.com/x", none, false},
		{"//hooks.example.com/x", none, false},
		{"https://", none, false},
		{"https:///x", none, false},
		{"https://user:pass@hooks.example.com/", none, false},
		{"https://user@hooks.example.com/", none, false},
		{"https://:x@hooks.example.com/", none, false},
		{"https://hooks.example.com:0/", none, false},
		{"https://hooks.example.com:70000/", none, false},
		{"http://127.0.0.1:8080/", none, false},
		{"http://127.0.0.1:8080/", loop, true},
		{"http://[::1]/", none, false},
		{"http://[::ffff:127.0.0.1]/", none, false},
		{"http://[::ffff:127.0.0.1]/", loop, true},
		{"http://localhost:8080/", none, false},
		{"http://LOCALHOST./", none, false},
		{"http://a.localhost/", none, false},
		{"http://localhost:8080/", loop, true},
		{"http://169.254.169.254/latest/meta-data/", Guard{AllowLinkLocal: true, AllowLoopback: true}, false},
		{"http://[fd00:ec2::254]/", Guard{AllowLinkLocal: true}, false},
		{"http://100.100.100.200/", none, false},
		{"http://[fe80::1%25eth0]/", none, false},
		{"http://0.0.0.0/", loop, false},
		{"http://[::]/", loop, false},
		{"http://224.0.0.1/", none, false},
		{"http://2130706433/", none, false},
		{"http://0x7f000001/", none, false},
		{"http://127.1/", none, false},
		{"http://0x7f.0.0.1/", none, false},
		{"http://hooks.example.com/" + strings.Repeat("a", MaxURL), none, false},
		{"", none, false},
		{"http://hooks.example.com/\xff", none, false},
		{"http://hooks example.com/", none, false},
	} {
		t.Run(tc.url[:min(len(tc.url), 60)], func(t *testing.T) {
			err := tc.g.CheckURL(tc.url)
			if tc.ok != (err == nil) {
				t.Fatalf("CheckURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
			}
		})
	}
}

func TestHTTPClientNoProxy(t *testing.T) {
	tr := NewHTTPClient(Guard{}, time.Second).Transport.(*http.Transport)
	if tr.Proxy != nil {
		t.Fatal("the client takes a proxy")
	}
}

func TestPost(t *testing.T) {
	var hits, redirected atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(b) != `{"a":1}` || r.Header.Get("webhook-id") != "evt_1" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/ok", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/found", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	allow := NewHTTPClient(Guard{AllowLoopback: true}, 2*time.Second)
	refuse := NewHTTPClient(Guard{}, 2*time.Second)
	hdr := http.Header{}
	hdr.Set("webhook-id", "evt_1")

	for _, tc := range []struct {
		name    string
		c       *http.Client
		url     string
		status  int
		errHas  string // "" = success
		reaches bool
	}{
		{"2xx delivers", allow, srv.URL + "/ok", 204, "", true},
		{"through localhost when allowed", allow, "http://localhost:" + port + "/ok", 204, "", true},
		{"5xx fails naming the status", allow, srv.URL + "/fail", 503, "503", true},
		{"307 fails, not followed", allow, srv.URL + "/redirect", 307, "307", true},
		{"302 fails, not followed", allow, srv.URL + "/found", 302, "302", true},
		{"loopback refused", refuse, srv.URL + "/ok", 0, "loopback", false},
		{"loopback refused through localhost", refuse, "http://localhost:" + port + "/ok", 0, "loopback", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			status, err := Post(context.Background(), tc.c, tc.url, hdr, []byte(`{"a":1}`))
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("error %v, want one naming %q", err, tc.errHas)
			}
			if err != nil && strings.Contains(err.Error(), "/ok") {
				t.Errorf("the error repeats the url: %v", err)
			}
			if reached := hits.Load() > before; reached != tc.reaches {
				t.Errorf("reached the receiver: %v, want %v", reached, tc.reaches)
			}
		})
	}
	if redirected.Load() != 0 {
		t.Fatal("a redirect was followed")
	}
}

// countingTransport counts what its caller read of the answers' bodies.
type countingTransport struct {
	rt   http.RoundTripper
	read atomic.Int64
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if resp != nil {
		resp.Body = countingBody{resp.Body, &c.read}
	}
	return resp, err
}

func TestPostReadsLittleOfAHugeAnswer(t *testing.T) {
	const size = 10 << 20
	wrote := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10485760")
		w.WriteHeader(http.StatusOK)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		var n int64
		for n < size {
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		wrote <- n
	}))
	defer srv.Close()
	c := NewHTTPClient(Guard{AllowLoopback: true}, 5*time.Second)
	ct := &countingTransport{rt: c.Transport}
	c.Transport = ct
	start := time.Now()
	status, err := Post(context.Background(), c, srv.URL, nil, nil)
	if status != 200 || err != nil {
		t.Fatalf("Post = %d, %v", status, err)
	}
	if got := ct.read.Load(); got > maxAnswer {
		t.Fatalf("read %d bytes of the answer, want at most %d", got, maxAnswer)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Post took %v", d)
	}
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver is still writing: the connection was not closed")
	}
}

func TestPostHangingReceiverTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewHTTPClient(Guard{AllowLoopback: true}, 200*time.Millisecond)
	start := time.Now()
	status, err := Post(context.Background(), c, srv.URL, nil, []byte("{}"))
	if err == nil || status != 0 {
		t.Fatalf("Post = %d, %v; want a timeout", status, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Post took %v", d)
	}
	if !strings.Contains(err.Error(), "Timeout") && !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("error %v does not say it timed out", err)
	}
}
