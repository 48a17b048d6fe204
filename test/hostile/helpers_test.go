//go:build linux

package hostile

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	btcecdsa "github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/node/client"
	"github.com/custos/custos/test/cluster"
)

// Limits on what the helpers read from the nodes.
const (
	maxLogLine = 1 << 20
	pollEvery  = 25 * time.Millisecond
)

// droppedMetric is the honest nodes' counter of dropped ceremony messages.
const droppedMetric = "custos_p2p_dropped_messages_total"

// scrape reads node i's custos_p2p_dropped_messages_total counters by reason.
func scrape(ctx context.Context, c *cluster.Cluster, i int) (map[string]float64, error) {
	all, err := c.Metrics(ctx, i)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	prefix := droppedMetric + `{reason="`
	for series, v := range all {
		if rest, ok := strings.CutPrefix(series, prefix); ok {
			out[strings.TrimSuffix(rest, `"}`)] = v
		}
	}
	return out, nil
}

// waitDrops waits until node i's counter for reason has grown by at least want over base.
func waitDrops(ctx context.Context, t *testing.T, c *cluster.Cluster, i int, base map[string]float64, reason string, want float64) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var (
		cur map[string]float64
		err error
	)
	if werr := cluster.Until(ctx, func() bool {
		cur, err = scrape(ctx, c, i)
		return err == nil && cur[reason]-base[reason] >= want
	}); werr != nil {
		t.Fatalf("%s: %s{reason=%q} rose by %v, want at least %v: %v (err %v; now %v)", c.NodeID(i), droppedMetric, reason, cur[reason]-base[reason], want, werr, err, cur)
	}
	return cur
}

// healthy checks that node i's process runs and answers 200 on /healthz.
func healthy(ctx context.Context, c *cluster.Cluster, i int) error {
	if !c.Running(i) {
		return fmt.Errorf("%s: process is not running:\n%s", c.NodeID(i), c.LogTail(i, 40))
	}
	_, err := c.Get(ctx, i, "/healthz")
	return err
}

// waitIdle waits until node i runs no ceremony.
func waitIdle(ctx context.Context, c *cluster.Cluster, i int, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var (
		ds  any
		err error
	)
	if werr := cluster.Until(ctx, func() bool {
		st, e := c.DebugState(ctx, i)
		ds, err = st, e
		return e == nil && st.Ceremonies == 0
	}); werr != nil {
		return fmt.Errorf("%s still runs ceremonies after %v: %w (%+v, %v)", c.NodeID(i), within, werr, ds, err)
	}
	return nil
}

// logLine is one JSON log record of a node (only the fields the tests read).
type logLine struct {
	Time     time.Time `json:"time"`
	Level    string    `json:"level"`
	Msg      string    `json:"msg"`
	Session  string    `json:"session"`
	Request  string    `json:"request"`
	Err      string    `json:"err"`
	Culprits []string  `json:"culprits"`
	raw      string
}

// readLog parses node i's log; lines that are not JSON are kept with only raw set.
func readLog(c *cluster.Cluster, i int) ([]logLine, error) {
	f, err := os.Open(c.LogPath(i))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		raw := sc.Text()
		var l logLine
		_ = json.Unmarshal([]byte(raw), &l)
		l.raw = raw
		out = append(out, l)
	}
	return out, sc.Err()
}

// keyPair is a threshold key and its parsed public key.
type keyPair struct {
	key   *client.Key
	ecPub *btcec.PublicKey
	edPub ed25519.PublicKey
}

// createKey runs a keygen through cl and waits for the key to be active.
func createKey(ctx context.Context, cl *client.Client, curve, label string) (*keyPair, error) {
	idem := hex.EncodeToString(randomBytes(16))
	var (
		key *client.Key
		req *client.Request
	)
	err := retryTransient(ctx, func() error {
		var err error
		key, req, err = cl.CreateKey(ctx, curve, 2, label, idem)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create %s key: %w", curve, err)
	}
	if key == nil {
		r, err := waitFinal(ctx, cl, req.RequestID)
		if err != nil {
			return nil, err
		}
		if r.Status != client.StatusActive || r.Key == nil {
			return nil, requestFailure(r)
		}
		key = r.Key
	}
	kp := &keyPair{key: key}
	pub, err := hex.DecodeString(key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	switch curve {
	case "secp256k1":
		if kp.ecPub, err = btcec.ParsePubKey(pub); err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
	default:
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 public key of %d bytes", len(pub))
		}
		kp.edPub = ed25519.PublicKey(pub)
	}
	return kp, nil
}

// transient reports whether an API error is the cluster's passing state rather than an
// answer about the request: 503 (no quorum, leader unavailable), or auth.nonce_reused for
// a request this client signed once with a fresh nonce — which happens when the entry
// node's own forward to the leader timed out after the entry committed and it proposed it
// again. Callers retry such errors as a new signed request with the same idempotency key,
// which can only ever create the request once.
func transient(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusServiceUnavailable || ae.Code == "auth.nonce_reused")
}

// retryTransient runs call up to 4 times while it fails with a transient error.
func retryTransient(ctx context.Context, call func() error) error {
	var err error
	for attempt := range 4 {
		if err = call(); err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 300 * time.Millisecond):
		}
	}
	return err
}

// waitFinal polls a request until its status is final, riding out transient errors.
func waitFinal(ctx context.Context, cl *client.Client, id string) (*client.Request, error) {
	for {
		var r *client.Request
		err := retryTransient(ctx, func() error {
			var err error
			r, err = cl.GetRequest(ctx, id)
			return err
		})
		if err != nil {
			return nil, err
		}
		if client.Final(r.Status) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for request %s: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func requestFailure(r *client.Request) error {
	if r.Error != nil {
		return fmt.Errorf("request %s %s: %s: %s", r.RequestID, r.Status, r.Error.Code, r.Error.Detail)
	}
	return fmt.Errorf("request %s ended %s", r.RequestID, r.Status)
}

// signOutcome is one sign request and how it ended.
type signOutcome struct {
	Entry     int
	Curve     string
	RequestID string
	SessionID string // the final attempt's session
	Status    string
	Code      string
	Err       error
	Took      time.Duration
}

// signAndVerify asks node entry to sign a fresh message with kp, waits for the request to
// be final and verifies the signature when it is signed. onScheduled, if set, is called
// with the request's current session id as soon as the request is known.
func signAndVerify(ctx context.Context, u *cluster.User, entry int, kp *keyPair, onScheduled func(sessionHex string)) signOutcome {
	out := signOutcome{Entry: entry, Curve: kp.key.Curve}
	start := time.Now()
	var msg []byte
	if kp.ecPub != nil {
		msg = randomDigest()
	} else {
		msg = randomBytes(48)
	}
	cl := u.Clients[entry]
	idem := hex.EncodeToString(randomBytes(16))
	var r *client.Request
	err := retryTransient(ctx, func() error {
		var err error
		r, err = cl.Sign(ctx, kp.key.KeyID, msg, "", idem)
		return err
	})
	if err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Request != nil {
			r = ae.Request
		} else {
			out.Err = err
			return out
		}
	}
	out.RequestID = r.RequestID
	if onScheduled != nil && r.SessionID != "" {
		onScheduled(r.SessionID)
	}
	if !client.Final(r.Status) {
		if r, err = waitFinal(ctx, cl, r.RequestID); err != nil {
			out.Err = err
			return out
		}
	}
	out.Took = time.Since(start)
	out.Status, out.SessionID = r.Status, r.SessionID
	if r.Error != nil {
		out.Code = r.Error.Code
	}
	if r.Status != client.StatusSigned {
		out.Err = requestFailure(r)
		return out
	}
	out.Err = verifySignature(kp, msg, r.Signature)
	return out
}

// verifySignature checks a finished signature with btcec or crypto/ed25519.
func verifySignature(kp *keyPair, msg []byte, sig *client.Signature) error {
	if sig == nil {
		return errors.New("signed request without a signature")
	}
	if kp.ecPub != nil {
		der, err := hex.DecodeString(sig.DER)
		if err != nil {
			return fmt.Errorf("signature DER: %w", err)
		}
		parsed, err := btcecdsa.ParseDERSignature(der)
		if err != nil {
			return fmt.Errorf("signature DER: %w", err)
		}
		if !parsed.Verify(msg, kp.ecPub) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	}
	raw, err := hex.DecodeString(sig.Signature)
	if err != nil || !ed25519.Verify(kp.edPub, msg, raw) {
		return errors.New("Ed25519 signature does not verify")
	}
	return nil
}

// randomDigest returns 32 random bytes below the secp256k1 order.
func randomDigest() []byte {
	n := btcec.S256().N
	for {
		b := randomBytes(32)
		if new(big.Int).SetBytes(b).Cmp(n) < 0 {
			return b
		}
	}
}

// streamResult is what a peer got when it tried to use one custos protocol.
type streamResult struct {
	Proto  protocol.ID
	Usable bool
	Detail string
}

// tryProtocols opens each custos protocol from h to p and proves whether it is usable: a
// stream that looks open on the dialer's side must still carry an RPC ping answer (rpc) or
// stay open without being reset (tss, raft).
func tryProtocols(ctx context.Context, h host.Host, p peer.ID) []streamResult {
	var out []streamResult
	for _, proto := range []protocol.ID{p2p.ProtocolTSS, p2p.ProtocolRPC, p2p.ProtocolRaft} {
		out = append(out, tryProtocol(ctx, h, p, proto))
	}
	return out
}

func tryProtocol(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID) streamResult {
	res := streamResult{Proto: proto}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.NewStream(network.WithAllowLimitedConn(ctx, "test"), p, proto)
	if err != nil {
		res.Detail = "open: " + err.Error()
		return res
	}
	defer s.Reset()
	if proto == p2p.ProtocolRPC {
		nonce := randomBytes(16)
		if err := writePing(s, nonce); err != nil {
			res.Detail = "write ping: " + err.Error()
			return res
		}
		_ = s.SetReadDeadline(time.Now().Add(3 * time.Second))
		var st [1]byte
		if _, err := io.ReadFull(s, st[:]); err != nil {
			res.Detail = "read ping answer: " + err.Error()
			return res
		}
		body, err := readFrame(s, 64)
		if err != nil || st[0] != 0 || !bytes.Equal(body, nonce) {
			res.Detail = fmt.Sprintf("bad ping answer: status %d, err %v", st[0], err)
			return res
		}
		res.Usable, res.Detail = true, "ping answered"
		return res
	}
	if proto == p2p.ProtocolTSS {
		// A well-formed but empty frame: harmless, and it makes the far side act.
		if _, err := s.Write(frameBytes(nil)); err != nil {
			res.Detail = "write: " + err.Error()
			return res
		}
	}
	_ = s.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	var b [1]byte
	_, err = s.Read(b[:])
	if isTimeout(err) {
		res.Usable, res.Detail = true, "stream stayed open"
		return res
	}
	res.Detail = fmt.Sprintf("stream ended: %v", err)
	return res
}

// isTimeout reports whether err is a read or write deadline expiring (libp2p's streams
// have their own error type for it).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

// writePing writes a p2p.ping RPC request and half-closes the stream.
func writePing(s network.Stream, nonce []byte) error {
	const method = "p2p.ping"
	b := []byte{byte(len(method))}
	b = append(b, method...)
	b = binary.BigEndian.AppendUint32(b, 2000)
	b = append(b, frameBytes(nonce)...)
	if _, err := s.Write(b); err != nil {
		return err
	}
	return s.CloseWrite()
}
