package main

import (
	"strings"
)

// helpWords are the spellings of a request for help after a command's name.
var helpWords = map[string]bool{"help": true, "-h": true, "-help": true, "--help": true}

// helpAsked reports whether args ask for help about a command, and which: the words before
// the help word (custos keys --help, custos admin policies -h, custos keys create --help).
// A flag before the help word ends the search, so a flag's value is never taken for it;
// such a -h is left to the flag parser (flag.ErrHelp, which main treats as success).
func helpAsked(args []string) ([]string, bool) {
	for i, a := range args {
		if helpWords[a] {
			return args[:i], i > 0
		}
		if strings.HasPrefix(a, "-") {
			return nil, false
		}
	}
	return nil, false
}

// commandUsage returns the lines of the usage text for the command named by words, with
// their continuation lines: for custos keys create the create line, for custos keys every
// keys line. A word that names no command (an ID) is dropped from the end until one does;
// "" when nothing matches.
func commandUsage(words []string) string {
	lines := strings.Split(usage, "\n")
	for n := len(words); n > 0; n-- {
		prefix := "  custos " + strings.Join(words[:n], " ")
		var out []string
		in := false
		for _, l := range lines {
			switch {
			case l == prefix || strings.HasPrefix(l, prefix+" "):
				in = true
				out = append(out, l)
			case in && strings.HasPrefix(l, "   ") && strings.TrimSpace(l) != "":
				out = append(out, l)
			default:
				in = false
			}
		}
		if len(out) > 0 {
			return strings.Join(out, "\n") + "\n\nConnection and credential flags, and every command: custos help"
		}
	}
	return ""
}
