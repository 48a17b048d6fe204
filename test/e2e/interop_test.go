//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/custos/custos/internal/auth"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// interopTokens is test/interop/xauth.mjs's answer.
type interopTokens struct {
	PublicKey string `json:"public_key"`
	Tokens    []struct {
		BSM              string `json:"bsm"`
		BRC77            string `json:"brc77"`
		ForgedBRC77      string `json:"forged_brc77"`
		BSMJSVerifies    bool   `json:"bsm_js_verifies"`
		BRC77JSVerifies  bool   `json:"brc77_js_verifies"`
		ForgedJSVerifies bool   `json:"forged_js_verifies"`
	} `json:"tokens"`
}

type interopRequest struct {
	Method string `json:"-"`
	Path   string `json:"path"`
	Body   string `json:"body"`
}

// jsXAuthTokens runs the reference clients (npm bitcoin-auth and @bsv/sdk, pinned in
// test/interop/package-lock.json; `npm ci` installs them when node_modules is missing).
// Node is part of this project's machine: its absence fails the test.
func jsXAuthTokens(t *testing.T, key *btcec.PrivateKey, reqs []interopRequest) *interopTokens {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js) is required for the X-Auth-Token interop test: %v", err)
	}
	dir := filepath.Join(bins.Root, "test", "interop")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "bitcoin-auth")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("npm is required to install test/interop's packages: %v", err)
		}
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in test/interop: %v\n%s", err, out)
		}
	}
	in, _ := json.Marshal(map[string]any{"private_key": hex.EncodeToString(key.Serialize()), "requests": reqs})
	cmd := exec.CommandContext(ctx, nodeBin, "xauth.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node xauth.mjs: %v\n%s", err, stderr.String())
	}
	var toks interopTokens
	if err := json.Unmarshal(out, &toks); err != nil || len(toks.Tokens) != len(reqs) {
		t.Fatalf("xauth.mjs printed %q: %v", out, err)
	}
	return &toks
}

// TestXAuthInterop sends X-Auth-Tokens made by the reference JavaScript clients to a
// 3-node cluster against a secp256k1 access key: bsm and brc77 tokens are accepted; a
// BRC-77 token whose embedded signer is another key than its pubkey field (which the
// reference verifier accepts) is refused.
func TestXAuthInterop(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := c.newUser(ctx, "alice")
	k := alice.edKey(ctx, t, 0, "interop")
	key, err := btcec.NewPrivateKey()
	wantOK(t, "secp256k1 key", err)
	pubHex := hex.EncodeToString(key.PubKey().SerializeCompressed())
	ak, err := alice.Clients[1].CreateAccessKey(ctx, client.AccessKeyGrant{Label: "bitcoin-auth", Scheme: client.SchemeSecp256k1,
		PublicKey: pubHex, Permissions: []string{client.PermKeysRead, client.PermKeysSign}})
	wantOK(t, "grant", err)

	reqs := []interopRequest{
		{Method: "GET", Path: "/v1/keys"},
		{Method: "GET", Path: "/v1/keys?limit=5"},
		{Method: "GET", Path: "/v1/keys/" + k.KeyID},
		{Method: "POST", Path: "/v1/keys/" + k.KeyID + "/sign", Body: `{"message":"` + hex.EncodeToString([]byte("signed via bitcoin-auth")) + `"}`},
	}
	toks := jsXAuthTokens(t, key, reqs)
	if toks.PublicKey != pubHex {
		t.Fatalf("JS derived public key %s, Go %s", toks.PublicKey, pubHex)
	}

	// The tokens are what AUTH-FORMATS.md describes (checked without the cluster first, so
	// that a format problem is told apart from a node problem).
	for i, r := range reqs {
		tk := toks.Tokens[i]
		if !tk.BSMJSVerifies || !tk.BRC77JSVerifies {
			t.Fatalf("request %d: the reference verifier rejects its own tokens", i)
		}
		if !tk.ForgedJSVerifies {
			t.Fatalf("request %d: the forged token is not a valid BRC-77 signature (the reference verifier refuses it), so the test proves nothing", i)
		}
		for _, s := range []string{tk.BSM, tk.BRC77} {
			p, err := auth.ParseXAuthToken(s)
			if err == nil {
				err = auth.VerifyXAuthToken(p, r.Method, r.Path, []byte(r.Body), time.Now())
			}
			if err != nil {
				t.Fatalf("request %d: internal/auth refuses a reference token: %v\n%s", i, err, s)
			}
		}
	}

	t.Run("accepted", func(t *testing.T) {
		for i, r := range reqs {
			for j, tok := range []string{toks.Tokens[i].BSM, toks.Tokens[i].BRC77} {
				node := (i + j) % 3
				req := rawRequest(t, r.Method, c.API(node)+r.Path, []byte(r.Body))
				req.Header.Set("X-Auth-Token", tok)
				if status, code := send(t, req); status != 200 {
					t.Fatalf("%s %s with a %s token via node %d: %d %q", r.Method, r.Path, []string{"bsm", "brc77"}[j], node+1, status, code)
				}
			}
		}
	})

	t.Run("forged signer refused", func(t *testing.T) {
		for i, r := range reqs {
			req := rawRequest(t, r.Method, c.API(i%3)+r.Path, []byte(r.Body))
			req.Header.Set("X-Auth-Token", toks.Tokens[i].ForgedBRC77)
			if status, code := send(t, req); status != 401 {
				t.Fatalf("forged BRC-77 token on %s %s: %d %q", r.Method, r.Path, status, code)
			}
		}
	})

	t.Run("replay refused", func(t *testing.T) {
		req := rawRequest(t, "GET", c.API(2)+reqs[0].Path, nil)
		req.Header.Set("X-Auth-Token", toks.Tokens[0].BRC77)
		if status, code := send(t, req); status != 401 || code != "auth.nonce_reused" {
			t.Fatalf("replayed reference token: %d %q", status, code)
		}
	})

	t.Run("log", func(t *testing.T) {
		log, err := alice.Clients[0].AccessKeyLog(ctx, ak.ID)
		wantOK(t, "log", err)
		allowed := 0
		for _, e := range log {
			if e.Outcome == "allowed" {
				allowed++
			}
		}
		if allowed != 2*len(reqs) {
			t.Fatalf("the access key's log shows %d allowed uses, want %d: %+v", allowed, 2*len(reqs), log)
		}
	})
}
