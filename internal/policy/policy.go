// Package policy is custos's policy engine: it validates the admin's policies (API.md
// "Governance") and evaluates a request against them, saying which policies fired and
// why. It is a pure function of the policies, the request as the caller signed it (for a
// PSBT, as every node parsed it) and the velocity history the caller of Evaluate keeps:
// the FSM runs it inside Apply, at the entry's stamp. It must never read a clock, the
// network, a zone database or anything else that could differ between nodes, and knows
// nothing of HTTP, raft or storage.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos/custos/internal/api"
)

// Limits on what one policy may hold.
const (
	MaxNameLen         = 128
	MaxFilterItems     = 256
	MaxAddresses       = 1024
	MaxGroups          = 8
	MaxGroupMembers    = 64
	MaxWindow          = 366 * 24 * time.Hour
	MinWindow          = time.Second
	MaxApprovalTTL     = 30 * 24 * time.Hour
	MinApprovalTTL     = time.Minute
	DefaultApprovalTTL = 24 * time.Hour
	MaxDelay           = 30 * 24 * time.Hour
)

// Error is a refusal of a policy's field: Field names it as the JSON path the admin
// wrote ("rule.max_sats", "approval_groups[1].quorum").
type Error struct {
	Field  string
	Detail string
}

func (e *Error) Error() string { return e.Field + ": " + e.Detail }

func bad(field, format string, a ...any) *Error {
	return &Error{Field: field, Detail: fmt.Sprintf(format, a...)}
}

// Record is a policy as the state stores it: the admin's body and its bookkeeping.
type Record struct {
	ID        string         `json:"id"`
	Body      api.PolicyBody `json:"body"`
	Status    string         `json:"status"`
	Version   int            `json:"version"`
	CreatedAt int64          `json:"created_at_ms"`
	UpdatedAt int64          `json:"updated_at_ms"`
}

// View is the policy object of the API.
func (r *Record) View() api.Policy {
	b := r.Body
	v := api.Policy{
		PolicyID: r.ID, Name: b.Name, Activity: b.Activity, Rule: b.Rule, Action: b.Action,
		ApprovalGroups: b.ApprovalGroups, InitiatorCanApprove: b.InitiatorCanApprove,
		ApprovalTimeout: b.ApprovalTimeout, Delay: b.Delay, Status: r.Status, Version: r.Version,
		CreatedAt: time.Unix(r.CreatedAt/1000, 0).UTC(), UpdatedAt: time.Unix(r.UpdatedAt/1000, 0).UTC(),
	}
	if b.Filters != nil {
		v.Filters = *b.Filters
	}
	if v.ApprovalGroups == nil {
		v.ApprovalGroups = []api.ApprovalGroup{}
	}
	if v.ApprovalTimeout == "" {
		v.ApprovalTimeout = "24h"
	}
	if v.Delay == "" {
		v.Delay = "0s"
	}
	return v
}

// Policy is a validated policy, ready to evaluate.
type Policy struct {
	Record
	rule rule
	// TimeoutMs and DelayMs are the approval timeout and the delay after approval.
	TimeoutMs, DelayMs int64
}

// Groups returns the policy's approval groups.
func (p *Policy) Groups() []api.ApprovalGroup { return p.Body.ApprovalGroups }

// rule is a rule compiled for evaluation.
type rule struct {
	kind      string
	maxSats   int64
	maxCount  int64
	windowMs  int64
	addresses []string // sorted
	days      [7]bool  // time.Weekday
	fromMin   int
	toMin     int
	offsetMin int
}

// Compile validates a stored policy and prepares it for evaluation.
func Compile(r Record) (*Policy, error) {
	p := &Policy{Record: r}
	if err := p.compile(); err != nil {
		return nil, err
	}
	return p, nil
}

var activities = []string{api.ActivitySign, api.ActivityKeygen, api.ActivityKeyDelete, api.ActivityAccessGrant, api.ActivityPolicyModify, api.ActivityMemberChange}

// filtersOf lists the filters that mean something for an activity.
func filtersOf(activity string) []string {
	switch activity {
	case api.ActivitySign, api.ActivityKeyDelete:
		return []string{"key_ids", "labels", "users", "access_keys"}
	case api.ActivityKeygen:
		return []string{"labels", "users"}
	case api.ActivityAccessGrant:
		return []string{"key_ids", "users"}
	}
	return nil
}

// rulesOf lists the rule kinds that can judge an activity: amounts and recipients exist
// only for signatures.
func rulesOf(activity string) []string {
	if activity == api.ActivitySign {
		return []string{api.RuleAlways, api.RuleAmountLimit, api.RuleAmountVelocity, api.RuleCountVelocity, api.RuleRecipientAllowlist, api.RuleTimeWindow}
	}
	return []string{api.RuleAlways, api.RuleCountVelocity, api.RuleTimeWindow}
}

// Validate checks a policy body as the admin sent it. It does not know the users: the
// caller checks that every approver exists.
func Validate(b *api.PolicyBody) error {
	p := &Policy{Record: Record{Body: *b}}
	return p.compile()
}

func (p *Policy) compile() error {
	b := &p.Body
	if b.Name == "" || len(b.Name) > MaxNameLen || !utf8.ValidString(b.Name) {
		return bad("name", "must be 1–%d bytes of UTF-8", MaxNameLen)
	}
	if !slices.Contains(activities, b.Activity) {
		return bad("activity", "must be one of %s", strings.Join(activities, ", "))
	}
	if err := p.compileRule(); err != nil {
		return err
	}
	if err := checkFilters(b.Activity, b.Filters); err != nil {
		return err
	}
	switch b.Action {
	case api.ActionBlock, api.ActionAllow:
		if len(b.ApprovalGroups) > 0 {
			return bad("approval_groups", "only a require_approval policy has approval groups")
		}
		switch {
		case b.ApprovalTimeout != "":
			return bad("approval_timeout", "belongs to a require_approval policy")
		case b.Delay != "":
			return bad("delay", "belongs to a require_approval policy")
		case b.InitiatorCanApprove:
			return bad("initiator_can_approve", "belongs to a require_approval policy")
		}
	case api.ActionRequireApproval:
		if err := checkGroups(b.ApprovalGroups); err != nil {
			return err
		}
	default:
		return bad("action", `must be "block", "require_approval" or "allow"`)
	}
	p.TimeoutMs = DefaultApprovalTTL.Milliseconds()
	if b.ApprovalTimeout != "" {
		d, err := ParseDuration(b.ApprovalTimeout)
		if err != nil || d < MinApprovalTTL || d > MaxApprovalTTL {
			return bad("approval_timeout", "must be a duration between 1m and 30d (e.g. \"24h\")")
		}
		p.TimeoutMs = d.Milliseconds()
	}
	if b.Delay != "" {
		d, err := ParseDuration(b.Delay)
		if err != nil || d < 0 || d > MaxDelay {
			return bad("delay", "must be a duration between 0s and 30d (e.g. \"1h\")")
		}
		p.DelayMs = d.Milliseconds()
	}
	return nil
}

func checkFilters(activity string, f *api.PolicyFilters) error {
	if f == nil {
		return nil
	}
	allowed := filtersOf(activity)
	given := map[string]int{"key_ids": len(f.KeyIDs), "labels": len(f.Labels), "users": len(f.Users), "access_keys": len(f.AccessKeys)}
	for _, name := range []string{"key_ids", "labels", "users", "access_keys"} {
		n := given[name]
		if n == 0 {
			continue
		}
		if !slices.Contains(allowed, name) {
			if len(allowed) == 0 {
				return bad("filters."+name, "a %s policy takes no filters (it governs the admin's own changes)", activity)
			}
			return bad("filters."+name, "does not apply to %s requests (filters there: %s)", activity, strings.Join(allowed, ", "))
		}
		if n > MaxFilterItems {
			return bad("filters."+name, "at most %d items", MaxFilterItems)
		}
	}
	for _, l := range []struct {
		name  string
		items []string
	}{{"key_ids", f.KeyIDs}, {"labels", f.Labels}, {"access_keys", f.AccessKeys}} {
		for i, s := range l.items {
			if s == "" || len(s) > 128 || !utf8.ValidString(s) {
				return bad(fmt.Sprintf("filters.%s[%d]", l.name, i), "is empty or longer than 128 characters")
			}
		}
	}
	for _, u := range f.Users {
		if u == 0 {
			return bad("filters.users", "user ids start at 1")
		}
	}
	return nil
}

func checkGroups(gs []api.ApprovalGroup) error {
	if len(gs) == 0 {
		return bad("approval_groups", "a require_approval policy needs at least one group")
	}
	if len(gs) > MaxGroups {
		return bad("approval_groups", "at most %d groups", MaxGroups)
	}
	names := map[string]bool{}
	for i, g := range gs {
		f := fmt.Sprintf("approval_groups[%d]", i)
		if g.Name == "" || len(g.Name) > MaxNameLen || !utf8.ValidString(g.Name) {
			return bad(f+".name", "must be 1–%d bytes of UTF-8", MaxNameLen)
		}
		if names[g.Name] {
			return bad(f+".name", "%q names two groups", g.Name)
		}
		names[g.Name] = true
		if len(g.Members) == 0 {
			return bad(f+".members", "a group needs at least one member")
		}
		if len(g.Members) > MaxGroupMembers {
			return bad(f+".members", "at most %d members", MaxGroupMembers)
		}
		seen := map[uint64]bool{}
		for _, m := range g.Members {
			if m == 0 || seen[m] {
				return bad(f+".members", "user %d is listed twice or is not a user id", m)
			}
			seen[m] = true
		}
		if g.Quorum < 1 || g.Quorum > len(g.Members) {
			return bad(f+".quorum", "must be between 1 and the group's %d members", len(g.Members))
		}
	}
	return nil
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

var clockRE = regexp.MustCompile(`^([01][0-9]|2[0-3]):([0-5][0-9])$`)

func (p *Policy) compileRule() error {
	r := p.Body.Rule
	act := p.Body.Activity
	if !slices.Contains(rulesOf(act), r.Kind) {
		all := []string{api.RuleAlways, api.RuleAmountLimit, api.RuleAmountVelocity, api.RuleCountVelocity, api.RuleRecipientAllowlist, api.RuleTimeWindow}
		if slices.Contains(all, r.Kind) {
			return bad("rule.kind", "%s does not apply to %s requests (there: %s)", r.Kind, act, strings.Join(rulesOf(act), ", "))
		}
		return bad("rule.kind", "unknown rule kind %q (known: %s)", r.Kind, strings.Join(all, ", "))
	}
	// The fields each kind takes; any other is refused.
	fields := map[string][]string{
		api.RuleAlways:             nil,
		api.RuleAmountLimit:        {"max_sats"},
		api.RuleAmountVelocity:     {"window", "max_sats"},
		api.RuleCountVelocity:      {"window", "max_count"},
		api.RuleRecipientAllowlist: {"addresses"},
		api.RuleTimeWindow:         {"days", "from", "to", "tz"},
	}[r.Kind]
	present := map[string]bool{
		"max_sats": r.MaxSats != nil, "max_count": r.MaxCount != nil, "window": r.Window != "",
		"addresses": r.Addresses != nil, "days": r.Days != nil, "from": r.From != "", "to": r.To != "", "tz": r.TZ != "",
	}
	for _, f := range []string{"max_sats", "max_count", "window", "addresses", "days", "from", "to", "tz"} {
		if present[f] && !slices.Contains(fields, f) {
			return bad("rule."+f, "is not a field of the %s rule", r.Kind)
		}
		if !present[f] && slices.Contains(fields, f) && f != "tz" {
			return bad("rule."+f, "is required by the %s rule", r.Kind)
		}
	}
	c := rule{kind: r.Kind}
	if r.MaxSats != nil {
		if *r.MaxSats < 0 || *r.MaxSats > 21_000_000*100_000_000 {
			return bad("rule.max_sats", "must be between 0 and 21e14")
		}
		c.maxSats = *r.MaxSats
	}
	if r.MaxCount != nil {
		if *r.MaxCount < 0 || *r.MaxCount > 1_000_000 {
			return bad("rule.max_count", "must be between 0 and 1000000")
		}
		c.maxCount = *r.MaxCount
	}
	if r.Window != "" {
		d, err := ParseDuration(r.Window)
		if err != nil || d < MinWindow || d > MaxWindow {
			return bad("rule.window", "must be a duration between 1s and 366d (e.g. \"24h\", \"7d\")")
		}
		c.windowMs = d.Milliseconds()
	}
	if r.Addresses != nil {
		if len(r.Addresses) == 0 || len(r.Addresses) > MaxAddresses {
			return bad("rule.addresses", "must list 1–%d addresses", MaxAddresses)
		}
		for i, a := range r.Addresses {
			if a == "" || len(a) > 128 || strings.TrimSpace(a) != a {
				return bad(fmt.Sprintf("rule.addresses[%d]", i), "is not an address")
			}
		}
		c.addresses = slices.Clone(r.Addresses)
		slices.Sort(c.addresses)
	}
	if r.Kind == api.RuleTimeWindow {
		if len(r.Days) == 0 {
			return bad("rule.days", "must list at least one of %s", strings.Join(dayNames, ", "))
		}
		for _, d := range r.Days {
			i := slices.Index(dayNames, strings.ToLower(d))
			if i < 0 {
				return bad("rule.days", "%q is not one of %s", d, strings.Join(dayNames, ", "))
			}
			c.days[i] = true
		}
		var err error
		if c.fromMin, err = clockMinutes(r.From); err != nil {
			return bad("rule.from", "must be HH:MM (24-hour)")
		}
		if c.toMin, err = clockMinutes(r.To); err != nil {
			return bad("rule.to", "must be HH:MM (24-hour)")
		}
		if c.fromMin == c.toMin {
			return bad("rule.to", "must differ from from (a window of no time)")
		}
		if c.offsetMin, err = zoneOffset(r.TZ); err != nil {
			return bad("rule.tz", "%v", err)
		}
	}
	p.rule = c
	return nil
}

func clockMinutes(s string) (int, error) {
	m := clockRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("not HH:MM")
	}
	h, _ := strconv.Atoi(m[1])
	mm, _ := strconv.Atoi(m[2])
	return h*60 + mm, nil
}

var offsetRE = regexp.MustCompile(`^[+-]([01][0-9]|2[0-3]):([0-5][0-9])$`)

// zoneOffset reads a time_window's tz: "UTC" (or empty) or a fixed offset "+02:00". Zone
// names are refused: nodes' zone databases may differ, and the FSM must judge the same
// instant the same way on every node.
func zoneOffset(tz string) (int, error) {
	if tz == "" || tz == "UTC" || tz == "Z" {
		return 0, nil
	}
	m := offsetRE.FindStringSubmatch(tz)
	if m == nil {
		return 0, fmt.Errorf(`must be "UTC" or a fixed offset such as "+02:00" (zone names are not accepted: every node must judge a time the same way, whatever its zone database)`)
	}
	h, _ := strconv.Atoi(m[1])
	mm, _ := strconv.Atoi(m[2])
	off := h*60 + mm
	if tz[0] == '-' {
		off = -off
	}
	return off, nil
}

var daysRE = regexp.MustCompile(`^([0-9]{1,3})d$`)

// ParseDuration reads a duration as Go writes one ("90m", "24h", "0s"), or whole days
// ("7d").
func ParseDuration(s string) (time.Duration, error) {
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
