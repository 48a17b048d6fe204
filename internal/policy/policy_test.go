package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
)

func i64(v int64) *int64 { return &v }

// group is a valid approval group for require_approval policies.
var group = []api.ApprovalGroup{{Name: "treasury", Members: []uint64{4, 5, 6}, Quorum: 2}}

// body returns a valid policy body of an activity, rule and action; mut edits it.
func body(activity string, r api.PolicyRule, action string, mut ...func(*api.PolicyBody)) api.PolicyBody {
	b := api.PolicyBody{Name: "p", Activity: activity, Rule: r, Action: action}
	if action == api.ActionRequireApproval {
		b.ApprovalGroups = []api.ApprovalGroup{{Name: "treasury", Members: []uint64{4, 5, 6}, Quorum: 2}}
	}
	for _, m := range mut {
		m(&b)
	}
	return b
}

var (
	rAlways    = api.PolicyRule{Kind: api.RuleAlways}
	rAmount    = api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(100_000_000)}
	rAmountVel = api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(500_000_000)}
	rCountVel  = api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(10)}
	rAllowlist = api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{"bc1qa", "bc1qb"}}
	rTime      = api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"mon", "tue", "wed", "thu", "fri"}, From: "09:00", To: "17:00", TZ: "+02:00"}
)

func TestValidateAccepts(t *testing.T) {
	fullApproval := func(b *api.PolicyBody) {
		b.InitiatorCanApprove = true
		b.ApprovalTimeout = "48h"
		b.Delay = "1h"
	}
	cases := map[string]api.PolicyBody{
		// Every rule kind, on sign, with each action.
		"sign always block":                  body(api.ActivitySign, rAlways, api.ActionBlock),
		"sign always allow":                  body(api.ActivitySign, rAlways, api.ActionAllow),
		"sign amount_limit require_approval": body(api.ActivitySign, rAmount, api.ActionRequireApproval, fullApproval),
		"sign amount_limit max_sats 0":       body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(0)}, api.ActionBlock),
		"sign amount_limit max_sats 21e14":   body(api.ActivitySign, api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(21_000_000 * 100_000_000)}, api.ActionBlock),
		"sign amount_velocity allow":         body(api.ActivitySign, rAmountVel, api.ActionAllow),
		"sign count_velocity block":          body(api.ActivitySign, rCountVel, api.ActionBlock),
		"sign count_velocity max_count 0":    body(api.ActivitySign, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1s", MaxCount: i64(0)}, api.ActionBlock),
		"sign count_velocity window 366d":    body(api.ActivitySign, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "366d", MaxCount: i64(1_000_000)}, api.ActionBlock),
		"sign count_velocity window 90m":     body(api.ActivitySign, api.PolicyRule{Kind: api.RuleCountVelocity, Window: "90m", MaxCount: i64(1)}, api.ActionBlock),
		"sign recipient_allowlist":           body(api.ActivitySign, rAllowlist, api.ActionRequireApproval),
		"sign time_window +02:00":            body(api.ActivitySign, rTime, api.ActionBlock),
		"sign time_window no tz":             body(api.ActivitySign, api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"sat"}, From: "22:00", To: "06:00"}, api.ActionBlock),
		"sign time_window UTC":               body(api.ActivitySign, api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"SUN"}, From: "00:00", To: "23:59", TZ: "UTC"}, api.ActionBlock),
		"sign time_window Z":                 body(api.ActivitySign, api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"Sun"}, From: "00:00", To: "23:59", TZ: "Z"}, api.ActionBlock),
		"sign time_window -05:30":            body(api.ActivitySign, api.PolicyRule{Kind: api.RuleTimeWindow, Days: []string{"wed"}, From: "08:00", To: "09:00", TZ: "-05:30"}, api.ActionBlock),
		"sign all filters": body(api.ActivitySign, rAlways, api.ActionBlock, func(b *api.PolicyBody) {
			b.Filters = &api.PolicyFilters{KeyIDs: []string{"key_1"}, Labels: []string{"hot"}, Users: []uint64{3}, AccessKeys: []string{"ak_1"}}
		}),
		"sign empty filters":    body(api.ActivitySign, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{} }),
		"keygen always":         body(api.ActivityKeygen, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{Labels: []string{"cold"}, Users: []uint64{1}} }),
		"keygen count_velocity": body(api.ActivityKeygen, rCountVel, api.ActionBlock),
		"keygen time_window":    body(api.ActivityKeygen, rTime, api.ActionBlock),
		"key.delete always": body(api.ActivityKeyDelete, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) {
			b.Filters = &api.PolicyFilters{KeyIDs: []string{"key_1"}, AccessKeys: []string{"ak_1"}}
		}),
		"access.grant always":             body(api.ActivityAccessGrant, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.Filters = &api.PolicyFilters{KeyIDs: []string{"key_1"}, Users: []uint64{2}} }),
		"policy.modify always":            body(api.ActivityPolicyModify, rAlways, api.ActionRequireApproval, fullApproval),
		"member.change count_velocity":    body(api.ActivityMemberChange, rCountVel, api.ActionBlock),
		"member.change always allow":      body(api.ActivityMemberChange, rAlways, api.ActionAllow),
		"name of 128 characters":          body(api.ActivitySign, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Name = strings.Repeat("x", MaxNameLen) }),
		"approval timeout 1m, delay 0s":   body(api.ActivitySign, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.ApprovalTimeout, b.Delay = "1m", "0s" }),
		"approval timeout 30d, delay 30d": body(api.ActivitySign, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.ApprovalTimeout, b.Delay = "30d", "30d" }),
		"two groups quorum = members": body(api.ActivitySign, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) {
			b.ApprovalGroups = append(b.ApprovalGroups, api.ApprovalGroup{Name: "ops", Members: []uint64{7}, Quorum: 1})
		}),
		"eight groups of 64":                   body(api.ActivitySign, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.ApprovalGroups = groups(MaxGroups, MaxGroupMembers, 1) }),
		"require_approval initiator can apprv": body(api.ActivityKeyDelete, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) { b.InitiatorCanApprove = true }),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if err := Validate(&b); err != nil {
				t.Fatalf("Validate refused a valid policy: %v", err)
			}
			if _, err := Compile(Record{ID: "pol_1", Body: b, Status: api.PolicyActive}); err != nil {
				t.Fatalf("Compile refused a valid policy: %v", err)
			}
		})
	}
}

// groups returns n groups of m distinct members each, with the given quorum.
func groups(n, m, quorum int) []api.ApprovalGroup {
	var gs []api.ApprovalGroup
	for i := range n {
		g := api.ApprovalGroup{Name: string(rune('a' + i)), Quorum: quorum}
		for j := range m {
			g.Members = append(g.Members, uint64(i*1000+j+1))
		}
		gs = append(gs, g)
	}
	return gs
}

func TestValidateRefuses(t *testing.T) {
	sign := func(r api.PolicyRule, mut ...func(*api.PolicyBody)) api.PolicyBody {
		return body(api.ActivitySign, r, api.ActionBlock, mut...)
	}
	approval := func(mut func(*api.PolicyBody)) api.PolicyBody {
		return body(api.ActivitySign, rAlways, api.ActionRequireApproval, mut)
	}
	filters := func(activity string, f api.PolicyFilters) api.PolicyBody {
		return body(activity, rAlways, api.ActionBlock, func(b *api.PolicyBody) { b.Filters = &f })
	}
	tw := func(mut func(*api.PolicyRule)) api.PolicyBody {
		r := rTime
		r.Days = []string{"mon"}
		mut(&r)
		return sign(r)
	}
	many := func(n int, s string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = s + strings.Repeat("x", i%5) + string(rune('a'+i%26))
		}
		return out
	}
	cases := []struct {
		name  string
		body  api.PolicyBody
		field string
	}{
		// name
		{"name empty", sign(rAlways, func(b *api.PolicyBody) { b.Name = "" }), "name"},
		{"name too long", sign(rAlways, func(b *api.PolicyBody) { b.Name = strings.Repeat("x", MaxNameLen+1) }), "name"},
		{"name not UTF-8", sign(rAlways, func(b *api.PolicyBody) { b.Name = "a\xffb" }), "name"},
		// activity
		{"activity unknown", sign(rAlways, func(b *api.PolicyBody) { b.Activity = "transfer" }), "activity"},
		{"activity empty", sign(rAlways, func(b *api.PolicyBody) { b.Activity = "" }), "activity"},
		{"activity wrong case", sign(rAlways, func(b *api.PolicyBody) { b.Activity = "Sign" }), "activity"},
		// rule.kind
		{"rule kind unknown", sign(api.PolicyRule{Kind: "amount_cap"}), "rule.kind"},
		{"rule kind empty", sign(api.PolicyRule{}), "rule.kind"},
		{"amount_limit on keygen", body(api.ActivityKeygen, rAmount, api.ActionBlock), "rule.kind"},
		{"amount_velocity on key.delete", body(api.ActivityKeyDelete, rAmountVel, api.ActionBlock), "rule.kind"},
		{"recipient_allowlist on access.grant", body(api.ActivityAccessGrant, rAllowlist, api.ActionBlock), "rule.kind"},
		{"amount_limit on policy.modify", body(api.ActivityPolicyModify, rAmount, api.ActionBlock), "rule.kind"},
		{"recipient_allowlist on member.change", body(api.ActivityMemberChange, rAllowlist, api.ActionBlock), "rule.kind"},
		// fields of another kind
		{"max_count on amount_limit", sign(api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1), MaxCount: i64(1)}), "rule.max_count"},
		{"max_sats on count_velocity", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(1), MaxSats: i64(1)}), "rule.max_sats"},
		{"window on amount_limit", sign(api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(1), Window: "1h"}), "rule.window"},
		{"addresses on always", sign(api.PolicyRule{Kind: api.RuleAlways, Addresses: []string{"bc1qa"}}), "rule.addresses"},
		{"days on always", sign(api.PolicyRule{Kind: api.RuleAlways, Days: []string{"mon"}}), "rule.days"},
		{"from on amount_velocity", sign(api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "1h", MaxSats: i64(1), From: "09:00"}), "rule.from"},
		{"to on recipient_allowlist", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{"a"}, To: "09:00"}), "rule.to"},
		{"tz on always", sign(api.PolicyRule{Kind: api.RuleAlways, TZ: "UTC"}), "rule.tz"},
		// missing required fields
		{"amount_limit without max_sats", sign(api.PolicyRule{Kind: api.RuleAmountLimit}), "rule.max_sats"},
		{"amount_velocity without window", sign(api.PolicyRule{Kind: api.RuleAmountVelocity, MaxSats: i64(1)}), "rule.window"},
		{"amount_velocity without max_sats", sign(api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "1h"}), "rule.max_sats"},
		{"count_velocity without max_count", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h"}), "rule.max_count"},
		{"count_velocity without window", sign(api.PolicyRule{Kind: api.RuleCountVelocity, MaxCount: i64(1)}), "rule.window"},
		{"recipient_allowlist without addresses", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist}), "rule.addresses"},
		{"time_window without days", tw(func(r *api.PolicyRule) { r.Days = nil }), "rule.days"},
		{"time_window without from", tw(func(r *api.PolicyRule) { r.From = "" }), "rule.from"},
		{"time_window without to", tw(func(r *api.PolicyRule) { r.To = "" }), "rule.to"},
		// numbers
		{"max_sats negative", sign(api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(-1)}), "rule.max_sats"},
		{"max_sats above 21e14", sign(api.PolicyRule{Kind: api.RuleAmountLimit, MaxSats: i64(21_000_000*100_000_000 + 1)}), "rule.max_sats"},
		{"velocity max_sats negative", sign(api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "1h", MaxSats: i64(-5)}), "rule.max_sats"},
		{"max_count negative", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(-1)}), "rule.max_count"},
		{"max_count too large", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(1_000_001)}), "rule.max_count"},
		// window
		{"window 0s", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "0s", MaxCount: i64(1)}), "rule.window"},
		{"window below 1s", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "999ms", MaxCount: i64(1)}), "rule.window"},
		{"window negative", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "-1h", MaxCount: i64(1)}), "rule.window"},
		{"window 367d", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "367d", MaxCount: i64(1)}), "rule.window"},
		{"window 8785h", sign(api.PolicyRule{Kind: api.RuleAmountVelocity, Window: "8785h", MaxSats: i64(1)}), "rule.window"},
		{"window 1000d", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1000d", MaxCount: i64(1)}), "rule.window"},
		{"window unparsable", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "a day", MaxCount: i64(1)}), "rule.window"},
		{"window 1.5d", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "1.5d", MaxCount: i64(1)}), "rule.window"},
		{"window no unit", sign(api.PolicyRule{Kind: api.RuleCountVelocity, Window: "3600", MaxCount: i64(1)}), "rule.window"},
		// addresses
		{"addresses empty", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{}}), "rule.addresses"},
		{"addresses too many", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: many(MaxAddresses+1, "bc1q")}), "rule.addresses"},
		{"address empty", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{""}}), "rule.addresses[0]"},
		{"address with spaces", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{"bc1qa", " bc1qb"}}), "rule.addresses[1]"},
		{"address too long", sign(api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{"a", "b", strings.Repeat("c", 129)}}), "rule.addresses[2]"},
		// time_window
		{"days empty", tw(func(r *api.PolicyRule) { r.Days = []string{} }), "rule.days"},
		{"day unknown", tw(func(r *api.PolicyRule) { r.Days = []string{"mon", "monday"} }), "rule.days"},
		{"day empty", tw(func(r *api.PolicyRule) { r.Days = []string{""} }), "rule.days"},
		{"from H:MM", tw(func(r *api.PolicyRule) { r.From = "9:00" }), "rule.from"},
		{"from 24:00", tw(func(r *api.PolicyRule) { r.From = "24:00" }), "rule.from"},
		{"from with seconds", tw(func(r *api.PolicyRule) { r.From = "09:00:00" }), "rule.from"},
		{"to 12:60", tw(func(r *api.PolicyRule) { r.To = "12:60" }), "rule.to"},
		{"to 5pm", tw(func(r *api.PolicyRule) { r.To = "5pm" }), "rule.to"},
		{"from == to", tw(func(r *api.PolicyRule) { r.From, r.To = "10:00", "10:00" }), "rule.to"},
		{"tz zone name", tw(func(r *api.PolicyRule) { r.TZ = "Europe/Berlin" }), "rule.tz"},
		{"tz abbreviation", tw(func(r *api.PolicyRule) { r.TZ = "CET" }), "rule.tz"},
		{"tz Local", tw(func(r *api.PolicyRule) { r.TZ = "Local" }), "rule.tz"},
		{"tz lower-case utc", tw(func(r *api.PolicyRule) { r.TZ = "utc" }), "rule.tz"},
		{"tz +2:00", tw(func(r *api.PolicyRule) { r.TZ = "+2:00" }), "rule.tz"},
		{"tz +0200", tw(func(r *api.PolicyRule) { r.TZ = "+0200" }), "rule.tz"},
		{"tz without sign", tw(func(r *api.PolicyRule) { r.TZ = "02:00" }), "rule.tz"},
		{"tz +24:00", tw(func(r *api.PolicyRule) { r.TZ = "+24:00" }), "rule.tz"},
		{"tz +01:60", tw(func(r *api.PolicyRule) { r.TZ = "+01:60" }), "rule.tz"},
		// filters
		{"key_ids on policy.modify", filters(api.ActivityPolicyModify, api.PolicyFilters{KeyIDs: []string{"key_1"}}), "filters.key_ids"},
		{"users on policy.modify", filters(api.ActivityPolicyModify, api.PolicyFilters{Users: []uint64{1}}), "filters.users"},
		{"labels on member.change", filters(api.ActivityMemberChange, api.PolicyFilters{Labels: []string{"hot"}}), "filters.labels"},
		{"key_ids on keygen", filters(api.ActivityKeygen, api.PolicyFilters{KeyIDs: []string{"key_1"}}), "filters.key_ids"},
		{"access_keys on keygen", filters(api.ActivityKeygen, api.PolicyFilters{AccessKeys: []string{"ak_1"}}), "filters.access_keys"},
		{"labels on access.grant", filters(api.ActivityAccessGrant, api.PolicyFilters{Labels: []string{"hot"}}), "filters.labels"},
		{"access_keys on access.grant", filters(api.ActivityAccessGrant, api.PolicyFilters{AccessKeys: []string{"ak_1"}}), "filters.access_keys"},
		{"user id 0", filters(api.ActivitySign, api.PolicyFilters{Users: []uint64{3, 0}}), "filters.users"},
		{"too many key_ids", filters(api.ActivitySign, api.PolicyFilters{KeyIDs: many(MaxFilterItems+1, "key_")}), "filters.key_ids"},
		{"too many users", filters(api.ActivitySign, api.PolicyFilters{Users: make([]uint64, MaxFilterItems+1)}), "filters.users"},
		{"empty key id", filters(api.ActivitySign, api.PolicyFilters{KeyIDs: []string{""}}), "filters.key_ids[0]"},
		{"empty label", filters(api.ActivitySign, api.PolicyFilters{KeyIDs: []string{"key_1"}, Labels: []string{"hot", ""}}), "filters.labels[1]"},
		{"access key too long", filters(api.ActivitySign, api.PolicyFilters{AccessKeys: []string{strings.Repeat("a", 129)}}), "filters.access_keys[0]"},
		{"label not UTF-8", filters(api.ActivityKeygen, api.PolicyFilters{Labels: []string{"\xff"}}), "filters.labels[0]"},
		// action
		{"action empty", sign(rAlways, func(b *api.PolicyBody) { b.Action = "" }), "action"},
		{"action unknown", sign(rAlways, func(b *api.PolicyBody) { b.Action = "deny" }), "action"},
		{"block with approval_groups", sign(rAlways, func(b *api.PolicyBody) { b.ApprovalGroups = group }), "approval_groups"},
		{"allow with approval_groups", body(api.ActivitySign, rAlways, api.ActionAllow, func(b *api.PolicyBody) { b.ApprovalGroups = group }), "approval_groups"},
		{"block with approval_timeout", sign(rAlways, func(b *api.PolicyBody) { b.ApprovalTimeout = "1h" }), "approval_timeout"},
		{"allow with delay", body(api.ActivitySign, rAlways, api.ActionAllow, func(b *api.PolicyBody) { b.Delay = "1h" }), "delay"},
		{"block with initiator_can_approve", sign(rAlways, func(b *api.PolicyBody) { b.InitiatorCanApprove = true }), "initiator_can_approve"},
		// approval groups
		{"require_approval without groups", approval(func(b *api.PolicyBody) { b.ApprovalGroups = nil }), "approval_groups"},
		{"require_approval with empty groups", approval(func(b *api.PolicyBody) { b.ApprovalGroups = []api.ApprovalGroup{} }), "approval_groups"},
		{"too many groups", approval(func(b *api.PolicyBody) { b.ApprovalGroups = groups(MaxGroups+1, 1, 1) }), "approval_groups"},
		{"group name empty", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Name = "" }), "approval_groups[0].name"},
		{"group name too long", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Name = strings.Repeat("g", MaxNameLen+1) }), "approval_groups[0].name"},
		{"duplicate group names", approval(func(b *api.PolicyBody) {
			b.ApprovalGroups = append(b.ApprovalGroups, api.ApprovalGroup{Name: "treasury", Members: []uint64{9}, Quorum: 1})
		}), "approval_groups[1].name"},
		{"group without members", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Members = nil; b.ApprovalGroups[0].Quorum = 0 }), "approval_groups[0].members"},
		{"group with too many members", approval(func(b *api.PolicyBody) { b.ApprovalGroups = groups(1, MaxGroupMembers+1, 1) }), "approval_groups[0].members"},
		{"duplicate member", approval(func(b *api.PolicyBody) {
			b.ApprovalGroups = append(b.ApprovalGroups, api.ApprovalGroup{Name: "ops", Members: []uint64{7, 8, 7}, Quorum: 1})
		}), "approval_groups[1].members"},
		{"member 0", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Members = []uint64{4, 0} }), "approval_groups[0].members"},
		{"quorum 0", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Quorum = 0 }), "approval_groups[0].quorum"},
		{"quorum negative", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Quorum = -1 }), "approval_groups[0].quorum"},
		{"quorum above members", approval(func(b *api.PolicyBody) { b.ApprovalGroups[0].Quorum = 4 }), "approval_groups[0].quorum"},
		// approval_timeout and delay
		{"approval_timeout below 1m", approval(func(b *api.PolicyBody) { b.ApprovalTimeout = "59s" }), "approval_timeout"},
		{"approval_timeout 0s", approval(func(b *api.PolicyBody) { b.ApprovalTimeout = "0s" }), "approval_timeout"},
		{"approval_timeout above 30d", approval(func(b *api.PolicyBody) { b.ApprovalTimeout = "31d" }), "approval_timeout"},
		{"approval_timeout 721h", approval(func(b *api.PolicyBody) { b.ApprovalTimeout = "721h" }), "approval_timeout"},
		{"approval_timeout unparsable", approval(func(b *api.PolicyBody) { b.ApprovalTimeout = "tomorrow" }), "approval_timeout"},
		{"delay negative", approval(func(b *api.PolicyBody) { b.Delay = "-1s" }), "delay"},
		{"delay above 30d", approval(func(b *api.PolicyBody) { b.Delay = "720h1s" }), "delay"},
		{"delay 31d", approval(func(b *api.PolicyBody) { b.Delay = "31d" }), "delay"},
		{"delay unparsable", approval(func(b *api.PolicyBody) { b.Delay = "1 hour" }), "delay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.body
			err := Validate(&b)
			if err == nil {
				t.Fatalf("Validate accepted it; want a refusal of %s", c.field)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Validate returned %T (%v), want *Error", err, err)
			}
			if pe.Field != c.field {
				t.Fatalf("Field = %q (%v), want %q", pe.Field, err, c.field)
			}
			if pe.Detail == "" || !strings.HasPrefix(err.Error(), c.field+": ") {
				t.Fatalf("Error() = %q: want the field and a detail", err.Error())
			}
			// Compile refuses what Validate refuses, with the same error.
			if _, cerr := Compile(Record{ID: "pol_x", Body: c.body}); cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("Compile: %v, want %v", cerr, err)
			}
		})
	}
}

func TestValidateDoesNotChangeBody(t *testing.T) {
	b := body(api.ActivitySign, api.PolicyRule{Kind: api.RuleRecipientAllowlist, Addresses: []string{"c", "a", "b"}}, api.ActionBlock)
	if err := Validate(&b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.Rule.Addresses, ","); got != "c,a,b" {
		t.Fatalf("Validate reordered the admin's addresses: %s", got)
	}
}

func TestCompileDurations(t *testing.T) {
	cases := []struct {
		name             string
		action, ttl, dly string
		wantTTL, wantDly time.Duration
	}{
		{"block defaults", api.ActionBlock, "", "", DefaultApprovalTTL, 0},
		{"require_approval defaults", api.ActionRequireApproval, "", "", DefaultApprovalTTL, 0},
		{"days", api.ActionRequireApproval, "2d", "1d", 48 * time.Hour, 24 * time.Hour},
		{"go durations", api.ActionRequireApproval, "90m", "1h30m", 90 * time.Minute, 90 * time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Compile(Record{ID: "pol_1", Body: body(api.ActivitySign, rCountVel, c.action, func(b *api.PolicyBody) {
				b.ApprovalTimeout, b.Delay = c.ttl, c.dly
			})})
			if err != nil {
				t.Fatal(err)
			}
			if p.TimeoutMs != c.wantTTL.Milliseconds() || p.DelayMs != c.wantDly.Milliseconds() {
				t.Fatalf("TimeoutMs, DelayMs = %d, %d; want %d, %d", p.TimeoutMs, p.DelayMs, c.wantTTL.Milliseconds(), c.wantDly.Milliseconds())
			}
			if p.rule.windowMs != time.Hour.Milliseconds() || p.rule.maxCount != 10 {
				t.Fatalf("rule compiled to %+v", p.rule)
			}
			if c.action == api.ActionRequireApproval && len(p.Groups()) != 1 {
				t.Fatalf("Groups() = %v", p.Groups())
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	ok := map[string]time.Duration{
		"0s": 0, "90m": 90 * time.Minute, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour,
		"0d": 0, "366d": 366 * 24 * time.Hour, "1h30m": 90 * time.Minute,
	}
	for s, want := range ok {
		if got, err := ParseDuration(s); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "7", "1.5d", "1000d", "-1d", "7 d", "1w", "1d12h"} {
		if d, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", s, d)
		}
	}
}

func TestView(t *testing.T) {
	r := Record{ID: "pol_1", Body: body(api.ActivitySign, rAlways, api.ActionBlock), Status: api.PolicyActive, Version: 2,
		CreatedAt: 1_700_000_000_123, UpdatedAt: 1_700_000_100_999}
	v := r.View()
	if v.PolicyID != "pol_1" || v.Name != "p" || v.Activity != api.ActivitySign || v.Action != api.ActionBlock || v.Status != api.PolicyActive || v.Version != 2 {
		t.Fatalf("View() = %+v", v)
	}
	if v.ApprovalGroups == nil || len(v.ApprovalGroups) != 0 || v.ApprovalTimeout != "24h" || v.Delay != "0s" {
		t.Fatalf("View() defaults: groups %v, timeout %q, delay %q", v.ApprovalGroups, v.ApprovalTimeout, v.Delay)
	}
	if !v.CreatedAt.Equal(time.Unix(1_700_000_000, 0)) || !v.UpdatedAt.Equal(time.Unix(1_700_000_100, 0)) || v.CreatedAt.Location() != time.UTC {
		t.Fatalf("View() times: %v, %v", v.CreatedAt, v.UpdatedAt)
	}
	r.Body = body(api.ActivitySign, rAlways, api.ActionRequireApproval, func(b *api.PolicyBody) {
		b.Filters = &api.PolicyFilters{KeyIDs: []string{"key_1"}}
		b.ApprovalTimeout, b.Delay = "1h", "5m"
	})
	v = r.View()
	if len(v.Filters.KeyIDs) != 1 || len(v.ApprovalGroups) != 1 || v.ApprovalTimeout != "1h" || v.Delay != "5m" {
		t.Fatalf("View() = %+v", v)
	}
}
