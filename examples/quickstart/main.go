// Command quickstart walks the custos flow against a running dev cluster (`make run`):
// the admin creates a user and issues its token offline, the user creates a secp256k1 and
// an Ed25519 key through different nodes, signs through a third, and verifies the
// signatures with btcec and crypto/ed25519. It uses only the public SDKs (admin,
// node/client) and reads the dev cluster's cluster.json and admin.key (API.md's dev
// cluster contract) with the standard library, as any program of yours could.
//
//	go run ./examples/quickstart [-cluster .devcluster/cluster.json]
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
)

func main() {
	clusterFile := flag.String("cluster", ".devcluster/cluster.json", "dev cluster file written by make run")
	flag.Parse()
	cl, adminKey, err := loadDevCluster(*clusterFile)
	if err != nil {
		log.Fatalf("read %s (is `make run` going?): %v", *clusterFile, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The admin: create a user, then issue its token offline.
	adm, err := admin.New(adminKey, cl.Nodes[0].API)
	if err != nil {
		log.Fatal(err)
	}
	userID, err := adm.CreateUser(ctx, "quickstart")
	if err != nil {
		log.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	token, err := adm.GenUserToken(userID, hex.EncodeToString(pub), time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("user %d created; token issued offline\n", userID)

	// The user: one client per node, every request signed with the user's key.
	var clients []*client.Client
	for _, n := range cl.Nodes {
		c, err := client.New(n.API, token, priv)
		if err != nil {
			log.Fatal(err)
		}
		clients = append(clients, c)
	}
	ecKey := mustKey(ctx, clients[1])(clients[1].CreateKey(ctx, "secp256k1", 2, "treasury", ""))
	edKey := mustKey(ctx, clients[len(clients)-1])(clients[len(clients)-1].CreateKey(ctx, "ed25519", 2, "agent", ""))
	fmt.Printf("secp256k1 key %s  public key %s\n", ecKey.KeyID, ecKey.PublicKey)
	fmt.Printf("ed25519   key %s  public key %s\n", edKey.KeyID, edKey.PublicKey)

	digest := sha256.Sum256([]byte("pay 0.1 BTC to bob"))
	start := time.Now()
	r, err := clients[0].Sign(ctx, ecKey.KeyID, digest[:], "", "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ECDSA signature in %v: der=%s recovery_id=%d\n", time.Since(start).Round(time.Millisecond), r.Signature.DER, *r.Signature.RecoveryID)
	pkb, _ := hex.DecodeString(ecKey.PublicKey)
	pk, _ := btcec.ParsePubKey(pkb)
	der, _ := hex.DecodeString(r.Signature.DER)
	sig, err := btcecdsa.ParseDERSignature(der)
	if err != nil || !sig.Verify(digest[:], pk) {
		log.Fatal("ECDSA signature does not verify")
	}
	fmt.Println("  verified with btcec")

	msg := []byte("hello, threshold world")
	start = time.Now()
	r, err = clients[0].Sign(ctx, edKey.KeyID, msg, "", "")
	if err != nil {
		log.Fatal(err)
	}
	edPub, _ := hex.DecodeString(edKey.PublicKey)
	edSig, _ := hex.DecodeString(r.Signature.Signature)
	if !ed25519.Verify(edPub, msg, edSig) {
		log.Fatal("Ed25519 signature does not verify")
	}
	fmt.Printf("Ed25519 signature in %v, verified with crypto/ed25519\n", time.Since(start).Round(time.Millisecond))
}

// devCluster is cluster.json of API.md's dev cluster contract.
type devCluster struct {
	Name      string `json:"name"`
	Threshold int    `json:"threshold"`
	Nodes     []struct {
		ID  string `json:"id"`
		API string `json:"api"`
	} `json:"nodes"`
	AdminKeyFile string `json:"admin_key_file"`
}

// loadDevCluster reads cluster.json and the ADMIN_KEY (64 hex characters) it names. A
// relative admin_key_file is relative to where `custos dev up` ran: the directory above
// the cluster's (".devcluster/admin.key" for ".devcluster/cluster.json").
func loadDevCluster(path string) (*devCluster, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var cl devCluster
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cl.Nodes) == 0 {
		return nil, nil, fmt.Errorf("%s lists no nodes", path)
	}
	keyFile := cl.AdminKeyFile
	if !filepath.IsAbs(keyFile) {
		keyFile = filepath.Join(filepath.Dir(filepath.Dir(path)), keyFile)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil || len(key) != 32 {
		return nil, nil, fmt.Errorf("%s must hold 64 hex characters", keyFile)
	}
	return &cl, key, nil
}

// mustKey returns the new key, polling the keygen request when it outlasted the wait.
func mustKey(ctx context.Context, c *client.Client) func(*client.Key, *client.Request, error) *client.Key {
	return func(k *client.Key, r *client.Request, err error) *client.Key {
		if err != nil {
			log.Fatal(err)
		}
		if k != nil {
			return k
		}
		fmt.Printf("keygen %s still running; polling…\n", r.RequestID)
		r, err = c.WaitRequest(ctx, r.RequestID, time.Second)
		if err != nil {
			log.Fatal(err)
		}
		if r.Key == nil {
			log.Fatalf("keygen ended %s: %+v", r.Status, r.Error)
		}
		return r.Key
	}
}
