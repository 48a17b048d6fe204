package httpapi

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/testca"
)

// TestListen: plain HTTP, TLS and mutual TLS on the API listener, and start-time errors
// that name the file at fault.
func TestListen(t *testing.T) {
	ca := testca.New(t, "api test CA")
	certFile, keyFile := ca.Issue("node", true)
	clientCert, clientKey := ca.Issue("client", false)
	serve := func(t *testing.T, cfg *config.Config) string {
		t.Helper()
		ln, err := Listen(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}
	get := func(client *http.Client, url string) error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}

	t.Run("plain", func(t *testing.T) {
		cfg := &config.Config{}
		cfg.API.Listen = "127.0.0.1:0"
		if err := get(http.DefaultClient, "http://"+serve(t, cfg)+"/"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tls and mtls", func(t *testing.T) {
		cfg := &config.Config{}
		cfg.API.Listen, cfg.API.TLSCertFile, cfg.API.TLSKeyFile = "127.0.0.1:0", certFile, keyFile
		url := "https://" + serve(t, cfg) + "/"
		tc := &tls.Config{RootCAs: ca.Pool()}
		if err := get(&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, url); err != nil {
			t.Fatalf("TLS: %v", err)
		}
		cfg.API.ClientCAFile = ca.File
		url = "https://" + serve(t, cfg) + "/"
		if err := get(&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, url); err == nil {
			t.Fatal("mutual TLS served a client without a certificate")
		}
		pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
		if err != nil {
			t.Fatal(err)
		}
		withCert := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}
		if err := get(&http.Client{Transport: &http.Transport{TLSClientConfig: withCert}}, url); err != nil {
			t.Fatalf("mutual TLS with a client certificate: %v", err)
		}
	})
	t.Run("errors name the file", func(t *testing.T) {
		notPEM := filepath.Join(t.TempDir(), "ca.txt")
		if err := os.WriteFile(notPEM, []byte("no certificate here"), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]struct{ cert, key, ca, want string }{
			"missing certificate": {"/nonexistent/cert.pem", keyFile, "", "/nonexistent/cert.pem"},
			"missing CA file":     {certFile, keyFile, "/nonexistent/ca.pem", "api.client_ca_file /nonexistent/ca.pem"},
			"CA file without PEM": {certFile, keyFile, notPEM, "holds no PEM certificate"},
		} {
			cfg := &config.Config{}
			cfg.API.Listen, cfg.API.TLSCertFile, cfg.API.TLSKeyFile, cfg.API.ClientCAFile = "127.0.0.1:0", c.cert, c.key, c.ca
			if ln, err := Listen(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				if ln != nil {
					ln.Close()
				}
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}
