package api

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestAPIMdCodes lists the codes of API.md's error taxonomy with the status API.md gives
// them (401 authentication, 403 permission and policy, 404 unknown objects, 409 state
// conflicts, 413, 429, 503).
func TestAPIMdCodes(t *testing.T) {
	tests := []struct {
		code   string
		status int
	}{
		{"request.malformed", 400},
		{"request.too_large", 413},
		{"request.idempotency_conflict", 409},
		{"auth.missing", 401},
		{"auth.token_invalid", 401},
		{"auth.token_expired", 401},
		{"auth.wrong_audience", 401},
		{"auth.signature_invalid", 401},
		{"auth.signature_expired", 401},
		{"auth.nonce_reused", 401},
		{"auth.user_disabled", 401},
		{"auth.key_revoked", 401},
		{"perm.denied", 403},
		{"key.not_found", 404},
		{"key.not_active", 409},
		{"policy.blocked", 403},
		{"approval.required", 403},
		{"approval.expired", 403},
		{"approval.self_approval", 403},
		{"approval.already_decided", 409},
		{"approval.closed", 409},
		{"request.cancelled", 409},
		{"cluster.no_quorum", 503},
		{"cluster.unavailable", 503},
		{"ceremony.failed", 502},
		{"rate.limited", 429},
		{"psbt.invalid", 400},
		{"psbt.input_not_ours", 400},
		{"psbt.change_mismatch", 400},
		{"broadcast.failed", 502},
		{"member.not_found", 404},
		{"member.unavailable", 503},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if _, ok := Lookup(tt.code); !ok {
				t.Fatalf("%s is not in the table", tt.code)
			}
			if got := StatusOf(tt.code); got != tt.status {
				t.Fatalf("StatusOf(%s) = %d, API.md says %d", tt.code, got, tt.status)
			}
		})
	}
}

// legacyStatusOf and legacyTitles are node/http.go's statusOf and titles as they were
// before this package (prefix and suffix matching): the table must give every code the
// server emitted then the same status and title, except the deliberate changes below.
func legacyStatusOf(code string) int {
	switch {
	case code == "request.too_large":
		return http.StatusRequestEntityTooLarge
	case code == "rate.limited":
		return http.StatusTooManyRequests
	case strings.HasPrefix(code, "auth."):
		return http.StatusUnauthorized
	case code == "perm.denied", code == "policy.blocked":
		return http.StatusForbidden
	case strings.HasSuffix(code, ".not_found"):
		return http.StatusNotFound
	case code == "key.not_active", code == "request.idempotency_conflict", code == "request.conflict":
		return http.StatusConflict
	case code == "cluster.no_quorum", code == "cluster.unavailable":
		return http.StatusServiceUnavailable
	case code == "ceremony.failed":
		return http.StatusBadGateway
	case code == "internal":
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

var legacyTitles = map[string]string{
	"request.malformed":            "malformed request",
	"request.too_large":            "request too large",
	"request.idempotency_conflict": "idempotency key reused with a different body",
	"request.not_found":            "request not found",
	"request.conflict":             "conflict with the current state",
	"access_key.not_found":         "access key not found",
	"route.not_found":              "no such route",
	"auth.missing":                 "authentication missing",
	"auth.token_invalid":           "token invalid",
	"auth.token_expired":           "token expired",
	"auth.wrong_audience":          "token for another cluster",
	"auth.signature_invalid":       "request signature invalid",
	"auth.signature_expired":       "request signature expired",
	"auth.nonce_reused":            "nonce already used",
	"auth.user_disabled":           "user disabled",
	"auth.key_revoked":             "access key revoked",
	"perm.denied":                  "permission denied",
	"policy.blocked":               "blocked by policy",
	"approval.required":            "approval required",
	"user.not_found":               "user not found",
	"key.not_found":                "key not found",
	"key.not_active":               "key not active",
	"cluster.no_quorum":            "no quorum",
	"cluster.unavailable":          "cluster unavailable",
	"ceremony.failed":              "ceremony failed",
	"rate.limited":                 "rate limited",
	"internal":                     "internal error",
}

// changedFromLegacy are the codes whose status differs from the old prefix matching, on
// purpose; none of them was ever the code of an HTTP answer.
var changedFromLegacy = map[string]string{
	"approval.required":        "policy: 403 (API.md), was the 400 fallback",
	"approval.expired":         "policy: 403, was the 400 fallback",
	"approval.self_approval":   "API.md: 403, was the 400 fallback",
	"approval.already_decided": "API.md: 409, was the 400 fallback",
	"approval.closed":          "API.md: 409, was the 400 fallback",
	"approval.denied":          "an approver's refusal, like policy.blocked: 403 (new with governance)",
	"request.cancelled":        "state conflict: 409, was the 400 fallback",
	"ceremony.refused":         "a node's failure report, like ceremony.failed: 502, was the 400 fallback",
	"broadcast.failed":         "the Bitcoin node's failure: 502, was the 400 fallback",
	"member.unavailable":       "503, was the 400 fallback",
}

func TestTableKeepsTheServersStatusesAndTitles(t *testing.T) {
	for _, c := range Codes() {
		if want := legacyStatusOf(c.Code); c.Status != want {
			if _, ok := changedFromLegacy[c.Code]; !ok {
				t.Errorf("%s: status %d, the server answered %d", c.Code, c.Status, want)
			}
		} else if why, ok := changedFromLegacy[c.Code]; ok {
			t.Errorf("%s is listed as changed (%s) but is not", c.Code, why)
		}
		if want, ok := legacyTitles[c.Code]; ok && c.Title != want {
			t.Errorf("%s: title %q, the server wrote %q", c.Code, c.Title, want)
		}
	}
	for code := range legacyTitles {
		if _, ok := Lookup(code); !ok {
			t.Errorf("%s had a title on the server but is not in the table", code)
		}
	}
}

func TestTableIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	shape := regexp.MustCompile(`^[a-z_]+\.[a-z_]+$`)
	for _, c := range Codes() {
		if seen[c.Code] {
			t.Errorf("%s appears twice", c.Code)
		}
		seen[c.Code] = true
		if !shape.MatchString(c.Code) && c.Code != CodeInternal {
			t.Errorf("%q is not a domain.reason code", c.Code)
		}
		if c.Status < 400 || c.Status > 599 || http.StatusText(c.Status) == "" {
			t.Errorf("%s: status %d is not an error status", c.Code, c.Status)
		}
		if c.Title == "" || c.Title == c.Code {
			t.Errorf("%s: no title of its own", c.Code)
		}
		if got, ok := Lookup(c.Code); !ok || got != c {
			t.Errorf("Lookup(%s) = %+v, %v", c.Code, got, ok)
		}
		if StatusOf(c.Code) != c.Status || Title(c.Code) != c.Title {
			t.Errorf("%s: StatusOf/Title disagree with the table", c.Code)
		}
	}
	// Exact, not prefix matching: an unknown code is 400 and its own title.
	for _, code := range []string{"auth.something_new", "x.not_found", "", "AUTH.MISSING", "auth.missing "} {
		if _, ok := Lookup(code); ok {
			t.Errorf("%q found", code)
		}
		if StatusOf(code) != http.StatusBadRequest || Title(code) != code {
			t.Errorf("unknown %q: %d %q", code, StatusOf(code), Title(code))
		}
	}
}

// codeArg names the functions that take an error code as a string argument anywhere in
// the server (its error constructors, the FSM's refusals and audit), and which argument.
var codeArg = map[string]int{
	"errf":          0, // node / httpapi: errf(code, format, …)
	"refuse":        0, // state: refuse(code, detail)
	"fail":          0, // authn: fail(code, format, …)
	"newErr":        0, // auth: newErr(code, detail)
	"failRequest":   1, // state: failRequest(r, code, detail, actor)
	"reportFailure": 1, // node: reportFailure(r, code, detail, culprits)
	"audit":         4, // state: audit(actor, action, object, outcome, code)
}

// emittedCodes parses every non-test Go file of the module outside test/ and returns the
// error codes written as string literals: arguments of the functions in codeArg, values
// of a Code field in a composite literal, and constants named Code….
func emittedCodes(t *testing.T) map[string][]string {
	t.Helper()
	root := moduleRoot(t)
	out := map[string][]string{}
	fset := token.NewFileSet()
	add := func(lit ast.Expr, what string) {
		bl, ok := lit.(*ast.BasicLit)
		if !ok || bl.Kind != token.STRING {
			return
		}
		s, err := strconv.Unquote(bl.Value)
		if err != nil {
			return
		}
		pos := fset.Position(bl.Pos())
		rel, _ := filepath.Rel(root, pos.Filename)
		out[s] = append(out[s], rel+":"+strconv.Itoa(pos.Line)+" ("+what+")")
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			top := filepath.Dir(path) == root
			self := path == filepath.Join(root, "internal", "api") // the table itself proves nothing
			if path != root && (top && name == "test" || self || name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				var name string
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				}
				if i, ok := codeArg[name]; ok && i < len(n.Args) {
					add(n.Args[i], name+"()")
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Code" {
					add(n.Value, "Code:")
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if strings.HasPrefix(id.Name, "Code") && i < len(n.Values) {
						add(n.Values[i], "const "+id.Name)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/custos/custos\n") {
			return dir
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("not inside the custos module's source tree")
		}
		dir = parent
	}
}

// TestEveryEmittedCodeIsInTheTable holds the table complete: every error code the
// server's code writes as a literal has its row, so that StatusOf never falls back.
func TestEveryEmittedCodeIsInTheTable(t *testing.T) {
	codes := emittedCodes(t)
	// The scan must see the server's constructors, or it proves nothing.
	for _, must := range []string{CodeRequestMalformed, CodeKeyNotFound, CodeAuthSignatureInvalid, CodePermDenied, CodeCeremonyRefused, CodeRateLimited} {
		if len(codes[must]) == 0 {
			t.Fatalf("the scan found no use of %s: does it still see the server's error constructors?", must)
		}
	}
	var keys []string
	for code := range codes {
		keys = append(keys, code)
	}
	slices.Sort(keys)
	for _, code := range keys {
		if code == "" {
			continue // an empty Code: is "no error" (allowed audit entries)
		}
		if _, ok := Lookup(code); !ok {
			t.Errorf("%q is emitted but not in the table: %s", code, strings.Join(codes[code], ", "))
		}
	}
	t.Logf("%d distinct codes emitted: %s", len(keys), strings.Join(keys, " "))
}
