package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/auth"
)

// testCA is a throwaway CA that issues server and client certificates as PEM files.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "custos test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.file = ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// issue writes a certificate for 127.0.0.1 (server) or a client and its key, and returns
// the two file names.
func (ca *testCA) issue(name string, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "PRIVATE KEY", kder)
}

// TestTLSFlags runs admin commands against an https node with a private CA that
// requires a client certificate (mutual TLS).
func TestTLSFlags(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue("node", true)
	cliCert, cliKey := ca.issue("operator", false)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
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

	if out, err := admin("--ca-file", ca.file, "--client-cert", cliCert, "--client-key", cliKey); err != nil || !strings.Contains(out, `"alice"`) {
		t.Fatalf("with CA and client certificate: %v %q", err, out)
	}
	if _, err := admin(); err == nil {
		t.Fatal("a certificate signed by an unknown CA was accepted")
	}
	if _, err := admin("--ca-file", ca.file); err == nil {
		t.Fatal("no client certificate, yet the call succeeded")
	}
	if _, err := admin("--ca-file", ca.file, "--client-cert", cliCert); err == nil || !strings.Contains(err.Error(), "together") {
		t.Fatalf("--client-cert without --client-key: %v", err)
	}
	if _, err := admin("--ca-file", srvKey); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without certificates: %v", err)
	}
	_ = os.Chmod(cliKey, 0o644)
	if _, err := admin("--ca-file", ca.file, "--client-cert", cliCert, "--client-key", cliKey); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable client key: %v", err)
	}
	_ = os.Chmod(cliKey, 0o600)

	// The same settings from the environment.
	t.Setenv("CUSTOS_CA_FILE", ca.file)
	t.Setenv("CUSTOS_CLIENT_CERT", cliCert)
	t.Setenv("CUSTOS_CLIENT_KEY", cliKey)
	if out, err := admin(); err != nil || !strings.Contains(out, `"alice"`) {
		t.Fatalf("with CUSTOS_CA_FILE, CUSTOS_CLIENT_CERT and CUSTOS_CLIENT_KEY: %v %q", err, out)
	}
}
