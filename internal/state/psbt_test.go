package state

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/custos/custos/internal/api"
)

// psbtKey runs a secp256k1 keygen whose nodes all report priv's public key.
func (h *signedHarness) psbtKey(priv *btcec.PrivateKey) *Key {
	h.t.Helper()
	r := h.keygen(CurveSecp256k1, 2)
	pub := priv.PubKey().SerializeCompressed()
	for _, n := range h.nodes {
		if res := h.reportAs(n, n, TypeShareStored, &ShareStored{RequestID: r.ID, Nonce: r.Nonce, Node: n, PublicKey: pub}); !res.OK() {
			h.t.Fatal(res)
		}
	}
	return h.f.Key(r.KeyID)
}

// spendRoot is a PSBT spending a synthetic P2WPKH output of the key's own public key to
// out (and change back to it when change > 0).
func spendRoot(t *testing.T, pub []byte, value int64, out []byte, pay, change int64) string {
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub), &chaincfg.RegressionNetParams)
	pk, _ := txscript.PayToAddrScript(addr)
	prev := wire.NewMsgTx(2)
	prev.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 7}, nil, nil))
	prev.AddTxOut(wire.NewTxOut(value, pk))
	outs := []*wire.TxOut{wire.NewTxOut(pay, out)}
	if change > 0 {
		outs = append(outs, wire.NewTxOut(change, pk))
	}
	p, err := psbt.New([]*wire.OutPoint{{Hash: prev.TxHash(), Index: 0}}, outs, 2, 0, []uint32{wire.MaxTxInSequenceNum})
	if err != nil {
		t.Fatal(err)
	}
	p.Inputs[0].NonWitnessUtxo = prev
	p.Inputs[0].WitnessUtxo = prev.TxOut[0]
	var b bytes.Buffer
	if err := p.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func TestPSBTSigningVerifiedAndFinalizedByTheFSM(t *testing.T) {
	h := newSignedHarness(t, 3, 2)
	priv, _ := btcec.NewPrivateKey()
	k := h.psbtKey(priv)
	other, _ := btcec.NewPrivateKey()
	oaddr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(other.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	opk, _ := txscript.PayToAddrScript(oaddr)
	body := func(b64 string, broadcast bool) string {
		raw, _ := json.Marshal(api.PSBTBody{PSBT: b64, Network: "regtest", Inputs: []api.PSBTInput{{Index: 0}},
			Change: []api.PSBTChange{{Output: 1}}, Broadcast: broadcast})
		return string(raw)
	}
	psbtReq := func(b string) Result {
		s := &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:2], Nonce: randNonce()}
		return h.submit("n1", h.userReq("POST", "/v1/keys/"+k.ID+"/psbt", b, 0), s)
	}
	// An amount limit reads what the FSM parsed: 60 000 sent + 1 000 fee.
	h.policy(`{"name":"limit","activity":"sign","rule":{"kind":"amount_limit","max_sats":60000},"action":"block"}`)
	res := psbtReq(body(spendRoot(t, k.PublicKey, 100_000, opk, 60_000, 39_000), true))
	if res.Code != api.CodePolicyBlocked || !strings.Contains(res.Detail, "61000 sats") {
		t.Fatalf("over the limit: %+v", res)
	}
	res = psbtReq(body(spendRoot(t, k.PublicKey, 100_000, opk, 50_000, 49_000), true))
	if !res.OK() {
		t.Fatal(res)
	}
	r := h.f.Request(res.RequestID)
	if r.PSBT == nil || len(r.PSBT.Plan.Inputs) != 1 || r.PSBT.Plan.FeeSats != 1000 || r.PSBT.Plan.SentSats != 50_000 || *r.Amount != 51_000 {
		t.Fatalf("plan: %+v", r.PSBT)
	}
	// A result whose signature is of another sighash is refused; the real one signs.
	sigOf := func(hash []byte) Signature {
		s := btcecdsa.Sign(priv, hash)
		der := s.Serialize()
		rr, ss := s.R(), s.S()
		rb, sb := rr.Bytes(), ss.Bytes()
		return Signature{R: rb[:], S: sb[:], DER: der, Sig: []byte("good")}
	}
	bad := &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signatures: []Signature{sigOf(bytes.Repeat([]byte{1}, 32))}}
	if rr := h.reportAs("n1", "n1", TypeCeremonyResult, bad); rr.OK() {
		t.Fatal("a signature of another sighash was accepted")
	}
	two := &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n1", Signatures: []Signature{sigOf(r.PSBT.Plan.Inputs[0].Sighash), sigOf(r.PSBT.Plan.Inputs[0].Sighash)}}
	if rr := h.reportAs("n1", "n1", TypeCeremonyResult, two); rr.OK() {
		t.Fatal("two signatures for one input were accepted")
	}
	good := &CeremonyResult{RequestID: r.ID, Nonce: r.Nonce, Node: "n2", Signatures: []Signature{sigOf(r.PSBT.Plan.Inputs[0].Sighash)}}
	if rr := h.reportAs("n2", "n2", TypeCeremonyResult, good); !rr.OK() {
		t.Fatalf("result: %+v", rr)
	}
	r = h.f.Request(res.RequestID)
	if r.Status != StatusSigned || r.PSBT.TxHex == "" || len(r.PSBT.Final) == 0 {
		t.Fatalf("signed: %+v", r)
	}
	if due := h.f.PendingBroadcasts(10); len(due) != 1 || due[0].ID != r.ID {
		t.Fatalf("pending broadcasts: %d", len(due))
	}
	// The leader reports the broadcast: another txid is refused; a refusal is recorded
	// with the node's message; once recorded, nothing changes it.
	if rr := h.reportAs("n1", "n1", TypeBroadcast, &BroadcastResult{RequestID: r.ID, TxID: strings.Repeat("00", 32)}); rr.OK() {
		t.Fatal("a broadcast of another txid was recorded")
	}
	if rr := h.reportAs("n1", "n1", TypeBroadcast, &BroadcastResult{RequestID: r.ID, Detail: "rejected: insufficient fee"}); !rr.OK() {
		t.Fatal(rr)
	}
	if rr := h.reportAs("n1", "n1", TypeBroadcast, &BroadcastResult{RequestID: r.ID, TxID: r.PSBT.TxID}); !rr.Existing {
		t.Fatalf("second broadcast report: %+v", rr)
	}
	r = h.f.Request(res.RequestID)
	if !r.PSBT.Broadcasted || r.PSBT.BroadcastError == nil || r.PSBT.BroadcastError.Code != api.CodeBroadcastFailed || !strings.Contains(r.PSBT.BroadcastError.Detail, "insufficient fee") {
		t.Fatalf("broadcast: %+v", r.PSBT)
	}
	if len(h.f.PendingBroadcasts(10)) != 0 {
		t.Fatal("still due")
	}
	// Refusals before any scheduling.
	for _, c := range []struct{ body, code string }{
		{body("bm90IGEgcHNidA==", false), api.CodePSBTInvalid},
		{body("%%%", false), api.CodePSBTInvalid},
		{strings.Replace(body(spendRoot(t, k.PublicKey, 100_000, opk, 50_000, 49_000), false), `"regtest"`, `"dogecoin"`, 1), api.CodeRequestMalformed},
		{strings.Replace(body(spendRoot(t, other.PubKey().SerializeCompressed(), 100_000, opk, 50_000, 49_000), false), `"output":1`, `"output":0`, 1), api.CodePSBTInputNotOurs},
		{strings.Replace(body(spendRoot(t, k.PublicKey, 100_000, opk, 50_000, 49_000), false), `"output":1`, `"output":0`, 1), api.CodePSBTChangeMismatch},
	} {
		if rr := psbtReq(c.body); rr.Code != c.code {
			t.Errorf("%.60s…: %+v, want %s", c.body, rr, c.code)
		}
	}
	// An Ed25519 key signs no PSBT.
	ed := h.activeKey()
	s := &Schedule{RequestID: "req_" + randHex(), Committee: h.nodes[:2], Nonce: randNonce()}
	if rr := h.submit("n1", h.userReq("POST", "/v1/keys/"+ed.ID+"/psbt", body(spendRoot(t, k.PublicKey, 100_000, opk, 50_000, 49_000), false), 0), s); rr.Code != api.CodeRequestMalformed {
		t.Fatalf("psbt on ed25519: %+v", rr)
	}
}
