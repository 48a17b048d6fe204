package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos/custos/internal/state"
)

func TestClockBoundBelowStampSkew(t *testing.T) {
	// A leader must be found off, and replaced, well before followers refuse its stamps;
	// and the measurement's error (half the round trip) must stay well inside the bound.
	if clockBound >= state.MaxStampSkew/2 {
		t.Fatalf("clockBound %v is not well below state.MaxStampSkew %v", clockBound, state.MaxStampSkew)
	}
	if clockProbeTimeout/2 >= clockBound/4 {
		t.Fatalf("measurement error up to %v is too large for the bound %v", clockProbeTimeout/2, clockBound)
	}
}

func TestClockJudge(t *testing.T) {
	s := time.Second
	const b = 10 * time.Second
	tests := []struct {
		name      string
		voters    int
		peers     []time.Duration // other voters that answered: their clock minus ours
		verdict   clockVerdict
		confirmed bool
		lead      time.Duration
	}{
		{"all in step", 3, []time.Duration{0, 0}, clockAgree, false, 0},
		{"small drift", 3, []time.Duration{-9 * s, 9 * s}, clockAgree, false, 0},
		{"exactly the bound is within", 3, []time.Duration{-b, -b}, clockAgree, false, b},
		{"leader 2 min ahead of both followers", 3, []time.Duration{-120 * s, -120 * s}, clockAhead, true, 120 * s},
		{"leader 11 s ahead of both", 3, []time.Duration{-11 * s, -11 * s}, clockAhead, true, 11 * s},
		{"one follower behind, the other agrees", 3, []time.Duration{-120 * s, 0}, clockAgree, false, 0},
		{"one follower ahead, the other agrees", 3, []time.Duration{120 * s, 0}, clockAgree, false, 0},
		{"leader behind both", 3, []time.Duration{120 * s, 120 * s}, clockBehind, true, -120 * s},
		{"only this node answered", 3, nil, clockNoEvidence, false, 0},
		{"one follower in step, the other unreachable", 3, []time.Duration{time.Second}, clockAgree, false, 0},
		// Bare majority, one against one: nobody can tell which clock is wrong; the one
		// ahead stops stamping (a stamp ahead is inherited, one behind is not).
		{"bare majority, the only follower behind", 3, []time.Duration{-120 * s}, clockAhead, false, 120 * s},
		{"bare majority, the only follower ahead", 3, []time.Duration{120 * s}, clockNoEvidence, false, 0},
		// The three clocks all apart: the middle one is ahead of one voter and vouched
		// for by none.
		{"middle of three clocks all apart", 3, []time.Duration{-120 * s, 120 * s}, clockAhead, false, 0},
		{"five voters, three behind", 5, []time.Duration{-60 * s, -60 * s, -60 * s, 0}, clockAhead, true, 60 * s},
		{"five voters, two behind, two agree", 5, []time.Duration{-60 * s, -60 * s, 0, 1 * s}, clockAgree, false, 0},
		{"five voters, two behind, rest unreachable", 5, []time.Duration{-60 * s, -60 * s}, clockAhead, false, 60 * s},
		{"five voters, one agrees, rest unreachable", 5, []time.Duration{0}, clockNoEvidence, false, 0},
		{"single voter", 1, nil, clockAgree, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := judgeClock(tc.voters, tc.peers, b)
			if j.Verdict != tc.verdict || j.Confirmed != tc.confirmed || j.Lead != tc.lead || j.Answers != len(tc.peers)+1 {
				t.Fatalf("judgeClock(%d, %v) = %+v, want verdict %v confirmed %v lead %v", tc.voters, tc.peers, j, tc.verdict, tc.confirmed, tc.lead)
			}
		})
	}
}

func TestClockJudgeDoesNotTouchInput(t *testing.T) {
	peers := []time.Duration{5 * time.Second, -120 * time.Second, 0}
	judgeClock(5, peers, clockBound)
	if peers[0] != 5*time.Second || peers[1] != -120*time.Second || peers[2] != 0 {
		t.Fatalf("input reordered: %v", peers)
	}
}

func TestClockFitAndDecided(t *testing.T) {
	tests := []struct {
		j               clockJudgement
		before, fit     bool
		decided         bool
		describeHasText string
	}{
		{clockJudgement{Verdict: clockAgree}, false, true, true, "in agreement"},
		{clockJudgement{Verdict: clockAhead, Confirmed: true, Lead: 2 * time.Minute}, true, false, true, "2m0s ahead of a majority"},
		{clockJudgement{Verdict: clockAhead, Lead: 2 * time.Minute}, true, false, false, "no majority vouches"},
		{clockJudgement{Verdict: clockBehind, Confirmed: true, Lead: -time.Minute}, true, false, true, "1m0s behind"},
		{clockJudgement{Verdict: clockNoEvidence}, true, true, false, "in agreement"},
		{clockJudgement{Verdict: clockNoEvidence}, false, false, false, "in agreement"},
	}
	for _, tc := range tests {
		if got := tc.j.fit(tc.before); got != tc.fit {
			t.Errorf("%+v.fit(%v) = %v", tc.j, tc.before, got)
		}
		if got := tc.j.decided(); got != tc.decided {
			t.Errorf("%+v.decided() = %v", tc.j, got)
		}
		if d := describeClock(tc.j); !strings.Contains(d, tc.describeHasText) {
			t.Errorf("describeClock(%+v) = %q, want %q in it", tc.j, d, tc.describeHasText)
		}
	}
}

func TestClockEstimateOffset(t *testing.T) {
	sent := time.UnixMilli(1_700_000_000_000)
	tests := []struct {
		rtt    time.Duration
		theirs time.Time
		want   time.Duration
	}{
		{0, sent, 0},
		{100 * time.Millisecond, sent.Add(50 * time.Millisecond), 0},
		{100 * time.Millisecond, sent.Add(-2 * time.Minute).Add(50 * time.Millisecond), -2 * time.Minute},
		{2 * time.Second, sent.Add(time.Minute), time.Minute - time.Second},
	}
	for _, tc := range tests {
		if got := estimateOffset(sent, tc.rtt, tc.theirs); got != tc.want {
			t.Errorf("estimateOffset(rtt %v, theirs %v) = %v, want %v", tc.rtt, tc.theirs.Sub(sent), got, tc.want)
		}
	}
}

func TestClockTransferTarget(t *testing.T) {
	s := time.Second
	a := func(id string, off time.Duration) clockAnswer {
		return clockAnswer{ID: raft.ServerID(id), Addr: raft.ServerAddress("peer-" + id), Offset: off}
	}
	tests := []struct {
		name    string
		answers []clockAnswer
		want    string
	}{
		{"none", nil, ""},
		{"one", []clockAnswer{a("n2", -120*s)}, "n2"},
		{"both behind: the median", []clockAnswer{a("n2", -121*s), a("n3", -120*s)}, "n3"},
		{"one behind, one in step: the median is the one in step", []clockAnswer{a("n2", -120*s), a("n3", -1*s)}, "n3"},
		{"five: not the other fast clock", []clockAnswer{a("n2", 0), a("n3", -60*s), a("n4", -61*s), a("n5", -59*s)}, "n5"},
		{"even count: the lower median", []clockAnswer{a("n2", -50*s), a("n3", -70*s), a("n4", -60*s)}, "n4"},
		{"tie on distance: the slower clock", []clockAnswer{a("n2", 10*s), a("n3", -10*s)}, "n3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := transferTarget(tc.answers)
			if ok != (tc.want != "") || string(got.ID) != tc.want {
				t.Fatalf("transferTarget = %q (%v), want %q", got.ID, ok, tc.want)
			}
			if ok && got.Addr != raft.ServerAddress("peer-"+tc.want) {
				t.Fatalf("address %q", got.Addr)
			}
		})
	}
}

func TestClockOffsetOfShiftedClock(t *testing.T) {
	// This node runs 2 minutes ahead; the peer answers the real time after 40 ms.
	fast := &Node{nowFn: func() time.Time { return time.Now().Add(2 * time.Minute) }}
	honest := &Node{}
	start := time.Now()
	off, err := fast.offsetOf(func() ([]byte, error) {
		time.Sleep(20 * time.Millisecond)
		out, err := honest.handleClock(context.Background(), "", nil)
		time.Sleep(20 * time.Millisecond)
		return out, err
	})
	// The RTT midpoint is off by at most half the round trip (on a loaded machine the
	// two sleeps may differ by more than their nominal lengths), plus a millisecond of
	// the answer's resolution.
	tolerance := time.Since(start)/2 + time.Millisecond
	if err != nil {
		t.Fatal(err)
	}
	if d := off + 2*time.Minute; d < -tolerance || d > tolerance {
		t.Fatalf("offset %v, want -2m0s within %v (the RTT midpoint's error)", off, tolerance)
	}
	// And the other way round.
	start = time.Now()
	if off, err = honest.offsetOf(func() ([]byte, error) { return fast.handleClock(context.Background(), "", nil) }); err != nil {
		t.Fatal(err)
	}
	tolerance = time.Since(start)/2 + time.Millisecond
	if d := off - 2*time.Minute; d < -tolerance || d > tolerance {
		t.Fatalf("offset %v, want 2m0s within %v", off, tolerance)
	}
	for _, bad := range []string{`{}`, `nope`, `{"unix_ms":-5}`} {
		if _, err := honest.offsetOf(func() ([]byte, error) { return []byte(bad), nil }); err == nil {
			t.Fatalf("answer %q accepted", bad)
		}
	}
	if _, err := honest.offsetOf(func() ([]byte, error) { return nil, errors.New("unknown method") }); err == nil {
		t.Fatal("failed call counted")
	}
}

func TestClockRPCAnswersShiftedTime(t *testing.T) {
	n := &Node{nowFn: func() time.Time { return time.Now().Add(2 * time.Minute) }}
	before := time.Now().Add(2 * time.Minute).UnixMilli()
	out, err := n.handleClock(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(2 * time.Minute).UnixMilli()
	var r clockReply
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	if r.UnixMS < before || r.UnixMS > after {
		t.Fatalf("clock answer %d outside [%d, %d]", r.UnixMS, before, after)
	}
	if _, err := n.handleClock(context.Background(), "", make([]byte, maxClockRequest+1)); err == nil {
		t.Fatal("oversized clock request accepted")
	}
}

func TestClockGuardAndReadiness(t *testing.T) {
	// Without a clock check (a Node built by a test), nothing is refused.
	if (&Node{}).clockNotReady() != nil {
		t.Fatal("reason without a clock check")
	}
	n := &Node{clock: newClockCheck(prometheus.NewRegistry())}
	if r := n.clockNotReady(); r != nil {
		t.Fatalf("fit node not ready: %v", r)
	}
	n.clock.fit = false
	n.clock.last = clockJudgement{Verdict: clockAhead, Confirmed: true, Lead: 2 * time.Minute}
	r := n.clockNotReady()
	if len(r) != 1 || !strings.Contains(r[0], "2m0s ahead") || !strings.Contains(r[0], "fix NTP on this host") {
		t.Fatalf("reasons %v", r)
	}
	// stampGuard's decision: refusals are ErrUnavailable, so that callers retry.
	if err := stampRefusal(true, true, clockJudgement{}); err != nil {
		t.Fatalf("fit and checked: %v", err)
	}
	for _, err := range []error{stampRefusal(true, false, clockJudgement{}), stampRefusal(false, true, n.clock.last), stampRefusal(false, false, n.clock.last)} {
		if err == nil || !errors.Is(err, ErrUnavailable) || !retryable(err) {
			t.Fatalf("refusal %v is not a retryable ErrUnavailable", err)
		}
	}
	if err := stampRefusal(false, true, n.clock.last); !strings.Contains(err.Error(), "2m0s ahead") {
		t.Fatalf("refusal %q does not say why", err)
	}
}
