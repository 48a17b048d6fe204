package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/custos/custos/node/client"
)

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseExpiry reads --expires: an RFC 3339 time, or a duration from now ("720h").
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, errors.New("--expires must be in the future")
		}
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires must be an RFC 3339 time (2027-01-02T15:04:05Z) or a duration (720h): %q", s)
	}
	return t, nil
}

func cmdAccessKeys(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: custos access-keys grant|list|revoke|log")
	}
	sub := args[0]
	fs := flag.NewFlagSet("access-keys "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	scheme := fs.String("scheme", "", "grant: ed25519 (RFC 9421 signatures) or secp256k1 (X-Auth-Token)")
	pub := fs.String("public-key", "", "grant: the access key's public key, hex (32-byte Ed25519 or 33-byte compressed secp256k1)")
	perms := fs.String("permissions", "", "grant: comma-separated permissions, a subset of yours (never access:manage)")
	keyIDs := fs.String("key-ids", "", "grant: comma-separated key ids the access key is limited to (default: all your keys)")
	expires := fs.String("expires", "", "grant: expiry, RFC 3339 or a duration from now (default: never)")
	label := fs.String("label", "", "grant: a label")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	var g client.AccessKeyGrant
	switch sub {
	case "grant":
		if *scheme == "" || *pub == "" || *perms == "" {
			return errors.New("access-keys grant needs --scheme, --public-key and --permissions")
		}
		exp, err := parseExpiry(*expires, time.Now())
		if err != nil {
			return err
		}
		g = client.AccessKeyGrant{Label: *label, Scheme: *scheme, PublicKey: strings.ToLower(strings.TrimSpace(*pub)),
			Permissions: splitList(*perms), KeyIDs: splitList(*keyIDs), ExpiresAt: exp}
	case "list":
	case "revoke", "log":
		if len(pos) < 1 {
			return fmt.Errorf("access-keys %s needs an access key id", sub)
		}
	default:
		return fmt.Errorf("unknown access-keys command %q", sub)
	}
	cl, err := c.user()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	switch sub {
	case "grant":
		k, err := cl.CreateAccessKey(cx, g)
		if err != nil {
			return err
		}
		return printJSON(stdout, k)
	case "list":
		ks, err := cl.ListAccessKeys(cx)
		if err != nil {
			return err
		}
		if ks == nil {
			ks = []client.AccessKey{}
		}
		return printJSON(stdout, ks)
	case "revoke":
		if err := cl.RevokeAccessKey(cx, pos[0]); err != nil {
			return err
		}
		return printJSON(stdout, map[string]any{"id": pos[0], "revoked": true})
	default: // log
		es, err := cl.AccessKeyLog(cx, pos[0])
		if err != nil {
			return err
		}
		if es == nil {
			es = []client.AccessLogEntry{}
		}
		return printJSON(stdout, es)
	}
}
