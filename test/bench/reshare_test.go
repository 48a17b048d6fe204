//go:build linux

package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
)

func parse(t *testing.T, args ...string) *options {
	t.Helper()
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	return o
}

// TestReshareFlags checks the two reshare cells' flags: defaults, the cell names they
// give, and the values refused.
func TestReshareFlags(t *testing.T) {
	o := parse(t)
	if !o.reshare || o.reshareSamples != 3 || !o.member || o.memberKeys != 100 || o.memberCurve != curveEd25519 {
		t.Fatalf("defaults: reshare %v samples %d member %v keys %d curve %q", o.reshare, o.reshareSamples, o.member, o.memberKeys, o.memberCurve)
	}
	if got := memberCellName(o); got != "reshare_100_to_new_member" {
		t.Fatalf("member cell name %q", got)
	}
	o = parse(t, "-reshare=false", "-reshare-samples", "7", "-member=false", "-member-keys", "20", "-member-curve", "secp256k1")
	if o.reshare || o.reshareSamples != 7 || o.member || o.memberKeys != 20 || o.memberCurve != curveSecp256k1 || memberCellName(o) != "reshare_20_to_new_member" {
		t.Fatalf("set: %+v", o)
	}
	for _, bad := range [][]string{
		{"-reshare-samples", "0"},
		{"-reshare-samples", "10001"},
		{"-member-keys", "0"},
		{"-member-keys", "1001"},
		{"-member-curve", "p256"},
		{"-member-curve", ""},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	var usage bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &usage); err == nil {
		t.Fatal("-h: no ErrHelp")
	}
	for _, want := range []string{"-reshare-samples", "-member-keys", "-member-curve", "-only reshare runs only it", "-only reshare_"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

// TestOnlyReshare checks -only's selection around the two reshare cells: -only reshare
// runs the refresh cell and not the member cell, whose name it prefixes; the other
// prefixes keep working as prefixes.
func TestOnlyReshare(t *testing.T) {
	const member = "reshare_100_to_new_member"
	for _, tc := range []struct {
		only                 string
		reshare, mem, loop   bool
		sign, signThroughput bool
	}{
		{"", true, true, true, true, true},
		{"reshare", true, false, true, false, false},
		{"reshare_", false, true, false, false, false},
		{"reshare_100", false, true, false, false, false},
		{member, false, true, false, false, false},
		{"reshare," + member, true, true, true, false, false},
		{"resh", true, true, true, false, false},
		{"ecdsa_sign", false, false, true, true, true},
		{"psbt", false, false, true, false, false},
		{"nothing", false, false, false, false, false},
	} {
		o := parse(t, "-only", tc.only)
		got := []bool{o.selected(reshareCellName), o.selected(member), o.runsLoopback(), o.selected("ecdsa_sign"), o.selected(throughputCellName(16))}
		want := []bool{tc.reshare, tc.mem, tc.loop, tc.sign, tc.signThroughput}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("-only %q: selected reshare, member; loopback; ecdsa_sign, throughput = %v, want %v", tc.only, got, want)
				break
			}
		}
		if o.runsMember() != tc.mem {
			t.Errorf("-only %q: runsMember %v", tc.only, o.runsMember())
		}
	}
	// The skip flags win over -only, and -wan-only runs neither.
	if o := parse(t, "-only", "reshare", "-reshare=false"); o.runsLoopback() {
		t.Error("-reshare=false -only reshare runs the loopback")
	}
	if o := parse(t, "-only", "reshare_", "-member=false"); o.runsMember() {
		t.Error("-member=false -only reshare_ runs the member cell")
	}
	if o := parse(t, "-wan", "50ms", "-wan-only"); o.runsMember() || o.runsLoopback() {
		t.Error("-wan-only runs a loopback cell")
	}
}

// TestReshareCheck checks what the reshare cell accepts as a refresh's answer.
func TestReshareCheck(t *testing.T) {
	key := &client.Key{KeyID: "k", PublicKey: "02ab", Threshold: 2, Members: []string{"node1", "node2", "node3"}, Status: client.StatusActive}
	s := &reshareSide{key: key}
	answer := func(edit func(k *client.Key)) *client.Request {
		k := *key
		k.Members = []string{"node3", "node1", "node2"} // order does not matter
		k.Generation = s.gen + 1
		if edit != nil {
			edit(&k)
		}
		return &client.Request{RequestID: "r", Kind: "reshare", Status: client.StatusActive, Key: &k}
	}
	if err := s.check(answer(nil)); err != nil || s.gen != 1 {
		t.Fatalf("a good refresh: %v (generation %d)", err, s.gen)
	}
	if err := s.check(answer(nil)); err != nil || s.gen != 2 {
		t.Fatalf("a second refresh: %v (generation %d)", err, s.gen)
	}
	for name, r := range map[string]*client.Request{
		"failed":          {RequestID: "r", Status: client.StatusFailed, Error: &client.RequestError{Code: "x", Detail: "y"}},
		"no key":          {RequestID: "r", Status: client.StatusActive},
		"other key":       answer(func(k *client.Key) { k.PublicKey = "03cd" }),
		"other threshold": answer(func(k *client.Key) { k.Threshold = 3 }),
		"other members":   answer(func(k *client.Key) { k.Members = []string{"node1", "node2"} }),
		"same generation": answer(func(k *client.Key) { k.Generation = 2 }),
		"still resharing": answer(func(k *client.Key) { k.Resharing = "req_x" }),
	} {
		if err := s.check(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if s.gen != 2 {
		t.Fatalf("a refused answer moved the generation to %d", s.gen)
	}
}

func changeAt(status, phase string, done, total int) *client.Request {
	return &client.Request{RequestID: "req_1", Kind: "member.change", Status: status,
		Membership: &api.Membership{Change: "add", Member: "node4", Phase: phase, KeysDone: done, KeysTotal: total}}
}

// TestChangeTracker follows a synthetic membership change: the lines printed (only when
// something moved, or at the heartbeat), the joining phase's end, the figures.
func TestChangeTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tr := &changeTracker{name: "reshare_100_to_new_member", start: t0}
	steps := []struct {
		r     *client.Request
		s     float64
		print bool
	}{
		{changeAt("scheduled", "joining", 0, 0), 0.05, true},
		{changeAt("scheduled", "joining", 0, 0), 1, false},
		{changeAt("scheduled", "joining", 0, 0), 11, true}, // heartbeat
		{changeAt("scheduled", "resharing", 0, 100), 12, true},
		{changeAt("scheduled", "resharing", 40, 100), 13, true},
		{changeAt("scheduled", "resharing", 40, 100), 14, false},
		{changeAt("active", "resharing", 100, 100), 62, true},
	}
	var lines []string
	for _, st := range steps {
		line := tr.observe(st.r, at(st.s))
		if (line != "") != st.print {
			t.Fatalf("at %.2f s: line %q, want printed %v", st.s, line, st.print)
		}
		if line != "" {
			lines = append(lines, line)
		}
	}
	want := "reshare_100_to_new_member: req_1 scheduled, phase resharing, keys 40/100 reshared, 13.0 s elapsed"
	if lines[3] != want {
		t.Fatalf("line %q, want %q", lines[3], want)
	}
	if !tr.joinedAt.Equal(at(12)) {
		t.Fatalf("joined at %v", tr.joinedAt.Sub(t0))
	}
	var out memberReport
	tr.finish(&out, steps[len(steps)-1].r, at(62))
	if out.TotalS != 62 || out.JoiningS != 12 || out.ResharingS != 50 || out.KeysDone != 100 || out.KeysTotal != 100 ||
		out.KeysPerS != 2 || out.KeysPerSTotal != 1.61 || out.Polls != len(steps) || out.Status != "active" || out.RequestID != "req_1" {
		t.Fatalf("figures %+v", out)
	}

	// A change seen final while still joining (or without any membership) ends the
	// joining phase at the end.
	tr = &changeTracker{name: "x", start: t0}
	tr.observe(&client.Request{RequestID: "req_2", Status: "scheduled"}, at(1))
	if !tr.joinedAt.IsZero() {
		t.Fatal("no phase yet counted as joined")
	}
	tr.observe(changeAt("failed", "joining", 0, 0), at(5))
	out = memberReport{}
	tr.finish(&out, changeAt("failed", "joining", 0, 0), at(5))
	if out.JoiningS != 5 || out.ResharingS != 0 || out.KeysPerS != 0 {
		t.Fatalf("figures %+v", out)
	}
}

// TestMemberReportPrint checks the member cell's line: once, no baseline, the figures.
func TestMemberReportPrint(t *testing.T) {
	m := &memberReport{Name: "reshare_100_to_new_member", Curve: "ed25519", Keys: 100, Nodes: 3, Threshold: 2, NewMember: "node4",
		KeygenS: 31.25, RequestID: "req_1", Status: "active", TotalS: 62, JoiningS: 12, ResharingS: 50, KeysDone: 100, KeysTotal: 100,
		KeysPerS: 2, KeysPerSTotal: 1.61, KeysWithMember: 100, MemberActive: true, Completed: true}
	var b bytes.Buffer
	m.print(&b)
	want := "reshare_100_to_new_member (runs once, no baseline; -reps does not apply): 100 ed25519 keys 2-of-3, node4 added: " +
		"change active in 62.0 s (joining 12.0 s, resharing 50.0 s; polled every 1s), 100 of 100 keys reshared, 2.00 keys/s in the resharing phase (1.61 over the whole change); " +
		"every key's members include node4: yes (100 of 100); listed active: yes; completed: yes (keys created beforehand in 31.2 s, not counted)\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	m = &memberReport{Name: "reshare_5_to_new_member", Curve: "secp256k1", Keys: 5, Nodes: 3, Threshold: 2, Error: "create secp256k1 key 2 of 5: boom"}
	b.Reset()
	m.print(&b)
	for _, s := range []string{"5 secp256k1 keys 2-of-3, - added: the change did not end", "include -: NO (0 of 5)", "completed: NO", "reshare_5_to_new_member: error: create secp256k1 key 2 of 5: boom"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("%q lacks %q", b.String(), s)
		}
	}
}

// TestReshareReport checks the reshare cell's row and the member line in the table, and
// the report's fields and notes.
func TestReshareReport(t *testing.T) {
	o := parse(t, "-reps", "1", "-only", "reshare,reshare_")
	r := newReport(o)
	if r.ReshareSamples != 3 || r.MemberKeys != 100 || r.MemberCurve != "ed25519" {
		t.Fatalf("report fields: %d %d %q", r.ReshareSamples, r.MemberKeys, r.MemberCurve)
	}
	d := reshareCell(o, nil, &reshareSide{})
	r.addCell(d, side{P50ms: 4000, P95ms: 4200}, side{P50ms: 4600, P95ms: 5000})
	r.Member = &memberReport{Name: memberCellName(o), Curve: "ed25519", Keys: 100, Nodes: 3, Threshold: 2, NewMember: "node4", Status: "active", Completed: true, KeysWithMember: 100, MemberActive: true}
	r.finish(time.Now())
	var b bytes.Buffer
	r.printTable(&b)
	s := b.String()
	for _, want := range []string{
		"ECDSA reshare 2-of-3 → 2-of-3 (refresh)",
		"4000.0", "4600.0", "1.150", "<= 1.20", "yes",
		"ECDSA reshare 2-of-3 → 2-of-3 (refresh): baseline = protocol/baseline ReshareECDSA",
		"reshare_100_to_new_member (runs once, no baseline",
		"note: reshare_100_to_new_member runs once",
		"reshare cell: a reshare takes seconds per sample: 3 samples",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if len(r.Targets) != 1 || r.Targets[0].Name != "reshare.ratio_p50" || !r.Targets[0].Met {
		t.Fatalf("targets %+v", r.Targets)
	}
	if o := parse(t, "-only", "reshare"); newReport(o).MemberKeys != 0 {
		t.Fatal("-only reshare reports member keys")
	}
}

func TestMemberBudgets(t *testing.T) {
	c, ch := memberBudgets(curveEd25519, 100)
	if c != 2*time.Minute+200*time.Second || ch != memberJoinTimeout+500*time.Second {
		t.Fatalf("ed25519: %v %v", c, ch)
	}
	c, ch = memberBudgets(curveSecp256k1, 10)
	if c != 2*time.Minute+200*time.Second || ch != memberJoinTimeout+300*time.Second {
		t.Fatalf("secp256k1: %v %v", c, ch)
	}
}
