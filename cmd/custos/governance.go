package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

// Governance (policies, their dry run, approvals, cancelling a waiting request) and PSBT
// signing. The admin manages policies; users (with policies:read) read them; users or
// the admin evaluate, list and read approvals and cancel requests; users decide approvals
// and sign PSBTs.

const (
	adminPoliciesUsage = `usage: custos admin policies create (--file F | --name N --activity A --action A [rule, filter and approval flags])
       custos admin policies list | get ID | update ID (--file F | flags as create) | archive ID`
	policiesUsage  = `usage: custos policies evaluate --route "POST /v1/keys/KEY_ID/sign" [--body JSON | --body-file F] | list | get ID`
	approvalsUsage = `usage: custos approvals list [--status pending|approved|denied|expired] | get ID | approve ID [--reason R] | deny ID [--reason R]`
	psbtUsage      = `usage: custos psbt sign FILE --key KEY_ID --network mainnet|testnet|signet|regtest|simnet
                       --input INDEX[:PATH] ... [--change OUTPUT[:PATH] ...] [--broadcast] [--out FILE]`
)

// governed is what both the admin SDK and a user's client do alike.
type governed interface {
	eventReader
	EvaluatePolicies(ctx context.Context, route string, body any) (*client.Evaluation, error)
	ListPolicies(ctx context.Context) ([]client.Policy, error)
	GetPolicy(ctx context.Context, id string) (*client.Policy, error)
	ListApprovals(ctx context.Context, status string) ([]client.Approval, error)
	GetApproval(ctx context.Context, id string) (*client.Approval, error)
	CancelRequest(ctx context.Context, id string) (*client.Request, error)
}

var (
	_ governed = (*admin.Admin)(nil)
	_ governed = (*client.Client)(nil)
)

// flagsSet lists the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// asAdmin tells whose credentials a command usable by both runs with: the admin's when
// an admin credential flag is given or no user token is (the dev cluster's admin key),
// else the user's.
func (c *conn) asAdmin(set map[string]bool) (bool, error) {
	adminFlags := set["admin-key-file"] || set["admin-private-key-file"]
	switch {
	case adminFlags && set["token"]:
		return false, errors.New("give user credentials (--token, --identity) or admin credentials (--admin-key-file or --admin-private-key-file), not both")
	case adminFlags:
		return true, nil
	}
	return c.token == "", nil
}

// governed returns the caller asAdmin picks.
func (c *conn) governed(set map[string]bool) (governed, error) {
	isAdmin, err := c.asAdmin(set)
	if err != nil {
		return nil, err
	}
	if !isAdmin {
		return c.user()
	}
	a, err := c.admin()
	if err != nil {
		return nil, fmt.Errorf("%w (as a user: pass --token and --identity, or set CUSTOS_TOKEN and CUSTOS_IDENTITY)", err)
	}
	return a, nil
}

// int64Flag is an integer flag that knows whether it was given (0 is a valid limit).
type int64Flag struct {
	v   int64
	set bool
}

func (f *int64Flag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatInt(f.v, 10)
}

func (f *int64Flag) Set(s string) error {
	v, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil {
		return errors.New("must be a whole number")
	}
	f.v, f.set = v, true
	return nil
}

func (f *int64Flag) ptr() *int64 {
	if !f.set {
		return nil
	}
	v := f.v
	return &v
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("empty value")
	}
	*l = append(*l, s)
	return nil
}

// policyFlags are the flags that build a policy body without a file.
type policyFlags struct {
	file, name, activity, ruleKind, window, action, delay, approvalTimeout string
	addresses, days, from, to, tz                                          string
	keyIDs, labels, users, accessKeys                                      string
	maxSats, maxCount                                                      int64Flag
	groups                                                                 stringList
	initiatorCanApprove                                                    bool
}

// policyFlagNames are the flags --file cannot be combined with.
var policyFlagNames = []string{"name", "activity", "rule-kind", "max-sats", "max-count", "window", "addresses", "days", "from", "to", "tz",
	"action", "group", "delay", "approval-timeout", "key-ids", "labels", "users", "access-keys", "initiator-can-approve"}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.file, "file", "", "the policy as JSON (its writable fields; - reads stdin)")
	fs.StringVar(&p.name, "name", "", "the policy's name")
	fs.StringVar(&p.activity, "activity", "", "what it governs: sign, keygen, key.delete, access.grant, policy.modify, member.change")
	fs.StringVar(&p.ruleKind, "rule-kind", "", "always, amount_limit, amount_velocity, count_velocity, recipient_allowlist, time_window (default: from the rule flags given, else always)")
	fs.Var(&p.maxSats, "max-sats", "amount_limit, amount_velocity: the limit in satoshis")
	fs.Var(&p.maxCount, "max-count", "count_velocity: the most requests in --window")
	fs.StringVar(&p.window, "window", "", "amount_velocity, count_velocity: the window (e.g. 24h, 7d)")
	fs.StringVar(&p.addresses, "addresses", "", "recipient_allowlist: comma-separated addresses outputs may pay")
	fs.StringVar(&p.days, "days", "", "time_window: comma-separated days (mon,tue,…)")
	fs.StringVar(&p.from, "from", "", "time_window: start, HH:MM")
	fs.StringVar(&p.to, "to", "", "time_window: end, HH:MM")
	fs.StringVar(&p.tz, "tz", "", "time_window: time zone (default UTC)")
	fs.StringVar(&p.action, "action", "", "block, require_approval or allow")
	fs.Var(&p.groups, "group", "require_approval: an approval group NAME:QUORUM:UID1,UID2,… (repeat the flag for more groups)")
	fs.StringVar(&p.delay, "delay", "", "require_approval: wait this long after approval, cancellable (e.g. 1h)")
	fs.StringVar(&p.approvalTimeout, "approval-timeout", "", "require_approval: the approval expires after this (default 24h)")
	fs.BoolVar(&p.initiatorCanApprove, "initiator-can-approve", false, "require_approval: the initiator may approve its own request")
	fs.StringVar(&p.keyIDs, "key-ids", "", "filter: comma-separated key ids")
	fs.StringVar(&p.labels, "labels", "", "filter: comma-separated key labels")
	fs.StringVar(&p.users, "users", "", "filter: comma-separated user ids (the initiators)")
	fs.StringVar(&p.accessKeys, "access-keys", "", "filter: comma-separated access key ids")
}

// parseUserIDs reads a comma-separated list of user ids.
func parseUserIDs(s, what string) ([]uint64, error) {
	var out []uint64
	for _, p := range splitList(s) {
		id, err := strconv.ParseUint(p, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%s: %q is not a user id (a number from 1)", what, p)
		}
		out = append(out, id)
	}
	return out, nil
}

// parseGroup reads --group NAME:QUORUM:UID1,UID2,… (the name may hold colons).
func parseGroup(s string) (api.ApprovalGroup, error) {
	bad := fmt.Errorf("--group %q must be NAME:QUORUM:UID1,UID2,… (e.g. treasury:2:4,5,6)", s)
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return api.ApprovalGroup{}, bad
	}
	j := strings.LastIndex(s[:i], ":")
	if j <= 0 {
		return api.ApprovalGroup{}, bad
	}
	q, err := strconv.Atoi(strings.TrimSpace(s[j+1 : i]))
	if err != nil {
		return api.ApprovalGroup{}, bad
	}
	members, err := parseUserIDs(s[i+1:], "--group "+s[:j])
	if err != nil {
		return api.ApprovalGroup{}, err
	}
	if len(members) == 0 {
		return api.ApprovalGroup{}, bad
	}
	return api.ApprovalGroup{Name: strings.TrimSpace(s[:j]), Quorum: q, Members: members}, nil
}

// readPolicyFile reads a policy body from a JSON file (- for stdin), refusing unknown
// fields as the nodes do.
func readPolicyFile(path string) (api.PolicyBody, error) {
	var b api.PolicyBody
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, client.MaxRequestBody+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return b, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("%s is not a policy (JSON with name, activity, rule, filters, action, approval_groups, …): %w", path, err)
	}
	return b, nil
}

// body builds the policy body: from --file, or from the flags. set is the flags given.
func (p *policyFlags) body(set map[string]bool) (api.PolicyBody, error) {
	if p.file != "" {
		for _, n := range policyFlagNames {
			if set[n] {
				return api.PolicyBody{}, fmt.Errorf("give --file or the policy flags (--%s …), not both", n)
			}
		}
		return readPolicyFile(p.file)
	}
	if p.name == "" || p.activity == "" || p.action == "" {
		return api.PolicyBody{}, errors.New("a policy needs --name, --activity and --action (or --file F with the policy as JSON)")
	}
	rule := api.PolicyRule{Kind: p.ruleKind, MaxSats: p.maxSats.ptr(), MaxCount: p.maxCount.ptr(), Window: p.window,
		Addresses: splitList(p.addresses), Days: splitList(p.days), From: p.from, To: p.to, TZ: p.tz}
	if rule.Kind == "" {
		switch {
		case rule.MaxCount != nil:
			rule.Kind = api.RuleCountVelocity
		case rule.MaxSats != nil && rule.Window != "":
			rule.Kind = api.RuleAmountVelocity
		case rule.MaxSats != nil:
			rule.Kind = api.RuleAmountLimit
		case rule.Addresses != nil:
			rule.Kind = api.RuleRecipientAllowlist
		case rule.Days != nil || rule.From != "" || rule.To != "":
			rule.Kind = api.RuleTimeWindow
		case rule.Window != "":
			return api.PolicyBody{}, errors.New("--window needs --max-sats (amount_velocity) or --max-count (count_velocity)")
		default:
			rule.Kind = api.RuleAlways
		}
	}
	b := api.PolicyBody{Name: p.name, Activity: p.activity, Rule: rule, Action: p.action, InitiatorCanApprove: p.initiatorCanApprove,
		ApprovalTimeout: p.approvalTimeout, Delay: p.delay}
	users, err := parseUserIDs(p.users, "--users")
	if err != nil {
		return api.PolicyBody{}, err
	}
	f := api.PolicyFilters{KeyIDs: splitList(p.keyIDs), Labels: splitList(p.labels), Users: users, AccessKeys: splitList(p.accessKeys)}
	if f.KeyIDs != nil || f.Labels != nil || f.Users != nil || f.AccessKeys != nil {
		b.Filters = &f
	}
	for _, g := range p.groups {
		ag, err := parseGroup(g)
		if err != nil {
			return api.PolicyBody{}, err
		}
		b.ApprovalGroups = append(b.ApprovalGroups, ag)
	}
	if b.Action == api.ActionRequireApproval && len(b.ApprovalGroups) == 0 {
		return api.PolicyBody{}, errors.New("a require_approval policy needs at least one --group NAME:QUORUM:UID1,UID2,…")
	}
	return b, nil
}

// pendingHint tells what to do about a request that waits.
func pendingHint(w io.Writer, r *client.Request) {
	switch {
	case r.Status == client.StatusPendingApproval && r.ApprovalID != "":
		fmt.Fprintf(w, "request %s waits for approval %s: its approvers decide with `custos approvals approve %s` (or deny); `custos approvals get %s` shows where it stands, `custos requests cancel %s` withdraws it\n",
			r.RequestID, r.ApprovalID, r.ApprovalID, r.ApprovalID, r.RequestID)
	case r.NotBefore != nil:
		fmt.Fprintf(w, "request %s is approved and runs at %s; until then `custos requests cancel %s` cancels it; `custos requests get %s` follows it\n",
			r.RequestID, r.NotBefore.UTC().Format(time.RFC3339), r.RequestID, r.RequestID)
	case !client.Final(r.Status):
		fmt.Fprintf(w, "request %s is %s: `custos requests get %s` follows it\n", r.RequestID, r.Status, r.RequestID)
	}
}

// errorHint tells what to do about an API error of a governance or PSBT command.
func errorHint(w io.Writer, err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return
	}
	hints := map[string]string{
		api.CodePolicyBlocked:          "a policy blocks this request (named above); `custos policies evaluate --route … --body …` shows which and why, the admin's `custos admin policies list` shows them all",
		api.CodeApprovalSelfApproval:   "you initiated this request: another member of its approval groups must decide (unless the policy sets initiator_can_approve)",
		api.CodeApprovalAlreadyDecided: "you already decided this approval: `custos approvals get ID` shows the decisions",
		api.CodeApprovalClosed:         "the approval is no longer pending: `custos approvals get ID` shows how it ended",
		api.CodeApprovalNotFound:       "no such approval, or not one you may see: `custos approvals list` lists yours",
		api.CodePolicyNotFound:         "no such policy: `custos admin policies list` lists them",
		api.CodeRequestNotFound:        "no such request, or not yours",
		api.CodePermDenied:             "ask the admin for the permission (approvals:decide to decide, policies:read to read policies, keys:sign to sign; `custos admin set-permissions`)",
		api.CodePSBTInvalid:            "the nodes cannot parse the PSBT: give the file bitcoind or your wallet wrote (binary or base64)",
		api.CodePSBTInputNotOurs:       "each --input INDEX:PATH must spend an output paying the key's child at PATH, with its non_witness_utxo (and witness_utxo for segwit) in the PSBT",
		api.CodePSBTChangeMismatch:     "each --change OUTPUT:PATH must pay the key's child at PATH; check the output index and path",
	}
	if h, ok := hints[ae.Code]; ok {
		fmt.Fprintln(w, "hint:", h)
	}
}

func cmdAdminPolicies(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(adminPoliciesUsage)
	}
	sub := args[0]
	switch sub {
	case "create", "list", "get", "update", "archive":
	default:
		return fmt.Errorf("unknown admin policies command %q\n%s", sub, adminPoliciesUsage)
	}
	fs := flag.NewFlagSet("admin policies "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	var pf policyFlags
	pf.register(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	var body api.PolicyBody
	switch sub {
	case "create":
		if len(pos) > 0 {
			return fmt.Errorf("admin policies create takes no arguments, got %q\n%s", pos[0], adminPoliciesUsage)
		}
		if body, err = pf.body(flagsSet(fs)); err != nil {
			return err
		}
	case "get", "update", "archive":
		if len(pos) != 1 {
			return fmt.Errorf("admin policies %s needs one policy id (custos admin policies list shows them)", sub)
		}
		if sub == "update" {
			if body, err = pf.body(flagsSet(fs)); err != nil {
				return err
			}
		}
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	var p *admin.Policy
	var r *admin.Request
	switch sub {
	case "list":
		ps, err := a.ListPolicies(cx)
		if err != nil {
			return err
		}
		if ps == nil {
			ps = []admin.Policy{}
		}
		return printJSON(stdout, ps)
	case "get":
		p, err = a.GetPolicy(cx, pos[0])
	case "create":
		p, r, err = a.CreatePolicy(cx, body)
	case "update":
		p, r, err = a.UpdatePolicy(cx, pos[0], body)
	case "archive":
		p, r, err = a.ArchivePolicy(cx, pos[0])
	}
	if err != nil {
		errorHint(stderr, err)
		return err
	}
	if r != nil {
		pendingHint(stderr, r)
		return printJSON(stdout, r)
	}
	return printJSON(stdout, p)
}

// readBody reads --body or --body-file: the evaluated request's JSON body.
func readBody(body, file string) (json.RawMessage, error) {
	if body != "" && file != "" {
		return nil, errors.New("give --body or --body-file, not both")
	}
	raw := []byte(body)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errors.New(`the body must be a JSON object, e.g. --body '{"message":"…","derivation_path":"m/0/7"}'`)
	}
	return raw, nil
}

func cmdPolicies(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(policiesUsage)
	}
	sub := args[0]
	switch sub {
	case "evaluate", "list", "get":
	default:
		return fmt.Errorf("unknown policies command %q\n%s", sub, policiesUsage)
	}
	fs := flag.NewFlagSet("policies "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	route := fs.String("route", "", `evaluate: the request's route, "METHOD /v1/path" with the real ids`)
	body := fs.String("body", "", "evaluate: the request's JSON body")
	bodyFile := fs.String("body-file", "", "evaluate: a file holding the request's JSON body")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	var raw json.RawMessage
	switch sub {
	case "evaluate":
		if *route == "" || len(pos) > 0 {
			return errors.New(`policies evaluate needs --route "METHOD /v1/path" (e.g. "POST /v1/keys/KEY_ID/psbt") and takes no arguments`)
		}
		if raw, err = readBody(*body, *bodyFile); err != nil {
			return err
		}
	case "get":
		if len(pos) != 1 {
			return errors.New("policies get needs one policy id (custos policies list shows them)")
		}
	}
	g, err := c.governed(flagsSet(fs))
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	var out any
	switch sub {
	case "evaluate":
		var b any
		if raw != nil {
			b = raw
		}
		out, err = g.EvaluatePolicies(cx, *route, b)
	case "list":
		var ps []client.Policy
		if ps, err = g.ListPolicies(cx); err == nil && ps == nil {
			ps = []client.Policy{}
		}
		out = ps
	case "get":
		out, err = g.GetPolicy(cx, pos[0])
	}
	if err != nil {
		errorHint(stderr, err)
		return err
	}
	return printJSON(stdout, out)
}

func cmdApprovals(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(approvalsUsage)
	}
	sub := args[0]
	switch sub {
	case "list", "get", "approve", "deny":
	default:
		return fmt.Errorf("unknown approvals command %q\n%s", sub, approvalsUsage)
	}
	fs := flag.NewFlagSet("approvals "+sub, flag.ContinueOnError)
	var c conn
	c.register(fs)
	status := fs.String("status", "", "list: only approvals with this status (pending, approved, denied, expired)")
	reason := fs.String("reason", "", "approve, deny: why (kept with the decision)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		switch *status {
		case "", api.ApprovalPending, api.ApprovalApproved, api.ApprovalDenied, api.ApprovalExpired:
		default:
			return fmt.Errorf("--status must be pending, approved, denied or expired, got %q", *status)
		}
	default:
		if len(pos) != 1 {
			return fmt.Errorf("approvals %s needs one approval id (custos approvals list --status pending shows them)", sub)
		}
	}
	cx, cancel := ctx()
	defer cancel()
	var out any
	if sub == "approve" || sub == "deny" {
		if set := flagsSet(fs); set["admin-key-file"] || set["admin-private-key-file"] {
			return errors.New("approvals are decided by users (members of the policy's approval groups): pass --token and --identity")
		}
		cl, err := c.user()
		if err != nil {
			return err
		}
		if sub == "approve" {
			out, err = cl.Approve(cx, pos[0], *reason)
		} else {
			out, err = cl.Deny(cx, pos[0], *reason)
		}
		if err != nil {
			errorHint(stderr, err)
			return err
		}
		return printJSON(stdout, out)
	}
	g, err := c.governed(flagsSet(fs))
	if err != nil {
		return err
	}
	if sub == "list" {
		var as []client.Approval
		if as, err = g.ListApprovals(cx, *status); err == nil && as == nil {
			as = []client.Approval{}
		}
		out = as
	} else {
		out, err = g.GetApproval(cx, pos[0])
	}
	if err != nil {
		errorHint(stderr, err)
		return err
	}
	return printJSON(stdout, out)
}

// cmdRequestsCancel is `custos requests cancel ID` (args after "cancel").
func cmdRequestsCancel(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("requests cancel", flag.ContinueOnError)
	var c conn
	c.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("requests cancel needs one request id (a request waiting for its approval or its delay)")
	}
	g, err := c.governed(flagsSet(fs))
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	r, err := g.CancelRequest(cx, pos[0])
	if err != nil {
		errorHint(stderr, err)
		return err
	}
	return printJSON(stdout, r)
}

// psbtMagic starts every serialized PSBT (BIP 174).
var psbtMagic = []byte("psbt\xff")

// encodePSBT returns a PSBT file's content as the API's base64: the file holds the
// binary PSBT, its base64 or its hex.
func encodePSBT(data []byte) (string, error) {
	if bytes.HasPrefix(data, psbtMagic) {
		return base64.StdEncoding.EncodeToString(data), nil
	}
	s := strings.Join(strings.Fields(string(data)), "")
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && bytes.HasPrefix(b, psbtMagic) {
		return base64.StdEncoding.EncodeToString(b), nil
	}
	if b, err := hex.DecodeString(s); err == nil && bytes.HasPrefix(b, psbtMagic) {
		return base64.StdEncoding.EncodeToString(b), nil
	}
	return "", errors.New("not a PSBT: give the binary PSBT, or its base64 (as bitcoind's walletcreatefundedpsbt prints it) or hex")
}

// parseIndexPath reads INDEX[:PATH] (--input 0:m/0/1, --change 1:m/1/0).
func parseIndexPath(flagName, s string) (int, string, error) {
	idx, path, _ := strings.Cut(strings.TrimSpace(s), ":")
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 {
		return 0, "", fmt.Errorf("--%s %q must be INDEX[:PATH], e.g. 0:m/0/1", flagName, s)
	}
	if path != "" && !strings.HasPrefix(path, "m") {
		return 0, "", fmt.Errorf("--%s %q: the derivation path must start with m (e.g. m/0/1)", flagName, s)
	}
	return i, path, nil
}

// psbtBody builds POST /v1/keys/{key_id}/psbt's body from the flags.
func psbtBody(data []byte, network string, inputs, change []string, broadcast bool, idem string) (client.PSBTBody, error) {
	var b client.PSBTBody
	if network == "" {
		return b, errors.New("psbt sign needs --network (mainnet, testnet, signet, regtest or simnet): the one the PSBT's addresses belong to")
	}
	if len(inputs) == 0 {
		return b, errors.New("psbt sign needs at least one --input INDEX[:PATH]: the inputs the key (or its child at PATH) signs")
	}
	enc, err := encodePSBT(data)
	if err != nil {
		return b, err
	}
	b = client.PSBTBody{PSBT: enc, Network: network, Broadcast: broadcast, IdempotencyKey: idem, Inputs: []client.PSBTInput{}}
	for _, s := range inputs {
		i, p, err := parseIndexPath("input", s)
		if err != nil {
			return client.PSBTBody{}, err
		}
		b.Inputs = append(b.Inputs, client.PSBTInput{Index: i, DerivationPath: p})
	}
	for _, s := range change {
		i, p, err := parseIndexPath("change", s)
		if err != nil {
			return client.PSBTBody{}, err
		}
		b.Change = append(b.Change, client.PSBTChange{Output: i, DerivationPath: p})
	}
	return b, nil
}

func cmdPSBT(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "sign" {
		return errors.New(psbtUsage)
	}
	fs := flag.NewFlagSet("psbt sign", flag.ContinueOnError)
	var c conn
	c.register(fs)
	key := fs.String("key", "", "the key id")
	file := fs.String("file", "", "the PSBT: binary, base64 or hex (- reads stdin)")
	network := fs.String("network", "", "mainnet, testnet, signet, regtest or simnet")
	var inputs, change stringList
	fs.Var(&inputs, "input", "an input to sign, INDEX[:PATH] with PATH the key's child it spends (repeat the flag)")
	fs.Var(&change, "change", "a change output, OUTPUT[:PATH] paying the key's child at PATH (repeat the flag)")
	broadcast := fs.Bool("broadcast", false, "send the signed transaction to the cluster's Bitcoin node")
	out := fs.String("out", "", "write the finalized PSBT (base64) to this new file")
	idem := fs.String("idempotency-key", "", "idempotency key")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && *file == "":
		*file = pos[0] // custos psbt sign FILE …
	case len(pos) > 0:
		return fmt.Errorf("psbt sign takes at most one argument, the PSBT file (or --file), got %q\n%s", pos, psbtUsage)
	}
	if *key == "" || *file == "" {
		return errors.New("psbt sign needs --key KEY_ID and the PSBT file (FILE or --file F)\n" + psbtUsage)
	}
	var data []byte
	if *file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, client.MaxRequestBody))
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	body, err := psbtBody(data, *network, inputs, change, *broadcast, *idem)
	if err != nil {
		if strings.HasPrefix(err.Error(), "not a PSBT") {
			return fmt.Errorf("%s is %w", *file, err)
		}
		return err
	}
	if *out != "" {
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("--out %s exists: give a new file (it is never overwritten)", *out)
		}
	}
	cl, err := c.user()
	if err != nil {
		return err
	}
	cx, cancel := ctx()
	defer cancel()
	r, err := cl.SignPSBT(cx, *key, body)
	if err != nil {
		errorHint(stderr, err)
		return err
	}
	if (r.Status == client.StatusSubmitted || r.Status == client.StatusSigning || r.Status == client.StatusScheduled) && r.NotBefore == nil {
		if r, err = cl.WaitRequest(cx, r.RequestID, 300*time.Millisecond); err != nil {
			return err
		}
	}
	if r.Status != client.StatusSigned {
		pendingHint(stderr, r)
		if err := printJSON(stdout, r); err != nil {
			return err
		}
		if client.Final(r.Status) {
			return fmt.Errorf("request %s ended %s", r.RequestID, r.Status)
		}
		return nil
	}
	if *out != "" {
		if err := writeNewFile(*out, []byte(r.PSBT+"\n")); err != nil {
			return err
		}
	}
	if err := printJSON(stdout, r); err != nil {
		return err
	}
	if r.Broadcast != nil && r.Broadcast.Error != nil {
		return fmt.Errorf("signed, but the broadcast failed (%s: %s): the signed transaction is tx_hex above; send it with `bitcoin-cli sendrawtransaction` once the Bitcoin node takes it",
			r.Broadcast.Error.Code, r.Broadcast.Error.Detail)
	}
	return nil
}

// writeNewFile writes data to a new file (mode 0600), never overwriting one.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write %s (never overwritten): %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
