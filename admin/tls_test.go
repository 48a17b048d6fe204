package admin

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
// certificate only the given CA pool trusts.
func TestWithTLSConfig(t *testing.T) {
	cl := shared.Cluster(t)
	target, err := url.Parse(cl.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ctx := context.Background()

	a, err := New(cl.AdminKey(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Cluster(ctx); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	a, err = New(cl.AdminKey(), srv.URL, WithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := a.Cluster(ctx); err != nil || c.Name != cl.Name() {
		t.Fatalf("Cluster over https: %+v %v", c, err)
	}
	if _, err := New(cl.AdminKey(), srv.URL, WithTLSConfig(&tls.Config{RootCAs: roots}), WithHTTPClient(&http.Client{Timeout: time.Second})); err == nil {
		t.Fatal("WithTLSConfig and WithHTTPClient together were accepted")
	}
}
