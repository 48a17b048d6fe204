package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

// TestWithTLSConfig talks to an https node whose certificate only the given CA pool
// trusts.
func TestWithTLSConfig(t *testing.T) {
	_, plain := newFakeNode(t, auth.VerifierConfig{HMACKey: hsKey, Audience: "dev"})
	srv := httptest.NewTLSServer(plain.Config.Handler)
	t.Cleanup(srv.Close)
	ctx := context.Background()

	a, err := New(hsKey, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Cluster(ctx); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	a, err = New(hsKey, srv.URL, WithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := a.Cluster(ctx); err != nil || cl.Name != "dev" {
		t.Fatalf("Cluster over https: %+v %v", cl, err)
	}
	if _, err := New(hsKey, srv.URL, WithTLSConfig(&tls.Config{RootCAs: roots}), WithHTTPClient(&http.Client{Timeout: time.Second})); err == nil {
		t.Fatal("WithTLSConfig and WithHTTPClient together were accepted")
	}
}
