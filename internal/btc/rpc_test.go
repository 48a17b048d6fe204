package btc

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/wire"
)

func sampleTx(t *testing.T) (string, string) {
	t.Helper()
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, [][]byte{{1, 2}, {3}}))
	tx.AddTxOut(wire.NewTxOut(1000, []byte{0x51}))
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(buf.Bytes()), tx.TxHash().String()
}

func TestSendRawTransaction(t *testing.T) {
	txHex, txid := sampleTx(t)
	type reply struct {
		status int
		body   string
	}
	cases := []struct {
		name    string
		reply   func(w http.ResponseWriter, r *http.Request)
		wantErr string // "" = success
	}{
		{"success", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"result":"`+txid+`","error":null,"id":"custos"}`)
		}, ""},
		{"rpc error", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, `{"result":null,"error":{"code":-26,"message":"min relay fee not met, 100 < 141\n"},"id":"custos"}`)
		}, "rejected: min relay fee not met, 100 < 141 (rpc code -26)"},
		{"already in mempool (bitcoind)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, `{"result":null,"error":{"code":-26,"message":"txn-already-in-mempool"},"id":"custos"}`)
		}, ""},
		{"already in chain (bitcoind)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, `{"result":null,"error":{"code":-27,"message":"Transaction outputs already in utxo set"},"id":"custos"}`)
		}, ""},
		{"already have (btcd)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, `{"result":null,"error":{"code":-22,"message":"rejected transaction `+txid+`: already have transaction in mempool `+txid+`"},"id":"custos"}`)
		}, ""},
		{"oversized response", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"result":"`+strings.Repeat("a", MaxRPCResponse)+`","error":null}`)
		}, "larger than 65536"},
		{"wrong txid", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"result":"00","error":null,"id":"custos"}`)
		}, "node returned txid"},
		{"unauthorized", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
		}, "HTTP 401"},
		{"not json", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<html>proxy</html>")
		}, "not JSON-RPC"},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/elsewhere" {
				io.WriteString(w, `{"result":"`+txid+`","error":null,"id":"custos"}`)
				return
			}
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}, "HTTP 307"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/elsewhere" {
					user, pass, ok := r.BasicAuth()
					if !ok || user != "alice" || pass != "s3cret" || r.Method != http.MethodPost {
						t.Errorf("request: auth %v %q %q, method %s", ok, user, pass, r.Method)
					}
					var req struct {
						JSONRPC, ID, Method string
						Params              []string
					}
					if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.JSONRPC != "1.0" || req.ID != "custos" || req.Method != "sendrawtransaction" || len(req.Params) != 1 || req.Params[0] != txHex {
						t.Errorf("request body: %+v %v", req, err)
					}
				}
				c.reply(w, r)
			}))
			defer srv.Close()
			rpc := &RPC{URL: srv.URL, User: "alice", Password: "s3cret", Client: srv.Client()}
			got, err := rpc.SendRawTransaction(context.Background(), txHex)
			if c.wantErr == "" {
				if err != nil || got != txid {
					t.Fatalf("got %q, %v; want %s", got, err, txid)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, c.wantErr)
			}
			if got != "" {
				t.Fatalf("txid %q returned with an error", got)
			}
		})
	}
}

func TestSendRawTransactionRPCErrorType(t *testing.T) {
	txHex, _ := sampleTx(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		io.WriteString(w, `{"result":null,"error":{"code":-25,"message":"bad-txns-inputs-missingorspent"},"id":"custos"}`)
	}))
	defer srv.Close()
	_, err := (&RPC{URL: srv.URL}).SendRawTransaction(context.Background(), txHex)
	var re *RPCError
	if !errors.As(err, &re) || re.Code != -25 || re.Message != "bad-txns-inputs-missingorspent" {
		t.Fatalf("error %v", err)
	}
}

func TestSendRawTransactionContext(t *testing.T) {
	txHex, _ := sampleTx(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := (&RPC{URL: srv.URL}).SendRawTransaction(ctx, txHex)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
}

func TestSendRawTransactionBadHex(t *testing.T) {
	for _, h := range []string{"zz", "", "0100"} {
		if _, err := (&RPC{URL: "http://127.0.0.1:1"}).SendRawTransaction(context.Background(), h); err == nil {
			t.Errorf("%q accepted", h)
		}
	}
}
