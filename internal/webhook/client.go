package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// MaxURL bounds a webhook's URL; maxAnswer is how much of a receiver's answer is read.
const (
	MaxURL    = 2048
	maxAnswer = 4 << 10
)

// Guard says which addresses a delivery may reach. Its zero value refuses loopback and
// link-local addresses; unspecified, multicast, broadcast and cloud metadata addresses
// are refused always.
type Guard struct {
	// AllowLoopback lets deliveries reach loopback addresses (dev clusters, tests).
	AllowLoopback bool
	// AllowLinkLocal lets deliveries reach link-local addresses (169.254/16, fe80::/10),
	// except the cloud metadata ones.
	AllowLinkLocal bool
}

var (
	// metadata are the cloud metadata addresses (AWS, GCP, Azure: 169.254.169.254; AWS
	// IPv6: fd00:ec2::254; GCP IPv6: fd20:ce::254; Alibaba: 100.100.100.200; Oracle:
	// 192.0.0.192).
	metadata = []netip.Addr{
		netip.MustParseAddr("169.254.169.254"),
		netip.MustParseAddr("fd00:ec2::254"),
		netip.MustParseAddr("fd20:ce::254"),
		netip.MustParseAddr("100.100.100.200"),
		netip.MustParseAddr("192.0.0.192"),
	}
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	broadcast   = netip.MustParseAddr("255.255.255.255")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	// nat64Local is the local-use NAT64 prefix (RFC 8215); a translator may use any /96
	// in it, with the IPv4 address in the last 32 bits.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	v4compat   = netip.MustParsePrefix("::/96")
)

// CheckIP refuses an address a delivery must not reach: unspecified ("this network"),
// multicast, broadcast and cloud metadata addresses always, link-local ones unless
// AllowLinkLocal, loopback ones unless AllowLoopback; IPv4-mapped (::ffff:a.b.c.d),
// IPv4-compatible and NAT64 (64:ff9b::/96) forms as the IPv4 address they carry.
func (g Guard) CheckIP(ip netip.Addr) error {
	if !ip.IsValid() {
		return errors.New("webhook: no address")
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() && (nat64.Contains(ip) || nat64Local.Contains(ip) || (v4compat.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback())) {
		b := ip.As16()
		inner := netip.AddrFrom4([4]byte(b[12:]))
		if err := g.CheckIP(inner); err != nil {
			return fmt.Errorf("webhook: address %s refused: it carries %s", ip, inner)
		}
	}
	notAllowed := func(why string) error { return fmt.Errorf("webhook: address %s refused: %s", ip, why) }
	for _, m := range metadata {
		if ip == m {
			return notAllowed("a cloud metadata address")
		}
	}
	switch {
	case ip.IsUnspecified(), ip.Is4() && thisNetwork.Contains(ip):
		return notAllowed("unspecified")
	case ip.IsMulticast(), ip == broadcast:
		return notAllowed("multicast or broadcast")
	case ip.IsLinkLocalUnicast() && !g.AllowLinkLocal:
		return notAllowed("link-local")
	case ip.IsLoopback() && !g.AllowLoopback:
		return notAllowed("loopback")
	}
	return nil
}

// CheckURL checks a webhook's URL without resolving anything (it is deterministic, so
// that the replicated state machine may call it): http or https, a host, no user
// information, at most MaxURL bytes of UTF-8, a port in 1–65535, and a literal address
// (or "localhost") that CheckIP accepts. Where a host name leads is checked at every
// connection by NewHTTPClient's dialer.
func (g Guard) CheckURL(raw string) error {
	if raw == "" || len(raw) > MaxURL || !utf8.ValidString(raw) {
		return fmt.Errorf("webhook: a url is 1–%d bytes of UTF-8", MaxURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("webhook: the url does not parse")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("webhook: a url is http or https")
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return errors.New("webhook: the url has no host")
	}
	if u.User != nil {
		return errors.New("webhook: the url must not carry user information")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("webhook: the url's port is not 1–65535")
		}
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		return g.CheckIP(ip)
	}
	if strings.Contains(host, "%") || strings.Contains(host, ":") {
		return errors.New("webhook: the url's host is not an address nor a name")
	}
	// A name whose last label is numeric is no DNS name but an address in a form some
	// resolvers accept (127.1, 2130706433, 0x7f.0.0.1): refused, it cannot be checked.
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" || strings.HasPrefix(last, "0x") || strings.Trim(last, "0123456789") == "" {
		return errors.New("webhook: the url's host is an address in an unusual form")
	}
	if (host == "localhost" || strings.HasSuffix(host, ".localhost")) && !g.AllowLoopback {
		return errors.New("webhook: the url's host is loopback")
	}
	return nil
}

// control refuses, at connect time, an address CheckIP refuses: whatever a name resolved
// to (DNS rebinding included), the connection is to an address checked here.
func (g Guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: refused to connect to %q: %v", address, err)
	}
	return g.CheckIP(ap.Addr())
}

// NewHTTPClient returns the client deliveries are made with: each connection's address is
// checked with g when it is made (net.Dialer.Control), no proxy is taken from the
// environment, no redirect is followed (a 3xx answer is returned as it is) and timeout
// bounds a whole exchange (10 s when not positive).
func NewHTTPClient(g Guard, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        60 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Post sends body to url with headers and returns the answer's status. It reads at most
// 4 KiB of the answer and closes the rest unread; an answer other than 2xx is an error
// naming the status (a 3xx one included: redirects are not followed). Errors do not
// repeat the URL (it may carry a token).
func Post(ctx context.Context, c *http.Client, url string, headers http.Header, body []byte) (status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("webhook: the url does not make a request")
	}
	for k, v := range headers {
		req.Header[k] = append([]string(nil), v...)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, stripURL(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := fmt.Sprintf("the receiver answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg += " (redirects are not followed)"
		}
		return resp.StatusCode, errors.New(msg)
	}
	return resp.StatusCode, nil
}

// stripURL drops the URL a *url.Error repeats.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}
