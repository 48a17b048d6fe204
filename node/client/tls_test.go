package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"
)

// TestWithTLSConfig talks over https to a real node behind a TLS-terminating proxy whose
// certificate only the given CA pool trusts (signatures cover path and query, not the
// authority, so they survive the proxy).
func TestWithTLSConfig(t *testing.T) {
	cl := testCluster(t)
	u := newUser(t)
	target, err := url.Parse(cl.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tok := u.token(t, time.Now(), time.Hour, cl.Name())
	ctx := context.Background()

	// The system roots do not know the proxy's certificate.
	c, err := New(srv.URL, tok, u.priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, err = New(srv.URL, tok, u.priv, WithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := c.ListKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("ListKeys over https: %+v %v", keys, err)
	}
	other, err := c.WithBaseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Cluster(ctx); err != nil {
		t.Fatalf("WithBaseURL lost the TLS configuration: %v", err)
	}

	if _, err := New(srv.URL, tok, u.priv, WithTLSConfig(&tls.Config{RootCAs: roots}), WithHTTPClient(&http.Client{Timeout: time.Second})); err == nil {
		t.Fatal("WithTLSConfig and WithHTTPClient together were accepted")
	}
}
