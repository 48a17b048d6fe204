package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// TestCommandHelp: help after a command's name prints that command's usage lines on stdout
// and succeeds, without needing credentials or a cluster.
func TestCommandHelp(t *testing.T) {
	tests := []struct {
		args    []string
		want    []string // lines that must be printed
		notWant []string // lines of other commands that must not
	}{
		{[]string{"keys", "--help"}, []string{"custos keys create", "custos keys restore KEY_ID"}, []string{"custos sign", "custos admin"}},
		{[]string{"keys", "create", "--help"}, []string{"custos keys create --curve"}, []string{"custos keys list"}},
		{[]string{"keys", "get", "key_x", "-h"}, []string{"custos keys list | get KEY_ID"}, []string{"custos sign"}},
		{[]string{"audit", "--help"}, []string{"custos audit verify", "custos audit export", "custos audit prune", "tied to the log"}, []string{"custos admin audit"}},
		{[]string{"admin", "-h"}, []string{"custos admin token", "custos admin policies create", "custos admin members add"}, []string{"custos keys"}},
		{[]string{"admin", "policies", "help"}, []string{"custos admin policies create", "[--initiator-can-approve]"}, []string{"custos admin token", "custos policies evaluate"}},
		{[]string{"sign", "-help"}, []string{"custos sign --key KEY_ID"}, []string{"custos keys"}},
		{[]string{"events", "help"}, []string{"custos events tail", "custos events list"}, []string{"custos audit"}},
		{[]string{"access-keys", "--help"}, []string{"custos access-keys grant", "custos access-keys list"}, []string{"custos keys create"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(tc.args, &out, &errOut); err != nil {
				t.Fatalf("run: %v (stderr %q)", err, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q, another command's:\n%s", w, out.String())
				}
			}
			if !strings.Contains(out.String(), "custos help") {
				t.Errorf("output does not point at custos help:\n%s", out.String())
			}
		})
	}
}

// TestHelpNotTaken: "help" as a flag's value is a value, an unknown command stays an error,
// and -h among a command's flags is the flag parser's help (flag.ErrHelp, which main exits
// 0 on).
func TestHelpNotTaken(t *testing.T) {
	if words, ok := helpAsked([]string{"sign", "--text", "help"}); ok {
		t.Errorf("a flag's value taken for help: %q", words)
	}
	if _, ok := helpAsked([]string{"help"}); ok {
		t.Error("custos help taken for a command's help")
	}
	err := run([]string{"nosuch", "--help"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unknown command "nosuch"`) {
		t.Errorf("unknown command with --help: %v", err)
	}
	err = run([]string{"sign", "--key", "key_x", "-h"}, io.Discard, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h among flags: %v, want flag.ErrHelp", err)
	}
}
