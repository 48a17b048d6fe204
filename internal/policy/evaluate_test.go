package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
)

// pol compiles an active policy or fails the test.
func pol(t testing.TB, id string, b api.PolicyBody) *Policy {
	t.Helper()
	p, err := Compile(Record{ID: id, Body: b, Status: api.PolicyActive, Version: 1})
	if err != nil {
		t.Fatalf("Compile %s: %v", id, err)
	}
	return p
}

type ledgerCall struct {
	policyID string
	sinceMs  int64
}

// fakeLedger answers fixed values per policy and records what it was asked.
type fakeLedger struct {
	vals  map[string][2]int64 // sats, count
	calls []ledgerCall
}

func (l *fakeLedger) Since(policyID string, sinceMs int64) (int64, int64) {
	l.calls = append(l.calls, ledgerCall{policyID, sinceMs})
	v := l.vals[policyID]
	return v[0], v[1]
}

// panicLedger fails the test if a policy reads the ledger.
type panicLedger struct{ t *testing.T }

func (l panicLedger) Since(policyID string, _ int64) (int64, int64) {
	l.t.Helper()
	l.t.Fatalf("ledger read for %s; no velocity policy is in scope", policyID)
	return 0, 0
}

func ids(ms []Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Policy.ID)
	}
	return out
}

func policyIDs(ps []*Policy) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// utc is a stamp in ms from a UTC wall time.
func utc(y int, mo time.Month, d, h, mi int) int64 {
	return time.Date(y, mo, d, h, mi, 0, 0, time.UTC).UnixMilli()
}

// signReq is a sign request in the scope of unfiltered sign policies.
func signReq() *Request {
	return &Request{Activity: api.ActivitySign, UserID: 3, AccessKeyID: "ak_1", KeyID: "key_1", KeyLabel: "hot",
		Amount: i64(50_000), Outputs: []api.Output{{Address: "bc1qa", AmountSats: 49_000}}, StampMs: utc(2024, time.June, 3, 12, 0)}
}

func TestEvaluatePrecedence(t *testing.T) {
	always := func(action string) api.PolicyBody { return body(api.ActivitySign, rAlways, action) }
	under := body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1_000_000)}, api.ActionBlock) // does not fire
	type P struct {
		id string
		b  api.PolicyBody
	}
	cases := []struct {
		name     string
		policies []P
		decision string
		matched  []string
	}{
		{"no policy", nil, api.ActionAllow, nil},
		{"allow fires", []P{{"pol_1", always(api.ActionAllow)}}, api.ActionAllow, []string{"pol_1"}},
		{"require_approval beats allow", []P{{"pol_1", always(api.ActionAllow)}, {"pol_2", always(api.ActionRequireApproval)}}, api.ActionRequireApproval, []string{"pol_1", "pol_2"}},
		{"allow after require_approval", []P{{"pol_2", always(api.ActionAllow)}, {"pol_1", always(api.ActionRequireApproval)}}, api.ActionRequireApproval, []string{"pol_1", "pol_2"}},
		{"block beats all", []P{{"pol_1", always(api.ActionAllow)}, {"pol_2", always(api.ActionBlock)}, {"pol_3", always(api.ActionRequireApproval)}}, api.ActionBlock, []string{"pol_1", "pol_2", "pol_3"}},
		{"block first", []P{{"pol_1", always(api.ActionBlock)}, {"pol_2", always(api.ActionRequireApproval)}, {"pol_3", always(api.ActionAllow)}}, api.ActionBlock, []string{"pol_1", "pol_2", "pol_3"}},
		{"block last", []P{{"pol_1", always(api.ActionRequireApproval)}, {"pol_2", always(api.ActionBlock)}}, api.ActionBlock, []string{"pol_1", "pol_2"}},
		{"a block that does not fire", []P{{"pol_1", under}, {"pol_2", always(api.ActionRequireApproval)}}, api.ActionRequireApproval, []string{"pol_2"}},
		{"only a block that does not fire", []P{{"pol_1", under}}, api.ActionAllow, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ps []*Policy
			for _, p := range c.policies {
				ps = append(ps, pol(t, p.id, p.b))
			}
			res := NewSet(ps...).Evaluate(signReq(), panicLedger{t})
			if res.Decision != c.decision {
				t.Errorf("Decision = %s, want %s", res.Decision, c.decision)
			}
			if got := ids(res.Matched); !slices.Equal(got, c.matched) {
				t.Errorf("Matched = %v, want %v", got, c.matched)
			}
			for _, m := range res.Matched {
				if m.Why == "" {
					t.Errorf("%s matched with no Why", m.Policy.ID)
				}
			}
			if len(res.Counted) != 0 {
				t.Errorf("Counted = %v, want none", policyIDs(res.Counted))
			}
		})
	}
}

func TestEvaluateFilters(t *testing.T) {
	sign := signReq()
	admin := *sign
	admin.Admin, admin.UserID, admin.AccessKeyID = true, 0, ""
	adminAs3 := *sign
	adminAs3.Admin = true // an admin request never matches a users filter, whatever its UserID
	noAK := *sign
	noAK.AccessKeyID = ""
	noLabel := *sign
	noLabel.KeyLabel = ""
	del := *sign
	del.Activity, del.Amount, del.Outputs = api.ActivityKeyDelete, nil, nil
	keygen := &Request{Activity: api.ActivityKeygen, UserID: 3, KeyLabel: "cold"}
	grant := func(keys ...string) *Request {
		return &Request{Activity: api.ActivityAccessGrant, UserID: 3, GrantKeyIDs: keys}
	}
	grantKeyID := grant("key_2")
	grantKeyID.KeyID = "key_1" // a grant is judged by its GrantKeyIDs, not KeyID

	cases := []struct {
		name     string
		activity string
		filters  *api.PolicyFilters
		req      *Request
		inScope  bool
	}{
		{"no filters", api.ActivitySign, nil, sign, true},
		{"empty filters", api.ActivitySign, &api.PolicyFilters{}, sign, true},
		{"no filters, admin", api.ActivitySign, nil, &admin, true},
		{"key_ids match", api.ActivitySign, &api.PolicyFilters{KeyIDs: []string{"key_0", "key_1"}}, sign, true},
		{"key_ids other", api.ActivitySign, &api.PolicyFilters{KeyIDs: []string{"key_2"}}, sign, false},
		{"labels match", api.ActivitySign, &api.PolicyFilters{Labels: []string{"hot"}}, sign, true},
		{"labels other", api.ActivitySign, &api.PolicyFilters{Labels: []string{"cold"}}, sign, false},
		{"labels, key without label", api.ActivitySign, &api.PolicyFilters{Labels: []string{"hot"}}, &noLabel, false},
		{"users match", api.ActivitySign, &api.PolicyFilters{Users: []uint64{2, 3}}, sign, true},
		{"users other", api.ActivitySign, &api.PolicyFilters{Users: []uint64{4}}, sign, false},
		{"users, admin", api.ActivitySign, &api.PolicyFilters{Users: []uint64{3}}, &admin, false},
		{"users, admin with the user's id", api.ActivitySign, &api.PolicyFilters{Users: []uint64{3}}, &adminAs3, false},
		{"access_keys match", api.ActivitySign, &api.PolicyFilters{AccessKeys: []string{"ak_1"}}, sign, true},
		{"access_keys other", api.ActivitySign, &api.PolicyFilters{AccessKeys: []string{"ak_2"}}, sign, false},
		{"access_keys, no access key", api.ActivitySign, &api.PolicyFilters{AccessKeys: []string{"ak_1"}}, &noAK, false},
		{"all filters match", api.ActivitySign, &api.PolicyFilters{KeyIDs: []string{"key_1"}, Labels: []string{"hot"}, Users: []uint64{3}, AccessKeys: []string{"ak_1"}}, sign, true},
		{"all but users match", api.ActivitySign, &api.PolicyFilters{KeyIDs: []string{"key_1"}, Labels: []string{"hot"}, Users: []uint64{9}, AccessKeys: []string{"ak_1"}}, sign, false},
		{"all but key_ids match", api.ActivitySign, &api.PolicyFilters{KeyIDs: []string{"key_9"}, Labels: []string{"hot"}, Users: []uint64{3}, AccessKeys: []string{"ak_1"}}, sign, false},
		{"key.delete key_ids match", api.ActivityKeyDelete, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, &del, true},
		{"key.delete key_ids other", api.ActivityKeyDelete, &api.PolicyFilters{KeyIDs: []string{"key_2"}}, &del, false},
		{"keygen labels match", api.ActivityKeygen, &api.PolicyFilters{Labels: []string{"cold"}}, keygen, true},
		{"keygen labels other", api.ActivityKeygen, &api.PolicyFilters{Labels: []string{"hot"}}, keygen, false},
		{"keygen users", api.ActivityKeygen, &api.PolicyFilters{Users: []uint64{3}}, keygen, true},
		{"grant names the key", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, grant("key_1"), true},
		{"grant names it among others", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, grant("key_2", "key_1"), true},
		{"grant names other keys", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, grant("key_2", "key_3"), false},
		{"grant of every key (nil)", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, grant(), true},
		{"grant of every key (empty)", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, &Request{Activity: api.ActivityAccessGrant, UserID: 3, GrantKeyIDs: []string{}}, true},
		{"grant ignores KeyID", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}}, grantKeyID, false},
		{"grant key_ids and users, other user", api.ActivityAccessGrant, &api.PolicyFilters{KeyIDs: []string{"key_1"}, Users: []uint64{4}}, grant(), false},
		{"grant users match", api.ActivityAccessGrant, &api.PolicyFilters{Users: []uint64{3}}, grant("key_9"), true},
		{"sign policy, keygen request", api.ActivitySign, nil, keygen, false},
		{"keygen policy, sign request", api.ActivityKeygen, nil, sign, false},
		{"policy.modify, admin", api.ActivityPolicyModify, nil, &Request{Activity: api.ActivityPolicyModify, Admin: true}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			block := pol(t, "pol_b", body(c.activity, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Filters = c.filters }))
			count := pol(t, "pol_c", body(c.activity, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(100)}, api.ActionBlock, func(b *api.PolicyBody) { b.Filters = c.filters }))
			l := &fakeLedger{}
			res := NewSet(block, count).Evaluate(c.req, l)
			want := api.ActionAllow
			if c.inScope {
				want = api.ActionBlock
			}
			if res.Decision != want {
				t.Errorf("Decision = %s, want %s (in scope: %v)", res.Decision, want, c.inScope)
			}
			if got := len(res.Counted) == 1; got != c.inScope {
				t.Errorf("Counted = %v, want in scope %v", policyIDs(res.Counted), c.inScope)
			}
			if got := len(l.calls) == 1; got != c.inScope {
				t.Errorf("ledger calls = %v, want in scope %v", l.calls, c.inScope)
			}
		})
	}
}

func TestEvaluateRules(t *testing.T) {
	const stamp = 1_717_416_000_000 // 2024-06-03T12:00:00Z
	outs := func(o ...api.Output) []api.Output { return o }
	cases := []struct {
		name    string
		rule    api.PolicyRule
		amount  *int64
		outputs []api.Output
		ledger  [2]int64 // sats, count before the request
		fires   bool
		why     []string // substrings of Why
		since   int64    // the ledger's since, if it is read; 0 if not
	}{
		// amount_limit
		{name: "amount below max", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1000)}, amount: i64(999)},
		{name: "amount at max", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1000)}, amount: i64(1000)},
		{name: "amount above max", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1000)}, amount: i64(1001), fires: true, why: []string{"1001 sats", "max_sats 1000"}},
		{name: "amount 0, max 0", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(0)}, amount: i64(0)},
		{name: "amount 1, max 0", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(0)}, amount: i64(1), fires: true, why: []string{"1 sats", "max_sats 0"}},
		{name: "amount_limit on a digest", rule: api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1_000_000)}, fires: true, why: []string{"no transaction", "fail closed"}},
		// amount_velocity
		{name: "amount velocity at max", rule: api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(10_000)}, amount: i64(1000), ledger: [2]int64{9000, 4},
			since: stamp - 24*3600*1000},
		{name: "amount velocity above max", rule: api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(10_000)}, amount: i64(1001), ledger: [2]int64{9000, 4},
			fires: true, why: []string{"10001 sats", "within 24h", "9000 before", "max_sats 10000"}, since: stamp - 24*3600*1000},
		{name: "amount velocity, empty ledger, one big request", rule: api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "7d", MaxSats: i64(10_000)}, amount: i64(10_001),
			fires: true, why: []string{"10001 sats", "within 7d", "0 before", "max_sats 10000"}, since: stamp - 7*24*3600*1000},
		{name: "amount velocity window 90m", rule: api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "90m", MaxSats: i64(10_000)}, amount: i64(1), ledger: [2]int64{0, 0},
			since: stamp - 90*60*1000},
		{name: "amount_velocity on a digest", rule: api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(10_000)}, ledger: [2]int64{0, 0},
			fires: true, why: []string{"no transaction"}},
		// count_velocity
		{name: "count velocity at max", rule: api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(3)}, amount: i64(5), ledger: [2]int64{1 << 40, 2},
			since: stamp - 3600*1000},
		{name: "count velocity above max", rule: api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(3)}, amount: i64(5), ledger: [2]int64{0, 3},
			fires: true, why: []string{"request 4", "within 1h", "max_count is 3"}, since: stamp - 3600*1000},
		{name: "count velocity max 0", rule: api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1s", MaxCount: i64(0)},
			fires: true, why: []string{"request 1", "within 1s", "max_count is 0"}, since: stamp - 1000},
		{name: "count velocity on a digest", rule: api.PolicyRule{Kind: api.RuleCountVelocity, Window: "2d", MaxCount: i64(3)}, ledger: [2]int64{0, 1},
			since: stamp - 2*24*3600*1000},
		// recipient_allowlist
		{name: "allowlisted outputs", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qb", AmountSats: 5}, api.Output{Address: "bc1qa", AmountSats: 7})},
		{name: "change output elsewhere", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qa"}, api.Output{Address: "bc1qchange", Change: true}, api.Output{Address: "bc1qb"})},
		{name: "only change", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qchange", Change: true})},
		{name: "no outputs (not nil)", rule: rAllowlist, amount: i64(1), outputs: []api.Output{}},
		{name: "output elsewhere", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qa"}, api.Output{Address: "bc1qchange", Change: true}, api.Output{Address: "bc1qevil", AmountSats: 9}),
			fires: true, why: []string{"output 2", "bc1qevil", "not on the allowlist"}},
		{name: "first of two bad outputs", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qx"}, api.Output{Address: "bc1qy"}),
			fires: true, why: []string{"output 0", "bc1qx"}},
		{name: "output without address", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1qa"}, api.Output{AmountSats: 1}),
			fires: true, why: []string{"output 1", "a script with no address"}},
		{name: "allowlist prefix is not a match", rule: rAllowlist, amount: i64(1), outputs: outs(api.Output{Address: "bc1q"}),
			fires: true, why: []string{"output 0 pays bc1q,"}},
		{name: "recipient_allowlist on a digest", rule: rAllowlist, fires: true, why: []string{"no transaction"}},
		// always
		{name: "always", rule: rAlways, fires: true, why: []string{"every request"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := pol(t, "pol_r", body(api.ActivitySign, c.rule, api.ActionRequireApproval))
			req := &Request{Activity: api.ActivitySign, UserID: 3, KeyID: "key_1", Amount: c.amount, Outputs: c.outputs, StampMs: stamp}
			l := &fakeLedger{vals: map[string][2]int64{"pol_r": c.ledger}}
			res := NewSet(p).Evaluate(req, l)
			if got := len(res.Matched) == 1; got != c.fires {
				t.Fatalf("fired = %v, want %v (%+v)", got, c.fires, res.Matched)
			}
			wantDecision := api.ActionAllow
			if c.fires {
				wantDecision = api.ActionRequireApproval
				why := res.Matched[0].Why
				if why == "" {
					t.Fatal("Why is empty")
				}
				for _, s := range c.why {
					if !strings.Contains(why, s) {
						t.Errorf("Why %q does not say %q", why, s)
					}
				}
			}
			if res.Decision != wantDecision {
				t.Errorf("Decision = %s, want %s", res.Decision, wantDecision)
			}
			var wantCalls []ledgerCall
			if c.since != 0 {
				wantCalls = []ledgerCall{{"pol_r", c.since}}
			}
			if !slices.Equal(l.calls, wantCalls) {
				t.Errorf("ledger calls = %v, want %v", l.calls, wantCalls)
			}
			velocity := c.rule.Kind == api.RuleAmountVelocity || c.rule.Kind == api.RuleCountVelocity
			if got := len(res.Counted) == 1; got != velocity {
				t.Errorf("Counted = %v, want velocity %v", policyIDs(res.Counted), velocity)
			}
		})
	}
}

func TestEvaluateTimeWindow(t *testing.T) {
	weekdays := []string{"mon", "tue", "wed", "thu", "fri"}
	all := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	office := api.PolicyRule{Kind: api.RuleTimeWindow, Days: weekdays, From: "09:00", To: "17:00"}
	officeBerlinSummer := office
	officeBerlinSummer.TZ = "+02:00"
	night := api.PolicyRule{Kind: api.RuleTimeWindow, Days: all, From: "22:00", To: "06:00", TZ: "UTC"}
	mondayNight := api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"mon"}, From: "22:00", To: "06:00"}
	mondayEarly := api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"mon"}, From: "00:00", To: "02:00", TZ: "+02:00"}
	fridayEvening := api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"fri"}, From: "20:00", To: "23:00", TZ: "-05:00"}
	westIndia := api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"Wed"}, From: "08:00", To: "09:00", TZ: "+05:30"}

	// 2024-06-03 is a Monday.
	if wd := time.Date(2024, time.June, 3, 0, 0, 0, 0, time.UTC).Weekday(); wd != time.Monday {
		t.Fatalf("2024-06-03 is a %v", wd)
	}
	cases := []struct {
		name  string
		rule  api.PolicyRule
		stamp int64
		fires bool
		why   []string
	}{
		{"office: Monday 09:00 (from is inside)", office, utc(2024, time.June, 3, 9, 0), false, nil},
		{"office: Monday 12:00", office, utc(2024, time.June, 3, 12, 0), false, nil},
		{"office: Friday 16:59", office, utc(2024, time.June, 7, 16, 59), false, nil},
		{"office: Monday 08:59", office, utc(2024, time.June, 3, 8, 59), true, []string{"mon 08:59 (UTC)", "mon,tue,wed,thu,fri 09:00–17:00"}},
		{"office: Monday 17:00 (to is outside)", office, utc(2024, time.June, 3, 17, 0), true, []string{"mon 17:00 (UTC)"}},
		{"office: Saturday 12:00", office, utc(2024, time.June, 8, 12, 0), true, []string{"sat 12:00 (UTC)"}},
		{"office: Sunday 10:00", office, utc(2024, time.June, 9, 10, 0), true, []string{"sun 10:00"}},
		// +02:00: local = UTC + 2h.
		{"+02:00: UTC 07:00 is 09:00 local", officeBerlinSummer, utc(2024, time.June, 3, 7, 0), false, nil},
		{"+02:00: UTC 14:59 is 16:59 local", officeBerlinSummer, utc(2024, time.June, 3, 14, 59), false, nil},
		{"+02:00: UTC 06:59 is 08:59 local", officeBerlinSummer, utc(2024, time.June, 3, 6, 59), true, []string{"mon 08:59 (+02:00)"}},
		{"+02:00: UTC 15:00 is 17:00 local", officeBerlinSummer, utc(2024, time.June, 3, 15, 0), true, []string{"mon 17:00 (+02:00)"}},
		{"+02:00: UTC Friday 23:00 is Saturday 01:00 local", officeBerlinSummer, utc(2024, time.June, 7, 23, 0), true, []string{"sat 01:00 (+02:00)"}},
		{"+02:00: UTC Sunday 22:30 is Monday 00:30 local", mondayEarly, utc(2024, time.June, 2, 22, 30), false, nil},
		{"+02:00: UTC Monday 00:30 is Monday 02:30 local", mondayEarly, utc(2024, time.June, 3, 0, 30), true, []string{"mon 02:30 (+02:00)"}},
		{"-05:00: UTC Saturday 01:30 is Friday 20:30 local", fridayEvening, utc(2024, time.June, 8, 1, 30), false, nil},
		{"-05:00: UTC Friday 20:30 is Friday 15:30 local", fridayEvening, utc(2024, time.June, 7, 20, 30), true, []string{"fri 15:30 (-05:00)"}},
		{"+05:30: UTC Wednesday 02:45 is 08:15 local", westIndia, utc(2024, time.June, 5, 2, 45), false, nil},
		{"+05:30: UTC Wednesday 03:30 is 09:00 local", westIndia, utc(2024, time.June, 5, 3, 30), true, []string{"wed 09:00 (+05:30)", "Wed 08:00–09:00"}},
		// Over midnight.
		{"night: 23:00", night, utc(2024, time.June, 3, 23, 0), false, nil},
		{"night: 22:00", night, utc(2024, time.June, 3, 22, 0), false, nil},
		{"night: 00:00", night, utc(2024, time.June, 4, 0, 0), false, nil},
		{"night: 05:59", night, utc(2024, time.June, 4, 5, 59), false, nil},
		{"night: 06:00", night, utc(2024, time.June, 4, 6, 0), true, []string{"tue 06:00 (UTC)", "22:00–06:00"}},
		{"night: 12:00", night, utc(2024, time.June, 4, 12, 0), true, []string{"tue 12:00"}},
		{"night: 21:59", night, utc(2024, time.June, 4, 21, 59), true, []string{"tue 21:59"}},
		// A window over midnight belongs to the day it starts on: "mon 22:00–06:00" is
		// Monday night into Tuesday morning, not Monday's early hours.
		{"monday night: Monday 23:00", mondayNight, utc(2024, time.June, 3, 23, 0), false, nil},
		{"monday night: Monday 02:00", mondayNight, utc(2024, time.June, 3, 2, 0), true, []string{"mon 02:00"}},
		{"monday night: Tuesday 02:00", mondayNight, utc(2024, time.June, 4, 2, 0), false, nil},
		{"monday night: Tuesday 22:00", mondayNight, utc(2024, time.June, 4, 22, 0), true, []string{"tue 22:00"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := pol(t, "pol_t", body(api.ActivitySign, c.rule, api.ActionBlock))
			res := NewSet(p).Evaluate(&Request{Activity: api.ActivitySign, StampMs: c.stamp}, panicLedger{t})
			if got := res.Decision == api.ActionBlock; got != c.fires {
				t.Fatalf("fired = %v, want %v (%+v)", got, c.fires, res.Matched)
			}
			if !c.fires {
				return
			}
			why := res.Matched[0].Why
			for _, s := range c.why {
				if !strings.Contains(why, s) {
					t.Errorf("Why %q does not say %q", why, s)
				}
			}
		})
	}
}

// TestTimeWindowAgreesWithTime checks the engine's day and time of day against the time
// package's, over many instants and offsets: a window of one minute a day fires at every
// other minute and says the local time.
func TestTimeWindowAgreesWithTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(1971, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	end := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for _, tz := range []string{"UTC", "+02:00", "-05:00", "+05:45", "-09:30", "+14:00", "-12:00", "+23:59", "-23:59"} {
		off, err := zoneOffset(tz)
		if err != nil {
			t.Fatal(err)
		}
		zone := time.FixedZone(tz, off*60)
		p := pol(t, "pol_t", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleTimeWindow,
			Days: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}, From: "00:00", To: "00:01", TZ: tz}, api.ActionBlock))
		s := NewSet(p)
		for range 2000 {
			ms := start + rng.Int64N(end-start)
			local := time.UnixMilli(ms).In(zone)
			res := s.Evaluate(&Request{Activity: api.ActivitySign, StampMs: ms}, panicLedger{t})
			midnight := local.Hour() == 0 && local.Minute() == 0
			if fired := len(res.Matched) == 1; fired == midnight {
				t.Fatalf("%s at %v: fired %v", tz, local, fired)
			}
			if midnight {
				continue
			}
			want := fmt.Sprintf("%s %02d:%02d (%s)", strings.ToLower(local.Weekday().String()[:3]), local.Hour(), local.Minute(), tz)
			if why := res.Matched[0].Why; !strings.HasPrefix(why, want) {
				t.Fatalf("%v: Why %q, want it to start %q", local, why, want)
			}
		}
	}
}

func TestEvaluateCounted(t *testing.T) {
	req := signReq() // amount 50 000, key_1, user 3
	ps := []*Policy{
		// In scope, does not fire: counted, not matched.
		pol(t, "pol_a", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(10)}, api.ActionBlock)),
		// Out of scope: neither counted nor asked about.
		pol(t, "pol_b", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "1h", MaxSats: i64(1)}, api.ActionBlock,
			func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{KeyIDs: []string{"key_other"}} })),
		// In scope and fires: counted and matched.
		pol(t, "pol_c", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(100_000)}, api.ActionRequireApproval,
			func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{Users: []uint64{3}} })),
		// Not a velocity rule: matched, not counted.
		pol(t, "pol_d", body(api.ActivitySign, rAlways, api.ActionAllow)),
		// Another activity.
		pol(t, "pol_e", body(api.ActivityKeygen, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(0)}, api.ActionBlock)),
		// In scope, amount below its limit.
		pol(t, "pol_f", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "1h", MaxSats: i64(1_000_000)}, api.ActionBlock,
			func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{Labels: []string{"hot"}} })),
	}
	l := &fakeLedger{vals: map[string][2]int64{"pol_a": {0, 9}, "pol_c": {60_000, 1}, "pol_f": {0, 0}}}
	res := NewSet(ps...).Evaluate(req, l)
	if got := policyIDs(res.Counted); !slices.Equal(got, []string{"pol_a", "pol_c", "pol_f"}) {
		t.Errorf("Counted = %v, want [pol_a pol_c pol_f]", got)
	}
	if got := ids(res.Matched); !slices.Equal(got, []string{"pol_c", "pol_d"}) {
		t.Errorf("Matched = %v, want [pol_c pol_d]", got)
	}
	if res.Decision != api.ActionRequireApproval {
		t.Errorf("Decision = %s", res.Decision)
	}
	want := []ledgerCall{{"pol_a", req.StampMs - 3_600_000}, {"pol_c", req.StampMs - 86_400_000}, {"pol_f", req.StampMs - 3_600_000}}
	if !slices.Equal(l.calls, want) {
		t.Errorf("ledger calls = %v, want %v", l.calls, want)
	}
	if w := res.Matched[0].Why; !strings.Contains(w, "110000 sats") || !strings.Contains(w, "60000 before") || !strings.Contains(w, "max_sats 100000") {
		t.Errorf("Why = %q", w)
	}

	// A digest: the amount velocity policies in scope fire (fail closed) and are still
	// counted.
	digest := signReq()
	digest.Amount, digest.Outputs = nil, nil
	res = NewSet(ps...).Evaluate(digest, &fakeLedger{})
	if got := policyIDs(res.Counted); !slices.Equal(got, []string{"pol_a", "pol_c", "pol_f"}) {
		t.Errorf("digest: Counted = %v", got)
	}
	if got := ids(res.Matched); !slices.Equal(got, []string{"pol_c", "pol_d", "pol_f"}) {
		t.Errorf("digest: Matched = %v", got)
	}
	if res.Decision != api.ActionBlock {
		t.Errorf("digest: Decision = %s, want block", res.Decision)
	}
}

func TestEvaluateMatchedOrderAndViews(t *testing.T) {
	a := pol(t, "pol_a", body(api.ActivitySign, rAlways, api.ActionAllow, func(b *api.PolicyBody) { b.Name = "A" }))
	b := pol(t, "pol_b", body(api.ActivitySign, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Name = "B" }))
	c := pol(t, "pol_c", body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1)}, api.ActionRequireApproval, func(b *api.PolicyBody) { b.Name = "C" }))
	d := pol(t, "pol_d", body(api.ActivitySign, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Name = "D" }))
	s := NewSet(d, c, a, b)
	if got := policyIDs(s.Of(api.ActivitySign)); !slices.Equal(got, []string{"pol_a", "pol_b", "pol_c", "pol_d"}) {
		t.Fatalf("Of = %v", got)
	}
	res := s.Evaluate(signReq(), panicLedger{t})
	if got := ids(res.Matched); !slices.Equal(got, []string{"pol_a", "pol_b", "pol_c", "pol_d"}) {
		t.Fatalf("Matched = %v", got)
	}
	if got := ids(res.With(api.ActionBlock)); !slices.Equal(got, []string{"pol_b", "pol_d"}) {
		t.Errorf("With(block) = %v", got)
	}
	if got := ids(res.With(api.ActionRequireApproval)); !slices.Equal(got, []string{"pol_c"}) {
		t.Errorf("With(require_approval) = %v", got)
	}
	v := res.MatchedView()
	if len(v) != 4 {
		t.Fatalf("MatchedView = %+v", v)
	}
	wantC := api.MatchedPolicy{PolicyID: "pol_c", Name: "C", Rule: api.RuleAmountLimit, Action: api.ActionRequireApproval, Why: res.Matched[2].Why}
	if v[2] != wantC || !strings.Contains(v[2].Why, "50000") {
		t.Errorf("MatchedView[2] = %+v, want %+v", v[2], wantC)
	}
	if empty := (&Result{}).MatchedView(); empty == nil || len(empty) != 0 {
		t.Errorf("an empty MatchedView is %v, want [] (not null)", empty)
	}
}

func TestSetCopyOnWrite(t *testing.T) {
	a1 := pol(t, "pol_a", body(api.ActivitySign, rAlways, api.ActionAllow))
	a2 := pol(t, "pol_a", body(api.ActivitySign, rAlways, api.ActionBlock))
	b := pol(t, "pol_b", body(api.ActivityKeygen, rAlways, api.ActionRequireApproval))
	c := pol(t, "pol_c", body(api.ActivitySign, rAlways, api.ActionAllow))

	s0 := NewSet(a1, b)
	s1 := s0.With(c)  // adds
	s2 := s1.With(a2) // replaces
	s3 := s2.Without("pol_b")
	s4 := s3.Without("pol_unknown")

	check := func(name string, s *Set, n int, sign []string, keygen []string, a *Policy) {
		t.Helper()
		if s.Len() != n {
			t.Errorf("%s: Len = %d, want %d", name, s.Len(), n)
		}
		if got := policyIDs(s.Of(api.ActivitySign)); !slices.Equal(got, sign) {
			t.Errorf("%s: sign policies %v, want %v", name, got, sign)
		}
		if got := policyIDs(s.Of(api.ActivityKeygen)); !slices.Equal(got, keygen) {
			t.Errorf("%s: keygen policies %v, want %v", name, got, keygen)
		}
		if s.Get("pol_a") != a {
			t.Errorf("%s: Get(pol_a) is not the expected version", name)
		}
	}
	check("s0", s0, 2, []string{"pol_a"}, []string{"pol_b"}, a1)
	check("s1", s1, 3, []string{"pol_a", "pol_c"}, []string{"pol_b"}, a1)
	check("s2", s2, 3, []string{"pol_a", "pol_c"}, []string{"pol_b"}, a2)
	check("s3", s3, 2, []string{"pol_a", "pol_c"}, nil, a2)
	check("s4", s4, 2, []string{"pol_a", "pol_c"}, nil, a2)
	if s0.Get("pol_c") != nil || s3.Get("pol_b") != nil || s2.Get("pol_b") != b {
		t.Error("Get sees another set's change")
	}
	// The old sets still judge as they did.
	if d := s0.Evaluate(signReq(), panicLedger{t}).Decision; d != api.ActionAllow {
		t.Errorf("s0 decides %s after s2 replaced pol_a", d)
	}
	if d := s2.Evaluate(signReq(), panicLedger{t}).Decision; d != api.ActionBlock {
		t.Errorf("s2 decides %s", d)
	}
	if d := s1.Evaluate(&Request{Activity: api.ActivityKeygen}, panicLedger{t}).Decision; d != api.ActionRequireApproval {
		t.Errorf("s1 keygen decides %s after s3 removed pol_b", d)
	}
	if d := s3.Evaluate(&Request{Activity: api.ActivityKeygen}, panicLedger{t}).Decision; d != api.ActionAllow {
		t.Errorf("s3 keygen decides %s", d)
	}
	if e := NewSet(); e.Len() != 0 || e.Of(api.ActivitySign) != nil || e.Evaluate(signReq(), panicLedger{t}).Decision != api.ActionAllow {
		t.Error("the empty set is not empty")
	}
}

// TestSetConcurrentReaders: a published set is read by many goroutines while the next
// batch derives new sets from it (run with -race).
func TestSetConcurrentReaders(t *testing.T) {
	var ps []*Policy
	for i := range 20 {
		ps = append(ps, pol(t, fmt.Sprintf("pol_%02d", i), body(api.ActivitySign,
			api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(int64(i + 1))}, api.ActionRequireApproval)))
	}
	s := NewSet(ps...)
	extra := pol(t, "pol_zz", body(api.ActivitySign, rAlways, api.ActionBlock))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				res := s.Evaluate(signReq(), &fakeLedger{vals: map[string][2]int64{"pol_05": {0, 6}}})
				if res.Decision != api.ActionRequireApproval || len(res.Counted) != 20 || len(res.Matched) != 1 {
					t.Errorf("Decision %s, %d counted, %d matched", res.Decision, len(res.Counted), len(res.Matched))
					return
				}
			}
		})
	}
	wg.Go(func() {
		n := s
		for i := range 200 {
			n = n.With(extra).Without(fmt.Sprintf("pol_%02d", i%20))
		}
	})
	wg.Wait()
}
