package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

// Webhooks (API.md "Events"): the admin subscribes HTTP receivers to the cluster's
// events. The receiver's URL is --webhook-url: --url stays the node's API URL, as in
// every command.

const adminWebhooksUsage = `usage: custos admin webhooks create --webhook-url URL --events T1,T2|'*' [--description D]
       custos admin webhooks list | delete ID | deliveries ID`

// webhookCreateFlags are the flags only `create` takes.
var webhookCreateFlags = []string{"webhook-url", "events", "description"}

// cmdAdminWebhooks is `custos admin webhooks …`.
func cmdAdminWebhooks(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(adminWebhooksUsage)
	}
	sub := args[0]
	switch sub {
	case "create", "list", "delete", "deliveries":
	default:
		return fmt.Errorf("unknown admin webhooks command %q\n%s", sub, adminWebhooksUsage)
	}
	fs := flag.NewFlagSet("admin webhooks "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	hookURL := fs.String("webhook-url", "", "create: the receiver's URL (http or https) the nodes POST the events to")
	events := fs.String("events", "", "create: comma-separated event types (e.g. request.signed,approval.decided), or '*' for all")
	description := fs.String("description", "", "create: what the webhook is for")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	set := flagsSet(fs)
	var body api.WebhookBody
	switch sub {
	case "create":
		if len(pos) > 0 {
			return fmt.Errorf("admin webhooks create takes no arguments, got %q (quote '*' in --events '*' so the shell does not expand it)\n%s",
				pos[0], adminWebhooksUsage)
		}
		if !set["webhook-url"] && set["url"] {
			return errors.New("give the receiver's URL with --webhook-url (--url is the node's API URL, as in every command)")
		}
		if body, err = webhookBody(*hookURL, *events, *description); err != nil {
			return err
		}
	default:
		for _, f := range webhookCreateFlags {
			if set[f] {
				return fmt.Errorf("admin webhooks %s takes no --%s (only create does)", sub, f)
			}
		}
		switch sub {
		case "list":
			if len(pos) > 0 {
				return fmt.Errorf("admin webhooks list takes no arguments, got %q", pos[0])
			}
		default:
			if len(pos) != 1 {
				return fmt.Errorf("admin webhooks %s needs one webhook id (custos admin webhooks list shows them)", sub)
			}
		}
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	switch sub {
	case "create":
		w, err := a.CreateWebhook(cx, body)
		if err != nil {
			webhookHint(stderr, err)
			return err
		}
		if err := printJSON(stdout, w); err != nil {
			return err
		}
		if w.Secret == "" {
			return fmt.Errorf("the node created webhook %s but answered without its secret, so no delivery can be checked: "+
				"delete it (custos admin webhooks delete %s) and create it again", w.WebhookID, w.WebhookID)
		}
		fmt.Fprintf(stderr, "custos: the secret of webhook %s is shown only now and cannot be read again: store it with the receiver, "+
			"which checks every delivery's webhook-signature with it (Standard Webhooks; client.VerifyWebhook in Go). "+
			"If it is lost, delete the webhook and create a new one.\n", w.WebhookID)
		return nil
	case "list":
		ws, err := a.ListWebhooks(cx)
		if err != nil {
			webhookHint(stderr, err)
			return err
		}
		return printJSON(stdout, ws)
	case "delete":
		if err := a.DeleteWebhook(cx, pos[0]); err != nil {
			webhookHint(stderr, err)
			return err
		}
		return printJSON(stdout, map[string]any{"webhook_id": pos[0], "deleted": true})
	default: // deliveries
		ds, err := a.WebhookDeliveries(cx, pos[0])
		if err != nil {
			webhookHint(stderr, err)
			return err
		}
		return printJSON(stdout, ds)
	}
}

// webhookBody checks create's flags and builds the webhook's body.
func webhookBody(hookURL, events, description string) (api.WebhookBody, error) {
	if err := checkWebhookURL(hookURL); err != nil {
		return api.WebhookBody{}, err
	}
	types, err := parseWebhookEvents(events)
	if err != nil {
		return api.WebhookBody{}, err
	}
	return api.WebhookBody{URL: strings.TrimSpace(hookURL), Events: types, Description: description}, nil
}

// checkWebhookURL holds --webhook-url to an absolute http or https URL.
func checkWebhookURL(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		return errors.New("admin webhooks create needs --webhook-url: the receiver's URL the nodes POST the events to (e.g. https://hooks.example.com/custos)")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("--webhook-url %q must be an absolute http:// or https:// URL (e.g. https://hooks.example.com/custos)", s)
	}
	return nil
}

// parseWebhookEvents reads --events: event types of client.EventTypes, comma-separated
// (duplicates dropped, order kept), or "*" alone for every type.
func parseWebhookEvents(s string) ([]string, error) {
	known := client.EventTypes()
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("admin webhooks create needs --events: comma-separated event types (%s), or '*' (quoted) for all",
			strings.Join(known, ", "))
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
			return nil, fmt.Errorf("--events %q has an empty entry: separate the types with single commas", s)
		case t == admin.WebhookAllEvents:
			// checked below: alone only
		case !slices.Contains(known, t):
			return nil, fmt.Errorf("--events: unknown event type %q (the types: %s; or '*', quoted, for all)", t, strings.Join(known, ", "))
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	if slices.Contains(out, admin.WebhookAllEvents) && len(out) > 1 {
		return nil, errors.New("--events: '*' already means every type: give it alone, or list the types without it")
	}
	return out, nil
}

// webhookHint tells, on w, what to do about a webhook call's API error.
func webhookHint(w io.Writer, err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return
	}
	switch {
	case ae.Code == api.CodeRouteNotFound:
		fmt.Fprintln(w, "hint: this node does not serve /v1/admin/webhooks: upgrade it to a version with webhooks")
	case ae.Code == api.CodeWebhookNotFound, ae.Status == http.StatusNotFound:
		fmt.Fprintln(w, "hint: no such webhook: `custos admin webhooks list` shows their ids")
	case ae.Code == api.CodeRequestMalformed:
		fmt.Fprintln(w, "hint: the node refused the field named above: --webhook-url must be an http(s) URL the nodes may reach, --events known types or '*'")
	default:
		errorHint(w, err)
	}
}
