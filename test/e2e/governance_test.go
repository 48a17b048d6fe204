//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/btcnode"
	testcluster "github.com/custos/custos/test/cluster"
)

// wallet is the test's view of a custos secp256k1 key as a Bitcoin wallet: scripts of the
// key and its children, computed with btcutil's hdkeychain from the key object alone
// (public key and chain code), independently of custos.
type wallet struct {
	t      *testing.T
	params *chaincfg.Params
	xpub   *hdkeychain.ExtendedKey
}

func newWallet(t *testing.T, k *client.Key, params *chaincfg.Params) *wallet {
	pub, _ := hex.DecodeString(k.PublicKey)
	cc, _ := hex.DecodeString(k.ChainCode)
	if len(pub) != 33 || len(cc) != 32 {
		t.Fatalf("key %s has no public key or chain code: %+v", k.KeyID, k)
	}
	return &wallet{t: t, params: params, xpub: hdkeychain.NewExtendedKey(params.HDPublicKeyID[:], pub, cc, []byte{0, 0, 0, 0}, 0, 0, false)}
}

// pub is the public key of the child at path ("" is the key itself).
func (w *wallet) pub(path ...uint32) []byte {
	k := w.xpub
	for _, i := range path {
		var err error
		if k, err = k.Derive(i); err != nil {
			w.t.Fatal(err)
		}
	}
	p, err := k.ECPubKey()
	if err != nil {
		w.t.Fatal(err)
	}
	return p.SerializeCompressed()
}

// script is the output script of kind ("p2wpkh", "p2sh-p2wpkh", "p2pkh") paying pub;
// redeem is the P2SH-P2WPKH redeem script.
func script(t *testing.T, params *chaincfg.Params, kind string, pub []byte) (pk, redeem []byte, addr string) {
	h := btcutil.Hash160(pub)
	var a btcutil.Address
	var err error
	switch kind {
	case "p2wpkh":
		a, err = btcutil.NewAddressWitnessPubKeyHash(h, params)
	case "p2pkh":
		a, err = btcutil.NewAddressPubKeyHash(h, params)
	case "p2sh-p2wpkh":
		w, _ := btcutil.NewAddressWitnessPubKeyHash(h, params)
		redeem, _ = txscript.PayToAddrScript(w)
		a, err = btcutil.NewAddressScriptHash(redeem, params)
	}
	if err != nil {
		t.Fatal(err)
	}
	pk, err = txscript.PayToAddrScript(a)
	if err != nil {
		t.Fatal(err)
	}
	return pk, redeem, a.EncodeAddress()
}

// stranger is an address of a key no one in the test holds.
func stranger(t *testing.T, params *chaincfg.Params) (pk []byte, addr string) {
	k, _ := btcec.NewPrivateKey()
	pk, _, addr = script(t, params, "p2wpkh", k.PubKey().SerializeCompressed())
	return pk, addr
}

// coin is a funded output of the key's wallet and what a PSBT needs to spend it.
type coin struct {
	utxo   btcnode.Utxo
	redeem []byte
	path   string
	segwit bool
}

func (w *wallet) fund(btc *btcnode.Node, kind string, sats int64, path ...uint32) coin {
	pk, redeem, _ := script(w.t, w.params, kind, w.pub(path...))
	u := btc.Fund(w.t, pk, sats)
	p := "m"
	for _, i := range path {
		p += fmt.Sprintf("/%d", i)
	}
	if len(path) == 0 {
		p = ""
	}
	return coin{utxo: u, redeem: redeem, path: p, segwit: kind != "p2pkh"}
}

// tx is a PSBT to sign: its coins, its outputs and which of them are change.
type tx struct {
	coins  []coin
	outs   []*wire.TxOut
	change []api.PSBTChange
	// edit changes the packet before it is encoded (to build bad PSBTs).
	edit func(p *psbt.Packet)
}

func (x tx) body(t *testing.T, broadcast bool) api.PSBTBody {
	var ops []*wire.OutPoint
	var seqs []uint32
	for _, c := range x.coins {
		op := c.utxo.OutPoint
		ops = append(ops, &op)
		seqs = append(seqs, wire.MaxTxInSequenceNum)
	}
	p, err := psbt.New(ops, x.outs, 2, 0, seqs)
	if err != nil {
		t.Fatal(err)
	}
	b := api.PSBTBody{Network: "simnet", Change: x.change, Broadcast: broadcast}
	for i, c := range x.coins {
		p.Inputs[i].NonWitnessUtxo = c.utxo.Tx
		if c.segwit {
			p.Inputs[i].WitnessUtxo = wire.NewTxOut(c.utxo.Value, c.utxo.PkScript)
		}
		p.Inputs[i].RedeemScript = c.redeem
		b.Inputs = append(b.Inputs, api.PSBTInput{Index: i, DerivationPath: c.path})
	}
	if x.edit != nil {
		x.edit(p)
	}
	var buf bytes.Buffer
	if err := p.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	b.PSBT = base64.StdEncoding.EncodeToString(buf.Bytes())
	return b
}

// signedAndMined checks a signed PSBT request: the transaction every node finalized is
// in btcd's chain once a block is mined.
func signedAndMined(t *testing.T, btc *btcnode.Node, r *client.Request) {
	t.Helper()
	if r.Status != "signed" || r.TxHex == "" || r.TxID == "" || r.PSBT == "" {
		t.Fatalf("PSBT request not signed: %+v", r)
	}
	if r.Broadcast == nil || r.Broadcast.Error != nil || r.Broadcast.TxID != r.TxID {
		t.Fatalf("broadcast: %+v", r.Broadcast)
	}
	btc.Generate(t, 1)
	got, conf, err := btc.RawTx(t, r.TxID)
	if err != nil || conf < 1 {
		t.Fatalf("transaction %s not mined: conf %d, %v", r.TxID, conf, err)
	}
	var buf bytes.Buffer
	_ = got.Serialize(&buf)
	if hex.EncodeToString(buf.Bytes()) != r.TxHex {
		t.Fatal("the mined transaction differs from the one custos returned")
	}
}

// TestGovernedPSBTSigningOnARealBitcoinNode: a real btcd on simnet, a real 3-node
// cluster. PSBTs spending a custos key and its derived children (P2WPKH, P2SH-P2WPKH,
// P2PKH, change back to a child) are signed, broadcast by the leader and mined; the
// policies read what every node parsed of the transaction: an amount limit blocks (403
// naming the policy, nothing signed), a recipient outside the allowlist waits for two
// approvers who approve through other nodes (then it is signed and mined), a denial and
// an expiry end it denied, the n+1-th spend in a velocity window is blocked; bad PSBTs
// (change to a foreign script, a segwit input without non_witness_utxo or with one that
// does not match its outpoint, garbage) are refused with their codes.
func TestGovernedPSBTSigningOnARealBitcoinNode(t *testing.T) {
	t.Parallel()
	btc := btcnode.Start(t)
	pwFile := filepath.Join(t.TempDir(), "btc.pw")
	if err := os.WriteFile(pwFile, []byte(btc.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"bitcoin": map[string]any{"rpc_url": btc.RPCURL, "rpc_user": btc.User, "rpc_password_file": pwFile},
		"rate":    noRateLimit(),
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	adm := c.Admin()
	alice := c.newUser(ctx, "alice")
	var approvers []*user
	for _, n := range []string{"bob", "carol", "dave"} {
		approvers = append(approvers, c.newUser(ctx, n, "approvals:decide", "keys:read"))
	}
	key, _, err := alice.Clients[0].CreateKey(ctx, "secp256k1", 2, "treasury", "")
	if err != nil || key == nil || key.Status != "active" {
		t.Fatalf("keygen: %v %+v", err, key)
	}
	w := newWallet(t, key, btc.Params)
	changePK, _, _ := script(t, btc.Params, "p2wpkh", w.pub(1, 0))
	r1PK, r1Addr := stranger(t, btc.Params)
	r2PK, r2Addr := stranger(t, btc.Params)
	pay := func(coins []coin, toPK []byte, sats int64) tx {
		var in int64
		for _, c := range coins {
			in += c.utxo.Value
		}
		return tx{coins: coins, outs: []*wire.TxOut{wire.NewTxOut(sats, toPK), wire.NewTxOut(in-sats-2000, changePK)},
			change: []api.PSBTChange{{Output: 1, DerivationPath: "m/1/0"}}}
	}
	signPSBT := func(node int, x tx) (*client.Request, error) {
		return alice.Clients[node].SignPSBT(ctx, key.KeyID, x.body(t, true))
	}

	t.Run("key and children signed and mined", func(t *testing.T) {
		coins := []coin{w.fund(btc, "p2wpkh", 2e8), w.fund(btc, "p2sh-p2wpkh", 1e8, 0, 1), w.fund(btc, "p2pkh", 5e7, 0, 2)}
		r, err := signPSBT(0, pay(coins, r1PK, 25e7))
		if err != nil {
			t.Fatal(err)
		}
		signedAndMined(t, btc, r)
		if r.FeeSats == nil || *r.FeeSats != 2000 || r.SentSats == nil || *r.SentSats != 25e7 || len(r.Outputs) != 2 || !r.Outputs[1].Change || r.Outputs[0].Address != r1Addr {
			t.Fatalf("what the nodes read of the transaction: fee %v sent %v outputs %+v", r.FeeSats, r.SentSats, r.Outputs)
		}
	})

	t.Run("amount limit blocks and names the policy", func(t *testing.T) {
		pol, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "at most 1 BTC", Activity: "sign",
			Rule: api.PolicyRule{Kind: "amount_limit", MaxSats: ptr(int64(1e8))}, Filters: &api.PolicyFilters{KeyIDs: []string{key.KeyID}}, Action: "block"})
		if err != nil {
			t.Fatal(err)
		}
		x := pay([]coin{w.fund(btc, "p2wpkh", 3e8)}, r1PK, 2e8)
		ev, err := alice.Clients[1].EvaluatePolicies(ctx, "POST /v1/keys/"+key.KeyID+"/psbt", x.body(t, false))
		if err != nil || ev.Decision != "block" || len(ev.Matched) != 1 || ev.Matched[0].PolicyID != pol.PolicyID {
			t.Fatalf("evaluate: %v %+v", err, ev)
		}
		_, err = signPSBT(1, x)
		if st, code := apiErr(err); st != 403 || code != "policy.blocked" || !strings.Contains(err.Error(), pol.PolicyID) {
			t.Fatalf("over the limit: %v", err)
		}
		if _, _, err := adm.ArchivePolicy(ctx, pol.PolicyID); err != nil {
			t.Fatal(err)
		}
	})

	var expiring string
	t.Run("off the allowlist waits for two approvers", func(t *testing.T) {
		group := api.ApprovalGroup{Name: "treasury", Members: []uint64{approvers[0].ID, approvers[1].ID, approvers[2].ID}, Quorum: 2}
		pol, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "known recipients", Activity: "sign",
			Rule: api.PolicyRule{Kind: "recipient_allowlist", Addresses: []string{r1Addr}}, Action: "require_approval",
			ApprovalGroups: []api.ApprovalGroup{group}, ApprovalTimeout: "1m"})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, _, err := adm.ArchivePolicy(ctx, pol.PolicyID); err != nil {
				t.Fatal(err)
			}
		}()
		// One that will expire (checked at the end).
		r, err := signPSBT(0, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r2PK, 5e6))
		if err != nil || r.Status != "pending_approval" {
			t.Fatalf("pending: %v %+v", err, r)
		}
		expiring = r.RequestID
		// To an allowed recipient it is signed at once.
		r, err = signPSBT(1, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r1PK, 5e6))
		if err != nil {
			t.Fatal(err)
		}
		signedAndMined(t, btc, r)
		// Elsewhere: approved by two approvers through the two other nodes.
		r, err = signPSBT(0, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r2PK, 5e6))
		if err != nil || r.Status != "pending_approval" || r.ApprovalID == "" {
			t.Fatalf("off the allowlist: %v %+v", err, r)
		}
		ap, err := approvers[0].Clients[1].GetApproval(ctx, r.ApprovalID)
		if err != nil || ap.Status != "pending" || len(ap.Summary.Outputs) != 2 || ap.Summary.Outputs[0].Address != r2Addr || ap.Summary.FeeSats == nil {
			t.Fatalf("the approval approvers see: %v %+v", err, ap)
		}
		if _, err := approvers[0].Clients[1].Approve(ctx, r.ApprovalID, "known supplier"); err != nil {
			t.Fatal(err)
		}
		if _, err := approvers[0].Clients[2].Approve(ctx, r.ApprovalID, "again"); apiCode(err) != "approval.already_decided" {
			t.Fatalf("second decision: %v", err)
		}
		if _, err := approvers[1].Clients[2].Approve(ctx, r.ApprovalID, "ok"); err != nil {
			t.Fatal(err)
		}
		done, err := alice.Clients[0].WaitRequest(ctx, r.RequestID, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for done.Status == "signed" && done.Broadcast == nil {
			time.Sleep(200 * time.Millisecond)
			if done, err = alice.Clients[0].GetRequest(ctx, r.RequestID); err != nil {
				t.Fatal(err)
			}
		}
		signedAndMined(t, btc, done)
		// A denial ends one.
		r, err = signPSBT(2, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r2PK, 5e6))
		if err != nil || r.Status != "pending_approval" {
			t.Fatalf("pending: %v %+v", err, r)
		}
		if _, err := approvers[2].Clients[0].Deny(ctx, r.ApprovalID, "unknown recipient"); err != nil {
			t.Fatal(err)
		}
		got, err := alice.Clients[1].GetRequest(ctx, r.RequestID)
		if err != nil || got.Status != "denied" || got.Error == nil || got.Error.Code != "approval.denied" {
			t.Fatalf("denied: %v %+v", err, got)
		}
	})

	t.Run("velocity", func(t *testing.T) {
		pol, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "one spend an hour", Activity: "sign",
			Rule: api.PolicyRule{Kind: "count_velocity", Window: "1h", MaxCount: ptr(int64(1))}, Filters: &api.PolicyFilters{Labels: []string{"treasury"}}, Action: "block"})
		if err != nil {
			t.Fatal(err)
		}
		r, err := signPSBT(1, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r1PK, 5e6))
		if err != nil {
			t.Fatal(err)
		}
		signedAndMined(t, btc, r)
		_, err = signPSBT(2, pay([]coin{w.fund(btc, "p2wpkh", 1e7)}, r1PK, 5e6))
		if st, code := apiErr(err); st != 403 || code != "policy.blocked" || !strings.Contains(err.Error(), "count_velocity") {
			t.Fatalf("second spend in the window: %v", err)
		}
		if _, _, err := adm.ArchivePolicy(ctx, pol.PolicyID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad PSBTs refused", func(t *testing.T) {
		c1 := w.fund(btc, "p2wpkh", 1e7)
		foreign := pay([]coin{c1}, r1PK, 5e6)
		foreign.outs[1] = wire.NewTxOut(foreign.outs[1].Value, r2PK)
		noUtxo := pay([]coin{c1}, r1PK, 5e6)
		noUtxo.edit = func(p *psbt.Packet) { p.Inputs[0].NonWitnessUtxo = nil }
		other := w.fund(btc, "p2wpkh", 1e7)
		wrongUtxo := pay([]coin{c1}, r1PK, 5e6)
		wrongUtxo.edit = func(p *psbt.Packet) { p.Inputs[0].NonWitnessUtxo = other.utxo.Tx }
		for _, tc := range []struct {
			name string
			body api.PSBTBody
			code string
		}{
			{"change to a foreign script", foreign.body(t, false), "psbt.change_mismatch"},
			{"segwit input without non_witness_utxo", noUtxo.body(t, false), "psbt.input_not_ours"},
			{"non_witness_utxo of another transaction", wrongUtxo.body(t, false), "psbt.input_not_ours"},
			{"garbage", api.PSBTBody{PSBT: base64.StdEncoding.EncodeToString([]byte("psbt\xff garbage")), Network: "simnet", Inputs: []api.PSBTInput{{Index: 0}}}, "psbt.invalid"},
			{"an input that is not the key's", pay([]coin{{utxo: btc.Fund(t, r2PK, 1e7), segwit: true}}, r1PK, 5e6).body(t, false), "psbt.input_not_ours"},
		} {
			_, err := alice.Clients[0].SignPSBT(ctx, key.KeyID, tc.body)
			if st, code := apiErr(err); st != 400 || code != tc.code {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	})

	t.Run("an approval not complete in time expires", func(t *testing.T) {
		if expiring == "" {
			t.Fatal("the request meant to expire was not made (see the allowlist step)")
		}
		var got *client.Request
		err := testcluster.Until(ctx, func() bool {
			got, _ = alice.Clients[2].GetRequest(ctx, expiring)
			return got != nil && got.Status != "pending_approval"
		})
		if err != nil || got.Status != "denied" || got.Error == nil || got.Error.Code != "approval.expired" {
			t.Fatalf("expired: %v %+v", err, got)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestPolicyChangesWaitForApproversAgainstAForger: with a policy.modify approval policy,
// the admin alone cannot loosen the rules: archiving a blocking policy waits for the
// board. One member runs a test build that forges around every request it receives (it
// replays the approver's signed decision under a fresh proposal id and proposes it with
// the approver's credentials stripped or its signature corrupted): every forgery is
// refused and attributed to it, the decision counts once, and only the second approver's
// own decision, through an honest node, makes the change.
func TestPolicyChangesWaitForApproversAgainstAForger(t *testing.T) {
	c := startCluster(t, testcluster.Options{Binary: bins.CustosdHooks, NodeEnv: map[int][]string{0: {"CUSTOS_TEST_MISBEHAVE=forge"}},
		Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	adm := c.Admin()
	alice := c.newUser(ctx, "alice")
	bob := c.newUser(ctx, "bob", "approvals:decide")
	carol := c.newUser(ctx, "carol", "approvals:decide")
	key, _, err := alice.Clients[1].CreateKey(ctx, "ed25519", 2, "hot", "")
	if err != nil || key.Status != "active" {
		t.Fatalf("keygen: %v %+v", err, key)
	}
	freeze, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "freeze hot", Activity: "sign", Rule: api.PolicyRule{Kind: "always"},
		Filters: &api.PolicyFilters{KeyIDs: []string{key.KeyID}}, Action: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := adm.CreatePolicy(ctx, api.PolicyBody{Name: "board guards policies", Activity: "policy.modify", Rule: api.PolicyRule{Kind: "always"},
		Action: "require_approval", ApprovalGroups: []api.ApprovalGroup{{Name: "board", Members: []uint64{bob.ID, carol.ID}, Quorum: 2}}}); err != nil {
		t.Fatal(err)
	}
	_, pending, err := adm.ArchivePolicy(ctx, freeze.PolicyID)
	if err != nil || pending == nil || pending.Status != "pending_approval" || pending.ApprovalID == "" {
		t.Fatalf("archive under the board's policy: %v %+v", err, pending)
	}
	if _, err := alice.Clients[2].Sign(ctx, key.KeyID, []byte("pay"), "", ""); apiCode(err) != "policy.blocked" {
		t.Fatalf("sign while the change waits: %v", err)
	}
	// Bob decides through the forger.
	if _, err := bob.Clients[0].Approve(ctx, pending.ApprovalID, "fine"); err != nil {
		t.Fatal(err)
	}
	forger := "node:" + c.NodeID(0)
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	err = testcluster.Until(sctx, func() bool {
		replayed, forged := 0, 0
		for _, e := range c.auditAll(ctx, 2) {
			if e.Actor == forger && e.Action == "request.replayed" && e.Object == "approvals.decide" {
				replayed++
			}
			if e.Actor == forger && e.Action == "request.refused" && e.Object == "approvals.decide" {
				forged++
			}
		}
		return replayed >= 1 && forged >= 2
	})
	scancel()
	if err != nil {
		t.Fatalf("the forger's replayed and forged decisions are not in the audit log: %v", err)
	}
	ap, err := carol.Clients[2].GetApproval(ctx, pending.ApprovalID)
	if err != nil {
		t.Fatal(err)
	}
	if ap.Status != "pending" || len(ap.Groups) != 1 || len(ap.Groups[0].Decisions) != 1 || ap.Groups[0].Decisions[0].UserID != bob.ID {
		t.Fatalf("the approval after the forgeries: %+v", ap)
	}
	if p, err := adm.GetPolicy(ctx, freeze.PolicyID); err != nil || p.Status != "active" {
		t.Fatalf("the policy after one approval and the forgeries: %v %+v", err, p)
	}
	// Carol's own decision, through an honest node, completes it.
	if _, err := carol.Clients[2].Approve(ctx, pending.ApprovalID, "agreed"); err != nil {
		t.Fatal(err)
	}
	if p, err := adm.GetPolicy(ctx, freeze.PolicyID); err != nil || p.Status != "archived" {
		t.Fatalf("the policy after the board approved: %v %+v", err, p)
	}
	if r, err := alice.Clients[2].Sign(ctx, key.KeyID, []byte("pay"), "", ""); err != nil || r.Status != "signed" {
		t.Fatalf("sign after the change: %v %+v", err, r)
	}
	v, err := adm.VerifyAudit(ctx, 0)
	if err != nil || v.Broken != nil {
		t.Fatalf("audit verify: %v %+v", err, v)
	}
}
