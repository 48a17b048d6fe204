package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
)

// fixedLedger answers the same history for every policy.
type fixedLedger struct{ sats, count int64 }

func (l fixedLedger) Since(string, int64) (int64, int64) { return l.sats, l.count }

// benchSet is 1000 active sign policies of every rule kind: 950 filtered to other keys,
// labels, users or access keys, and 50 in the scope of benchRequest (10 of them velocity
// rules).
func benchSet(b *testing.B) *Set {
	b.Helper()
	addrs := make([]string, 20)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("bc1qallowed%02d", i)
	}
	rules := []api.PolicyRule{
		{Kind: api.RuleAlways},
		{Kind: api.RuleAmountLimit, MaxSats: i64(1_000_000)},
		{Kind: api.RuleRecipientAllowlist, Addresses: addrs},
		{Kind: api.RuleTimeWindow, Days: []string{"mon", "tue", "wed", "thu", "fri"}, From: "09:00", To: "17:00", TZ: "+02:00"},
		{Kind: api.RuleAmountVelocity, Window: "24h", MaxSats: i64(10_000_000)},
		{Kind: api.RuleCountVelocity, Window: "1h", MaxCount: i64(100)},
	}
	actions := []string{api.ActionAllow, api.ActionRequireApproval, api.ActionBlock}
	others := func(prefix string, i int) []string {
		return []string{fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("%s%d", prefix, i+1), fmt.Sprintf("%s%d", prefix, i+2)}
	}
	var ps []*Policy
	for i := range 1000 {
		var r api.PolicyRule
		var f *api.PolicyFilters
		if i%20 == 0 { // in scope
			j := i / 20
			switch j % 10 {
			case 3:
				r = rules[5]
			case 7:
				r = rules[4]
			default:
				r = rules[j%4]
			}
			switch j % 5 {
			case 0:
				f = nil
			case 1:
				f = &api.PolicyFilters{KeyIDs: append(others("key_", i), "key_target")}
			case 2:
				f = &api.PolicyFilters{Users: []uint64{1, 2, 7}}
			case 3:
				f = &api.PolicyFilters{Labels: []string{"hot"}, AccessKeys: []string{"ak_target"}}
			case 4:
				f = &api.PolicyFilters{KeyIDs: []string{"key_target"}, Users: []uint64{7}}
			}
		} else { // filtered to others
			r = rules[i%len(rules)]
			switch i % 4 {
			case 0:
				f = &api.PolicyFilters{KeyIDs: others("key_", i)}
			case 1:
				f = &api.PolicyFilters{Users: []uint64{uint64(100 + i), uint64(200 + i)}}
			case 2:
				f = &api.PolicyFilters{Labels: []string{"cold"}}
			case 3:
				f = &api.PolicyFilters{KeyIDs: []string{"key_target"}, AccessKeys: others("ak_", i)}
			}
		}
		pb := body(api.ActivitySign, r, actions[i%len(actions)], func(pb *api.PolicyBody) {
			pb.Name = fmt.Sprintf("policy %d", i)
			pb.Filters = f
		})
		ps = append(ps, pol(b, fmt.Sprintf("pol_%04d", i), pb))
	}
	return NewSet(ps...)
}

func benchRequest() *Request {
	return &Request{
		Activity: api.ActivitySign, UserID: 7, AccessKeyID: "ak_target", KeyID: "key_target", KeyLabel: "hot",
		Amount: i64(150_000),
		Outputs: []api.Output{
			{Address: "bc1qallowed03", AmountSats: 100_000},
			{Address: "bc1qelsewhere", AmountSats: 49_000},
			{Address: "bc1qchange", AmountSats: 800_000, Change: true},
		},
		StampMs: time.Date(2024, time.June, 4, 10, 30, 0, 0, time.UTC).UnixMilli(),
	}
}

func BenchmarkEvaluate1000(b *testing.B) {
	s := benchSet(b)
	req := benchRequest()
	l := fixedLedger{sats: 2_000_000, count: 42}
	res := s.Evaluate(req, l)
	if s.Len() != 1000 || len(res.Counted) != 10 || len(res.Matched) == 0 {
		b.Fatalf("unexpected set: %d policies, %d counted, %d matched", s.Len(), len(res.Counted), len(res.Matched))
	}
	b.ReportAllocs()
	for b.Loop() {
		res = s.Evaluate(req, l)
	}
	_ = res
}
