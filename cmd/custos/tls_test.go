package main

import (
	"crypto/tls"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/internal/testca"
)

// TestTLSFlags runs admin commands against an https node with a private CA that
// requires a client certificate (mutual TLS).
func TestTLSFlags(t *testing.T) {
	ca := testca.New(t, "custos test CA")
	srvCert, srvKey := ca.Issue("node", true)
	cliCert, cliKey := ca.Issue("operator", false)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	key := make([]byte, 32)
	v, err := auth.NewTokenVerifier(auth.VerifierConfig{HMACKey: key})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("00", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(&fakeNode{t: t, verifier: v})
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	admin := func(extra ...string) (string, error) {
		return runCLI(t, append([]string{"admin", "users", "--url", srv.URL, "--admin-key-file", keyFile}, extra...)...)
	}

	if out, err := admin("--ca-file", ca.File, "--client-cert", cliCert, "--client-key", cliKey); err != nil || !strings.Contains(out, `"alice"`) {
		t.Fatalf("with CA and client certificate: %v %q", err, out)
	}
	if _, err := admin(); err == nil {
		t.Fatal("a certificate signed by an unknown CA was accepted")
	}
	if _, err := admin("--ca-file", ca.File); err == nil {
		t.Fatal("no client certificate, yet the call succeeded")
	}
	if _, err := admin("--ca-file", ca.File, "--client-cert", cliCert); err == nil || !strings.Contains(err.Error(), "together") {
		t.Fatalf("--client-cert without --client-key: %v", err)
	}
	if _, err := admin("--ca-file", srvKey); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without certificates: %v", err)
	}
	_ = os.Chmod(cliKey, 0o644)
	if _, err := admin("--ca-file", ca.File, "--client-cert", cliCert, "--client-key", cliKey); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable client key: %v", err)
	}
	_ = os.Chmod(cliKey, 0o600)

	// The same settings from the environment.
	t.Setenv("CUSTOS_CA_FILE", ca.File)
	t.Setenv("CUSTOS_CLIENT_CERT", cliCert)
	t.Setenv("CUSTOS_CLIENT_KEY", cliKey)
	if out, err := admin(); err != nil || !strings.Contains(out, `"alice"`) {
		t.Fatalf("with CUSTOS_CA_FILE, CUSTOS_CLIENT_CERT and CUSTOS_CLIENT_KEY: %v %q", err, out)
	}
}
