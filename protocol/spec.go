package protocol

import (
	"sort"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	ecdsaresharing "github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsaresharing "github.com/bnb-chain/tss-lib/v2/eddsa/resharing"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"google.golang.org/protobuf/proto"
)

// msgSpec is what custos knows about one tss-lib message type: the round in
// which it is sent, whether it is a broadcast (the wire bytes do not say),
// which committee sends it and which receive it. In keygen and signing every
// type is expected exactly once from every other party (from RoleNone to
// RoleNone); in a resharing a type is expected exactly once from every other
// node in the sending committee by every node in a receiving committee.
type msgSpec struct {
	round     int
	broadcast bool
	from      PartyRole
	to        roleSet
}

// roleSet is a set of PartyRoles (bit 1<<role).
type roleSet uint8

func rolesOf(rs ...PartyRole) roleSet {
	var s roleSet
	for _, r := range rs {
		s |= 1 << r
	}
	return s
}

func (s roleSet) has(r PartyRole) bool { return s&(1<<r) != 0 }

// protoSpec describes one tss-lib protocol as custos runs it.
type protoSpec struct {
	kind   string
	types  map[string]msgSpec
	bcasts []string // sorted broadcast type names
}

func newSpec(kind string, entries ...specEntry) *protoSpec {
	p := &protoSpec{kind: kind, types: make(map[string]msgSpec, len(entries))}
	for _, e := range entries {
		name := string(proto.MessageName(e.m))
		p.types[name] = e.s
		if e.s.broadcast {
			p.bcasts = append(p.bcasts, name)
		}
	}
	sort.Strings(p.bcasts)
	return p
}

// specEntry pairs a tss-lib message type with what custos knows about it.
type specEntry struct {
	m proto.Message
	s msgSpec
}

func bc(round int) msgSpec {
	return msgSpec{round: round, broadcast: true, from: RoleNone, to: rolesOf(RoleNone)}
}

func p2p(round int) msgSpec {
	return msgSpec{round: round, broadcast: false, from: RoleNone, to: rolesOf(RoleNone)}
}

// rbc and rp2p describe resharing messages: sent by the from committee's
// parties to the to committees' parties.
func rbc(round int, from PartyRole, to ...PartyRole) msgSpec {
	return msgSpec{round: round, broadcast: true, from: from, to: rolesOf(to...)}
}

func rp2p(round int, from PartyRole, to ...PartyRole) msgSpec {
	return msgSpec{round: round, broadcast: false, from: from, to: rolesOf(to...)}
}

// The tables below mirror the New*Message constructors of tss-lib v2.0.2.

func ecdsaKeygenSpec() *protoSpec {
	return newSpec(KindKeygenECDSA,
		specEntry{&ecdsakeygen.KGRound1Message{}, bc(1)},
		specEntry{&ecdsakeygen.KGRound2Message1{}, p2p(2)},
		specEntry{&ecdsakeygen.KGRound2Message2{}, bc(2)},
		specEntry{&ecdsakeygen.KGRound3Message{}, bc(3)},
	)
}

func eddsaKeygenSpec() *protoSpec {
	return newSpec(KindKeygenEdDSA,
		specEntry{&eddsakeygen.KGRound1Message{}, bc(1)},
		specEntry{&eddsakeygen.KGRound2Message1{}, p2p(2)},
		specEntry{&eddsakeygen.KGRound2Message2{}, bc(2)},
	)
}

func ecdsaSignSpec() *protoSpec {
	return newSpec(KindSignECDSA,
		specEntry{&ecdsasigning.SignRound1Message1{}, p2p(1)},
		specEntry{&ecdsasigning.SignRound1Message2{}, bc(1)},
		specEntry{&ecdsasigning.SignRound2Message{}, p2p(2)},
		specEntry{&ecdsasigning.SignRound3Message{}, bc(3)},
		specEntry{&ecdsasigning.SignRound4Message{}, bc(4)},
		specEntry{&ecdsasigning.SignRound5Message{}, bc(5)},
		specEntry{&ecdsasigning.SignRound6Message{}, bc(6)},
		specEntry{&ecdsasigning.SignRound7Message{}, bc(7)},
		specEntry{&ecdsasigning.SignRound8Message{}, bc(8)},
		specEntry{&ecdsasigning.SignRound9Message{}, bc(9)},
	)
}

func eddsaSignSpec() *protoSpec {
	return newSpec(KindSignEdDSA,
		specEntry{&eddsasigning.SignRound1Message{}, bc(1)},
		specEntry{&eddsasigning.SignRound2Message{}, bc(2)},
		specEntry{&eddsasigning.SignRound3Message{}, bc(3)},
	)
}

// The resharing tables mirror the New*Message constructors of tss-lib
// v2.0.2's ecdsa/resharing and eddsa/resharing: IsToOldCommittee means "to
// the old committee", IsToOldAndNewCommittees "to both", neither "to the new
// committee"; rounds 1 and 3 are the old committee's, 2 and 4 the new one's.

func ecdsaReshareSpec() *protoSpec {
	return newSpec(KindReshareECDSA,
		specEntry{&ecdsaresharing.DGRound1Message{}, rbc(1, RoleOld, RoleNew)},
		specEntry{&ecdsaresharing.DGRound2Message1{}, rbc(2, RoleNew, RoleNew)},
		specEntry{&ecdsaresharing.DGRound2Message2{}, rbc(2, RoleNew, RoleOld)},
		specEntry{&ecdsaresharing.DGRound3Message1{}, rp2p(3, RoleOld, RoleNew)},
		specEntry{&ecdsaresharing.DGRound3Message2{}, rbc(3, RoleOld, RoleNew)},
		specEntry{&ecdsaresharing.DGRound4Message1{}, rp2p(4, RoleNew, RoleNew)},
		specEntry{&ecdsaresharing.DGRound4Message2{}, rbc(4, RoleNew, RoleOld, RoleNew)},
	)
}

func eddsaReshareSpec() *protoSpec {
	return newSpec(KindReshareEdDSA,
		specEntry{&eddsaresharing.DGRound1Message{}, rbc(1, RoleOld, RoleNew)},
		specEntry{&eddsaresharing.DGRound2Message{}, rbc(2, RoleNew, RoleOld)},
		specEntry{&eddsaresharing.DGRound3Message1{}, rp2p(3, RoleOld, RoleNew)},
		specEntry{&eddsaresharing.DGRound3Message2{}, rbc(3, RoleOld, RoleNew)},
		specEntry{&eddsaresharing.DGRound4Message{}, rbc(4, RoleNew, RoleOld, RoleNew)},
	)
}

// expectedMessages is how many messages one party receives in a ceremony of
// n parties: every type from every other party, and an echo from each of the
// n-2 others for every broadcast of every other party (an upper bound for a
// resharing among n nodes).
func (p *protoSpec) expectedMessages(n int) int {
	return (n-1)*len(p.types) + (n-1)*(n-2)*len(p.bcasts)
}
