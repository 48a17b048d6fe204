// Package btcnode is a test harness that starts a REAL btcd (github.com/btcsuite/btcd
// v0.24.2, installed by `make btcd` into .tools/bin) on simnet on loopback, for end-to-end
// tests that need a Bitcoin node: no node is mocked. Start runs one btcd process per call
// (temporary data directory, random free ports, random RPC credentials, --txindex), mines
// past the activation of segwit, CSV and taproot (simnet activates them by BIP 9 voting:
// 299 blocks, so mature coinbases are available too), and kills it when the test ends.
//
// The harness holds one key of its own: every block pays its coinbase to that key's
// P2WPKH address, and Fund pays any script from those coinbases with a transaction the
// harness signs itself. Transactions built by the code under test go to the node with
// SendRaw and are looked up with RawTx; Generate mines blocks. btcd's log is written to a
// file in the test's temporary directory and its end is printed when the test fails.
package btcnode

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/custos/custos/internal/freeport"
)

const (
	// feeRate is what the harness's own transactions pay, in satoshis per vbyte (btcd's
	// default minimum relay fee is 1).
	feeRate = 2
	// dustLimit: change below this is left to the miner instead.
	dustLimit = 1000
	// startAttempts: a picked port can be taken before btcd binds it; Start then retries.
	startAttempts = 3
	// readyTimeout bounds the wait for btcd's RPC server to answer.
	readyTimeout = 30 * time.Second
	// logTailLines of btcd's log are printed when a test fails.
	logTailLines = 150
	// subsidy is a simnet coinbase's value for the first 210 000 blocks.
	subsidy = 50 * btcutil.SatoshiPerBitcoin
)

// Binary finds the btcd executable: $CUSTOS_BTCD when set, else
// <repo root>/.tools/bin/btcd, the repo root being the first directory holding a go.mod
// walking up from the working directory.
func Binary() (string, error) {
	if p := os.Getenv("CUSTOS_BTCD"); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("btcnode: CUSTOS_BTCD=%s: %w", p, err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("btcnode: %w", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, ".tools", "bin", "btcd")
			if err := executable(p); err != nil {
				return "", fmt.Errorf("btcnode: no btcd at %s (run `make btcd`, or set CUSTOS_BTCD): %w", p, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("btcnode: no go.mod above %s to find .tools/bin/btcd (run `make btcd`, or set CUSTOS_BTCD)", wd)
		}
		dir = parent
	}
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// Node is one running btcd on simnet.
type Node struct {
	// RPCURL is btcd's JSON-RPC endpoint (plain HTTP, loopback), e.g. http://127.0.0.1:23456.
	RPCURL string
	// User and Password are the RPC credentials (HTTP basic auth).
	User, Password string
	// Params is &chaincfg.SimNetParams.
	Params *chaincfg.Params
	// P2PAddr is the peer-to-peer listen address (host:port).
	P2PAddr string
	// LogPath is btcd's output (removed with the test's temporary directory).
	LogPath string
	// MinerAddress is the harness key's P2WPKH address that every coinbase pays.
	MinerAddress btcutil.Address

	key      *btcec.PrivateKey
	pkScript []byte // of MinerAddress
	http     *http.Client
	nextID   atomic.Uint64

	mu      sync.Mutex // serializes Fund and Generate and guards what follows
	coins   []coin     // the harness's unspent outputs
	scanned int32      // coinbases of blocks up to this height are in coins
}

// coin is one output the harness key can spend.
type coin struct {
	op       wire.OutPoint
	value    int64
	coinbase bool
	height   int32 // of the block holding a coinbase
}

// Utxo is an output Fund created.
type Utxo struct {
	OutPoint wire.OutPoint
	Value    int64
	PkScript []byte
	// Tx is the whole funding transaction (for a PSBT's non_witness_utxo).
	Tx *wire.MsgTx
}

// RPCError is an error btcd's JSON-RPC server returned; Message is btcd's own text.
type RPCError struct {
	Method  string
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("btcd %s: %s (code %d)", e.Method, e.Message, e.Code)
}

// Start runs a btcd on simnet (RPC without TLS, both listeners on free loopback ports,
// a fresh data directory in t.TempDir()), waits until its RPC server answers and mines
// until segwit and taproot are active (299 blocks, so the coinbases of heights 1 to 200
// are mature). t.Cleanup kills the process and waits for it. It fails the test when btcd
// cannot be found (run `make btcd`) or does not come up.
func Start(t testing.TB) *Node {
	t.Helper()
	began := time.Now()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	key, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatalf("btcnode: key: %v", err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.SimNetParams)
	if err != nil {
		t.Fatalf("btcnode: address: %v", err)
	}
	pkScript, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatalf("btcnode: script: %v", err)
	}
	n := &Node{
		User:         randomHex(8),
		Password:     randomHex(16),
		Params:       &chaincfg.SimNetParams,
		MinerAddress: addr,
		key:          key,
		pkScript:     pkScript,
		http:         &http.Client{Timeout: 2 * time.Minute},
	}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		err := n.launch(t, bin, filepath.Join(dir, fmt.Sprintf("btcd-%d", attempt)))
		if err == nil {
			break
		}
		if attempt == startAttempts || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("btcnode: btcd did not start (%d attempts): %v", attempt, err)
		}
		t.Logf("btcnode: btcd did not start, once more on other ports: %v", err)
	}
	started := time.Since(began)
	if err := n.activateSoftForks(); err != nil {
		t.Fatalf("btcnode: %v", err)
	}
	t.Logf("btcnode: btcd %s up in %v, %d blocks mined in %v more (segwit, taproot active); log %s",
		n.RPCURL, started.Round(time.Millisecond), n.height(), (time.Since(began) - started).Round(time.Millisecond), n.LogPath)
	return n
}

// launch starts one btcd process in dir and waits for its RPC server.
func (n *Node) launch(t testing.TB, bin, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ports, err := freeport.Pick(2)
	if err != nil {
		return err
	}
	rpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p2pAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	conf := filepath.Join(dir, "btcd.conf")
	if err := os.WriteFile(conf, nil, 0o600); err != nil { // so that ~/.btcd/btcd.conf is not read
		return err
	}
	logPath := filepath.Join(dir, "btcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	args := []string{
		"--simnet",
		"--notls",
		"--configfile=" + conf,
		"--datadir=" + filepath.Join(dir, "data"),
		"--logdir=" + filepath.Join(dir, "logs"),
		"--rpclisten=" + rpcAddr,
		"--listen=" + p2pAddr,
		"--rpcuser=" + n.User,
		"--rpcpass=" + n.Password,
		"--miningaddr=" + n.MinerAddress.EncodeAddress(),
		"--txindex",
		"--nocfilters",
		"--nodnsseed",
		"--nobanning",
		"--utxocachemaxsize=16", // MiB; btcd preallocates its default 250
		"--debuglevel=info",
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	stop := func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}
	n.RPCURL = "http://" + rpcAddr
	n.P2PAddr = p2pAddr
	n.LogPath = logPath

	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := n.Call("getblockcount")
		if err == nil {
			break
		}
		var rpcErr *RPCError
		if errors.As(err, &rpcErr) && rpcErr.Code != -28 { // -28: still warming up
			stop()
			return fmt.Errorf("%v\n%s", err, tail(logPath, 30))
		}
		select {
		case <-done:
			return fmt.Errorf("btcd exited (%v) before its RPC server answered:\n%s", waitErr, tail(logPath, 30))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("btcd's RPC server at %s did not answer within %v (last: %v):\n%s", rpcAddr, readyTimeout, err, tail(logPath, 30))
		}
	}
	t.Cleanup(func() {
		select {
		case <-done:
			t.Errorf("btcnode: btcd exited before the test ended: %v", waitErr)
		default:
		}
		stop()
		if t.Failed() {
			t.Logf("btcnode: the end of btcd's log (%s):\n%s", logPath, tail(logPath, logTailLines))
		}
	})
	return nil
}

// activateSoftForks mines at least 101 blocks, then to the end of each BIP 9 window until
// getblockchaininfo reports segwit and taproot active.
func (n *Node) activateSoftForks() error {
	if _, err := n.generate(101); err != nil {
		return err
	}
	window := int32(n.Params.MinerConfirmationWindow)
	for range 10 {
		var info struct {
			Blocks int32 `json:"blocks"`
			BIP9   map[string]struct {
				Status string `json:"status"`
			} `json:"bip9_softforks"`
		}
		if err := n.callInto(&info, "getblockchaininfo"); err != nil {
			return err
		}
		if info.BIP9["segwit"].Status == "active" && info.BIP9["taproot"].Status == "active" {
			return nil
		}
		// The state changes with the block whose height is a multiple of the window.
		k := window - (info.Blocks+1)%window
		if k == 0 {
			k = window
		}
		if _, err := n.generate(int(k)); err != nil {
			return err
		}
	}
	return errors.New("segwit and taproot not active after 10 deployment windows")
}

// Call makes one JSON-RPC call to btcd and returns its result; a btcd error is an
// *RPCError.
func (n *Node) Call(method string, params ...any) (json.RawMessage, error) {
	if params == nil {
		params = []any{}
	}
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "1.0",
		"id":      n.nextID.Add(1),
		"method":  method,
		"params":  params,
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, n.RPCURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(n.User, n.Password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("btcd %s: %w", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("btcd %s: %w", method, err)
	}
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("btcd %s: HTTP %s: %q", method, resp.Status, truncate(string(raw), 200))
	}
	if out.Error != nil {
		out.Error.Method = method
		return nil, out.Error
	}
	return out.Result, nil
}

func (n *Node) callInto(v any, method string, params ...any) error {
	raw, err := n.Call(method, params...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("btcd %s: result %q: %w", method, truncate(string(raw), 200), err)
	}
	return nil
}

// Generate mines blocks (their coinbases pay the harness) and returns their hashes.
func (n *Node) Generate(t testing.TB, blocks int) []*chainhash.Hash {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	hs, err := n.generate(blocks)
	if err != nil {
		t.Fatalf("btcnode: %v", err)
	}
	return hs
}

func (n *Node) generate(blocks int) ([]*chainhash.Hash, error) {
	var hexes []string
	if err := n.callInto(&hexes, "generate", blocks); err != nil {
		return nil, err
	}
	if len(hexes) != blocks {
		return nil, fmt.Errorf("btcd generate %d: %d hashes", blocks, len(hexes))
	}
	hs := make([]*chainhash.Hash, len(hexes))
	for i, s := range hexes {
		h, err := chainhash.NewHashFromStr(s)
		if err != nil {
			return nil, fmt.Errorf("btcd generate: hash %q: %w", s, err)
		}
		hs[i] = h
	}
	return hs, nil
}

// Height returns the height of btcd's best block.
func (n *Node) Height(t testing.TB) int32 {
	t.Helper()
	h, err := n.blockCount()
	if err != nil {
		t.Fatalf("btcnode: %v", err)
	}
	return h
}

func (n *Node) height() int32 {
	h, _ := n.blockCount()
	return h
}

func (n *Node) blockCount() (int32, error) {
	var h int32
	err := n.callInto(&h, "getblockcount")
	return h, err
}

// Fund pays sats to pkScript from the harness's mature coinbases (and its own change) with
// a transaction the harness signs itself (change back to the harness), mines one block
// holding it and returns the funded output. It can be called any number of times: it
// mines more blocks when no mature coinbase is left, and amounts beyond one coinbase
// (50 BTC) take several inputs.
func (n *Node) Fund(t testing.TB, pkScript []byte, sats int64) Utxo {
	t.Helper()
	if sats <= 0 {
		t.Fatalf("btcnode: Fund of %d sats", sats)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	u, err := n.fund(pkScript, sats)
	if err != nil {
		t.Fatalf("btcnode: Fund %d sats: %v", sats, err)
	}
	return u
}

func (n *Node) fund(pkScript []byte, sats int64) (Utxo, error) {
	var ins []coin
	var fee int64
	for try := 0; ; try++ {
		tip, err := n.scan()
		if err != nil {
			return Utxo{}, err
		}
		var ok bool
		var spendable int64
		ins, fee, spendable, ok = n.selectCoins(tip, len(pkScript), sats)
		if ok {
			break
		}
		if try == 5 {
			return Utxo{}, fmt.Errorf("not enough mature coins after mining (%d sats of %d coins spendable)", spendable, len(n.coins))
		}
		// Mine until enough immature coinbases mature: they mature one a block, oldest first
		// (coins hold them in height order), and the blocks mined add coinbases of their own.
		short := sats + feeRate*estimateVSize(len(n.coins)+1, len(pkScript)) - spendable
		k := int32((short + subsidy - 1) / subsidy)
		oldest := tip + 1
		maturity := int32(n.Params.CoinbaseMaturity)
		for _, c := range n.coins {
			if c.coinbase && tip+1-c.height < maturity {
				oldest = c.height
				break
			}
		}
		blocks := max(1, int(oldest+k-1+maturity-(tip+1)))
		if _, err := n.generate(blocks); err != nil {
			return Utxo{}, err
		}
	}

	tx := wire.NewMsgTx(wire.TxVersion)
	var in int64
	fetcher := txscript.NewMultiPrevOutFetcher(nil)
	for _, c := range ins {
		tx.AddTxIn(wire.NewTxIn(&c.op, nil, nil))
		fetcher.AddPrevOut(c.op, wire.NewTxOut(c.value, n.pkScript))
		in += c.value
	}
	tx.AddTxOut(wire.NewTxOut(sats, pkScript))
	if change := in - sats - fee; change >= dustLimit {
		tx.AddTxOut(wire.NewTxOut(change, n.pkScript))
	}
	sigHashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, c := range ins {
		w, err := txscript.WitnessSignature(tx, sigHashes, i, c.value, n.pkScript, txscript.SigHashAll, n.key, true)
		if err != nil {
			return Utxo{}, fmt.Errorf("sign input %d: %w", i, err)
		}
		tx.TxIn[i].Witness = w
	}
	txid, err := n.sendRaw(tx)
	if err != nil {
		return Utxo{}, err
	}
	n.coins = slices.DeleteFunc(n.coins, func(c coin) bool {
		return slices.ContainsFunc(ins, func(s coin) bool { return s.op == c.op })
	})
	if len(tx.TxOut) == 2 {
		// Change goes first: it is spendable at once, coinbases only when mature.
		n.coins = slices.Insert(n.coins, 0, coin{op: wire.OutPoint{Hash: *txid, Index: 1}, value: tx.TxOut[1].Value})
	}
	hs, err := n.generate(1)
	if err != nil {
		return Utxo{}, err
	}
	_, conf, err := n.rawTx(txid.String())
	if err != nil {
		return Utxo{}, err
	}
	if conf < 1 {
		return Utxo{}, fmt.Errorf("funding transaction %s not in the block %s mined after it", txid, hs[0])
	}
	return Utxo{
		OutPoint: wire.OutPoint{Hash: *txid, Index: 0},
		Value:    sats,
		PkScript: slices.Clone(pkScript),
		Tx:       tx,
	}, nil
}

// scan adds the harness's coinbase outputs of the blocks mined since the last scan and
// returns the tip's height.
func (n *Node) scan() (int32, error) {
	tip, err := n.blockCount()
	if err != nil {
		return 0, err
	}
	for h := n.scanned + 1; h <= tip; h++ {
		var hash string
		if err := n.callInto(&hash, "getblockhash", h); err != nil {
			return 0, err
		}
		var blockHex string
		if err := n.callInto(&blockHex, "getblock", hash, 0); err != nil {
			return 0, err
		}
		b, err := hex.DecodeString(blockHex)
		if err != nil {
			return 0, fmt.Errorf("block %s: %w", hash, err)
		}
		var blk wire.MsgBlock
		if err := blk.Deserialize(bytes.NewReader(b)); err != nil {
			return 0, fmt.Errorf("block %s: %w", hash, err)
		}
		cb := blk.Transactions[0]
		for i, out := range cb.TxOut {
			if bytes.Equal(out.PkScript, n.pkScript) {
				n.coins = append(n.coins, coin{
					op:       wire.OutPoint{Hash: cb.TxHash(), Index: uint32(i)},
					value:    out.Value,
					coinbase: true,
					height:   h,
				})
			}
		}
		n.scanned = h
	}
	return tip, nil
}

// selectCoins picks spendable coins (change first, then the oldest mature coinbases)
// covering sats plus the fee of a transaction with one output of a script of scriptLen
// bytes and a change output.
func (n *Node) selectCoins(tip int32, scriptLen int, sats int64) (picked []coin, fee, spendable int64, ok bool) {
	for _, c := range n.coins {
		if c.coinbase && tip+1-c.height < int32(n.Params.CoinbaseMaturity) {
			continue
		}
		picked = append(picked, c)
		spendable += c.value
		fee = feeRate * estimateVSize(len(picked), scriptLen)
		if spendable >= sats+fee {
			return picked, fee, spendable, true
		}
	}
	return nil, 0, spendable, false
}

// estimateVSize bounds the virtual size of a transaction spending ins P2WPKH inputs to
// an output of a script of scriptLen bytes and a P2WPKH change output.
func estimateVSize(ins, scriptLen int) int64 {
	const (
		overhead = 11      // version, locktime, counts, segwit marker and flag (rounded up)
		input    = 41 + 28 // outpoint, empty scriptSig, sequence; witness (≤109 bytes)/4
		change   = 8 + 1 + 22
	)
	return int64(overhead + ins*input + 8 + 3 + scriptLen + change)
}

// SendRaw submits tx (serialized with its witnesses) with sendrawtransaction and returns
// its txid; a refusal is an *RPCError carrying btcd's message.
func (n *Node) SendRaw(t testing.TB, tx *wire.MsgTx) (*chainhash.Hash, error) {
	t.Helper()
	return n.sendRaw(tx)
}

func (n *Node) sendRaw(tx *wire.MsgTx) (*chainhash.Hash, error) {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return nil, err
	}
	var txid string
	if err := n.callInto(&txid, "sendrawtransaction", hex.EncodeToString(buf.Bytes())); err != nil {
		return nil, err
	}
	return chainhash.NewHashFromStr(txid)
}

// RawTx looks a transaction up (in the mempool or, btcd running with --txindex, in the
// chain) and returns it with its number of confirmations (0 in the mempool).
func (n *Node) RawTx(t testing.TB, txid string) (*wire.MsgTx, int, error) {
	t.Helper()
	return n.rawTx(txid)
}

func (n *Node) rawTx(txid string) (*wire.MsgTx, int, error) {
	var res struct {
		Hex           string `json:"hex"`
		Confirmations int    `json:"confirmations"`
	}
	if err := n.callInto(&res, "getrawtransaction", txid, 1); err != nil {
		return nil, 0, err
	}
	b, err := hex.DecodeString(res.Hex)
	if err != nil {
		return nil, 0, fmt.Errorf("getrawtransaction %s: %w", txid, err)
	}
	tx := new(wire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(b)); err != nil {
		return nil, 0, fmt.Errorf("getrawtransaction %s: %w", txid, err)
	}
	return tx, res.Confirmations, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// tail returns the last n lines of the file at path but its CPU miner's "Block submitted"
// lines (one a block mined; they are only counted).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	total, mined := 0, 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Block submitted via CPU miner") {
			mined++
			continue
		}
		total++
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	head := ""
	if total > n {
		head = "[… " + strconv.Itoa(total-n) + " earlier lines]\n"
	}
	if mined > 0 {
		head += "[" + strconv.Itoa(mined) + " lines \"Block submitted via CPU miner\" left out]\n"
	}
	return head + strings.Join(lines, "\n")
}
