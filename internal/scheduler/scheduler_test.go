package scheduler

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
)

func TestChooseCommittee(t *testing.T) {
	all := []string{"n1", "n2", "n3", "n4", "n5"}
	up := func(down ...string) func(string) bool {
		return func(m string) bool { return !slices.Contains(down, m) }
	}
	keep := func([]string) {} // deterministic: no shuffling
	reverse := func(s []string) { slices.Reverse(s) }
	tests := []struct {
		name    string
		k       int
		live    func(string) bool
		prefer  []string
		avoid   []string
		shuffle func([]string)
		want    []string
	}{
		{"leader and entry node first", 2, up(), []string{"n4", "n2"}, nil, keep, []string{"n2", "n4"}},
		{"then the others", 3, up(), []string{"n4", "n2"}, nil, keep, []string{"n1", "n2", "n4"}},
		{"the others in shuffled order", 3, up(), []string{"n4", "n2"}, nil, reverse, []string{"n2", "n4", "n5"}},
		{"down parties never", 3, up("n1", "n3"), []string{"n2"}, nil, keep, []string{"n2", "n4", "n5"}},
		{"culprits avoided", 2, up(), []string{"n1"}, []string{"n2", "n3"}, keep, []string{"n1", "n4"}},
		{"culprits when nothing else", 3, up("n4", "n5"), []string{"n1"}, []string{"n2"}, keep, []string{"n1", "n2", "n3"}},
		{"a preferred culprit is still avoided", 2, up(), []string{"n1", "n2"}, []string{"n1"}, keep, []string{"n2", "n3"}},
		{"too few live", 3, up("n1", "n2", "n3"), nil, nil, keep, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseCommittee(all, tt.k, tt.live, tt.prefer, tt.avoid, tt.shuffle)
			if !slices.Equal(got, tt.want) || ok != (tt.want != nil) {
				t.Fatalf("got %v %v, want %v", got, ok, tt.want)
			}
		})
	}
}

// fakeState is a scheduler's view of a state the test writes.
type fakeState struct {
	mu       sync.Mutex
	name     string
	strict   bool
	members  []state.Member
	keys     map[string]*state.Key
	requests []*state.Request
	change   string // the membership change running
}

func (f *fakeState) Cluster() (string, int, []state.Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name, 2, f.members
}
func (f *fakeState) Strict() bool   { f.mu.Lock(); defer f.mu.Unlock(); return f.strict }
func (f *fakeState) EventsOn() bool { return true }
func (f *fakeState) OpenRequests() []*state.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}
func (f *fakeState) Key(id string) *state.Key               { f.mu.Lock(); defer f.mu.Unlock(); return f.keys[id] }
func (f *fakeState) Approval(string) *state.Approval        { return nil }
func (f *fakeState) PendingBroadcasts(int) []*state.Request { return nil }
func (f *fakeState) ActiveMembers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.members {
		out = append(out, m.ID)
	}
	return out
}
func (f *fakeState) MemberChange() string { f.mu.Lock(); defer f.mu.Unlock(); return f.change }
func (f *fakeState) Request(id string) *state.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		if r.ID == id {
			return r
		}
	}
	return nil
}
func (f *fakeState) AllKeys() []*state.Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*state.Key
	for _, k := range f.keys {
		out = append(out, k)
	}
	return out
}

// recorder is a Proposer that records what the leader proposed.
type recorder struct {
	mu  sync.Mutex
	got []string // "propose <type>" / "report <kind>"
	ch  chan any
}

func (r *recorder) Propose(_ context.Context, typ string, payload any) (state.Result, error) {
	r.mu.Lock()
	r.got = append(r.got, "propose "+typ)
	r.mu.Unlock()
	r.ch <- payload
	return state.Result{}, nil
}

func (r *recorder) Report(_ context.Context, kind string, payload any) (state.Result, error) {
	r.mu.Lock()
	r.got = append(r.got, "report "+kind)
	r.mu.Unlock()
	r.ch <- payload
	return state.Result{}, nil
}

func newTestScheduler(t *testing.T, st *fakeState, live func(string) bool, leader bool) *Scheduler {
	t.Helper()
	cfg := &config.Config{NodeID: "n1"}
	cfg.Cluster.Name = "test"
	cfg.Cluster.Threshold = 2
	for _, id := range []string{"n1", "n2", "n3"} {
		cfg.Cluster.Members = append(cfg.Cluster.Members, config.Member{ID: id, PeerID: "peer-" + id})
	}
	cfg.Ceremony.SignTimeout.Duration = time.Minute
	cfg.Ceremony.KeygenTimeout.Duration = time.Minute
	s, err := New(Config{Config: cfg, State: st, IsLeader: func() bool { return leader }, Live: live})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func submitFor(t *testing.T, method, path string, body string) *state.Submit {
	t.Helper()
	b, err := json.Marshal(&state.SubmitBody{Signed: &state.SignedForm{Method: method, Path: path, Body: []byte(body)}})
	if err != nil {
		t.Fatal(err)
	}
	return &state.Submit{Origin: "n2", Body: b}
}

// TestSchedule: the leader's choices for each kind of request, read from the signed form.
func TestSchedule(t *testing.T) {
	st := &fakeState{name: "test", strict: true, keys: map[string]*state.Key{
		"key_a": {ID: "key_a", Members: []string{"n1", "n2", "n3"}, Threshold: 2},
	}}
	for _, id := range []string{"n1", "n2", "n3"} {
		st.members = append(st.members, state.Member{ID: id})
	}
	up := func(string) bool { return true }
	s := newTestScheduler(t, st, up, true)

	sub := submitFor(t, "POST", "/v1/keys", `{"curve":"secp256k1"}`)
	s.Schedule(sub, "n2")
	if sc := sub.Schedule; sc == nil || len(sc.Nonce) != 32 || len(sc.ChainCode) != 32 || !slices.Equal(sc.Committee, []string{"n1", "n2", "n3"}) || sc.KeyID == "" || sc.RequestID == "" {
		t.Fatalf("keygen schedule %+v", sub.Schedule)
	}
	sub = submitFor(t, "POST", "/v1/keys", `{"curve":"ed25519"}`)
	s.Schedule(sub, "n2")
	if sub.Schedule == nil || sub.Schedule.ChainCode != nil {
		t.Fatalf("ed25519 keygen schedule %+v", sub.Schedule)
	}

	sub = submitFor(t, "POST", "/v1/keys/key_a/sign", `{"message":"00"}`)
	s.Schedule(sub, "n2")
	// The leader (n1) and the entry node (n2) first.
	if sc := sub.Schedule; sc == nil || !slices.Equal(sc.Committee, []string{"n1", "n2"}) || len(sc.Nonce) != 32 {
		t.Fatalf("sign schedule %+v", sub.Schedule)
	}
	again := submitFor(t, "POST", "/v1/keys/key_a/sign", `{"message":"00"}`)
	s.Schedule(again, "n2")
	if string(again.Schedule.Nonce) == string(sub.Schedule.Nonce) || again.Schedule.RequestID == sub.Schedule.RequestID {
		t.Fatal("two schedules share a nonce or a request id")
	}

	sub = submitFor(t, "POST", "/v1/keys/key_missing/sign", `{"message":"00"}`)
	s.Schedule(sub, "n2")
	if sub.Schedule != nil || sub.Unschedulable != "" {
		t.Fatalf("unknown key scheduled: %+v %q", sub.Schedule, sub.Unschedulable)
	}

	sub = submitFor(t, "POST", "/v1/access-keys", `{}`)
	s.Schedule(sub, "n2")
	if sub.Schedule == nil || len(sub.Schedule.AccessKeyID) != 35 {
		t.Fatalf("grant schedule %+v", sub.Schedule)
	}

	sub = &state.Submit{Origin: "n2", Body: []byte("not json")}
	s.Schedule(sub, "n2")
	if sub.Schedule != nil {
		t.Fatal("garbage scheduled")
	}

	down := newTestScheduler(t, st, func(id string) bool { return id != "n3" }, true)
	sub = submitFor(t, "POST", "/v1/keys", `{"curve":"secp256k1"}`)
	down.Schedule(sub, "n2")
	if sub.Schedule != nil || sub.Unschedulable == "" {
		t.Fatalf("keygen scheduled with a member down: %+v", sub.Schedule)
	}
	sub = submitFor(t, "POST", "/v1/keys/key_a/sign", `{"message":"00"}`)
	lonely := newTestScheduler(t, st, func(id string) bool { return false }, true)
	lonely.Schedule(sub, "n2")
	if sub.Schedule != nil || sub.Unschedulable == "" {
		t.Fatalf("sign scheduled with too few live: %+v", sub.Schedule)
	}
}

// TestLoop: the leader writes the first entry, upgrades an old log, reschedules a failed
// attempt away from its culprits, fails what ran out of attempts or timed out; a follower
// does nothing; Stop waits for the reports in flight.
func TestLoop(t *testing.T) {
	now := time.Now()
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	key := &state.Key{ID: "key_a", Members: []string{"n1", "n2", "n3"}, Threshold: 2}
	tests := []struct {
		name   string
		st     *fakeState
		leader bool
		want   string
		check  func(t *testing.T, payload any)
	}{
		{"first entry", &fakeState{}, true, "propose " + state.TypeClusterInit, func(t *testing.T, p any) {
			ci := p.(*state.ClusterInit)
			if ci.Name != "test" || ci.Threshold != 2 || len(ci.Members) != 3 || !ci.Strict {
				t.Fatalf("cluster init %+v", ci)
			}
		}},
		{"upgrade", &fakeState{name: "test"}, true, "propose " + state.TypeUpgrade, nil},
		{"reschedule away from the culprit", &fakeState{name: "test", strict: true, keys: map[string]*state.Key{"key_a": key},
			requests: []*state.Request{{ID: "req_1", Kind: state.KindSign, KeyID: "key_a", Attempt: 1, Retry: true, ScheduledAt: ms(0),
				Committee: []string{"n1", "n2"}, Failures: []state.Failure{{Attempt: 1, Culprits: []string{"n2"}}}}}},
			true, "report " + state.TypeReschedule, func(t *testing.T, p any) {
				rs := p.(*state.Reschedule)
				if rs.RequestID != "req_1" || rs.Attempt != 1 || !slices.Equal(rs.Committee, []string{"n1", "n3"}) || len(rs.Nonce) != 32 {
					t.Fatalf("reschedule %+v", rs)
				}
			}},
		{"out of attempts", &fakeState{name: "test", strict: true, keys: map[string]*state.Key{"key_a": key},
			requests: []*state.Request{{ID: "req_1", Kind: state.KindSign, KeyID: "key_a", Attempt: state.MaxAttempts, Retry: true, ScheduledAt: ms(0)}}},
			true, "report " + state.TypeFail, func(t *testing.T, p any) {
				if f := p.(*state.Fail); f.RequestID != "req_1" || f.Code != "ceremony.failed" {
					t.Fatalf("fail %+v", f)
				}
			}},
		{"keygen timed out", &fakeState{name: "test", strict: true,
			requests: []*state.Request{{ID: "req_2", Kind: state.KindKeygen, KeyID: "key_b", Attempt: 1, ScheduledAt: ms(-2 * time.Minute)}}},
			true, "report " + state.TypeFail, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestScheduler(t, tt.st, func(string) bool { return true }, tt.leader)
			s.shuffle = func([]string) {}
			rec := &recorder{ch: make(chan any, 16)}
			s.Start(context.Background(), rec)
			s.Kick()
			p := <-rec.ch
			s.Stop()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.got[0] != tt.want {
				t.Fatalf("proposed %v, want %s first", rec.got, tt.want)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

// TestFollowerProposesNothing: off the leader the loop only waits, and Stop returns.
func TestFollowerProposesNothing(t *testing.T) {
	st := &fakeState{}
	s := newTestScheduler(t, st, func(string) bool { return true }, false)
	rec := &recorder{ch: make(chan any, 16)}
	s.Start(context.Background(), rec)
	for range 3 {
		s.Kick()
	}
	s.Stop()
	if len(rec.got) != 0 {
		t.Fatalf("a follower proposed %v", rec.got)
	}
	s.Kick() // after Stop: no effect, no block
}
