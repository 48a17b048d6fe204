package state

import (
	"encoding/json"
	"fmt"

	"github.com/custos/custos/internal/authn"
)

// The FSM's table of typed commands (in the manner of Consul's FSM): every kind of raft
// entry is one Go type with its newest schema version and its decoder; applying it is
// one applier method. Adding a command kind means one type, one apply method and one
// row here (and its proposer in node). A type this binary does not know, a version
// newer than it knows, or a payload with a field it does not know (strict decoding) halts
// Apply loudly — never skipped, never half-read — so that a rolling upgrade cannot make
// nodes diverge: a new kind or field is proposed only once every member runs a binary
// that knows it (node's propose gate refuses such entries from members with
// ValidateEntry, so only a leader could propose one).

// command is one row of the table.
type command struct {
	version int
	// legacy marks the unsigned kinds written before the cluster was strict: they
	// replay from old logs (decoded as leniently as their binary did) and are refused
	// once the cluster is strict.
	legacy bool
	decode func(payload []byte) (entry, error)
}

// entry is a decoded command: apply applies it; check, when set, makes ahead of time the
// signature checks apply will make (checker: on another core, before the entry's turn,
// so that apply finds them done).
type entry struct {
	apply func(*applier) Result
	check func(*checker)
}

// commands is the table.
var commands = map[string]command{
	TypeClusterInit: {version: 3, decode: strict((*applier).clusterInit)}, // v3: events
	TypeUpgrade:     {version: 2, decode: strict((*applier).upgrade)},     // v2: events
	TypeSubmit:      {version: 1, decode: decodeSubmit},
	TypeReport:      {version: 1, decode: decodeReport},

	// v2: access keys (caller kind, access.* ops, X-Auth-Token form), token nonce key;
	// v3: proposal id.
	TypeCall:           {version: 3, legacy: true, decode: lenient((*applier).call)},
	TypeShareStored:    {version: 2, legacy: true, decode: lenient((*applier).shareStored)}, // v2: inline_preparams
	TypeCeremonyResult: {version: 1, legacy: true, decode: lenient((*applier).ceremonyResult)},
	TypeCeremonyFailed: {version: 1, legacy: true, decode: lenient((*applier).ceremonyFailed)},
	TypeReschedule: {version: 1, legacy: true, decode: lenient(func(a *applier, c *Reschedule) Result {
		return a.reschedule(c, "cluster")
	})},
	TypeFail: {version: 1, legacy: true, decode: lenient(func(a *applier, c *Fail) Result {
		return a.fail(c, "cluster")
	})},
}

// reportBodies decodes a Report's body by its kind, strictly; the apply function gets
// the report's signer (node id).
var reportBodies = map[string]func([]byte) (reportEntry, error){
	TypeShareStored:       reportBody(func(c *ShareStored) string { return c.Node }, (*applier).shareStored),
	TypeReshareStored:     reportBody(func(c *ReshareStored) string { return c.Node }, (*applier).reshareStored),
	TypeCeremonyResult:    reportBodyChecked(func(c *CeremonyResult) string { return c.Node }, (*applier).ceremonyResult, (*checker).result),
	TypeCeremonyFailed:    reportBody(func(c *CeremonyFailed) string { return c.Node }, (*applier).ceremonyFailed),
	TypeCheckpoint:        reportBody(func(c *StateCheckpoint) string { return c.Node }, (*applier).checkpointVote),
	TypeCheckpointRequest: reportBody(func(c *CheckpointRequest) string { return c.Node }, func(a *applier, _ *CheckpointRequest) Result { return a.checkpointRequest() }),
	TypeReschedule:        leaderReport((*applier).reschedule),
	TypeFail:              leaderReport((*applier).fail),
	TypeBroadcast:         leaderReport((*applier).broadcast),
	TypeWebhookDelivery:   leaderReport((*applier).webhookDelivery),
	TypeMemberStep:        leaderReport((*applier).memberStep),
	TypeMemberReshare:     leaderReport((*applier).memberReshare),
}

// strict is a decoder that refuses unknown fields and trailing data.
func strict[T any](apply func(*applier, *T) Result) func([]byte) (entry, error) {
	return func(b []byte) (entry, error) {
		var c T
		if err := decodeStrict(b, &c); err != nil {
			return entry{}, err
		}
		return entry{apply: func(a *applier) Result { return apply(a, &c) }}, nil
	}
}

// lenient decodes a legacy kind exactly as the binary that wrote it did.
func lenient[T any](apply func(*applier, *T) Result) func([]byte) (entry, error) {
	return func(b []byte) (entry, error) {
		var c T
		if err := json.Unmarshal(b, &c); err != nil {
			return entry{}, err
		}
		return entry{apply: func(a *applier) Result { return apply(a, &c) }}, nil
	}
}

func decodeSubmit(b []byte) (entry, error) {
	var s Submit
	if err := decodeStrict(b, &s); err != nil {
		return entry{}, err
	}
	var body SubmitBody
	if err := decodeStrict(s.Body, &body); err != nil {
		return entry{}, fmt.Errorf("submit body: %w", err)
	}
	return entry{
		apply: func(a *applier) Result { return a.submit(&s, &body) },
		check: func(c *checker) {
			c.node(s.Origin, authn.DomainRequest, s.Body, s.OriginSig)
			c.request(body.Signed)
		},
	}, nil
}

func decodeReport(b []byte) (entry, error) {
	var rp Report
	if err := decodeStrict(b, &rp); err != nil {
		return entry{}, err
	}
	dec, ok := reportBodies[rp.Kind]
	if !ok {
		return entry{}, fmt.Errorf("unknown report kind %q", rp.Kind)
	}
	body, err := dec(rp.Body)
	if err != nil {
		return entry{}, fmt.Errorf("report %s: %w", rp.Kind, err)
	}
	return entry{
		apply: func(a *applier) Result { return a.report(&rp, body.apply) },
		check: func(c *checker) {
			// The body's checks only for a report a member signed: nothing else costs
			// the workers more than the signature check Apply refuses it on.
			if c.node(rp.Node, authn.DomainReport, ReportMessage(rp.Kind, rp.Body), rp.Sig) && body.check != nil {
				body.check(c)
			}
		},
	}, nil
}

// reportEntry is a decoded report body: apply gets the report's signer (node id); check,
// when set, makes ahead of time the checks of the body's own that apply will make.
type reportEntry struct {
	apply func(a *applier, node string) Result
	check func(*checker)
}

// reportBody decodes a member's report about itself: the apply is refused unless the
// report's signer is the node the body names.
func reportBody[T any](node func(*T) string, apply func(*applier, *T) Result) func([]byte) (reportEntry, error) {
	return reportBodyChecked(node, apply, nil)
}

// reportBodyChecked is reportBody with check (nil: none) run ahead on the decoded body.
func reportBodyChecked[T any](node func(*T) string, apply func(*applier, *T) Result, check func(*checker, *T)) func([]byte) (reportEntry, error) {
	return func(b []byte) (reportEntry, error) {
		var c T
		if err := decodeStrict(b, &c); err != nil {
			return reportEntry{}, err
		}
		e := reportEntry{apply: func(a *applier, signer string) Result {
			if n := node(&c); n != signer {
				a.audit("node:"+signer, "report.refused", truncate("node:"+n, 80), "refused", "auth.signature_invalid")
				return refuse("auth.signature_invalid", "a node reports only for itself")
			}
			return apply(a, &c)
		}}
		if check != nil {
			e.check = func(ck *checker) { check(ck, &c) }
		}
		return e, nil
	}
}

// leaderReport decodes one of the leader's decisions, attributed to its signer.
func leaderReport[T any](apply func(*applier, *T, string) Result) func([]byte) (reportEntry, error) {
	return func(b []byte) (reportEntry, error) {
		var c T
		if err := decodeStrict(b, &c); err != nil {
			return reportEntry{}, err
		}
		return reportEntry{apply: func(a *applier, signer string) Result { return apply(a, &c, "node:"+signer) }}, nil
	}
}

// ValidateEntry decodes an entry's payload as Apply would, without applying it: the
// leader refuses a member's proposal that this binary could not apply (rather than let
// it halt every node).
func ValidateEntry(typ string, payload []byte) error {
	c, ok := commands[typ]
	if !ok {
		return fmt.Errorf("unknown entry kind %q", typ)
	}
	_, err := c.decode(payload)
	return err
}
