package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
)

const adminKeysUsage = `usage: custos admin keys reshare KEY_ID [--members n1,n2,n3] [--threshold K] [--timeout 10m]
       custos admin keys refresh KEY_ID [--timeout 10m]`

// cmdAdminKeys is `custos admin keys reshare|refresh`: it asks the cluster and follows
// the reshare until it ends, printing each change of its status on stderr.
func cmdAdminKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(adminKeysUsage)
	}
	sub := args[0]
	if sub != "reshare" && sub != "refresh" {
		return fmt.Errorf("unknown admin keys command %q\n%s", sub, adminKeysUsage)
	}
	fs := flag.NewFlagSet("admin keys "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	members := fs.String("members", "", "reshare: the new committee, comma-separated node ids (default: the key's)")
	threshold := fs.Int("threshold", 0, "reshare: the new threshold k (default: the key's)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to follow the reshare")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("admin keys %s needs one key id\n%s", sub, adminKeysUsage)
	}
	set := flagsSet(fs)
	if sub == "refresh" && (set["members"] || set["threshold"]) {
		return errors.New("admin keys refresh keeps the key's members and threshold; use reshare to change them")
	}
	var ms []string
	if *members != "" {
		for _, m := range strings.Split(*members, ",") {
			if m = strings.TrimSpace(m); m != "" {
				ms = append(ms, m)
			}
		}
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	fmt.Fprintf(stderr, "%s of %s asked; the old committee keeps signing until every new party holds its share…\n", sub, pos[0])
	var r *client.Request
	if sub == "refresh" {
		r, err = a.RefreshKey(cx, pos[0])
	} else {
		r, err = a.ReshareKey(cx, pos[0], ms, *threshold)
	}
	if err != nil {
		return err
	}
	if !client.Final(r.Status) {
		r, err = a.WaitRequest(cx, r.RequestID, time.Second, func(r *admin.Request) {
			fmt.Fprintf(stderr, "  %s: %s (%s)\n", r.RequestID, r.Status, time.Since(start).Round(time.Second))
		})
		if err != nil {
			return fmt.Errorf("following %s: %w (the admin can read it later at GET /v1/requests/%s)", r.RequestID, err, r.RequestID)
		}
	}
	switch r.Status {
	case client.StatusActive:
		if k := r.Key; k != nil {
			fmt.Fprintf(stderr, "done in %s: %d of %s, generation %d, same public key\n", time.Since(start).Round(time.Second), k.Threshold, strings.Join(k.Members, ","), k.Generation)
		}
	case client.StatusFailed:
		detail := ""
		if r.Error != nil {
			detail = r.Error.Detail
		}
		return fmt.Errorf("%s failed: %s; the key stays with its committee", sub, detail)
	}
	return printJSON(stdout, r)
}

const adminMembersUsage = `usage: custos admin members list
       custos admin members add --id ID --peer-id PEER --p2p-addr MULTIADDR [--p2p-addr …] --api URL [--timeout 30m]
       custos admin members remove ID [--timeout 30m]
       custos admin members replace DEAD_ID --id ID --peer-id PEER --p2p-addr MULTIADDR --api URL [--timeout 30m]`

// cmdAdminMembers is `custos admin members …`: a change is followed until it ends, its
// phase and the keys reshared shown on stderr as they progress.
func cmdAdminMembers(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(adminMembersUsage)
	}
	sub := args[0]
	switch sub {
	case "list", "add", "remove", "replace":
	default:
		return fmt.Errorf("unknown admin members command %q\n%s", sub, adminMembersUsage)
	}
	fs := flag.NewFlagSet("admin members "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	id := fs.String("id", "", "add, replace: the new node's id")
	peerID := fs.String("peer-id", "", "add, replace: the new node's libp2p peer id (custosd init prints it)")
	var addrs stringList
	fs.Var(&addrs, "p2p-addr", "add, replace: a multiaddr the members dial the new node at (repeatable)")
	apiURL := fs.String("api", "", "add, replace: the new node's API URL")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long to follow the change")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body := admin.MemberBody{ID: *id, PeerID: *peerID, P2PAddrs: []string(addrs), API: *apiURL}
	var r *client.Request
	switch sub {
	case "list":
		l, err := a.ListMembers(cx)
		if err != nil {
			return err
		}
		return printJSON(stdout, l)
	case "add":
		if *id == "" || *peerID == "" || len(addrs) == 0 || *apiURL == "" {
			return errors.New("admin members add needs --id, --peer-id, --p2p-addr and --api (start the new node first, with cluster.join set)\n" + adminMembersUsage)
		}
		r, err = a.AddMember(cx, body)
	case "remove":
		if len(pos) != 1 {
			return errors.New("admin members remove needs one member id\n" + adminMembersUsage)
		}
		r, err = a.RemoveMember(cx, pos[0])
	case "replace":
		if len(pos) != 1 || *id == "" || *peerID == "" || len(addrs) == 0 || *apiURL == "" {
			return errors.New("admin members replace needs the dead member's id and the new node's --id, --peer-id, --p2p-addr and --api\n" + adminMembersUsage)
		}
		r, err = a.ReplaceMember(cx, pos[0], body)
	}
	if err != nil {
		return err
	}
	start := time.Now()
	last := ""
	show := func(r *client.Request) {
		line := r.Status
		if m := r.Membership; m != nil {
			line = fmt.Sprintf("%s, phase %s, %d of %d keys reshared", r.Status, m.Phase, m.KeysDone, m.KeysTotal)
		}
		if line != last {
			fmt.Fprintf(stderr, "  %s: %s (%s)\n", r.RequestID, line, time.Since(start).Round(time.Second))
			last = line
		}
	}
	show(r)
	for !client.Final(r.Status) {
		select {
		case <-cx.Done():
			return fmt.Errorf("still running after %s: %s continues by itself; custos admin members list shows it", *timeout, r.RequestID)
		case <-time.After(time.Second):
		}
		if r, err = a.GetRequest(cx, r.RequestID); err != nil {
			return err
		}
		show(r)
	}
	if r.Status != client.StatusActive {
		detail := r.Status
		if r.Error != nil {
			detail = r.Error.Code + ": " + r.Error.Detail
		}
		return fmt.Errorf("membership change %s ended %s", r.RequestID, detail)
	}
	return printJSON(stdout, r)
}
