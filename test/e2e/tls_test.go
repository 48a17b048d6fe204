//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/testca"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestTLS runs real clusters whose API serves HTTPS (issue 9, "TLS on the API"): with a
// certificate from a private CA, then with mutual TLS (api.client_ca_file). Clients that
// trust the CA (SDK, admin SDK, CLI) work; plain HTTP, clients that do not trust the CA
// and, under mTLS, clients without a certificate from the client CA are refused.
func TestTLS(t *testing.T) {
	ca := testca.New(t, "custos test CA")
	srvCert, srvKey := ca.Issue("node", true)
	cliCert, cliKey := ca.Issue("operator", false)
	t.Run("https", func(t *testing.T) {
		t.Parallel()
		c := startTLSCluster(t, map[string]any{"tls_cert_file": srvCert, "tls_key_file": srvKey}, &tls.Config{RootCAs: ca.Pool()})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()

		// The SDKs with the CA: a user creates an Ed25519 key and signs through two nodes.
		u := c.newUser(ctx, "tls-user")
		tlsKeygenAndSign(ctx, t, u)

		// Plain HTTP to the https port gets no answer from the API.
		plainURL := strings.Replace(c.API(0), "https://", "http://", 1)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(plainURL + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
				t.Fatalf("plain HTTP to the https port: %d %q", resp.StatusCode, body)
			}
		}
		// A client that does not trust the CA refuses the node's certificate.
		untrusted, err := client.New(c.API(1), u.Token, u.Key)
		if err != nil {
			t.Fatal(err)
		}
		var uae x509.UnknownAuthorityError
		if _, err := untrusted.ListKeys(ctx); err == nil || !errors.As(err, &uae) {
			t.Fatalf("a client without the CA: %v", err)
		}

		// The CLI with --ca-file (admin) and CUSTOS_CA_FILE (user).
		out, err := custosCLI(t, nil, "cluster", "--url", c.API(2), "--admin-key-file", c.AdminKeyFile(), "--ca-file", ca.File)
		if err != nil || !strings.Contains(out, `"https://127.0.0.1:`) {
			t.Fatalf("custos cluster over https: %v %q", err, out)
		}
		if _, err := custosCLI(t, nil, "cluster", "--url", c.API(2), "--admin-key-file", c.AdminKeyFile()); err == nil {
			t.Fatal("the CLI accepted the node's certificate without --ca-file")
		}
		env := []string{"CUSTOS_TOKEN=" + u.Token, "CUSTOS_IDENTITY=" + writeIdentity(t, u.Key), "CUSTOS_CA_FILE=" + ca.File}
		if out, err := custosCLI(t, env, "keys", "list", "--url", c.API(1)); err != nil || !strings.Contains(out, `"ed25519"`) {
			t.Fatalf("custos keys list over https: %v %q", err, out)
		}

		// Every node says in its log that its API is https.
		for i := range c.N() {
			b, _ := os.ReadFile(c.LogPath(i))
			if !strings.Contains(string(b), `"api_scheme":"https"`) {
				t.Fatalf("%s does not log that its API is https", c.NodeID(i))
			}
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		t.Parallel()
		pair, err := tls.LoadX509KeyPair(cliCert, cliKey)
		if err != nil {
			t.Fatal(err)
		}
		withCert := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}
		c := startTLSCluster(t, map[string]any{"tls_cert_file": srvCert, "tls_key_file": srvKey, "client_ca_file": ca.File}, withCert)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()

		u := c.newUser(ctx, "tls-user")
		tlsKeygenAndSign(ctx, t, u)

		// Without a client certificate, or with one from another CA, the handshake fails:
		// the request never reaches the API (no HTTP status, no problem details).
		other := testca.New(t, "another CA")
		otherCert, otherKey := other.Issue("stranger", false)
		otherPair, err := tls.LoadX509KeyPair(otherCert, otherKey)
		if err != nil {
			t.Fatal(err)
		}
		for name, tc := range map[string]*tls.Config{
			"no client certificate":              {RootCAs: ca.Pool()},
			"a client certificate of another CA": {RootCAs: ca.Pool(), Certificates: []tls.Certificate{otherPair}},
		} {
			cl, err := client.New(c.API(0), u.Token, u.Key, client.WithTLSConfig(tc))
			if err != nil {
				t.Fatal(err)
			}
			// Under TLS 1.3 the client may learn of the refusal only while sending its
			// request, so the error text varies; what matters is that no HTTP answer came.
			_, err = cl.ListKeys(ctx)
			var ae *client.APIError
			if err == nil || errors.As(err, &ae) {
				t.Fatalf("%s: %v", name, err)
			}
			a, err := admin.New(c.adminKey(), c.API(1), admin.WithTLSConfig(tc))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Cluster(ctx); err == nil || errors.As(err, &ae) {
				t.Fatalf("admin, %s: %v", name, err)
			}
		}
		// The same at the TLS layer itself, without HTTP.
		conn, err := tls.Dial("tcp", strings.TrimPrefix(c.API(2), "https://"), &tls.Config{RootCAs: ca.Pool()})
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1)) // TLS 1.3: the server's verdict arrives after the client's Finished
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("handshake without a client certificate: %v", err)
		}
		if b, _ := os.ReadFile(c.LogPath(0)); !strings.Contains(string(b), "TLS handshake error") {
			t.Fatal("node1 did not refuse the handshakes")
		}

		// The CLI with --client-cert and --client-key.
		out, err := custosCLI(t, nil, "cluster", "--url", c.API(1), "--admin-key-file", c.AdminKeyFile(), "--ca-file", ca.File, "--client-cert", cliCert, "--client-key", cliKey)
		if err != nil || !strings.Contains(out, `"leader"`) {
			t.Fatalf("custos cluster with a client certificate: %v %q", err, out)
		}
		if _, err := custosCLI(t, nil, "cluster", "--url", c.API(1), "--admin-key-file", c.AdminKeyFile(), "--ca-file", ca.File); err == nil {
			t.Fatal("the CLI got through without a client certificate")
		}
	})
}

// startTLSCluster starts a 3-node cluster whose API settings include api (TLS files) and
// whose members' API URLs are https; tc is the TLS configuration of the harness's own
// clients (readiness probes, the admin SDK, the users' SDK clients).
func startTLSCluster(t *testing.T, api map[string]any, tc *tls.Config) *cluster {
	t.Helper()
	apiExtra := map[string]any{"wait_timeout": "30s"}
	for k, v := range api {
		apiExtra[k] = v
	}
	return startCluster(t, testcluster.Options{TLS: tc, Extra: map[string]any{"api": apiExtra}})
}

// tlsKeygenAndSign creates an Ed25519 key through node 1, signs through node 2 and
// verifies the signature.
func tlsKeygenAndSign(ctx context.Context, t *testing.T, u *user) {
	t.Helper()
	k, req, err := u.Clients[0].CreateKey(ctx, "ed25519", 2, "tls", "")
	if err == nil && k == nil && req != nil {
		var r *client.Request
		if r, err = u.Clients[0].WaitRequest(ctx, req.RequestID, 200*time.Millisecond); err == nil {
			k = r.Key
		}
	}
	if err != nil || k == nil || k.Status != client.StatusActive {
		t.Fatalf("Ed25519 keygen over https: %v %+v %+v", err, k, req)
	}
	msg := []byte("signed over TLS")
	r, err := u.Clients[1].Sign(ctx, k.KeyID, msg, "", "")
	if err == nil && !client.Final(r.Status) {
		r, err = u.Clients[1].WaitRequest(ctx, r.RequestID, 200*time.Millisecond)
	}
	if err != nil || r.Status != client.StatusSigned || r.Signature == nil {
		t.Fatalf("Ed25519 sign over https: %v %+v", err, r)
	}
	pub, _ := hex.DecodeString(k.PublicKey)
	sig, _ := hex.DecodeString(r.Signature.Signature)
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		t.Fatal("the signature made over https does not verify")
	}
}

// writeIdentity writes a user's key as the CLI's identity file (mode 0600).
func writeIdentity(t *testing.T, priv ed25519.PrivateKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "identity")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
