package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/custos/custos/internal/api"
)

// Set is the active policies, indexed by activity. It is immutable: With and Without
// return a new set, so that the FSM can publish the set of a committed batch while the
// next batch builds its own.
type Set struct {
	byID       map[string]*Policy
	byActivity map[string][]*Policy // sorted by id
}

// NewSet returns a set of the given policies.
func NewSet(ps ...*Policy) *Set {
	s := &Set{byID: map[string]*Policy{}, byActivity: map[string][]*Policy{}}
	for _, p := range ps {
		s.byID[p.ID] = p
	}
	s.index()
	return s
}

func (s *Set) index() {
	s.byActivity = map[string][]*Policy{}
	for _, p := range s.byID {
		s.byActivity[p.Body.Activity] = append(s.byActivity[p.Body.Activity], p)
	}
	for _, l := range s.byActivity {
		slices.SortFunc(l, func(a, b *Policy) int { return strings.Compare(a.ID, b.ID) })
	}
}

// Len is the number of active policies.
func (s *Set) Len() int { return len(s.byID) }

// Get returns an active policy by id.
func (s *Set) Get(id string) *Policy { return s.byID[id] }

// With returns the set with p added or replaced.
func (s *Set) With(p *Policy) *Set {
	n := &Set{byID: maps.Clone(s.byID)}
	if n.byID == nil {
		n.byID = map[string]*Policy{}
	}
	n.byID[p.ID] = p
	n.index()
	return n
}

// Without returns the set without policy id.
func (s *Set) Without(id string) *Set {
	n := &Set{byID: maps.Clone(s.byID)}
	delete(n.byID, id)
	n.index()
	return n
}

// Of returns the active policies of an activity, by id.
func (s *Set) Of(activity string) []*Policy { return s.byActivity[activity] }

// Request is what a policy judges: the activity, who asks, what about, and — for a
// transaction every node parsed — what it pays. Amount and Outputs are nil for a request
// with no transaction to read (a raw digest or message).
type Request struct {
	Activity string
	// UserID is the initiating user (an access key's grantor); 0 for the admin.
	UserID      uint64
	AccessKeyID string
	Admin       bool
	// KeyID and KeyLabel are the key signed with or deleted, or (keygen) the new key's
	// label.
	KeyID    string
	KeyLabel string
	// Amount is the sum of the outputs that are not change plus the fee, in satoshis.
	Amount  *int64
	Outputs []api.Output
	// GrantKeyIDs are an access grant's key ids (empty: every key of the grantor).
	GrantKeyIDs []string
	// StampMs is the entry's stamp: the time the policy judges at.
	StampMs int64
}

// Ledger is the velocity history the FSM keeps per policy: the amount and the number of
// requests in its scope admitted since a stamp (in flight or signed).
type Ledger interface {
	Since(policyID string, sinceMs int64) (sats, count int64)
}

// Match is one policy whose rule fired, and why.
type Match struct {
	Policy *Policy
	Why    string
}

// Result is an evaluation's outcome.
type Result struct {
	Decision string
	Matched  []Match
	// Counted are the velocity policies whose scope the request is in (fired or not):
	// once admitted, the request counts in their ledgers.
	Counted []*Policy
}

// Block, RequireApproval: the matches with that action.
func (r *Result) With(action string) []Match {
	var out []Match
	for _, m := range r.Matched {
		if m.Policy.Body.Action == action {
			out = append(out, m)
		}
	}
	return out
}

// MatchedView is the API's list of matched policies.
func (r *Result) MatchedView() []api.MatchedPolicy {
	out := []api.MatchedPolicy{}
	for _, m := range r.Matched {
		out = append(out, api.MatchedPolicy{PolicyID: m.Policy.ID, Name: m.Policy.Body.Name, Rule: m.Policy.Body.Rule.Kind, Action: m.Policy.Body.Action, Why: m.Why})
	}
	return out
}

// Evaluate judges a request against every active policy of its activity: each policy
// whose filters match and whose rule fires applies; block wins over require_approval,
// which wins over allow (and no policy firing is allow).
func (s *Set) Evaluate(r *Request, l Ledger) Result {
	res := Result{Decision: api.ActionAllow}
	for _, p := range s.Of(r.Activity) {
		if !p.inScope(r) {
			continue
		}
		if p.rule.kind == api.RuleAmountVelocity || p.rule.kind == api.RuleCountVelocity {
			res.Counted = append(res.Counted, p)
		}
		why, fired := p.fires(r, l)
		if !fired {
			continue
		}
		res.Matched = append(res.Matched, Match{Policy: p, Why: why})
		switch {
		case p.Body.Action == api.ActionBlock:
			res.Decision = api.ActionBlock
		case p.Body.Action == api.ActionRequireApproval && res.Decision != api.ActionBlock:
			res.Decision = api.ActionRequireApproval
		}
	}
	return res
}

// inScope reports whether every filter the policy gives matches the request.
func (p *Policy) inScope(r *Request) bool {
	f := p.Body.Filters
	if f == nil {
		return true
	}
	if len(f.KeyIDs) > 0 {
		switch {
		case r.Activity == api.ActivityAccessGrant:
			// A grant reaches a key when it names it, or names no key (all of them).
			if len(r.GrantKeyIDs) > 0 && !slices.ContainsFunc(r.GrantKeyIDs, func(k string) bool { return slices.Contains(f.KeyIDs, k) }) {
				return false
			}
		case !slices.Contains(f.KeyIDs, r.KeyID):
			return false
		}
	}
	if len(f.Labels) > 0 && !slices.Contains(f.Labels, r.KeyLabel) {
		return false
	}
	if len(f.Users) > 0 && (r.Admin || !slices.Contains(f.Users, r.UserID)) {
		return false
	}
	if len(f.AccessKeys) > 0 && (r.AccessKeyID == "" || !slices.Contains(f.AccessKeys, r.AccessKeyID)) {
		return false
	}
	return true
}

// noTx is why an amount or recipient rule fires on a request without a transaction.
const noTx = "the request has no transaction to read (a raw digest or message), so amount and recipient rules fail closed"

// fires judges the policy's rule, saying why it fired.
func (p *Policy) fires(r *Request, l Ledger) (string, bool) {
	c := &p.rule
	switch c.kind {
	case api.RuleAlways:
		return "the rule applies to every request in its scope", true
	case api.RuleAmountLimit:
		if r.Amount == nil {
			return noTx, true
		}
		if *r.Amount > c.maxSats {
			return fmt.Sprintf("the amount, %d sats (outputs that are not change plus the fee), exceeds max_sats %d", *r.Amount, c.maxSats), true
		}
	case api.RuleAmountVelocity:
		if r.Amount == nil {
			return noTx, true
		}
		sats, _ := l.Since(p.ID, r.StampMs-c.windowMs)
		if total := sats + *r.Amount; total > c.maxSats {
			return fmt.Sprintf("%d sats within %s with this request (%d before it) exceed max_sats %d", total, p.Body.Rule.Window, sats, c.maxSats), true
		}
	case api.RuleCountVelocity:
		_, n := l.Since(p.ID, r.StampMs-c.windowMs)
		if n+1 > c.maxCount {
			return fmt.Sprintf("this would be request %d within %s; max_count is %d", n+1, p.Body.Rule.Window, c.maxCount), true
		}
	case api.RuleRecipientAllowlist:
		if r.Outputs == nil {
			return noTx, true
		}
		for i, o := range r.Outputs {
			if o.Change {
				continue
			}
			if _, ok := slices.BinarySearch(c.addresses, o.Address); !ok {
				to := o.Address
				if to == "" {
					to = "a script with no address"
				}
				return fmt.Sprintf("output %d pays %s, which is not on the allowlist", i, to), true
			}
		}
	case api.RuleTimeWindow:
		local := r.StampMs/60000 + int64(c.offsetMin) // minutes since the epoch, local
		day := int(((local/1440)%7 + 7 + 4) % 7)      // 1970-01-01 was a Thursday
		mins := int((local%1440 + 1440) % 1440)
		// A window over midnight belongs to the day it starts on: "mon 22:00–06:00" is
		// Monday night into Tuesday morning.
		var inside bool
		switch {
		case c.fromMin < c.toMin:
			inside = c.days[day] && mins >= c.fromMin && mins < c.toMin
		case mins >= c.fromMin:
			inside = c.days[day]
		case mins < c.toMin:
			inside = c.days[(day+6)%7]
		}
		if !inside {
			return fmt.Sprintf("%s %02d:%02d (%s) is outside the window %s %s–%s", dayNames[day], mins/60, mins%60,
				tzName(p.Body.Rule.TZ), strings.Join(p.Body.Rule.Days, ","), p.Body.Rule.From, p.Body.Rule.To), true
		}
	}
	return "", false
}

func tzName(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}
