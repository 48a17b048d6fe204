package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

// TestWithTLSConfig talks to an https node whose certificate only the given CA pool
// trusts.
func TestWithTLSConfig(t *testing.T) {
	_, plain := newFakeNode(t)
	srv := httptest.NewTLSServer(plain.Config.Handler)
	t.Cleanup(srv.Close)
	priv := userKey(5)
	iss, _ := auth.NewHS256Issuer(adminKey)
	tok, err := iss.UserToken(42, hex.EncodeToString(priv.Public().(ed25519.PublicKey)), time.Hour, "dev", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The system roots do not know the test server's certificate.
	c, err := New(srv.URL, tok, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, err = New(srv.URL, tok, priv, WithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := c.ListKeys(ctx); err != nil || len(keys) != 3 {
		t.Fatalf("ListKeys over https: %+v %v", keys, err)
	}
	other, err := c.WithBaseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ListKeys(ctx); err != nil {
		t.Fatalf("WithBaseURL lost the TLS configuration: %v", err)
	}

	if _, err := New(srv.URL, tok, priv, WithTLSConfig(&tls.Config{RootCAs: roots}), WithHTTPClient(&http.Client{Timeout: time.Second})); err == nil {
		t.Fatal("WithTLSConfig and WithHTTPClient together were accepted")
	}
}
