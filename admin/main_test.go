package admin

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/custos/custos/node/client"
	"github.com/custos/custos/node/nodetest"
)

// The tests of this package run against real nodes (node/nodetest): one in-process
// cluster with the shared admin key, shared by every test and started on first use.
// Tests of key-pair mode start their own.
var shared nodetest.Shared

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

// hmacAdmin is the admin of the shared cluster on node i.
func hmacAdmin(t *testing.T, i int, opts ...Option) (*Admin, *nodetest.Cluster) {
	t.Helper()
	cl := shared.Cluster(t)
	a, err := New(cl.AdminKey(), cl.URL(i), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a, cl
}

// userClient returns a client for user id on node i, with a fresh Ed25519 key and a
// token GenUserToken issued for it, and the key.
func userClient(t *testing.T, a *Admin, url string, id uint64) (*client.Client, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.GenUserToken(id, hex.EncodeToString(pub), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(url, tok, priv)
	if err != nil {
		t.Fatal(err)
	}
	return c, priv
}
