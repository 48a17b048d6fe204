// Command custos is the one command-line tool for people: the admin (users, tokens,
// audit and its verification, the admin key pair), key holders (keys, signing, requests,
// access keys) and developers (`custos dev up`).
//
// It only parses flags and prints results; the admin and node/client SDKs do the work.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/devcluster"
	"github.com/custos/custos/node/client"
)

const usage = `custos — command-line tool for a custos threshold-signing cluster

  custos COMMAND --help                          that command's lines of this text (custos keys --help)
  custos dev up                                  start the local 3-node dev cluster (make run)
  custos cluster                                 show the cluster (as the admin)

  custos admin keygen --out FILE                 create an Ed25519 admin key pair: the private key goes
                                                 to FILE (mode 0600), the public key (for every node's
                                                 admin.public_key) is printed
  custos admin create-user --name NAME [--permissions p1,p2]
  custos admin token --user-id N --public-key HEX [--ttl 24h] [--audience NAME]   issue a user token offline
  custos admin users | user ID | disable ID | enable ID | revoke-tokens ID
  custos admin set-permissions ID p1,p2,...
  custos admin rotate-key --public-key HEX       key-pair mode: replace the admin public key (signed
                                                 with the current one); use the new private key after
  custos admin audit [--after N] [--limit N]
  custos admin retention [--finished-requests DUR] [--dead-access-keys DUR] [--events DUR]
                         [--key-deletion-delay DUR]
                                                 show (no flags) or set how long the cluster keeps
                                                 finished requests, dead access keys and events, and
                                                 how long a deleted key waits before erasure (replicated)
  custos audit verify [--archive FILE ...] [--page-size N] [--confirm-with URL ...]
                                                 read the whole audit log and recompute every hash and
                                                 link; on a pruned log, from the pruned anchor, and with
                                                 --archive (every archive, oldest first) the archives
                                                 too, tied to the log; the other nodes (the cluster
                                                 file's, or --confirm-with) must hold the same head
                                                 and nothing past it that it does not serve;
                                                 exits non-zero at the first break or disagreement
  custos audit export --before SEQ --out FILE [--page-size N]
                                                 write the entries before SEQ, verified, to a new archive
                                                 FILE (JSON Lines, mode 0600, never overwritten)
  custos audit prune --archive FILE              verify FILE and drop the entries it holds from the
                                                 nodes (keep FILE: it is then their only copy)

  custos keys new-identity --out FILE            create a user's Ed25519 request-signing key
  custos keys create --curve secp256k1|ed25519 [--threshold K] [--label L]
  custos keys list | get KEY_ID
  custos keys derive KEY_ID [--path m/0/7] [--network mainnet|testnet|signet|regtest|simnet]
                                                 a secp256k1 key's BIP32 child and xpub (--path m: the root)
  custos keys delete KEY_ID                      schedule the key's deletion (the cluster's delay, 7 days by
                                                 default); it signs nothing meanwhile; restore cancels
  custos keys restore KEY_ID                     cancel a scheduled deletion before its delete_at
  custos sign --key KEY_ID (--digest HEX | --message HEX | --text STRING) [--path m/0/7]
  custos requests get REQUEST_ID
  custos requests cancel REQUEST_ID              cancel a request waiting for its approval or its delay
                                                 (the initiator, an approver, or the admin for its own)
  custos psbt sign FILE --key KEY_ID --network mainnet|testnet|signet|regtest|simnet
                   --input INDEX[:PATH] ... [--change OUTPUT[:PATH] ...] [--broadcast] [--out FILE]
                                                 sign a PSBT (binary, base64 or hex) and finalize it;
                                                 --out writes the finalized PSBT (base64) to a new file

  custos admin policies create (--file F | --name N --activity A --action A [--rule-kind K]
                     [--max-sats N] [--max-count N] [--window 24h] [--addresses A1,A2]
                     [--days mon,tue --from HH:MM --to HH:MM --tz Z]
                     [--key-ids K1,K2] [--labels L1,L2] [--users 3,4] [--access-keys AK1,AK2]
                     [--group NAME:QUORUM:UID1,UID2 ...] [--delay 1h] [--approval-timeout 24h]
                     [--initiator-can-approve])
  custos admin policies list | get ID | update ID (--file F | flags as create) | archive ID
                                                 a change may wait for approval (a policy.modify policy)
  custos admin keys reshare KEY_ID [--members n1,n2,n3] [--threshold K]
                                                 move a key's shares to other nodes and/or threshold (same
                                                 public key); progress is shown until it ends
  custos admin keys refresh KEY_ID               fresh shares for the same nodes (same public key)
  custos admin members list                      the members, their status and the change running
  custos admin members add --id ID --peer-id PEER --p2p-addr MA --api URL
                                                 add a node (started with cluster.join): it catches up,
                                                 then every key is reshared to include it (progress shown)
  custos admin members remove ID                 reshare every key away from a node, then drop it
  custos admin members replace DEAD_ID --id ID --peer-id PEER --p2p-addr MA --api URL
                                                 replace a dead node: its keys are reshared from the others
  custos admin webhooks create --webhook-url URL --events request.signed,approval.decided|'*' [--description D]
                                                 POST those events to URL (Standard Webhooks); the secret
                                                 that signs them is shown only once: store it with the receiver
  custos admin webhooks list | delete ID | deliveries ID   (deliveries: the latest attempts and their outcome)
  custos policies evaluate --route "POST /v1/keys/KEY_ID/psbt" [--body JSON | --body-file F]
                                                 dry run: what the policies would decide, and why
  custos policies list | get ID                  (users with policies:read, or the admin)
  custos approvals list [--status pending|approved|denied|expired] | get ID
  custos approvals approve ID [--reason R] | deny ID [--reason R]   (approvers: users with approvals:decide)

  custos access-keys grant --scheme ed25519|secp256k1 --public-key HEX --permissions p1,p2
                     [--key-ids K1,K2] [--expires RFC3339|DURATION] [--label L]
  custos access-keys list | revoke ID | log ID   (as the granting user)

  custos events tail [--after N] [--types request.signed,...] [--json]
                                                 follow the activity stream live (reconnecting, resuming
                                                 where it broke) until Ctrl-C: one line per event
  custos events list [--after N] [--limit N]     one page of events as JSON ("next": the following after)

Permissions: keys:create keys:read keys:sign keys:delete access:manage approvals:decide policies:read
(an access key holds a subset of its grantor's, never access:manage).

Connection (every command):
  --cluster FILE     dev cluster file (default .devcluster/cluster.json); --node N picks a node (1-based)
  --url URL          a node's API URL (overrides --cluster)
  --ca-file F or $CUSTOS_CA_FILE              PEM CA bundle that signed the node's https certificate
                                              (default: the system's roots)
  --client-cert F, --client-key F or $CUSTOS_CLIENT_CERT, $CUSTOS_CLIENT_KEY
                                              PEM client certificate and key, for nodes that require
                                              mutual TLS (api.client_ca_file)
Admin credentials (admin, cluster, audit):
  --admin-key-file F           the shared ADMIN_KEY, 64 hex (default: the cluster file's admin_key_file)
  --admin-private-key-file F   or: the admin's Ed25519 private key (custos admin keygen), for clusters
                               configured with admin.public_key
  --audience NAME              put aud=NAME (the cluster name) in the tokens the admin mints
User credentials (keys, sign, requests, access-keys, approvals approve|deny, psbt):
  --token TOKEN or $CUSTOS_TOKEN          the user token the admin issued
  --identity FILE or $CUSTOS_IDENTITY     the user's Ed25519 key file (custos keys new-identity)
policies, approvals list|get, requests cancel and events run as the admin when an admin credential flag
is given or there is no user token, else as the user.`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // the flag parser printed the command's flags: asked for, not an error
		}
		var ae *client.APIError
		if errors.As(err, &ae) {
			fmt.Fprintf(os.Stderr, "custos: %s (HTTP %d): %s [request %s]\n", ae.Code, ae.Status, ae.Detail, ae.RequestID)
		} else {
			fmt.Fprintln(os.Stderr, "custos:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no command")
	}
	if words, ok := helpAsked(args); ok {
		if u := commandUsage(words); u != "" {
			fmt.Fprintln(stdout, u)
			return nil
		}
	}
	switch args[0] {
	case "dev":
		return cmdDev(args[1:], stdout, stderr)
	case "admin":
		if len(args) > 1 && args[1] == "policies" {
			return cmdAdminPolicies(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "webhooks" {
			return cmdAdminWebhooks(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "keys" {
			return cmdAdminKeys(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "members" {
			return cmdAdminMembers(args[2:], stdout, stderr)
		}
		return cmdAdmin(args[1:], stdout)
	case "cluster":
		return cmdCluster(args[1:], stdout)
	case "keys":
		return cmdKeys(args[1:], stdout)
	case "sign":
		return cmdSign(args[1:], stdout)
	case "requests":
		if len(args) > 1 && args[1] == "cancel" {
			return cmdRequestsCancel(args[2:], stdout, stderr)
		}
		return cmdRequests(args[1:], stdout)
	case "policies":
		return cmdPolicies(args[1:], stdout, stderr)
	case "approvals":
		return cmdApprovals(args[1:], stdout, stderr)
	case "psbt":
		return cmdPSBT(args[1:], stdout, stderr)
	case "access-keys":
		return cmdAccessKeys(args[1:], stdout)
	case "audit":
		return cmdAudit(args[1:], stdout)
	case "events":
		return cmdEvents(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q (custos help lists them)", args[0])
}

// conn holds the connection flags every command takes.
type conn struct {
	cluster, url, adminKeyFile, adminPrivKeyFile, audience, token, identity string
	caFile, clientCert, clientKey                                           string
	node                                                                    int
}

func (c *conn) register(fs *flag.FlagSet) {
	fs.StringVar(&c.cluster, "cluster", ".devcluster/cluster.json", "dev cluster file")
	fs.IntVar(&c.node, "node", 1, "which node of the cluster file to talk to (1-based)")
	fs.StringVar(&c.url, "url", "", "a node's API URL")
	fs.StringVar(&c.adminKeyFile, "admin-key-file", "", "file holding the ADMIN_KEY (64 hex characters)")
	fs.StringVar(&c.adminPrivKeyFile, "admin-private-key-file", "", "file holding the admin's Ed25519 private key (custos admin keygen)")
	fs.StringVar(&c.audience, "audience", "", "aud claim (the cluster name) for the tokens the admin mints")
	fs.StringVar(&c.token, "token", os.Getenv("CUSTOS_TOKEN"), "user token")
	fs.StringVar(&c.identity, "identity", os.Getenv("CUSTOS_IDENTITY"), "user's Ed25519 key file")
	fs.StringVar(&c.caFile, "ca-file", os.Getenv("CUSTOS_CA_FILE"), "PEM CA bundle that signed the node's https certificate")
	fs.StringVar(&c.clientCert, "client-cert", os.Getenv("CUSTOS_CLIENT_CERT"), "PEM client certificate (mutual TLS)")
	fs.StringVar(&c.clientKey, "client-key", os.Getenv("CUSTOS_CLIENT_KEY"), "PEM private key of --client-cert")
}

// tlsConfig is the TLS configuration of --ca-file, --client-cert and --client-key, nil
// when none is given (the system's roots, no client certificate).
func (c *conn) tlsConfig() (*tls.Config, error) {
	if c.caFile == "" && c.clientCert == "" && c.clientKey == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", c.caFile)
		}
	}
	if (c.clientCert == "") != (c.clientKey == "") {
		return nil, errors.New("give --client-cert and --client-key together (mutual TLS)")
	}
	if c.clientCert != "" {
		st, err := os.Stat(c.clientKey)
		if err != nil {
			return nil, fmt.Errorf("--client-key: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", c.clientKey, st.Mode().Perm())
		}
		cert, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (c *conn) clusterFile() (*devcluster.Cluster, string, error) {
	dir := filepath.Dir(c.cluster)
	cl, err := devcluster.Load(dir)
	if err != nil {
		return nil, "", fmt.Errorf("no --url given and cannot read %s: %w", c.cluster, err)
	}
	return cl, filepath.Dir(dir), nil
}

func (c *conn) baseURL() (string, error) {
	if c.url != "" {
		return strings.TrimRight(c.url, "/"), nil
	}
	cl, _, err := c.clusterFile()
	if err != nil {
		return "", err
	}
	if c.node < 1 || c.node > len(cl.Nodes) {
		return "", fmt.Errorf("--node must be between 1 and %d", len(cl.Nodes))
	}
	return cl.Nodes[c.node-1].API, nil
}

func (c *conn) adminKey() ([]byte, error) {
	if c.adminKeyFile != "" {
		b, err := os.ReadFile(c.adminKeyFile)
		if err != nil {
			return nil, err
		}
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("%s must hold 64 hex characters", c.adminKeyFile)
		}
		return k, nil
	}
	cl, base, err := c.clusterFile()
	if err != nil {
		return nil, err
	}
	return cl.AdminKey(base)
}

// adminFor returns an admin SDK for baseURL: key-pair mode with --admin-private-key-file,
// else the shared ADMIN_KEY.
func (c *conn) adminFor(baseURL string) (*admin.Admin, error) {
	var opts []admin.Option
	if c.audience != "" {
		opts = append(opts, admin.WithAudience(c.audience))
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, admin.WithTLSConfig(tc))
	}
	if c.adminPrivKeyFile != "" {
		if c.adminKeyFile != "" {
			return nil, errors.New("give either --admin-key-file (shared key) or --admin-private-key-file (key pair), not both")
		}
		priv, err := readIdentity(c.adminPrivKeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin private key: %w", err)
		}
		return admin.NewKeyPair(priv, baseURL, opts...)
	}
	k, err := c.adminKey()
	if err != nil {
		return nil, err
	}
	return admin.New(k, baseURL, opts...)
}

func (c *conn) admin() (*admin.Admin, error) {
	u, err := c.baseURL()
	if err != nil {
		return nil, err
	}
	return c.adminFor(u)
}

func (c *conn) user() (*client.Client, error) {
	if c.token == "" {
		return nil, errors.New("no user token: pass --token or set CUSTOS_TOKEN (the admin issues one with `custos admin token`)")
	}
	if c.identity == "" {
		return nil, errors.New("no identity: pass --identity or set CUSTOS_IDENTITY (create one with `custos keys new-identity`)")
	}
	key, err := readIdentity(c.identity)
	if err != nil {
		return nil, err
	}
	u, err := c.baseURL()
	if err != nil {
		return nil, err
	}
	var opts []client.Option
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, client.WithTLSConfig(tc))
	}
	return client.New(u, strings.TrimSpace(c.token), key, opts...)
}

// writeNewKey creates an Ed25519 key, writes its seed as 64 hex characters to path (mode
// 0600, never overwriting a file) and returns its public key.
func writeNewKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write key (never overwritten): %w", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(priv.Seed())); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return pub, nil
}

func readIdentity(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s must hold a 32-byte Ed25519 seed as 64 hex characters", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	// Allow flags after positional arguments: custos keys get KEY --url X.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func cmdAdmin(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: custos admin keygen|create-user|token|users|user|disable|enable|revoke-tokens|set-permissions|rotate-key|audit|retention|policies|webhooks")
	}
	sub := args[0]
	fs := flag.NewFlagSet("admin "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	name := fs.String("name", "", "user name")
	perms := fs.String("permissions", "", "comma-separated permissions")
	userID := fs.Uint64("user-id", 0, "user id")
	pub := fs.String("public-key", "", "the user's Ed25519 public key (64 hex)")
	ttl := fs.Duration("ttl", 24*time.Hour, "token lifetime")
	after := fs.Uint64("after", 0, "audit: entries after this seq")
	limit := fs.Int("limit", 100, "audit: at most this many entries")
	out := fs.String("out", "", "keygen: file to write the admin's private key to (mode 0600)")
	keepRequests := fs.Duration("finished-requests", 0, "retention: keep finished requests this long (e.g. 48h; 1h to 366 days)")
	keepAccessKeys := fs.Duration("dead-access-keys", 0, "retention: keep revoked or expired access keys this long (e.g. 720h; 24h to 10 years)")
	keepEvents := fs.Duration("events", 0, "retention: keep events this long (e.g. 336h; 1h to 366 days)")
	keyDeletionDelay := fs.Duration("key-deletion-delay", 0, "retention: set the delay between a key's DELETE and its erasure (e.g. 168h)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if sub == "keygen" {
		if *out == "" {
			return errors.New("admin keygen needs --out FILE")
		}
		pub, err := writeNewKey(*out)
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]string{"public_key": hex.EncodeToString(pub), "file": *out,
			"hint": "set admin.public_key to public_key in every node's configuration (instead of admin.key_file)"})
	}
	if sub == "token" {
		a, err := c.adminFor("http://offline.invalid")
		if err != nil {
			return err
		}
		if *userID == 0 || *pub == "" {
			return errors.New("admin token needs --user-id and --public-key")
		}
		tok, err := a.GenUserToken(*userID, *pub, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	idArg := func() (uint64, error) {
		if len(pos) < 1 {
			return 0, fmt.Errorf("admin %s needs a user id", sub)
		}
		return strconv.ParseUint(pos[0], 10, 64)
	}
	switch sub {
	case "create-user":
		if *name == "" {
			return errors.New("create-user needs --name")
		}
		var ps []string
		if *perms != "" {
			ps = strings.Split(*perms, ",")
		}
		id, err := a.CreateUser(cx, *name, ps...)
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]any{"user_id": id, "name": *name})
	case "users":
		us, err := a.ListUsers(cx)
		if err != nil {
			return err
		}
		return printJSON(stdout, us)
	case "user", "disable", "enable", "revoke-tokens", "set-permissions":
		id, err := idArg()
		if err != nil {
			return err
		}
		switch sub {
		case "disable":
			err = a.DisableUser(cx, id)
		case "enable":
			err = a.EnableUser(cx, id)
		case "revoke-tokens":
			err = a.RevokeTokens(cx, id)
		case "set-permissions":
			if len(pos) < 2 {
				return errors.New("set-permissions needs ID and a comma-separated list")
			}
			err = a.SetPermissions(cx, id, strings.Split(pos[1], ","))
		}
		if err != nil {
			return err
		}
		u, err := a.GetUser(cx, id)
		if err != nil {
			return err
		}
		return printJSON(stdout, u)
	case "rotate-key":
		if *pub == "" {
			return errors.New("admin rotate-key needs --public-key (the new admin public key from custos admin keygen)")
		}
		if err := a.RotateAdminKey(cx, *pub); err != nil {
			return err
		}
		return printJSON(stdout, map[string]any{"public_key": *pub, "next": "use the new private key (--admin-private-key-file) from now on"})
	case "audit":
		es, err := a.Audit(cx, *after, *limit)
		if err != nil {
			return err
		}
		return printJSON(stdout, es)
	case "retention":
		if *keepRequests == 0 && *keepAccessKeys == 0 && *keepEvents == 0 && *keyDeletionDelay == 0 {
			r, err := a.Retention(cx)
			if err != nil {
				return err
			}
			return printJSON(stdout, r)
		}
		for _, d := range []time.Duration{*keepRequests, *keepAccessKeys, *keepEvents, *keyDeletionDelay} {
			if d < 0 || d%time.Second != 0 {
				return errors.New("admin retention: durations must be positive whole seconds (e.g. 48h)")
			}
		}
		r, err := a.SetRetention(cx, admin.Retention{FinishedRequestsS: int64(*keepRequests / time.Second), DeadAccessKeysS: int64(*keepAccessKeys / time.Second),
			EventsS: int64(*keepEvents / time.Second), KeyDeletionDelayS: int64(*keyDeletionDelay / time.Second)})
		if err != nil {
			return err
		}
		return printJSON(stdout, r)
	}
	return fmt.Errorf("unknown admin command %q", sub)
}

func cmdCluster(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	var c conn
	c.register(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	cl, err := a.Cluster(cx)
	if err != nil {
		return err
	}
	return printJSON(stdout, cl)
}

func cmdKeys(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: custos keys new-identity|create|list|get|derive|delete|restore")
	}
	sub := args[0]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	out := fs.String("out", "", "new-identity: file to write the key to (mode 0600)")
	curve := fs.String("curve", "secp256k1", "create: secp256k1 or ed25519")
	threshold := fs.Int("threshold", 2, "create: signers needed (k)")
	label := fs.String("label", "", "create: a label")
	idem := fs.String("idempotency-key", "", "create: idempotency key")
	dpath := fs.String("path", "m", "derive: non-hardened derivation path")
	network := fs.String("network", "mainnet", "derive: the xpub's network (mainnet, testnet, signet, regtest, simnet)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if sub == "new-identity" {
		if *out == "" {
			return errors.New("new-identity needs --out FILE")
		}
		pub, err := writeNewKey(*out)
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]string{"public_key": hex.EncodeToString(pub), "file": *out})
	}
	cl, err := c.user()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	switch sub {
	case "create":
		k, req, err := cl.CreateKey(cx, *curve, *threshold, *label, *idem)
		if err != nil {
			return err
		}
		if k == nil && req.Status == client.StatusPendingApproval {
			// A keygen policy asks for approval: it runs by itself once approved.
			pendingHint(os.Stderr, req)
			return printJSON(stdout, req)
		}
		if k == nil {
			fmt.Fprintln(os.Stderr, "keygen still running; waiting…")
			r, err := cl.WaitRequest(cx, req.RequestID, 500*time.Millisecond)
			if err != nil {
				return err
			}
			return printJSON(stdout, r)
		}
		return printJSON(stdout, k)
	case "list":
		ks, err := cl.ListKeys(cx)
		if err != nil {
			return err
		}
		return printJSON(stdout, ks)
	case "get":
		if len(pos) < 1 {
			return errors.New("keys get needs a key id")
		}
		k, err := cl.GetKey(cx, pos[0])
		if err != nil {
			return err
		}
		return printJSON(stdout, k)
	case "derive", "delete", "restore":
		if len(pos) < 1 {
			return fmt.Errorf("keys %s needs a key id", sub)
		}
		switch sub {
		case "derive":
			d, err := cl.Derive(cx, pos[0], *dpath, *network)
			if err != nil {
				return err
			}
			return printJSON(stdout, d)
		case "delete":
			r, err := cl.DeleteKey(cx, pos[0])
			if err != nil {
				return err
			}
			switch {
			case r.Status == client.StatusPendingApproval:
				pendingHint(os.Stderr, r)
			case r.Key != nil && r.Key.DeleteAt != nil:
				fmt.Fprintf(os.Stderr, "deletion scheduled: key %s is erased on every node at %s; until then it signs nothing and `custos keys restore %s` cancels\n",
					pos[0], r.Key.DeleteAt.Format(time.RFC3339), pos[0])
			}
			return printJSON(stdout, r)
		default:
			k, err := cl.RestoreKey(cx, pos[0])
			if err != nil {
				return err
			}
			return printJSON(stdout, k)
		}
	}
	return fmt.Errorf("unknown keys command %q", sub)
}

func cmdSign(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	var c conn
	c.register(fs)
	key := fs.String("key", "", "key id")
	digest := fs.String("digest", "", "secp256k1: the 32-byte digest to sign, hex")
	message := fs.String("message", "", "ed25519: the raw message, hex")
	text := fs.String("text", "", "ed25519: the raw message as text")
	path := fs.String("path", "", "secp256k1: non-hardened derivation path, e.g. m/0/7")
	idem := fs.String("idempotency-key", "", "idempotency key")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	var msg []byte
	var err error
	switch {
	case *key == "":
		return errors.New("sign needs --key")
	case *digest != "":
		msg, err = hex.DecodeString(*digest)
	case *message != "":
		msg, err = hex.DecodeString(*message)
	case *text != "":
		msg = []byte(*text)
	default:
		return errors.New("sign needs --digest, --message or --text")
	}
	if err != nil {
		return fmt.Errorf("message is not hex: %w", err)
	}
	cl, err := c.user()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	r, err := cl.Sign(cx, *key, msg, *path, *idem)
	if err != nil {
		errorHint(os.Stderr, err)
		return err
	}
	if r.Status == client.StatusPendingApproval {
		// It runs by itself once approved; `custos requests get` follows it.
		pendingHint(os.Stderr, r)
		return printJSON(stdout, r)
	}
	if r.Status != "signed" && r.Status != "failed" {
		if r, err = cl.WaitRequest(cx, r.RequestID, 300*time.Millisecond); err != nil {
			return err
		}
	}
	return printJSON(stdout, r)
}

func cmdRequests(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "get" {
		return errors.New("usage: custos requests get REQUEST_ID")
	}
	fs := flag.NewFlagSet("requests get", flag.ContinueOnError)
	var c conn
	c.register(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return errors.New("requests get needs a request id")
	}
	cl, err := c.user()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	r, err := cl.GetRequest(cx, pos[0])
	if err != nil {
		return err
	}
	return printJSON(stdout, r)
}
