package protocol

import (
	"sort"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	ecdsasigning "github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v2/eddsa/keygen"
	eddsasigning "github.com/bnb-chain/tss-lib/v2/eddsa/signing"
	"google.golang.org/protobuf/proto"
)

// msgSpec is what custos knows about one tss-lib message type: the round in
// which it is sent and whether it is a broadcast (the wire bytes do not say).
// Every type of a protocol is expected exactly once from every other party.
type msgSpec struct {
	round     int
	broadcast bool
}

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

func bc(round int) msgSpec  { return msgSpec{round: round, broadcast: true} }
func p2p(round int) msgSpec { return msgSpec{round: round, broadcast: false} }

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

// expectedMessages is how many messages one party receives in a ceremony of
// n parties: every type from every other party, and an echo from each of the
// n-2 others for every broadcast of every other party.
func (p *protoSpec) expectedMessages(n int) int {
	return (n-1)*len(p.types) + (n-1)*(n-2)*len(p.bcasts)
}
