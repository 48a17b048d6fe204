package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"

	"github.com/custos/custos/internal/config"
	"github.com/custos/custos/internal/state"
)

func TestStatusOf(t *testing.T) {
	tests := map[string]int{
		"request.malformed": 400, "request.too_large": 413, "auth.missing": 401, "auth.nonce_reused": 401,
		"perm.denied": 403, "policy.blocked": 403, "key.not_found": 404, "user.not_found": 404,
		"request.not_found": 404, "key.not_active": 409, "request.idempotency_conflict": 409,
		"cluster.no_quorum": 503, "cluster.unavailable": 503, "rate.limited": 429, "ceremony.failed": 502,
		"access_key.not_found": 404, "request.conflict": 409, "auth.key_revoked": 401,
	}
	for code, want := range tests {
		if got := statusOf(code); got != want {
			t.Errorf("%s: %d, want %d", code, got, want)
		}
		if titles[code] == "" {
			t.Errorf("%s has no title", code)
		}
	}
}

// TestRoutesMatchTheFSM holds the HTTP routes and the FSM's route table equal: the FSM
// derives each request's operation from its signed method and path.
func TestRoutesMatchTheFSM(t *testing.T) {
	n := &Node{}
	got := map[string]string{}
	for _, r := range n.apiRoutes() {
		got[r.op] = regexp.MustCompile(`\{[a-z_]+\}`).ReplaceAllString(r.pattern, "{}")
	}
	want := state.Routes()
	if len(got) != len(want) {
		t.Fatalf("HTTP has %d authenticated routes, the FSM %d", len(got), len(want))
	}
	for op, p := range want {
		if got[op] != p {
			t.Errorf("%s: HTTP %q, FSM %q", op, got[op], p)
		}
	}
}

func TestSigVerifier(t *testing.T) {
	var v sigVerifier
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte{0, 1, 2}
	good := ed25519.Sign(priv, msg)
	if err := v.VerifySignature(state.CurveEd25519, pub, nil, nil, msg, &state.Signature{Sig: good}); err != nil {
		t.Fatal(err)
	}
	if err := v.VerifySignature(state.CurveEd25519, pub, nil, nil, []byte{1, 2}, &state.Signature{Sig: good}); err == nil {
		t.Fatal("ed25519 signature over another message accepted")
	}

	sk, _ := btcec.NewPrivateKey()
	digest := sha256.Sum256([]byte("x"))
	compact := btcecdsa.SignCompact(sk, digest[:], true)
	sig := &state.Signature{R: compact[1:33], S: compact[33:], RecoveryID: int(compact[0] - 31)}
	var r, s btcec.ModNScalar
	r.SetByteSlice(sig.R)
	s.SetByteSlice(sig.S)
	sig.DER = btcecdsa.NewSignature(&r, &s).Serialize()
	pk := sk.PubKey().SerializeCompressed()
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], sig); err != nil {
		t.Fatal(err)
	}
	bad := *sig
	bad.RecoveryID ^= 1
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &bad); err == nil {
		t.Fatal("wrong recovery id accepted")
	}
	high := *sig
	var n btcec.ModNScalar
	n.NegateVal(&s)
	hs := n.Bytes()
	high.S = hs[:]
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &high); err == nil {
		t.Fatal("high-S signature accepted")
	}
	der := *sig
	der.DER = append([]byte{}, sig.DER...)
	der.DER[len(der.DER)-1] ^= 1
	if err := v.VerifySignature(state.CurveSecp256k1, pk, nil, nil, digest[:], &der); err == nil {
		t.Fatal("DER not matching r and s accepted")
	}
}

// TestDebugRoutesAreOptIn: /debug/state (which serialises the whole state under its lock)
// and the profiler exist only with api.debug; without it they are unknown routes.
func TestDebugRoutesAreOptIn(t *testing.T) {
	tests := []struct {
		name  string
		debug bool
		path  string
		want  int
	}{
		{"state off", false, "/debug/state", http.StatusNotFound},
		{"pprof off", false, "/debug/pprof/cmdline", http.StatusNotFound},
		{"pprof on", true, "/debug/pprof/cmdline", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{}
			cfg.API.Debug = tt.debug
			n := &Node{cfg: cfg, met: newMetrics()}
			rec := httptest.NewRecorder()
			n.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.want {
				t.Fatalf("GET %s: %d, want %d", tt.path, rec.Code, tt.want)
			}
		})
	}
}
