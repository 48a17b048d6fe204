package protocol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	ecdsaresharing "github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	eddsaresharing "github.com/bnb-chain/tss-lib/v2/eddsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"google.golang.org/protobuf/proto"
)

// union returns the sorted union of committees.
func union(cs ...[]string) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// subsets returns every k-element subset of ids, in order.
func subsets(ids []string, k int) [][]string {
	if k == 0 {
		return [][]string{nil}
	}
	if len(ids) < k {
		return nil
	}
	var out [][]string
	for _, rest := range subsets(ids[1:], k-1) {
		out = append(out, append([]string{ids[0]}, rest...))
	}
	return append(out, subsets(ids[1:], k)...)
}

// reshareRun runs one resharing among the nodes of both committees (each
// with a fresh engine) and returns the new shares. fixture names the
// pre-parameter fixture of each new secp256k1 member. old is not modified.
func reshareRun(t testing.TB, spec ReshareSpec, old map[string]*Share, fixture map[string]int, hook hookFunc, bad []string) (map[string]*Share, map[string]error) {
	t.Helper()
	ids := union(spec.OldCommittee, spec.NewCommittee)
	n, es := newCluster(t, ids...)
	n.setHook(hook)
	pres := map[string]*PreParams{}
	if spec.Curve == CurveSecp256k1 {
		for _, id := range spec.NewCommittee {
			pres[id] = loadPreParams(t, fixture[id])
		}
	}
	before := map[string][]byte{}
	for _, id := range spec.OldCommittee {
		before[id] = mustMarshal(t, old[id])
	}
	ctx, cancel := context.WithTimeout(context.Background(), computeTimeout(120*time.Second))
	defer cancel()
	sid := ReshareSessionID("k1", fmt.Sprintf("reshare-%d", spec.NewGeneration), spec, [32]byte(randomSID(t)))
	start := time.Now()
	var honest []string
	for _, id := range ids {
		if !slices.Contains(bad, id) {
			honest = append(honest, id)
		}
	}
	res, errs := runWithBad(ctx, honest, bad, func(ctx context.Context, id string) (*Share, error) {
		var o *Share
		if slices.Contains(spec.OldCommittee, id) {
			o = old[id]
		}
		var p *PreParams
		if pp, ok := pres[id]; ok {
			p = pp
		}
		return es[id].Reshare(ctx, sid, spec, o, p)
	})
	t.Logf("%s resharing %d-of-%v -> %d-of-%v took %v", spec.Curve, spec.OldThreshold, spec.OldCommittee, spec.NewThreshold, spec.NewCommittee, time.Since(start))
	for _, id := range spec.OldCommittee {
		if !bytes.Equal(before[id], mustMarshal(t, old[id])) {
			t.Fatalf("%s: Reshare modified the caller's old share", id)
		}
	}
	return res, errs
}

// requireReshared checks the outcome of a successful resharing.
func requireReshared(t *testing.T, spec ReshareSpec, res map[string]*Share, errs map[string]error) {
	t.Helper()
	if len(errs) > 0 {
		t.Fatalf("resharing failed: %v", errs)
	}
	for _, id := range union(spec.OldCommittee, spec.NewCommittee) {
		s := res[id]
		if !slices.Contains(spec.NewCommittee, id) {
			if s != nil {
				t.Fatalf("%s: old-only member got a share", id)
			}
			continue
		}
		if s == nil {
			t.Fatalf("%s: no new share", id)
		}
		if !bytes.Equal(s.PublicKey(), spec.PublicKey) || s.Curve() != spec.Curve || s.Generation() != spec.NewGeneration {
			t.Fatalf("%s: new share %v, want %s key %x at generation %d", id, s, spec.Curve, spec.PublicKey, spec.NewGeneration)
		}
		// It survives storage, generation included.
		back, err := ParseShare(spec.Curve, mustMarshal(t, s))
		if err != nil || back.Generation() != spec.NewGeneration {
			t.Fatalf("%s: stored share does not parse back at its generation: %v", id, err)
		}
	}
}

// signEvery signs with every k-subset of committee and verifies each
// signature under pub (the key's original public key).
func signEvery(t *testing.T, curve string, shares map[string]*Share, committee []string, k int, pub []byte) {
	t.Helper()
	for _, signers := range subsets(committee, k) {
		if err := signOnce(t, curve, shares, signers, k, pub, 60*time.Second); err != nil {
			t.Fatalf("signing with %v: %v", signers, err)
		}
	}
}

func signOnce(t *testing.T, curve string, shares map[string]*Share, signers []string, k int, pub []byte, timeout time.Duration) error {
	t.Helper()
	_, es := newCluster(t, signers...)
	msg := make([]byte, 32)
	if _, err := rand.Read(msg); err != nil {
		t.Fatal(err)
	}
	msg[0] = 0 // below the curve order
	ctx, cancel := context.WithTimeout(context.Background(), computeTimeout(timeout))
	defer cancel()
	sid := randomSID(t)
	start := time.Now()
	sigs, errs := runParties(signers, func(id string) (*Signature, error) {
		return es[id].Sign(ctx, sid, signers, k, shares[id], msg, nil, nil)
	})
	t.Logf("%s signing with %v took %v", curve, signers, time.Since(start))
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	for id, s := range sigs {
		switch curve {
		case CurveSecp256k1:
			pk, err := btcec.ParsePubKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := btcecdsa.ParseDERSignature(s.DER)
			if err != nil || !sig.Verify(msg, pk) {
				t.Fatalf("%s: signature does not verify under the original public key", id)
			}
		default:
			if !ed25519.Verify(ed25519.PublicKey(pub), msg, s.Sig) {
				t.Fatalf("%s: signature does not verify under the original public key", id)
			}
		}
	}
	return nil
}

// requireMixedGenerationsFail signs with a new-generation share of
// signers[0] and old-generation shares of the others: it must be refused up
// front (ErrInvalidArgument: a share of one generation knows no party key of
// the other, e.g. a node that is not in the new committee) or fail promptly
// with a CeremonyError — never produce a signature, never hang. A party that
// refuses up front never joins, so the others are then stopped (they would
// otherwise wait for it as for any absent member).
func requireMixedGenerationsFail(t *testing.T, curve string, newShares, oldShares map[string]*Share, signers []string, k int) {
	t.Helper()
	shares := map[string]*Share{signers[0]: newShares[signers[0]]}
	for _, id := range signers[1:] {
		shares[id] = oldShares[id]
	}
	_, es := newCluster(t, signers...)
	ctx, cancel := context.WithTimeout(context.Background(), computeTimeout(60*time.Second))
	defer cancel()
	digest := sha256.Sum256([]byte("mixed generations"))
	sid := randomSID(t)
	start := time.Now()
	_, errs := runParties(signers, func(id string) (*Signature, error) {
		sig, err := es[id].Sign(ctx, sid, signers, k, shares[id], digest[:], nil, nil)
		if errors.Is(err, ErrInvalidArgument) {
			cancel()
		}
		return sig, err
	})
	t.Logf("%s signing with mixed generations failed after %v: %v", curve, time.Since(start), errs)
	refused := false
	for _, id := range signers {
		refused = refused || errors.Is(errs[id], ErrInvalidArgument)
	}
	for _, id := range signers {
		err := errs[id]
		var ce *CeremonyError
		switch {
		case err == nil:
			t.Fatalf("%s: mixing generations produced a signature", id)
		case errors.Is(err, ErrInvalidArgument):
		case !errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) || (!refused && errors.Is(err, context.Canceled)):
			t.Fatalf("%s: mixing generations: got %v, want a refusal or a prompt CeremonyError", id, err)
		}
	}
}

// testReshare runs the resharing scenarios on a 2-of-3 key of {a,b,c}.
func testReshare(t *testing.T, curve string, keygenShares map[string]*Share, pub []byte) {
	abc := []string{"node-a", "node-b", "node-c"}
	abcd := []string{"node-a", "node-b", "node-c", "node-d"}
	spec := func(oldC []string, oldK int, oldGen uint32, newC []string, newK int) ReshareSpec {
		return ReshareSpec{Curve: curve, PublicKey: pub, OldCommittee: oldC, OldThreshold: oldK, OldGeneration: oldGen,
			NewCommittee: newC, NewThreshold: newK, NewGeneration: oldGen + 1}
	}
	fixtures := map[string]int{"node-a": 3, "node-b": 4, "node-c": 5, "node-d": 6}

	t.Run("refresh 2-of-3 to 2-of-3", func(t *testing.T) {
		s := spec(abc, 2, 0, abc, 2)
		res, errs := reshareRun(t, s, keygenShares, fixtures, nil, nil)
		requireReshared(t, s, res, errs)
		for _, id := range abc {
			if bytes.Equal(mustMarshal(t, res[id]), mustMarshal(t, keygenShares[id])) {
				t.Fatalf("%s: refreshed share equals the old one", id)
			}
		}
		signEvery(t, curve, res, abc, 2, pub)
		requireMixedGenerationsFail(t, curve, res, keygenShares, []string{"node-a", "node-b"}, 2)
	})

	var added map[string]*Share
	t.Run("add a node: 2-of-3 to 3-of-4", func(t *testing.T) {
		s := spec(abc, 2, 0, abcd, 3)
		res, errs := reshareRun(t, s, keygenShares, fixtures, nil, nil)
		requireReshared(t, s, res, errs)
		signEvery(t, curve, res, abcd, 3, pub)
		added = res
	})

	t.Run("remove a node: 3-of-4 to 2-of-3", func(t *testing.T) {
		if added == nil {
			t.Skip("needs the 3-of-4 key")
		}
		bcd := []string{"node-b", "node-c", "node-d"}
		s := spec(abcd, 3, 1, bcd, 2)
		res, errs := reshareRun(t, s, added, fixtures, nil, nil)
		requireReshared(t, s, res, errs)
		signEvery(t, curve, res, bcd, 2, pub)
	})

	// Party keys per generation do not depend on the curve: one curve's run covers skipped
	// generations (an ECDSA reshare costs seconds, far more under the race detector).
	if curve == CurveEd25519 {
		t.Run("generations may skip: 0 to 5", func(t *testing.T) {
			s := spec(abc, 2, 0, abc, 2)
			s.NewGeneration = 5 // the node's state gives every attempt its own generation
			res, errs := reshareRun(t, s, keygenShares, fixtures, nil, nil)
			requireReshared(t, s, res, errs)
			if err := signOnce(t, curve, res, []string{"node-b", "node-c"}, 2, pub, 60*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("replace a dead node: {a,b} of 2-of-{a,b,c} to 2-of-{a,b,d}", func(t *testing.T) {
		abd := []string{"node-a", "node-b", "node-d"}
		s := spec([]string{"node-a", "node-b"}, 2, 0, abd, 2)
		res, errs := reshareRun(t, s, keygenShares, fixtures, nil, nil)
		requireReshared(t, s, res, errs)
		signEvery(t, curve, res, abd, 2, pub)
		// The dead node's old share no longer combines with the new ones.
		requireMixedGenerationsFail(t, curve, res, keygenShares, []string{"node-a", "node-c"}, 2)
	})
}

func TestReshareECDSA(t *testing.T) {
	k := sharedECDSAKey(t)
	testReshare(t, CurveSecp256k1, k.shares, k.pub)
}

func TestReshareEdDSA(t *testing.T) {
	_, es := newCluster(t, trio...)
	shares := eddsaKeygen(t, es, trio, 2)
	testReshare(t, CurveEd25519, shares, shares["node-a"].PublicKey())
}

// An old-committee member that reports another public key than the one
// being reshared is blamed by every new member (tss-lib v2.0.2's own check
// compares the first old party's report with itself).
func TestReshareHostileOldPartyReportsWrongKey(t *testing.T) {
	for _, curve := range []string{CurveEd25519, CurveSecp256k1} {
		t.Run(curve, func(t *testing.T) {
			var shares map[string]*Share
			var pub []byte
			if curve == CurveSecp256k1 {
				k := sharedECDSAKey(t)
				shares, pub = k.shares, k.pub
			} else {
				_, es := newCluster(t, trio...)
				shares = eddsaKeygen(t, es, trio, 2)
				pub = shares["node-a"].PublicKey()
			}
			r1 := typeName(&eddsaresharing.DGRound1Message{})
			if curve == CurveSecp256k1 {
				r1 = typeName(&ecdsaresharing.DGRound1Message{})
			}
			hook := func(from, to string, m *Message) []*Message {
				if from != "node-c" || m.Kind != MsgTSS || anyTypeOf(m.Payload) != r1 {
					return []*Message{m}
				}
				// Report the generator instead of the key (consistently to all).
				var content proto.Message
				if curve == CurveSecp256k1 {
					var c ecdsaresharing.DGRound1Message
					if err := unmarshalAny(m.Payload, &c); err != nil {
						t.Error(err)
					}
					c.EcdsaPubX, c.EcdsaPubY = tss.S256().Params().Gx.Bytes(), tss.S256().Params().Gy.Bytes()
					content = &c
				} else {
					var c eddsaresharing.DGRound1Message
					if err := unmarshalAny(m.Payload, &c); err != nil {
						t.Error(err)
					}
					c.EddsaPubX, c.EddsaPubY = tss.Edwards().Params().Gx.Bytes(), tss.Edwards().Params().Gy.Bytes()
					content = &c
				}
				return []*Message{withPayload(m, mustMarshalAny(t, content))}
			}
			abd := []string{"node-a", "node-b", "node-d"}
			s := ReshareSpec{Curve: curve, PublicKey: pub, OldCommittee: trio, OldThreshold: 2, OldGeneration: 0,
				NewCommittee: abd, NewThreshold: 2, NewGeneration: 1}
			_, errs := reshareRun(t, s, shares, map[string]int{"node-a": 7, "node-b": 8, "node-d": 9}, hook, []string{"node-c"})
			for _, id := range abd {
				requireCeremonyError(t, id, errs[id], ErrInvalidMessage, "node-c")
				if !strings.Contains(errs[id].Error(), "public key") {
					t.Fatalf("%s: want a public key complaint, got %v", id, errs[id])
				}
			}
		})
	}
}

func TestReshareRejectsBadArguments(t *testing.T) {
	_, es := newCluster(t, trio...)
	shares := eddsaKeygen(t, es, trio, 2)
	pub := shares["node-a"].PublicKey()
	k := sharedECDSAKey(t)
	e := es["node-a"]
	good := func() ReshareSpec {
		return ReshareSpec{Curve: CurveEd25519, PublicKey: pub, OldCommittee: trio, OldThreshold: 2, OldGeneration: 0,
			NewCommittee: trio, NewThreshold: 2, NewGeneration: 1}
	}
	otherPub := bytes.Clone(pub)
	otherPub[0] ^= 1
	usedPre := loadPreParams(t, 10)
	usedPre.used.Store(true)
	tests := []struct {
		name   string
		mutate func(s *ReshareSpec)
		old    *Share
		pre    *PreParams
	}{
		{"unknown curve", func(s *ReshareSpec) { s.Curve = "p256" }, shares["node-a"], nil},
		{"generation does not follow", func(s *ReshareSpec) { s.NewGeneration = 0 }, shares["node-a"], nil},
		{"generation goes back", func(s *ReshareSpec) { s.OldGeneration, s.NewGeneration = 3, 2 }, shares["node-a"], nil},
		{"old threshold above the old committee", func(s *ReshareSpec) { s.OldThreshold = 4 }, shares["node-a"], nil},
		{"new threshold 1", func(s *ReshareSpec) { s.NewThreshold = 1 }, shares["node-a"], nil},
		{"new committee of one", func(s *ReshareSpec) { s.NewCommittee = []string{"node-a"} }, shares["node-a"], nil},
		{"duplicate member", func(s *ReshareSpec) { s.NewCommittee = []string{"node-a", "node-a", "node-b"} }, shares["node-a"], nil},
		{"in neither committee", func(s *ReshareSpec) {
			s.OldCommittee = []string{"node-b", "node-c"}
			s.NewCommittee = []string{"node-b", "node-c"}
		}, nil, nil},
		{"no old share", func(s *ReshareSpec) {}, nil, nil},
		{"old share of another node", func(s *ReshareSpec) {}, shares["node-b"], nil},
		{"old share not in the old committee", func(s *ReshareSpec) { s.OldCommittee = []string{"node-b", "node-c"} }, shares["node-a"], nil},
		{"old share of another generation", func(s *ReshareSpec) { s.OldGeneration, s.NewGeneration = 1, 2 }, shares["node-a"], nil},
		{"old share of another key", func(s *ReshareSpec) { s.PublicKey = otherPub }, shares["node-a"], nil},
		{"old share of another curve", func(s *ReshareSpec) { s.Curve, s.PublicKey = CurveSecp256k1, k.pub }, shares["node-a"], loadPreParams(t, 11)},
		// tss-lib #226: an old committee naming a node that holds no share
		// makes tss-lib panic (PrepareForSigning: len(ks) <= i); refused here.
		{"old committee member without a share", func(s *ReshareSpec) { s.OldCommittee = []string{"node-a", "node-b", "node-c", "node-d"} }, shares["node-a"], nil},
		{"ed25519 with pre-parameters", func(s *ReshareSpec) {}, shares["node-a"], loadPreParams(t, 11)},
		{"secp256k1 new member without pre-parameters", func(s *ReshareSpec) { s.Curve, s.PublicKey = CurveSecp256k1, k.pub }, k.shares["node-a"], nil},
		{"secp256k1 with used pre-parameters", func(s *ReshareSpec) { s.Curve, s.PublicKey = CurveSecp256k1, k.pub }, k.shares["node-a"], usedPre},
		{"secp256k1 old-only member with pre-parameters", func(s *ReshareSpec) {
			s.Curve, s.PublicKey = CurveSecp256k1, k.pub
			s.NewCommittee = []string{"node-b", "node-c"}
		}, k.shares["node-a"], loadPreParams(t, 11)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			// A short deadline: an argument that got through would start a
			// ceremony with peers that never come.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := e.Reshare(ctx, randomSID(t), s, tc.old, tc.pre)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestPartyKeyAt(t *testing.T) {
	n := tss.Edwards().Params().N
	seen := map[string]string{}
	for _, id := range []string{"node-a", "node-b", "12D3KooWabc"} {
		if PartyKeyAt(id, 0).Cmp(PartyKey(id)) != 0 {
			t.Fatalf("%s: generation 0 is not PartyKey", id)
		}
		for gen := uint32(0); gen < 50; gen++ {
			k := PartyKeyAt(id, gen)
			if k.Sign() <= 0 || k.Cmp(n) >= 0 {
				t.Fatalf("%s/%d: key out of range", id, gen)
			}
			if prev, dup := seen[k.String()]; dup {
				t.Fatalf("%s/%d and %s share a party key", id, gen, prev)
			}
			seen[k.String()] = fmt.Sprintf("%s/%d", id, gen)
		}
	}
	if PartyKeyAt("node-a", 1).Cmp(new(big.Int).Set(PartyKeyAt("node-a", 1))) != 0 {
		t.Fatal("not stable")
	}
}

// A generation-0 share is written exactly as before (version 1); a later
// one in version 2, which records its generation.
func TestShareGenerationEncoding(t *testing.T) {
	for _, curve := range []string{CurveSecp256k1, CurveEd25519} {
		s := syntheticShare(t, curve)
		b := mustMarshal(t, s)
		if b[len(shareMagic)] != 1 {
			t.Fatalf("%s: generation-0 share written in version %d", curve, b[len(shareMagic)])
		}
		g := *s
		g.gen = 7
		b2 := mustMarshal(t, &g)
		if b2[len(shareMagic)] != 2 {
			t.Fatalf("%s: generation-7 share written in version %d", curve, b2[len(shareMagic)])
		}
		back, err := ParseShare(curve, b2)
		if err != nil || back.Generation() != 7 || !bytes.Equal(mustMarshal(t, back), b2) {
			t.Fatalf("%s: version 2 does not round-trip: %v", curve, err)
		}
		if back, err := ParseShare(curve, b); err != nil || back.Generation() != 0 {
			t.Fatalf("%s: version 1 does not parse at generation 0: %v", curve, err)
		}
		if strings.Contains(fmt.Sprint(back), fmt.Sprint(back.ecdsa)) && back.ecdsa != nil {
			t.Fatal("share printed its save data")
		}
	}
}

func TestMessageRoleEncoding(t *testing.T) {
	sid := SessionID{1}
	for _, r := range []PartyRole{RoleNone, RoleOld, RoleNew} {
		m := &Message{Session: sid, Kind: MsgTSS, Broadcast: true, Role: r, Payload: []byte{1, 2}}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalMessage(b, "node-b")
		if err != nil || got.Role != r || !got.Broadcast {
			t.Fatalf("role %s: got %+v, %v", r, got, err)
		}
		if r == RoleNone && b[34] != flagBroadcast {
			t.Fatalf("keygen/sign envelope changed: flags %#x", b[34])
		}
	}
	bad := func(name string, b []byte) {
		if _, err := UnmarshalMessage(b, "node-b"); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	b, _ := (&Message{Session: sid, Kind: MsgTSS, Payload: []byte{1}}).MarshalBinary()
	both := bytes.Clone(b)
	both[34] = flagRoleOld | flagRoleNew
	bad("both roles", both)
	e := echo{Origin: "node-c", Type: "t", Hash: [32]byte{1}}.encode()
	eb, _ := (&Message{Session: sid, Kind: MsgEcho, Payload: e}).MarshalBinary()
	eb[34] = flagRoleOld
	bad("role on an echo", eb)
	if _, err := (&Message{Session: sid, Kind: MsgAbort, Role: RoleNew, Payload: []byte("x")}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("role on an abort encoded: %v", err)
	}
}

// A resharing message whose role does not match the sender's committee, or
// the message type, is blamed on the sender.
func TestReshareRoleMismatchIsBlamed(t *testing.T) {
	_, es := newCluster(t, trio...)
	shares := eddsaKeygen(t, es, trio, 2)
	pub := shares["node-a"].PublicKey()
	for _, tc := range []struct {
		name string
		role PartyRole
	}{{"claims the committee it is not in", RoleNew}, {"claims no role", RoleNone}} {
		t.Run(tc.name, func(t *testing.T) {
			// node-c is in the old committee only; it claims tc.role for its messages.
			s := ReshareSpec{Curve: CurveEd25519, PublicKey: pub, OldCommittee: trio, OldThreshold: 2,
				NewCommittee: []string{"node-a", "node-b", "node-d"}, NewThreshold: 2, NewGeneration: 1}
			hook := func(from, to string, m *Message) []*Message {
				if from != "node-c" || m.Kind != MsgTSS {
					return []*Message{m}
				}
				mm := *m
				mm.Role = tc.role
				return []*Message{&mm}
			}
			_, errs := reshareRun(t, s, shares, nil, hook, []string{"node-c"})
			for _, id := range []string{"node-a", "node-b", "node-d"} {
				requireCeremonyError(t, id, errs[id], ErrInvalidMessage, "node-c")
			}
		})
	}
}

// BenchmarkReshareECDSA: a 2-of-3 ECDSA refresh through Engine over the
// in-process transport (fixture pre-parameters).
func BenchmarkReshareECDSA(b *testing.B) {
	k := sharedECDSAKey(b)
	spec := ReshareSpec{Curve: CurveSecp256k1, PublicKey: k.pub, OldCommittee: trio, OldThreshold: 2,
		NewCommittee: trio, NewThreshold: 2, NewGeneration: 1}
	fixtures := map[string]int{"node-a": 3, "node-b": 4, "node-c": 5}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, errs := reshareRun(b, spec, k.shares, fixtures, nil, nil)
		if len(errs) > 0 {
			b.Fatalf("resharing failed: %v", errs)
		}
	}
}

// An old-committee member that tells new members different things in a
// broadcast (its VSS decommitment) is caught by the echoes and blamed.
func TestReshareEquivocationIsBlamed(t *testing.T) {
	_, es := newCluster(t, trio...)
	shares := eddsaKeygen(t, es, trio, 2)
	pub := shares["node-a"].PublicKey()
	r3 := typeName(&eddsaresharing.DGRound3Message2{})
	hook := func(from, to string, m *Message) []*Message {
		if from != "node-c" || to != "node-d" || m.Kind != MsgTSS || anyTypeOf(m.Payload) != r3 {
			return []*Message{m}
		}
		var c eddsaresharing.DGRound3Message2
		if err := unmarshalAny(m.Payload, &c); err != nil {
			t.Error(err)
		}
		c.VDecommitment[0] = append([]byte{1}, c.VDecommitment[0]...) // another randomness
		return []*Message{withPayload(m, mustMarshalAny(t, &c))}
	}
	abd := []string{"node-a", "node-b", "node-d"}
	s := ReshareSpec{Curve: CurveEd25519, PublicKey: pub, OldCommittee: trio, OldThreshold: 2,
		NewCommittee: abd, NewThreshold: 2, NewGeneration: 1}
	_, errs := reshareRun(t, s, shares, nil, hook, []string{"node-c"})
	for _, id := range abd {
		var ce *CeremonyError
		if !errors.As(errs[id], &ce) || !slices.Contains(ce.Culprits, "node-c") {
			t.Fatalf("%s: got %v, want a CeremonyError blaming node-c", id, errs[id])
		}
	}
	// The members that compared echoes name the equivocation itself.
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrEquivocation, "node-c")
	}
}

// An old-committee member that never shows up makes the others time out
// blaming it, and every goroutine of the ceremony ends.
func TestReshareSilentOldMemberTimesOut(t *testing.T) {
	_, es := newCluster(t, trio...)
	shares := eddsaKeygen(t, es, trio, 2)
	pub := shares["node-a"].PublicKey()
	baseline := runtime.NumGoroutine()
	ids := []string{"node-a", "node-b", "node-d"} // node-c is in the old committee and never starts
	n := newMemNet()
	engines := map[string]*Engine{}
	for _, id := range ids {
		engines[id] = n.addEngine(t, id, nil)
	}
	s := ReshareSpec{Curve: CurveEd25519, PublicKey: pub, OldCommittee: trio, OldThreshold: 2,
		NewCommittee: ids, NewThreshold: 2, NewGeneration: 1}
	const timeout = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sid := randomSID(t)
	_, errs := runParties(ids, func(id string) (*Share, error) {
		var o *Share
		if id != "node-d" {
			o = shares[id]
		}
		return engines[id].Reshare(ctx, sid, s, o, nil)
	})
	for _, id := range ids {
		requireCeremonyError(t, id, errs[id], context.DeadlineExceeded, "node-c")
	}
	for _, e := range engines {
		e.Close()
	}
	settleGoroutines(t, baseline)
}

// A new member whose DLN proof carries a crafted length prefix would make
// tss-lib v2.0.2 panic in a goroutine it spawns in round 4 (slice bounds in
// ParseSecrets), killing the process; custos parses it first, under recover,
// and blames the sender.
func TestReshareCraftedDLNProofIsBlamed(t *testing.T) {
	k := sharedECDSAKey(t)
	r2 := typeName(&ecdsaresharing.DGRound2Message1{})
	hook := func(from, to string, m *Message) []*Message {
		if from != "node-d" || m.Kind != MsgTSS || anyTypeOf(m.Payload) != r2 {
			return []*Message{m}
		}
		var c ecdsaresharing.DGRound2Message1
		if err := unmarshalAny(m.Payload, &c); err != nil {
			t.Error(err)
		}
		c.Dlnproof_1[0] = bytes.Repeat([]byte{0xff}, 8) // a length prefix of -1 as int64
		return []*Message{withPayload(m, mustMarshalAny(t, &c))}
	}
	abd := []string{"node-a", "node-b", "node-d"}
	s := ReshareSpec{Curve: CurveSecp256k1, PublicKey: k.pub, OldCommittee: trio, OldThreshold: 2,
		NewCommittee: abd, NewThreshold: 2, NewGeneration: 1}
	_, errs := reshareRun(t, s, k.shares, map[string]int{"node-a": 3, "node-b": 4, "node-d": 5}, hook, []string{"node-d"})
	for _, id := range []string{"node-a", "node-b"} {
		requireCeremonyError(t, id, errs[id], ErrInvalidMessage, "node-d")
	}
}
