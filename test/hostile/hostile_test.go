//go:build linux

package hostile

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/protocol"
	"github.com/custos/custos/test/cluster"
)

// Timeouts the test cluster runs with: short enough that a silent hostile peer costs
// seconds, long enough for an ECDSA signing on a loaded 2-core machine.
const (
	signTimeout   = 10 * time.Second
	keygenTimeout = 2 * time.Minute
	// hostileIdx is the node whose identity the hostile peer takes over.
	hostileIdx = 2
)

// testLogger writes the harness's and the hostile peer's progress to stderr when
// HOSTILE_TEST_LOG is set, and discards it otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("HOSTILE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a running cluster whose node 3 has been replaced by a hostile peer.
type env struct {
	c       *cluster.Cluster
	u       *cluster.User
	ec, ed  *keyPair
	sk      crypto.PrivKey
	cfg3    *config.Config
	hp      *hostilePeer
	leader  int
	other   int
	honest  []int
	started time.Time
}

// setup starts a 3-node, threshold-2 cluster, creates an Ed25519 key and, withECDSA, an
// ECDSA key while every node is honest (keygen needs all n), stops node 3 and starts the
// hostile peer with node 3's identity.
func setup(ctx context.Context, t *testing.T, withECDSA bool, acts ...behaviour) *env {
	t.Helper()
	e := &env{started: time.Now(), honest: []int{0, 1}}
	c, err := cluster.New(ctx, cluster.Options{
		Nodes: 3, Threshold: 2, StopTimeout: 10 * time.Second, Logger: testLogger(), Binary: custosdBin,
		// HOSTILE_KEEP_DIR=1 keeps the cluster's directory (configurations, logs) for a look.
		KeepDir: os.Getenv("HOSTILE_KEEP_DIR") != "",
		Extra: map[string]any{
			"ceremony": map[string]any{"sign_timeout": signTimeout.String(), "keygen_timeout": keygenTimeout.String()},
			// Answer 202 at once: the test polls, so that it sees session ids early.
			"api":  map[string]any{"wait_timeout": "1ms"},
			"rate": map[string]any{"per_caller_rps": 0},
			"log":  map[string]any{"level": "info"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	if os.Getenv("HOSTILE_KEEP_DIR") != "" {
		t.Logf("cluster directory: %s", c.Dir())
	}
	t.Cleanup(func() {
		if e.hp != nil {
			e.hp.Close()
		}
		if t.Failed() {
			for _, i := range e.honest {
				t.Logf("---- %s log (tail) ----\n%s", c.NodeID(i), c.LogTail(i, 40))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	// A retry after a transient error may leave an extra user behind: harmless.
	if err := retryTransient(ctx, func() error {
		var err error
		e.u, err = c.NewUser(ctx, "hostile-test", time.Hour)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// One after the other: a 3-party ECDSA keygen saturates two cores on its own.
	if e.ed, err = createKey(ctx, e.u.Clients[1], "ed25519", "hostile-ed"); err != nil {
		t.Fatal(err)
	}
	if withECDSA {
		if e.ec, err = createKey(ctx, e.u.Clients[0], "secp256k1", "hostile-ec"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("keys created after %v", time.Since(e.started).Round(time.Millisecond))

	if err := c.Stop(hostileIdx); err != nil {
		t.Fatal(err)
	}
	if e.sk, e.cfg3, err = memberIdentity(c.ConfigPath(hostileIdx)); err != nil {
		t.Fatal(err)
	}
	if e.hp, err = startHostile(ctx, e.sk, e.cfg3, acts, testLogger()); err != nil {
		t.Fatal(err)
	}
	// The leader is node 1 or 2 once node 3 is gone.
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	defer lcancel()
	if e.leader, err = c.WaitLeader(lctx, hostileIdx); err != nil {
		t.Fatalf("no honest leader: %v", err)
	}
	e.other = 1 - e.leader
	return e
}

// TestHostileMember runs a real cluster with a member that holds a valid identity but
// sends garbage, malformed, oversize, truncated, stalled, replayed, foreign-session and
// out-of-order ceremony messages and sabotages every ceremony it is scheduled into. The
// honest nodes must drop and count everything, blame it and reschedule around it within
// the ceremony timeout, sign every request correctly and never panic. A fresh identity
// must not get any custos protocol stream.
func TestHostileMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real custosd processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	acts := []behaviour{actGarbage, actReflect, actCrossReplay, actOutOfOrder, actWrongFlag, actSilent}
	e := setup(ctx, t, true, acts...)
	c, hp := e.c, e.hp
	t.Logf("hostile peer is %s; leader %s; setup took %v", hp.selfID, c.NodeID(e.leader), time.Since(e.started).Round(time.Millisecond))

	base := map[int]map[string]float64{}
	for _, i := range e.honest {
		m, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i] = m
	}

	t.Run("non-member cannot open any protocol", func(t *testing.T) {
		nonMemberStreams(ctx, t, e)
	})

	t.Run("bad bytes are dropped and counted", func(t *testing.T) {
		for _, i := range e.honest {
			badBytes(ctx, t, e, i, base[i])
		}
	})

	var outcomes []signOutcome
	t.Run("ceremonies with a hostile member", func(t *testing.T) {
		outcomes = hostileCeremonies(ctx, t, e, len(acts))
	})

	t.Run("replays of finished sessions", func(t *testing.T) {
		replayFinished(ctx, t, e, outcomes)
	})

	t.Run("keygen with a hostile member fails cleanly", func(t *testing.T) {
		hostileKeygen(ctx, t, e)
	})

	t.Run("honest nodes stayed healthy", func(t *testing.T) {
		for _, i := range e.honest {
			if err := healthy(ctx, c, i); err != nil {
				t.Error(err)
			}
			if err := waitIdle(ctx, c, i, 2*signTimeout); err != nil {
				t.Error(err)
			}
			lines, err := readLog(c, i)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				if strings.Contains(strings.ToLower(l.raw), "panic") {
					t.Errorf("%s logged a panic: %s", c.NodeID(i), l.raw)
				}
			}
			now, err := scrape(ctx, c, i)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s rose by: %v", c.NodeID(i), droppedMetric, diff(now, base[i]))
		}
	})
	t.Logf("total %v", time.Since(e.started).Round(time.Millisecond))
}

func diff(now, base map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range now {
		if d := v - base[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// nonMemberStreams dials the honest nodes with a fresh random identity and checks that no
// custos protocol carries anything for it, while the member identity (the control) can.
func nonMemberStreams(ctx context.Context, t *testing.T, e *env) {
	stranger, pids := newStranger(t, e)
	for _, i := range e.honest {
		id := e.c.NodeID(i)
		for _, r := range tryProtocols(ctx, stranger, pids[id]) {
			if r.Usable {
				t.Errorf("a non-member opened %s on %s: %s", r.Proto, id, r.Detail)
			} else {
				t.Logf("non-member → %s %s: refused (%s)", id, r.Proto, r.Detail)
			}
		}
		// The control: the same code with a member's identity gets through, so the
		// refusals above are the gate's doing, not a wrong address.
		for _, r := range tryProtocols(ctx, e.hp.h, e.hp.pids[id]) {
			if !r.Usable {
				t.Errorf("member identity could not use %s on %s: %s", r.Proto, id, r.Detail)
			}
		}
	}
	if err := healthy(ctx, e.c, e.honest[0]); err != nil {
		t.Fatal(err)
	}
}

// malformedFrames are well-framed /custos/tss/1 frames whose envelope does not decode.
func malformedFrames() [][]byte {
	sid := randomSession()
	good := func(kind, flags byte, payload []byte) []byte { return rawEnvelope(1, sid, kind, flags, payload) }
	badLen := good(1, 0, []byte("0123456789"))
	binary.BigEndian.PutUint32(badLen[35:39], 11)
	shortLen := good(1, 0, []byte("0123456789"))
	binary.BigEndian.PutUint32(shortLen[35:39], 9)
	longAbort := make([]byte, protocol.MaxAbortReason+1)
	for i := range longAbort {
		longAbort[i] = 'x'
	}
	echoNoOrigin := append([]byte{0, 5}, []byte("x.y.z")...)
	echoNoOrigin = append(echoNoOrigin, make([]byte, 32)...)
	echoShortHash := append([]byte{5}, []byte("node1")...)
	echoShortHash = append(echoShortHash, 5)
	echoShortHash = append(echoShortHash, []byte("x.y.z")...)
	echoShortHash = append(echoShortHash, make([]byte, 31)...)
	huge := randomBytes(p2p.MaxFrameSize) // the largest legal frame, all garbage
	huge[0] = 7
	return [][]byte{
		{},                                        // empty frame
		{1},                                       // one byte
		randomBytes(envelopeHeaderSize - 1),       // shorter than the header
		rawEnvelope(0, sid, 1, 0, []byte("x")),    // version 0
		rawEnvelope(2, sid, 1, 0, []byte("x")),    // version 2
		good(0, 0, []byte("x")),                   // kind 0
		good(4, 0, []byte("x")),                   // kind 4
		good(255, 0, []byte("x")),                 // kind 255
		good(1, 2, []byte("x")),                   // unknown flag
		good(1, 0x80, []byte("x")),                // unknown flag
		good(2, 1, echoShortHash),                 // broadcast echo
		good(3, 1, []byte("abort")),               // broadcast abort
		badLen,                                    // length field too big
		shortLen,                                  // length field too small
		good(1, 0, nil),                           // empty payload
		good(2, 0, echoNoOrigin),                  // echo without origin
		good(2, 0, echoShortHash),                 // echo with a 31-byte hash
		good(3, 0, []byte("bad\x00reason")),       // abort reason not printable
		good(3, 0, longAbort),                     // abort reason too long
		randomBytes(1 << 10),                      // garbage
		append([]byte{9}, randomBytes(64<<10)...), // garbage, 64 KiB
		huge,
	}
}

// badBytes sends node i every kind of bad frame the wire allows and some it does not, and
// checks that each is dropped and counted, that oversize frames reset only their own
// stream, and that a stalled half-frame blocks nothing.
func badBytes(ctx context.Context, t *testing.T, e *env, i int, base map[string]float64) {
	c, hp := e.c, e.hp
	id := c.NodeID(i)

	// A half-sent frame parked on its own stream for the rest of the test.
	stalled, err := hp.freshStream(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Reset()
	if _, err := stalled.Write(append(binary.BigEndian.AppendUint32(nil, 100_000), randomBytes(100)...)); err != nil {
		t.Fatal(err)
	}

	frames := malformedFrames()
	for _, f := range frames {
		hp.sendFrame(id, f)
	}
	now := waitDrops(ctx, t, c, i, base, "malformed", float64(len(frames)))
	t.Logf("%s: %d malformed frames dropped and counted", id, len(frames))

	// Oversize announcements: the honest node resets that stream without reading on.
	oversizeBefore := countLog(t, c, i, "reset tss stream: oversize frame")
	for _, n := range []uint32{p2p.MaxFrameSize + 1, 0xffffffff} {
		s, err := hp.freshStream(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write(append(binary.BigEndian.AppendUint32(nil, n), randomBytes(1000)...))
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := io.ReadAll(s)
		if rerr == nil || isTimeout(rerr) {
			t.Errorf("%s did not reset a stream announcing a %d-byte frame (read: %v)", id, n, rerr)
		}
		_ = s.Reset()
	}
	oversize := oversizeBefore
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = cluster.Until(wctx, func() bool {
		oversize = countLog(t, c, i, "reset tss stream: oversize frame")
		return oversize >= oversizeBefore+2
	})
	cancel()
	if err != nil {
		t.Fatalf("%s logs %d oversize resets, want at least %d: %v", id, oversize-oversizeBefore, 2, err)
	}

	// A frame cut short: header for 1000 bytes, 10 sent, then the write side closed.
	if s, err := hp.freshStream(ctx, id); err == nil {
		_, _ = s.Write(append(binary.BigEndian.AppendUint32(nil, 1000), randomBytes(10)...))
		_ = s.CloseWrite()
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadAll(s)
		_ = s.Reset()
	} else {
		t.Fatal(err)
	}

	// Well-formed messages for a session that does not exist: held (bounded per sender),
	// the excess dropped as pending_full.
	sid := randomSession()
	const flood = 80
	for range flood {
		hp.sendMsg(id, &protocol.Message{Session: sid, Kind: protocol.MsgTSS, Payload: randomBytes(64)})
	}
	now = waitDrops(ctx, t, c, i, now, "pending_full", flood-64)

	// After all of that, the long-lived stream still delivers: one more malformed frame is
	// counted while the stalled stream still hangs.
	hp.sendFrame(id, []byte{0xde, 0xad})
	waitDrops(ctx, t, c, i, now, "malformed", 1)
	if err := healthy(ctx, c, i); err != nil {
		t.Fatal(err)
	}
}

// countLog counts the lines of node i's log whose message is msg.
func countLog(t *testing.T, c *cluster.Cluster, i int, msg string) int {
	t.Helper()
	lines, err := readLog(c, i)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lines {
		if l.Msg == msg {
			n++
		}
	}
	return n
}

// hostileCeremonies signs through both honest nodes in waves until the hostile peer has
// been scheduled into at least want ceremonies (one per behaviour). Requests through the
// leader draw the hostile peer into half their first committees; requests through the
// other honest node always get {leader, that node}, and the hostile peer sprays their
// session with its own messages (a foreign session). Every request must end signed with a
// valid signature, and every ceremony the hostile peer was in must have failed on its
// honest party within the timeout, with the hostile peer blamed.
func hostileCeremonies(ctx context.Context, t *testing.T, e *env, want int) []signOutcome {
	c, hp := e.c, e.hp
	var (
		mu       sync.Mutex
		outcomes []signOutcome
		foreign  []string
	)
	spray := func(sessionHex string) {
		b, err := hex.DecodeString(sessionHex)
		if err != nil || len(b) != 32 {
			return
		}
		var sid protocol.SessionID
		copy(sid[:], b)
		mu.Lock()
		foreign = append(foreign, sessionHex)
		mu.Unlock()
		for range 3 {
			for _, i := range e.honest {
				hp.sendMsg(c.NodeID(i), &protocol.Message{Session: sid, Kind: protocol.MsgTSS, Payload: randomBytes(100)})
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	base := map[int]map[string]float64{}
	for _, i := range e.honest {
		m, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i] = m
	}
	covered := func() bool {
		invs := hp.Invitations()
		kinds := map[string]bool{}
		for _, inv := range invs {
			kinds[inv.Kind] = true
		}
		return len(invs) >= want && kinds["ecdsa"] && kinds["eddsa"]
	}
	for wave := 0; wave < 8 && !covered(); wave++ {
		var wg sync.WaitGroup
		run := func(entry int, kp *keyPair, onScheduled func(string)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := signAndVerify(ctx, e.u, entry, kp, onScheduled)
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}()
		}
		// ECDSA costs most CPU: one through each node per wave.
		run(e.leader, e.ec, nil)
		run(e.leader, e.ed, nil)
		run(e.leader, e.ed, nil)
		run(e.leader, e.ed, nil)
		run(e.other, e.ec, spray)
		run(e.other, e.ed, spray)
		wg.Wait()
		t.Logf("wave %d: hostile peer scheduled into %d ceremonies so far", wave+1, len(hp.Invitations()))
	}

	for _, o := range outcomes {
		if o.Err != nil || o.Status != client.StatusSigned {
			t.Errorf("sign %s via %s (request %s): status %q code %q: %v", o.Curve, c.NodeID(o.Entry), o.RequestID, o.Status, o.Code, o.Err)
		}
	}
	invs := hp.Invitations()
	if len(invs) < want {
		t.Fatalf("the hostile peer was scheduled into %d ceremonies, want at least %d", len(invs), want)
	}
	t.Logf("%d sign requests, all signed and verified; hostile peer was in %d ceremonies", len(outcomes), len(invs))

	// Every ceremony the hostile peer was in failed on its honest party, in time, with
	// the hostile peer named.
	for _, i := range e.honest {
		if err := waitIdle(ctx, c, i, 2*signTimeout); err != nil {
			t.Error(err)
		}
	}
	logs := map[string][]logLine{}
	for _, i := range e.honest {
		l, err := readLog(c, i)
		if err != nil {
			t.Fatal(err)
		}
		logs[c.NodeID(i)] = l
	}
	kinds := map[string]bool{}
	for _, inv := range invs {
		kinds[inv.Kind] = true
		short := inv.Session.String()[:16]
		var startAt, failAt time.Time
		var failed *logLine
		for _, l := range logs[inv.From] {
			if l.Session != short {
				continue
			}
			switch l.Msg {
			case "ceremony starting":
				startAt = l.Time
			case "ceremony failed":
				failAt = l.Time
				failed = &l
			case "ceremony done", "ceremony finished":
				t.Errorf("%s: session %s with the hostile peer (%s) finished", inv.From, short, inv.Act)
			}
		}
		if failed == nil {
			t.Errorf("%s: no failure logged for session %s with the hostile peer (%s)", inv.From, short, inv.Act)
			continue
		}
		took := failAt.Sub(startAt)
		if startAt.IsZero() || took > signTimeout+5*time.Second {
			t.Errorf("%s: session %s (%s) failed %v after it started, want within %v", inv.From, short, inv.Act, took, signTimeout)
		}
		if !slices.Contains(failed.Culprits, hp.selfID) {
			t.Errorf("%s: session %s (%s) failed without blaming %s: culprits %v, err %s", inv.From, short, inv.Act, hp.selfID, failed.Culprits, failed.Err)
		}
		t.Logf("%s %s via %s: failed after %v, culprits %v: %s", inv.Kind, inv.Act, inv.From, took.Round(time.Millisecond), failed.Culprits, truncate(failed.Err, 140))
	}
	if !kinds["ecdsa"] || !kinds["eddsa"] {
		t.Errorf("the hostile peer was drawn into %v ceremonies only, want both curves", kinds)
	}

	// Messages sprayed into {leader, other} sessions are from a non-member of those
	// sessions: dropped as not_member (or closed_session once the session ended).
	mu.Lock()
	nForeign := len(foreign)
	mu.Unlock()
	if nForeign == 0 {
		t.Fatal("no foreign session was sprayed")
	}
	for _, i := range e.honest {
		now, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		d := diff(now, base[i])
		if d["not_member"]+d["closed_session"] < 1 {
			t.Errorf("%s: messages sprayed into %d foreign sessions were not dropped as not_member/closed_session: %v", c.NodeID(i), nForeign, d)
		}
		t.Logf("%s drops during ceremonies: %v", c.NodeID(i), d)
	}
	return outcomes
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// replayFinished re-sends every frame the hostile peer captured, unchanged, to the node
// that sent it, and sprays the finished sessions of the honest-only ceremonies: all of it
// must be dropped as closed_session.
func replayFinished(ctx context.Context, t *testing.T, e *env, outcomes []signOutcome) {
	c, hp := e.c, e.hp
	base := map[int]map[string]float64{}
	for _, i := range e.honest {
		m, err := scrape(ctx, c, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i] = m
	}
	sent := map[string]int{}
	for _, cf := range hp.Captured() {
		hp.sendFrame(cf.from, cf.frame)
		sent[cf.from]++
	}
	for _, o := range outcomes {
		b, err := hex.DecodeString(o.SessionID)
		if err != nil || len(b) != 32 || o.Status != client.StatusSigned {
			continue
		}
		var sid protocol.SessionID
		copy(sid[:], b)
		for _, i := range e.honest {
			hp.sendMsg(c.NodeID(i), &protocol.Message{Session: sid, Kind: protocol.MsgTSS, Payload: randomBytes(80)})
			sent[c.NodeID(i)]++
		}
	}
	for _, i := range e.honest {
		id := c.NodeID(i)
		if sent[id] == 0 {
			t.Fatalf("nothing to replay to %s", id)
		}
		waitDrops(ctx, t, c, i, base[i], "closed_session", float64(sent[id]))
		t.Logf("%s: %d replayed messages of finished sessions dropped as closed_session", id, sent[id])
	}
}

// hostileKeygen asks for a key while the hostile peer is connected: keygen needs every
// member, so the hostile peer is in the ceremony and answers it with garbage. The request
// must fail with ceremony.failed well within the keygen timeout and the key must be
// failed, not half-made.
func hostileKeygen(ctx context.Context, t *testing.T, e *env) {
	hp := e.hp
	hp.SetActs(actGarbage)
	before := len(hp.Invitations())
	cl := e.u.Clients[e.other]
	start := time.Now()
	idem := hex.EncodeToString(randomBytes(16))
	var (
		key *client.Key
		req *client.Request
	)
	err := retryTransient(ctx, func() error {
		var err error
		key, req, err = cl.CreateKey(ctx, "ed25519", 2, "hostile-keygen", idem)
		return err
	})
	if err != nil {
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Request == nil {
			t.Fatalf("keygen request: %v", err)
		}
		req = ae.Request
	}
	if key != nil {
		t.Fatalf("keygen with a hostile member produced key %s (%s)", key.KeyID, key.Status)
	}
	r, err := waitFinal(ctx, cl, req.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if r.Status != client.StatusFailed || r.Error == nil || r.Error.Code != "ceremony.failed" {
		t.Fatalf("keygen with a hostile member ended %s %+v, want failed with ceremony.failed", r.Status, r.Error)
	}
	if took > keygenTimeout {
		t.Errorf("keygen failure took %v, keygen timeout is %v", took, keygenTimeout)
	}
	if len(hp.Invitations()) == before {
		t.Error("the hostile peer was not part of the keygen")
	}
	k, err := cl.GetKey(ctx, r.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	if k.Status != "failed" {
		t.Errorf("key %s of the failed keygen is %q, want failed", k.KeyID, k.Status)
	}
	t.Logf("keygen with the hostile member failed after %v: %s: %s", took.Round(time.Millisecond), r.Error.Code, truncate(r.Error.Detail, 160))
}
