package btc

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/btcsuite/btcd/wire"
)

// MaxRPCResponse is the most of a JSON-RPC response body RPC reads.
const MaxRPCResponse = 64 << 10

// RPC is a bitcoind/btcd JSON-RPC 1.0 client (HTTP basic auth) for sendrawtransaction.
// Client nil means http.DefaultClient; either way redirects are not followed. Deadlines
// come from the context.
type RPC struct {
	URL, User, Password string
	Client              *http.Client
}

// RPCError is an error object a node answered with.
type RPCError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("rejected: %s (rpc code %d)", e.Message, e.Code)
}

// alreadyKnown are fragments of the errors bitcoind and btcd give for a transaction they
// already have, in the mempool or in the chain: broadcasting it again has succeeded.
var alreadyKnown = []string{
	"txn-already-in-mempool",      // bitcoind (older versions; newer ones return the txid)
	"txn-already-known",           // bitcoind
	"already in mempool",          //
	"already have transaction",    // btcd
	"transaction already exists",  // btcd
	"already in block chain",      // bitcoind -27 (older)
	"outputs already in utxo set", // bitcoind -27
}

func isAlreadyKnown(msg string) bool {
	m := strings.ToLower(msg)
	for _, f := range alreadyKnown {
		if strings.Contains(m, f) {
			return true
		}
	}
	return false
}

// SendRawTransaction broadcasts a signed transaction (hex) and returns its txid. A node
// that already has the transaction counts as success. A node's refusal is an *RPCError.
func (r *RPC) SendRawTransaction(ctx context.Context, txHex string) (string, error) {
	raw, err := hex.DecodeString(txHex)
	if err != nil {
		return "", fmt.Errorf("btc rpc: transaction hex: %v", err)
	}
	var tx wire.MsgTx
	rd := bytes.NewReader(raw)
	if err := tx.Deserialize(rd); err != nil || rd.Len() != 0 {
		return "", errors.New("btc rpc: transaction hex is not one transaction")
	}
	txid := tx.TxHash().String()

	body, err := json.Marshal(map[string]any{
		"jsonrpc": "1.0",
		"id":      "custos",
		"method":  "sendrawtransaction",
		"params":  []string{txHex},
	})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("btc rpc: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.User != "" || r.Password != "" {
		req.SetBasicAuth(r.User, r.Password)
	}
	client := http.Client{}
	if r.Client != nil {
		client = *r.Client
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("btc rpc: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxRPCResponse+1))
	if err != nil {
		return "", fmt.Errorf("btc rpc: read response: %w", err)
	}
	if len(data) > MaxRPCResponse {
		return "", fmt.Errorf("btc rpc: response larger than %d bytes (HTTP %d)", MaxRPCResponse, resp.StatusCode)
	}
	// bitcoind answers RPC errors with HTTP 500 and a JSON body; anything else without
	// one (401, 404, a redirect, a proxy's page) is a transport failure.
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return "", fmt.Errorf("btc rpc: HTTP %d: response is not JSON-RPC", resp.StatusCode)
	}
	if out.Error != nil {
		if isAlreadyKnown(out.Error.Message) {
			return txid, nil
		}
		out.Error.Message = clean(out.Error.Message)
		return "", out.Error
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("btc rpc: HTTP %d", resp.StatusCode)
	}
	var got string
	if err := json.Unmarshal(out.Result, &got); err != nil {
		return "", fmt.Errorf("btc rpc: result is not a txid string")
	}
	if got != txid {
		return "", fmt.Errorf("btc rpc: node returned txid %q for transaction %s", clean(got), txid)
	}
	return txid, nil
}

// clean bounds a node's message and drops control characters before it goes into an
// error users may see.
func clean(s string) string {
	const max = 300
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		if c < 0x20 || c == 0x7f {
			c = ' '
		}
		b.WriteRune(c)
	}
	return strings.TrimSpace(b.String())
}
