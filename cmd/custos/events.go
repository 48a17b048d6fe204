package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/custos/custos/node/client"
)

// The activity stream (API.md "Events"): `custos events tail` follows it live, `custos
// events list` reads one page. Both run as the user or the admin, as asAdmin picks.

const eventsUsage = `usage: custos events tail [--after N] [--types T1,T2] [--json] | list [--after N] [--limit N]`

// cmdEvents is `custos events …`; tail follows the stream until Ctrl-C (or SIGTERM).
func cmdEvents(args []string, stdout, stderr io.Writer) error {
	cx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runEvents(cx, args, stdout, stderr)
}

// runEvents is cmdEvents under cx: tail ends, without an error, when cx does.
func runEvents(cx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(eventsUsage)
	}
	sub := args[0]
	switch sub {
	case "tail", "list":
	default:
		return fmt.Errorf("unknown events command %q\n%s", sub, eventsUsage)
	}
	fs := flag.NewFlagSet("events "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	after := fs.Uint64("after", 0, "only events with a seq above this one (default: from the oldest the node keeps)")
	limit := fs.Int("limit", 100, "list: at most this many events (1 to 1000)")
	types := fs.String("types", "", "tail: only events of these comma-separated types (e.g. request.signed,approval.decided)")
	asJSON := fs.Bool("json", false, "tail: print each event as one line of JSON")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("events %s takes no argument, got %q\n%s", sub, pos[0], eventsUsage)
	}
	set := flagsSet(fs)
	if sub == "list" && (set["types"] || set["json"]) {
		return errors.New("events list takes --after and --limit (--types and --json are tail's)")
	}
	if sub == "tail" && set["limit"] {
		return errors.New("events tail takes no --limit: it follows the stream until Ctrl-C")
	}
	if sub == "list" && (*limit < 1 || *limit > 1000) {
		return errors.New("--limit must be between 1 and 1000")
	}
	want, err := parseEventTypes(*types)
	if err != nil {
		return err
	}
	cl, err := c.governed(set)
	if err != nil {
		return err
	}
	if sub == "list" {
		lcx, cancel := context.WithTimeout(cx, 2*time.Minute)
		defer cancel()
		page, err := cl.EventPage(lcx, *after, *limit)
		if err != nil {
			errorHint(stderr, err)
			return err
		}
		return printJSON(stdout, page)
	}
	return tailEvents(cx, cl, *after, want, *asJSON, stdout, stderr)
}

// tailEvents prints the events of the stream from after on, those of the types in want
// (all when want is nil), until cx ends.
func tailEvents(cx context.Context, cl eventReader, after uint64, want map[string]bool, asJSON bool, stdout, stderr io.Writer) error {
	reconnecting := client.OnReconnect(func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "custos: %v; reconnecting in %v\n", err, wait.Round(10*time.Millisecond))
	})
	for ev, err := range cl.Events(cx, after, reconnecting) {
		if err != nil {
			errorHint(stderr, err)
			return err
		}
		if want != nil && !want[ev.Type] {
			continue
		}
		if asJSON {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if _, err := stdout.Write(b); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintln(stdout, eventLine(ev)); err != nil {
			return err
		}
	}
	return nil // Ctrl-C
}

// eventLine is an event on one line: time, seq, type, then its non-empty ids and summary.
func eventLine(ev *client.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %6d  %-24s", ev.Time.UTC().Format(time.RFC3339), ev.Seq, ev.Type)
	d := ev.Data
	for _, f := range []struct{ k, v string }{
		{"request_id", d.RequestID}, {"kind", d.Kind}, {"key_id", d.KeyID}, {"approval_id", d.ApprovalID},
		{"policy_id", d.PolicyID}, {"access_key_id", d.AccessKeyID}, {"user_id", uintOrEmpty(d.UserID)},
		{"actor", d.Actor}, {"status", d.Status}, {"code", d.Code}, {"decision", d.Decision},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.k, f.v)
		}
	}
	if d.Detail != "" {
		fmt.Fprintf(&b, " detail=%q", d.Detail)
	}
	return strings.TrimRight(b.String(), " ")
}

func uintOrEmpty(v uint64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(v, 10)
}

// parseEventTypes reads --types: nil (every type) when empty, else the set of the listed
// types, each one of the API's.
func parseEventTypes(s string) (map[string]bool, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	known := client.EventTypes()
	want := map[string]bool{}
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(known, t) {
			return nil, fmt.Errorf("--types: unknown event type %q (the types: %s)", t, strings.Join(known, ", "))
		}
		want[t] = true
	}
	return want, nil
}

// eventReader reads the activity stream: a user's client, or the admin SDK.
type eventReader interface {
	EventPage(ctx context.Context, after uint64, limit int) (*client.EventList, error)
	Events(ctx context.Context, after uint64, opts ...client.StreamOption) iter.Seq2[*client.Event, error]
}
