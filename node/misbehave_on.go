//go:build custos_testhooks

package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/custos/custos/internal/authn"
	"github.com/custos/custos/internal/ceremony"
	"github.com/custos/custos/internal/state"
	"github.com/custos/custos/internal/statedb"
)

// misbehaveHook plays a compromised leader in test builds only (CUSTOS_TEST_MISBEHAVE):
//   - swap-digest: schedules a sign request whose body carries another digest than the one
//     the caller signed (re-signing the entry as its own origin);
//   - bad-signature: corrupts the caller's request signature;
//
// and a compromised member, leader or follower (misbehaveAfterCommit):
//   - forge: once a request it received committed, proposes next to it what a compromised
//     member would: the request replayed with a fresh proposal id, admin calls without a
//     token, share reports, results and failures in other members' names.
//
// and a compromised member's ceremony reports (runnerReporter):
//   - reshare-wrong-key: as a new party of a reshare, it reports (signed, as its own) a
//     public key other than the key's, to make the cluster adopt another key.
//
// Honest nodes' FSMs must refuse every one of these (DESIGN.md: the FSM believes
// signatures, never proposers).
func (n *Node) beforeStamp() func(*state.Submit) { return n.misbehaveHook }

func (n *Node) afterCommit() func(*state.SubmitBody, state.Result) { return n.misbehaveAfterCommit }

func (n *Node) misbehaveHook(s *state.Submit) {
	mode := os.Getenv("CUSTOS_TEST_MISBEHAVE")
	if mode == "" {
		return
	}
	var b state.SubmitBody
	if json.Unmarshal(s.Body, &b) != nil || b.Signed == nil {
		return
	}
	c := state.ParseRequest(b.Signed)
	switch mode {
	case "swap-digest", "bad-signature":
		if c.Op != state.OpKeySign {
			return
		}
		f := *b.Signed
		if mode == "swap-digest" {
			var body state.SignBody
			if json.Unmarshal(f.Body, &body) != nil {
				return
			}
			if m, err := hex.DecodeString(body.Message); err == nil && len(m) > 0 {
				m[0] ^= 0xff
				body.Message = hex.EncodeToString(m)
			}
			f.Body, _ = json.Marshal(body)
			n.log.Warn("TEST HOOK: compromised coordinator swapped the digest")
		} else {
			f.Signature = corruptMiddle(f.Signature)
			if i := strings.LastIndexByte(f.XAuthToken, '|'); i >= 0 {
				// Corrupt the X-Auth-Token's signature field only, so the token still parses.
				f.XAuthToken = f.XAuthToken[:i+1] + corruptMiddle(f.XAuthToken[i+1:])
			}
			n.log.Warn("TEST HOOK: compromised coordinator corrupted the request signature")
		}
		b.Signed = &f
		if forged, err := n.raft.SignSubmit(&b); err == nil {
			s.Origin, s.Body, s.OriginSig = forged.Origin, forged.Body, forged.OriginSig
		}
	}
}

// misbehaveAfterCommit plays a compromised entry node (CUSTOS_TEST_MISBEHAVE=forge): once
// a keygen or sign request it received committed, it forges around it.
func (n *Node) misbehaveAfterCommit(b *state.SubmitBody, res state.Result) {
	if os.Getenv("CUSTOS_TEST_MISBEHAVE") != "forge" {
		return
	}
	if res.AccessKeyID != "" && state.ParseRequest(b.Signed).Op == state.OpAccessCreate {
		// A grant it saw: once the grantor revokes it, propose the grant again.
		n.goBG(func(context.Context) { n.recreateGrant(*b, res.AccessKeyID) })
		return
	}
	if res.RequestID == "" {
		return
	}
	r := n.fsm.Request(res.RequestID)
	if r == nil {
		return
	}
	n.goBG(func(context.Context) { n.forge(*b, r) })
}

// forge proposes entries a compromised member would try, through the same path as its
// honest proposals (locally as the leader, over the propose RPC as a follower).
func (n *Node) forge(b state.SubmitBody, r *state.Request) {
	ctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
	defer cancel()
	try := func(what, typ string, payload any) {
		res, err := n.raft.Propose(ctx, typ, payload)
		n.log.Warn("TEST HOOK: forged entry proposed", "what", what, "err", err, "code", res.Code)
	}
	// The caller's request again, with a fresh proposal id.
	replay := b
	replay.ProposalID = testID()
	if s, err := n.raft.SignSubmit(&replay); err == nil {
		try("replay", state.TypeSubmit, s)
	}
	// Admin calls with no token, or with the user's own credentials on an admin route.
	for _, f := range []state.SignedForm{
		{Method: "POST", Path: "/v1/admin/users/1/enable"},
		{Method: "PUT", Path: "/v1/admin/users/1/permissions", Body: []byte(`{"permissions":["keys:create","keys:read","keys:sign","keys:delete","access:manage"]}`)},
		{Method: "POST", Path: "/v1/admin/users", Body: []byte(`{"name":"mallory"}`)},
	} {
		f := f
		if s, err := n.raft.SignSubmit(&state.SubmitBody{Signed: &f, ProposalID: testID()}); err == nil {
			try("admin call without a token", state.TypeSubmit, s)
		}
	}
	// User calls with a forged caller: the victim's route and body with no credentials,
	// and with its token but a signature that is not its.
	for _, f := range []state.SignedForm{
		{Method: b.Signed.Method, Path: b.Signed.Path, Body: b.Signed.Body, ContentDigest: b.Signed.ContentDigest},
		{Method: b.Signed.Method, Path: b.Signed.Path, Body: b.Signed.Body, ContentDigest: b.Signed.ContentDigest,
			Authorization: b.Signed.Authorization, SignatureInput: b.Signed.SignatureInput, Signature: corruptMiddle(b.Signed.Signature)},
	} {
		f := f
		if s, err := n.raft.SignSubmit(&state.SubmitBody{Signed: &f, ProposalID: testID()}); err == nil {
			try("user call with a forged caller", state.TypeSubmit, s)
		}
	}
	mine := []byte{0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98}
	sched := &state.Schedule{RequestID: r.ID, Nonce: r.Nonce}
	for _, other := range r.Committee {
		if other == n.cfg.NodeID {
			continue
		}
		// Reports in another member's name, signed with this node's own key.
		n.forgedReport(ctx, state.TypeShareStored, &state.ShareStored{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: other, PublicKey: mine})
		n.forgedReport(ctx, state.TypeCeremonyFailed, &state.CeremonyFailed{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: other, Code: "ceremony.failed", Detail: "forged", Culprits: []string{other}})
		n.forgedReport(ctx, state.TypeCeremonyResult, &state.CeremonyResult{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: other, Signature: state.Signature{Sig: make([]byte, 64)}})
		// A report that claims to be the other member's, with this node's signature.
		body, _ := json.Marshal(&state.ShareStored{RequestID: sched.RequestID, Nonce: sched.Nonce, Node: other, PublicKey: mine})
		sig, _ := authn.SignNode(n.identity, authn.DomainReport, state.ReportMessage(state.TypeShareStored, body))
		try("report signed by another member's name", state.TypeReport, &state.Report{Node: other, Kind: state.TypeShareStored, Body: body, Sig: sig})
	}
}

func (n *Node) forgedReport(ctx context.Context, typ string, payload any) {
	res, err := n.raft.Report(ctx, typ, payload)
	n.log.Warn("TEST HOOK: forged report proposed", "kind", typ, "err", err, "code", res.Code)
}

// corruptMiddle changes one base64 character in the middle of s (long values only).
// testID is 16 random bytes in hex (a fresh proposal id).
func testID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func corruptMiddle(s string) string {
	if len(s) <= 12 {
		return s
	}
	mid := len(s) / 2
	ch := byte('A')
	if s[mid] == 'A' {
		ch = 'B'
	}
	return s[:mid] + string(ch) + s[mid+1:]
}

// raftFSM is the state machine raft drives. With CUSTOS_TEST_MISBEHAVE=forge-snapshot it
// plays a compromised leader that sends lagging followers a forged snapshot: every
// disabled user re-enabled with every permission. Its own FSM stays honest.
func (n *Node) raftFSM() raft.FSM {
	if os.Getenv("CUSTOS_TEST_MISBEHAVE") != "forge-snapshot" {
		return n.fsm
	}
	return forgingFSM{n.fsm, n}
}

type forgingFSM struct {
	*state.FSM
	n *Node
}

func (f forgingFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	var buf forgeSink
	if err := s.Persist(&buf); err != nil {
		return nil, err
	}
	s.Release()
	// The attacker rewrites the records and re-encodes a well-formed stream (its
	// checksum detects corruption, not forgery).
	recs, err := statedb.ReadRecords(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, err
	}
	changed := false
	for i, r := range recs {
		v := bytes.ReplaceAll(r.Value, []byte(`"status":"disabled","permissions":["keys:read"]`),
			[]byte(`"status":"active","permissions":["keys:create","keys:read","keys:sign","keys:delete","access:manage"]`))
		changed = changed || !bytes.Equal(v, r.Value)
		recs[i].Value = v
	}
	var forged bytes.Buffer
	if _, err := statedb.WriteRecords(&forged, recs); err != nil {
		return nil, err
	}
	f.n.log.Warn("TEST HOOK: compromised leader forged its snapshot", "changed", changed)
	return forgedSnapshot(forged.Bytes()), nil
}

type forgeSink struct{ bytes.Buffer }

func (*forgeSink) ID() string    { return "mem" }
func (*forgeSink) Cancel() error { return nil }
func (*forgeSink) Close() error  { return nil }

type forgedSnapshot []byte

func (s forgedSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (forgedSnapshot) Release() {}

// recreateGrant waits (up to a minute) for the access key to be revoked, then proposes its
// grantor's signed grant again with a fresh proposal id and access key id.
func (n *Node) recreateGrant(b state.SubmitBody, id string) {
	for i := 0; i < 600; i++ {
		if ak := n.fsm.AccessKey(id); ak != nil && ak.RevokedAt != 0 {
			b.ProposalID = testID()
			s, err := n.raft.SignSubmit(&b)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
			res, err := n.raft.Propose(ctx, state.TypeSubmit, s)
			cancel()
			n.log.Warn("TEST HOOK: forged entry proposed", "what", "re-created revoked grant", "err", err, "code", res.Code)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runnerReporter is how the ceremony runner reports; with
// CUSTOS_TEST_MISBEHAVE=reshare-wrong-key, its reshare reports lie about the public key.
func (n *Node) runnerReporter() ceremony.Reporter {
	if os.Getenv("CUSTOS_TEST_MISBEHAVE") == "reshare-wrong-key" {
		return lyingReporter{n}
	}
	return n.raft
}

// lyingReporter reports a reshare's new share with another public key.
type lyingReporter struct{ n *Node }

func (l lyingReporter) Report(ctx context.Context, kind string, payload any) (state.Result, error) {
	if rs, ok := payload.(*state.ReshareStored); ok && kind == state.TypeReshareStored {
		lie := *rs
		lie.PublicKey = bytes.Clone(rs.PublicKey)
		lie.PublicKey[len(lie.PublicKey)-1] ^= 0x01
		l.n.log.Warn("TEST HOOK: compromised member reports its new share with another public key")
		payload = &lie
	}
	return l.n.raft.Report(ctx, kind, payload)
}
