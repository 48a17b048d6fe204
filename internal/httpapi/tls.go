package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/custos/custos/internal/config"
)

// maxClientCAFileSize bounds what Listen reads of api.client_ca_file.
const maxClientCAFileSize = 4 << 20

// Listen opens the API listener: plain TCP, or TLS (1.2 or later) when
// api.tls_cert_file and api.tls_key_file are set, and then with api.client_ca_file
// mutual TLS (a client without a certificate signed by one of those CAs fails the
// handshake). The certificate pair and the CA bundle are loaded here, once, so that a
// missing or broken file stops the node at start with an error naming it.
func Listen(cfg *config.Config) (net.Listener, error) {
	tc, err := apiTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, fmt.Errorf("api listen %s: %w", cfg.API.Listen, err)
	}
	if tc == nil {
		return ln, nil
	}
	return tls.NewListener(ln, tc), nil
}

// apiTLSConfig is the API's server TLS configuration, nil for plain HTTP.
func apiTLSConfig(cfg *config.Config) (*tls.Config, error) {
	if !cfg.APITLS() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.API.TLSCertFile, cfg.API.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS: cannot load the certificate %s and its key %s (PEM files named by api.tls_cert_file and api.tls_key_file): %w", cfg.API.TLSCertFile, cfg.API.TLSKeyFile, err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// HTTP/2 and HTTP/1.1, as net/http would offer on its own TLS listeners.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if cfg.API.ClientCAFile == "" {
		return tc, nil
	}
	pem, err := readCAFile(cfg.API.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS: api.client_ca_file %s: %w", cfg.API.ClientCAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("api TLS: api.client_ca_file %s holds no PEM certificate", cfg.API.ClientCAFile)
	}
	tc.ClientCAs = pool
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	return tc, nil
}

func readCAFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClientCAFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxClientCAFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxClientCAFileSize)
	}
	return b, nil
}
