package protocol

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/common"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var trio = []string{"node-a", "node-b", "node-c"}

// keygenWithBad runs an EdDSA 2-of-3 keygen in which node-c misbehaves
// through hook, and returns the honest parties' errors.
func keygenWithBad(t *testing.T, hook hookFunc, timeout time.Duration) (*memNet, map[string]error) {
	t.Helper()
	n, es := newCluster(t, trio...)
	n.setHook(hook)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	_, errs := runWithBad(ctx, []string{"node-a", "node-b"}, []string{"node-c"}, func(ctx context.Context, id string) (*Share, error) {
		return es[id].Keygen(ctx, sid, CurveEd25519, trio, 2, nil)
	})
	t.Logf("honest parties returned after %v", time.Since(start))
	return n, errs
}

func anyTypeOf(payload []byte) string {
	var a anypb.Any
	if proto.Unmarshal(payload, &a) != nil {
		return ""
	}
	return string(a.MessageName())
}

func withPayload(m *Message, p []byte) *Message {
	mm := *m
	mm.Payload = p
	return &mm
}

func TestGarbageIsBlamed(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, m *Message) *Message
	}{
		{"random bytes", func(t *testing.T, m *Message) *Message {
			b := make([]byte, 200)
			if _, err := rand.Read(b); err != nil {
				t.Error(err)
			}
			return withPayload(m, b)
		}},
		{"wrong broadcast flag", func(t *testing.T, m *Message) *Message {
			mm := *m
			mm.Broadcast = !m.Broadcast
			return &mm
		}},
		{"message of another protocol", func(t *testing.T, m *Message) *Message {
			if m.Kind != MsgTSS {
				return m
			}
			return withPayload(m, mustMarshalAny(t, &eddsasigning.SignRound1Message{Commitment: []byte{1}}))
		}},
		{"bogus echo", func(t *testing.T, m *Message) *Message {
			if m.Kind != MsgEcho {
				return m
			}
			e, _ := parseEcho(m.Payload)
			e.Type = "binance.tsslib.eddsa.keygen.KGRound2Message1" // not a broadcast
			return withPayload(m, e.encode())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := keygenWithBad(t, func(from, to string, m *Message) []*Message {
				if from != "node-c" {
					return []*Message{m}
				}
				return []*Message{tc.tamper(t, m)}
			}, 20*time.Second)
			for _, id := range []string{"node-a", "node-b"} {
				requireCeremonyError(t, id, errs[id], ErrInvalidMessage, "node-c")
			}
		})
	}
}

// A dealer that commits to a polynomial of the wrong degree (here a single
// point for t = 1) passes tss-lib v2.0.2's decommitment and Schnorr checks and
// then makes its VSS verification index past the end of the commitment inside
// a goroutine tss-lib spawns, crashing the process. custos checks the length
// (tss-lib #291) first and blames the dealer.
func TestShortVSSCommitmentIsBlamed(t *testing.T) {
	r1Type := typeName(&eddsakeygen.KGRound1Message{})
	r2Type := typeName(&eddsakeygen.KGRound2Message2{})
	var mu sync.Mutex
	held := map[string]*Message{} // node-c's round-1 broadcast, per recipient
	_, errs := keygenWithBad(t, func(from, to string, m *Message) []*Message {
		if from != "node-c" || m.Kind != MsgTSS {
			return []*Message{m}
		}
		mu.Lock()
		defer mu.Unlock()
		switch anyTypeOf(m.Payload) {
		case r1Type:
			held[to] = m // released with a matching commitment once round 2 is known
			return nil
		case r2Type:
			var r2 eddsakeygen.KGRound2Message2
			if err := unmarshalAny(m.Payload, &r2); err != nil {
				t.Error(err)
				return nil
			}
			r2.DeCommitment = r2.DeCommitment[:3] // r and the constant term only
			ints := make([]*big.Int, len(r2.DeCommitment))
			for i, b := range r2.DeCommitment {
				ints[i] = new(big.Int).SetBytes(b)
			}
			r1 := &eddsakeygen.KGRound1Message{Commitment: common.SHA512_256i(ints...).Bytes()}
			return []*Message{withPayload(held[to], mustMarshalAny(t, r1)), withPayload(m, mustMarshalAny(t, &r2))}
		}
		return []*Message{m}
	}, 20*time.Second)
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrInvalidMessage, "node-c")
	}
}

func unmarshalAny(payload []byte, m proto.Message) error {
	var a anypb.Any
	if err := proto.Unmarshal(payload, &a); err != nil {
		return err
	}
	return a.UnmarshalTo(m)
}

func TestSilentPartyTimesOut(t *testing.T) {
	baseline := runtime.NumGoroutine()
	ids := trio
	n := newMemNet()
	es := map[string]*Engine{}
	for _, id := range ids[:2] { // node-c never starts
		es[id] = n.addEngine(t, id, nil)
	}
	const timeout = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	_, errs := runParties(ids[:2], func(id string) (*Share, error) {
		return es[id].Keygen(ctx, sid, CurveEd25519, ids, 2, nil)
	})
	took := time.Since(start)
	t.Logf("silent party: honest parties failed after %v (timeout %v)", took, timeout)
	if took > timeout+time.Second {
		t.Fatalf("took %v to fail with a %v timeout", took, timeout)
	}
	for _, id := range ids[:2] {
		requireCeremonyError(t, id, errs[id], context.DeadlineExceeded, "node-c")
	}
	for _, e := range es {
		e.Close()
	}
	settleGoroutines(t, baseline)
}

func TestMissingEchoesTimeOut(t *testing.T) {
	// node-c takes part in tss-lib but never echoes: the others must not
	// return a key, and must blame node-c.
	_, errs := keygenWithBad(t, func(from, to string, m *Message) []*Message {
		if from == "node-c" && m.Kind == MsgEcho {
			return nil
		}
		return []*Message{m}
	}, computeTimeout(4*time.Second)) // long enough for tss-lib to finish even on a loaded machine
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], context.DeadlineExceeded, "node-c")
		if !strings.Contains(errs[id].Error(), "echo") {
			t.Fatalf("%s: want an echo timeout, got %v", id, errs[id])
		}
	}
}

func TestDuplicatedMessagesAreHarmless(t *testing.T) {
	n, es := newCluster(t, trio...)
	var first atomic.Pointer[Message] // node-a's first message to node-b
	n.setHook(func(from, to string, m *Message) []*Message {
		out := []*Message{m, m} // every message twice
		if from == "node-a" && to == "node-b" && !first.CompareAndSwap(nil, m) {
			out = append(out, first.Load()) // and replay node-a's first message later
		}
		return out
	})
	saves := eddsaKeygen(t, es, trio, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sid := randomSID(t)
	_, errs := runParties(trio, func(id string) (*Signature, error) {
		return es[id].Sign(ctx, sid, trio, 2, saves[id], []byte("twice"), nil, nil)
	})
	if len(errs) > 0 {
		t.Fatalf("signing with duplicated messages failed: %v", errs)
	}
	if n.dropCount(DropDuplicate) == 0 {
		t.Fatal("no duplicate was counted")
	}
}

// addUnknownField re-encodes the same content with an extra unknown protobuf
// field: tss-lib parses it identically, only the bytes differ.
func addUnknownField(p []byte) []byte {
	return append(append([]byte(nil), p...), 0x78, 0x01) // field 15, varint 1
}

func TestEquivocatingBroadcastIsBlamed(t *testing.T) {
	r1 := "binance.tsslib.eddsa.keygen.KGRound1Message"
	_, errs := keygenWithBad(t, func(from, to string, m *Message) []*Message {
		if from == "node-c" && to == "node-a" && m.Kind == MsgTSS && anyTypeOf(m.Payload) == r1 {
			return []*Message{withPayload(m, addUnknownField(m.Payload))}
		}
		return []*Message{m}
	}, 20*time.Second)
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrEquivocation, "node-c")
	}
}

func TestConflictingDuplicateIsEquivocation(t *testing.T) {
	r1 := "binance.tsslib.eddsa.keygen.KGRound1Message"
	_, errs := keygenWithBad(t, func(from, to string, m *Message) []*Message {
		if from == "node-c" && m.Kind == MsgTSS && anyTypeOf(m.Payload) == r1 {
			return []*Message{m, withPayload(m, addUnknownField(m.Payload))}
		}
		return []*Message{m}
	}, 20*time.Second)
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrEquivocation, "node-c")
	}
}

func TestNonMemberMessagesAreDropped(t *testing.T) {
	n, es := newCluster(t, trio...)
	n.setHook(func(from, to string, m *Message) []*Message {
		if from == "node-a" && to == "node-b" {
			forged := *m
			forged.From = "mallory"
			es["node-b"].Deliver(&forged) // as if the transport authenticated mallory
		}
		return []*Message{m}
	})
	eddsaKeygen(t, es, trio, 2)
	if n.dropCount(DropNotMember) == 0 {
		t.Fatal("messages from a non-member were not dropped")
	}
}

func TestMessagesBeforeStartAreHeld(t *testing.T) {
	n, es := newCluster(t, trio...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sid := randomSID(t)
	type result struct {
		share *Share
		err   error
	}
	late := make(chan result, 1)
	early := make(chan map[string]error, 1)
	go func() {
		_, errs := runParties([]string{"node-b", "node-c"}, func(id string) (*Share, error) {
			return es[id].Keygen(ctx, sid, CurveEd25519, trio, 2, nil)
		})
		early <- errs
	}()
	// Wait until node-a holds messages for the session it has not started.
	a := es["node-a"]
	deadline := time.Now().Add(10 * time.Second)
	for held := 0; held < 2; {
		if time.Now().After(deadline) {
			t.Fatal("node-a never held the early messages")
		}
		a.mu.Lock()
		if b := a.pending[sid]; b != nil {
			held = len(b.msgs)
		}
		a.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	go func() {
		s, err := a.Keygen(ctx, sid, CurveEd25519, trio, 2, nil)
		late <- result{s, err}
	}()
	if r := <-late; r.err != nil {
		t.Fatalf("late starter failed: %v", r.err)
	}
	if errs := <-early; len(errs) > 0 {
		t.Fatalf("early starters failed: %v", errs)
	}
	if got := n.dropCount(DropPendingFull) + n.dropCount(DropPendingExpired); got != 0 {
		t.Fatalf("%d held messages were dropped", got)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) != 0 || a.pendingBytes != 0 {
		t.Fatalf("held messages not released: %d sessions, %d bytes", len(a.pending), a.pendingBytes)
	}
}

func TestDeliverBounds(t *testing.T) {
	n := newMemNet()
	now := time.Unix(1_700_000_000, 0)
	e := n.addEngine(t, "node-a", func(c *EngineConfig) {
		c.MaxSessions = 2
		c.MaxPendingPerSession = 2
		c.PendingTTL = 30 * time.Second
	})
	e.now = func() time.Time { return now }
	msg := func(sid SessionID) *Message {
		return &Message{Session: sid, From: "node-b", Kind: MsgTSS, Payload: []byte{1, 2, 3}}
	}
	s1, s2, s3 := randomSID(t), randomSID(t), randomSID(t)
	for i := 0; i < 3; i++ {
		e.Deliver(msg(s1))
	}
	if got := n.dropCount(DropPendingFull); got != 1 {
		t.Fatalf("per-session cap: %d drops, want 1", got)
	}
	e.Deliver(msg(s2))
	e.Deliver(msg(s3)) // a third pending session is over MaxSessions
	if got := n.dropCount(DropPendingFull); got != 2 {
		t.Fatalf("pending sessions cap: %d drops, want 2", got)
	}
	now = now.Add(31 * time.Second)
	e.Deliver(msg(s3)) // purges the expired ones, then holds this one
	if got := n.dropCount(DropPendingExpired); got != 3 {
		t.Fatalf("TTL: %d expired, want 3", got)
	}
	e.mu.Lock()
	if len(e.pending) != 1 || e.pendingBytes != 3 {
		t.Errorf("after purge: %d sessions, %d bytes held", len(e.pending), e.pendingBytes)
	}
	e.mu.Unlock()

	for _, tc := range []struct {
		name   string
		m      *Message
		reason string
	}{
		{"oversize", &Message{Session: s1, From: "node-b", Kind: MsgTSS, Payload: make([]byte, MaxPayloadSize+1)}, DropOversize},
		{"from self", &Message{Session: s1, From: "node-a", Kind: MsgTSS, Payload: []byte{1}}, DropFromSelf},
		{"no sender", &Message{Session: s1, Kind: MsgTSS, Payload: []byte{1}}, DropInvalid},
		{"unknown kind", &Message{Session: s1, From: "node-b", Kind: 9, Payload: []byte{1}}, DropInvalid},
		{"empty payload", &Message{Session: s1, From: "node-b", Kind: MsgTSS}, DropInvalid},
		{"nil", nil, DropInvalid},
	} {
		before := n.dropCount(tc.reason)
		e.Deliver(tc.m)
		if n.dropCount(tc.reason) != before+1 {
			t.Errorf("%s: not dropped as %q", tc.name, tc.reason)
		}
	}
}

func TestFinishedSessionsAreClosed(t *testing.T) {
	n, es := newCluster(t, trio...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sid := randomSID(t)
	if _, errs := runParties(trio, func(id string) (*Share, error) {
		return es[id].Keygen(ctx, sid, CurveEd25519, trio, 2, nil)
	}); len(errs) > 0 {
		t.Fatal(errs)
	}
	before := n.dropCount(DropClosedSession)
	es["node-a"].Deliver(&Message{Session: sid, From: "node-b", Kind: MsgTSS, Payload: []byte{1}})
	if n.dropCount(DropClosedSession) != before+1 {
		t.Fatal("late message for a finished session was not dropped")
	}
	if _, err := es["node-a"].Keygen(ctx, sid, CurveEd25519, trio, 2, nil); !errors.Is(err, ErrSessionReused) {
		t.Fatalf("reusing a session id: got %v", err)
	}
}

func TestEngineLimitsAndClose(t *testing.T) {
	n := newMemNet()
	e := n.addEngine(t, "node-a", func(c *EngineConfig) { c.MaxSessions = 1 })
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 2, nil) // the others never come
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		running := len(e.active)
		e.mu.Unlock()
		if running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ceremony never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 2, nil); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("second session: got %v, want ErrTooManySessions", err)
	}
	e.Close()
	err := <-done
	requireCeremonyError(t, "node-a", err, ErrEngineClosed)
	if _, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 2, nil); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("after Close: got %v, want ErrEngineClosed", err)
	}
}

func TestKeygenRejectsBadArguments(t *testing.T) {
	n := newMemNet()
	e := n.addEngine(t, "node-a", nil)
	incomplete := loadPreParams(t, 0)
	incomplete.p.P = nil
	spent := loadPreParams(t, 1)
	spent.used.Store(true)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"threshold 1", func() error { _, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 1, nil); return err }},
		{"threshold above n", func() error { _, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 4, nil); return err }},
		{"self missing", func() error {
			_, err := e.Keygen(ctx, randomSID(t), CurveEd25519, []string{"node-b", "node-c"}, 2, nil)
			return err
		}},
		{"empty id", func() error {
			_, err := e.Keygen(ctx, randomSID(t), CurveEd25519, []string{"node-a", ""}, 2, nil)
			return err
		}},
		{"nil pre-parameters", func() error { _, err := e.Keygen(ctx, randomSID(t), CurveSecp256k1, trio, 2, nil); return err }},
		{"incomplete pre-parameters", func() error {
			_, err := e.Keygen(ctx, randomSID(t), CurveSecp256k1, trio, 2, incomplete)
			return err
		}},
		{"pre-parameters that already started a keygen", func() error {
			_, err := e.Keygen(ctx, randomSID(t), CurveSecp256k1, trio, 2, spent)
			return err
		}},
		{"pre-parameters for ed25519", func() error {
			_, err := e.Keygen(ctx, randomSID(t), CurveEd25519, trio, 2, loadPreParams(t, 2))
			return err
		}},
		{"unknown curve", func() error { _, err := e.Keygen(ctx, randomSID(t), "p256", trio, 2, nil); return err }},
	} {
		if err := tc.run(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}

func TestPeerAbortEndsTheWaitEarly(t *testing.T) {
	// node-c's tss messages never arrive, so node-a and node-b wait for it;
	// node-c gives up quickly and says so; they must not wait for their own
	// (long) timeout, and must not blame anyone on its word.
	n, es := newCluster(t, trio...)
	n.setHook(func(from, to string, m *Message) []*Message {
		if from == "node-c" && m.Kind == MsgTSS {
			return nil
		}
		return []*Message{m}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	_, errs := runParties(trio, func(id string) (*Share, error) {
		ctx := ctx
		if id == "node-c" {
			var c context.CancelFunc
			ctx, c = context.WithTimeout(ctx, 300*time.Millisecond)
			defer c()
		}
		return es[id].Keygen(ctx, sid, CurveEd25519, trio, 2, nil)
	})
	took := time.Since(start)
	t.Logf("all parties returned after %v", took)
	if took > 5*time.Second {
		t.Fatalf("honest parties waited %v after the peer gave up", took)
	}
	var ce *CeremonyError
	if !errors.As(errs["node-c"], &ce) || !errors.Is(ce, context.DeadlineExceeded) {
		t.Fatalf("node-c: got %v, want a timeout", errs["node-c"])
	}
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrPeerAborted)
	}
}

// A check that needs another message (the ECDSA modproof needs the sender's
// round-1 Paillier modulus) holds its message until that one is accepted.
func TestDeferredChecks(t *testing.T) {
	n := newMemNet()
	e := n.addEngine(t, "node-a", nil)
	c, err := e.newCeremony(randomSID(t), trio, eddsaKeygenSpec())
	if err != nil {
		t.Fatal(err)
	}
	c.tssDone = true // no tss-lib party behind this ceremony
	r1, r2 := typeName(&eddsakeygen.KGRound1Message{}), typeName(&eddsakeygen.KGRound2Message2{})
	c.check = func(from string, msg tss.ParsedMessage, lookup func(from, typ string) tss.ParsedMessage) (bool, error) {
		return msg.Type() == r2 && lookup(from, r1) == nil, nil
	}
	parse := func(from string, content proto.Message) tss.ParsedMessage {
		pm, err := tss.ParseWireMessage(mustMarshalAny(t, content), c.pids[from], true)
		if err != nil {
			t.Fatal(err)
		}
		return pm
	}
	c.feed("node-b", parse("node-b", &eddsakeygen.KGRound2Message2{}))
	if len(c.deferred) != 1 || c.accepted[msgKey{"node-b", r2}] != nil {
		t.Fatal("message was not held for its dependency")
	}
	c.feed("node-c", parse("node-c", &eddsakeygen.KGRound1Message{}))
	if len(c.deferred) != 1 {
		t.Fatal("another sender's message released the hold")
	}
	c.feed("node-b", parse("node-b", &eddsakeygen.KGRound1Message{}))
	if len(c.deferred) != 0 || c.accepted[msgKey{"node-b", r2}] == nil || c.failed != nil {
		t.Fatalf("held message not released (deferred %d, failed %v)", len(c.deferred), c.failed)
	}
}

// One member flooding a session can only crowd out its own messages.
func TestFloodingMemberOnlyLosesItsOwnMessages(t *testing.T) {
	n := newMemNet()
	e := n.addEngine(t, "node-a", nil)
	flood := func(sid SessionID, from string, count int) {
		for i := 0; i < count; i++ {
			e.Deliver(&Message{Session: sid, From: from, Kind: MsgTSS, Payload: []byte{byte(i), byte(i >> 8)}})
		}
	}
	// Held before the session starts.
	sid := randomSID(t)
	flood(sid, "node-b", maxPendingPerSender+10)
	if got := n.dropCount(DropPendingFull); got != 10 {
		t.Fatalf("pending: %d drops for the flooder, want 10", got)
	}
	flood(sid, "node-c", 1)
	if got := n.dropCount(DropPendingFull); got != 10 {
		t.Fatal("pending: an honest member's message was dropped")
	}
	// Queued for a running session.
	c, err := e.newCeremony(randomSID(t), trio, eddsaKeygenSpec())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.register(c); err != nil {
		t.Fatal(err)
	}
	defer e.unregister(c)
	flood(c.sid, "node-b", c.qcapPer+5)
	if got := n.dropCount(DropQueueFull); got != 5 {
		t.Fatalf("queue: %d drops for the flooder, want 5", got)
	}
	flood(c.sid, "node-c", 1)
	if got := n.dropCount(DropQueueFull); got != 5 {
		t.Fatal("queue: an honest member's message was dropped")
	}
}
