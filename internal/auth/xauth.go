package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
)

// X-Auth-Token (bitcoin-auth; AUTH-FORMATS.md §3):
// "<pubkey>|<scheme>|<timestamp>|<requestPath>|<signature>", the signed message being
// "<requestPath>|<timestamp>|<bodyHash>".

const (
	// XAuthSchemeBSM is the Bitcoin Signed Message scheme.
	XAuthSchemeBSM = "bsm"
	// XAuthSchemeBRC77 is the BRC-77 signed-message scheme (the client's default).
	XAuthSchemeBRC77 = "brc77"
	// XAuthWindow is how far the token's timestamp may be from the verifier's clock.
	XAuthWindow = 300 * time.Second
	// MaxXAuthTokenLen bounds the X-Auth-Token header value.
	MaxXAuthTokenLen = 8 << 10
	// MaxXAuthPathLen bounds the requestPath field.
	MaxXAuthPathLen = 4 << 10

	// xauthTimeLayout is JavaScript's Date.prototype.toISOString() for years 0000-9999.
	xauthTimeLayout = "2006-01-02T15:04:05.000Z"
	bsmMagic        = "Bitcoin Signed Message:\n"
	brc77Invoice    = "2-message signing-"
	brc77HeaderLen  = 4 + 33 + 1 + 32
)

// brc77Version is BRC-77's version prefix 0x42423301.
func brc77Version() []byte { return []byte{0x42, 0x42, 0x33, 0x01} }

// XAuthToken is a parsed X-Auth-Token. Sig holds the decoded signature field: the 65-byte
// compact signature for bsm, the whole BRC-77 blob for brc77.
type XAuthToken struct {
	PubKey      []byte
	Scheme      string
	Timestamp   time.Time
	RequestPath string
	Sig         []byte
}

// ParseXAuthToken parses an X-Auth-Token header value strictly: five "|"-separated
// fields; pubkey 66 lowercase hex characters of a valid compressed secp256k1 point;
// scheme bsm or brc77; timestamp exactly as toISOString writes it; a printable-ASCII
// requestPath starting with "/"; canonical base64; for bsm a 65-byte signature with
// header byte 31-34 and low S; for brc77 version 0x42423301, the sender key equal to
// pubkey, recipient byte 0x00 (anyone) and a strict low-S DER signature.
func ParseXAuthToken(h string) (*XAuthToken, error) {
	if h == "" {
		return nil, newErr(CodeMissing, "no X-Auth-Token")
	}
	if len(h) > MaxXAuthTokenLen {
		return nil, sigInvalid("X-Auth-Token too long")
	}
	f := strings.Split(h, "|")
	if len(f) != 5 {
		return nil, sigInvalid("X-Auth-Token must have five |-separated fields")
	}
	t := &XAuthToken{Scheme: f[1], RequestPath: f[3]}
	if len(f[0]) != 66 || !isLowerHex(f[0]) {
		return nil, sigInvalid("X-Auth-Token pubkey must be 66 lowercase hex characters")
	}
	t.PubKey, _ = hex.DecodeString(f[0])
	if t.PubKey[0] != 0x02 && t.PubKey[0] != 0x03 {
		return nil, sigInvalid("X-Auth-Token pubkey must be a compressed key")
	}
	if _, err := btcec.ParsePubKey(t.PubKey); err != nil {
		return nil, sigInvalid("X-Auth-Token pubkey is not a secp256k1 point")
	}
	if t.Scheme != XAuthSchemeBSM && t.Scheme != XAuthSchemeBRC77 {
		return nil, sigInvalid("X-Auth-Token scheme must be bsm or brc77")
	}
	ts, err := time.Parse(xauthTimeLayout, f[2])
	if err != nil || ts.Format(xauthTimeLayout) != f[2] {
		return nil, sigInvalid("X-Auth-Token timestamp must look like 2026-01-02T15:04:05.123Z")
	}
	t.Timestamp = ts
	if err := checkXAuthPath(t.RequestPath); err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(f[4])
	if err != nil || base64.StdEncoding.EncodeToString(sig) != f[4] {
		return nil, sigInvalid("X-Auth-Token signature is not canonical base64")
	}
	t.Sig = sig
	if err := t.checkSignatureShape(); err != nil {
		return nil, err
	}
	return t, nil
}

func checkXAuthPath(p string) error {
	if p == "" || p[0] != '/' || len(p) > MaxXAuthPathLen {
		return sigInvalid("X-Auth-Token requestPath must start with / and be at most 4096 bytes")
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= 0x20 || p[i] >= 0x7f {
			return sigInvalid("X-Auth-Token requestPath must be printable ASCII")
		}
	}
	return nil
}

// checkSignatureShape applies the scheme's encoding rules to t.Sig (no curve work
// beyond parsing).
func (t *XAuthToken) checkSignatureShape() error {
	switch t.Scheme {
	case XAuthSchemeBSM:
		if len(t.Sig) != 65 {
			return sigInvalid("bsm signature must be 65 bytes")
		}
		if t.Sig[0] < 31 || t.Sig[0] > 34 {
			return sigInvalid("bsm signature header must be 31-34 (compressed key)")
		}
		var r, s btcec.ModNScalar
		if r.SetByteSlice(t.Sig[1:33]) || r.IsZero() || s.SetByteSlice(t.Sig[33:65]) || s.IsZero() {
			return sigInvalid("bsm signature r or s out of range")
		}
		if s.IsOverHalfOrder() {
			return sigInvalid("bsm signature S is not low")
		}
		return nil
	case XAuthSchemeBRC77:
		_, _, err := t.brc77Parts()
		return err
	default:
		return sigInvalid("X-Auth-Token scheme must be bsm or brc77")
	}
}

// brc77Parts checks the BRC-77 blob's framing and returns its keyID and signature.
func (t *XAuthToken) brc77Parts() (keyID []byte, sig *ecdsa.Signature, err error) {
	b := t.Sig
	if len(b) < brc77HeaderLen+ecdsa.MinSigLen || len(b) > brc77HeaderLen+ecdsa.MaxSigLen {
		return nil, nil, sigInvalid("brc77 signature has a bad length")
	}
	if !bytes.Equal(b[:4], brc77Version()) {
		return nil, nil, sigInvalid("brc77 signature has an unknown version")
	}
	if !bytes.Equal(b[4:37], t.PubKey) {
		return nil, nil, sigInvalid("brc77 sender key differs from the token's pubkey")
	}
	if b[37] != 0x00 {
		return nil, nil, sigInvalid("brc77 signature must be for anyone (recipient 0x00)")
	}
	keyID = b[38:70]
	sig, err = parseStrictDER(b[70:])
	if err != nil {
		return nil, nil, err
	}
	return keyID, sig, nil
}

// parseStrictDER parses a DER ECDSA signature, refusing anything but the one canonical
// low-S encoding (no trailing bytes, no excess padding, no long-form lengths).
func parseStrictDER(der []byte) (*ecdsa.Signature, error) {
	sig, err := ecdsa.ParseDERSignature(der)
	if err != nil {
		return nil, sigInvalid("signature is not strict DER")
	}
	s := sig.S()
	if s.IsOverHalfOrder() {
		return nil, sigInvalid("signature S is not low")
	}
	if !bytes.Equal(sig.Serialize(), der) {
		return nil, sigInvalid("signature is not strict DER")
	}
	return sig, nil
}

// bodyHash is lowercase hex SHA-256 of body, or "" for an absent or empty body.
func bodyHash(body []byte) string {
	if len(body) == 0 {
		return ""
	}
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

func xauthMessage(requestPath string, ts time.Time, body []byte) []byte {
	return []byte(requestPath + "|" + ts.UTC().Format(xauthTimeLayout) + "|" + bodyHash(body))
}

// Message is the signed message "<requestPath>|<timestamp>|<bodyHash>" for body.
func (t *XAuthToken) Message(body []byte) []byte {
	return xauthMessage(t.RequestPath, t.Timestamp, body)
}

// ReplayKey is SHA-256(pubkey ‖ signed message): the identity under which the node
// accepts an X-Auth-Token once (re-encodings of the same authorisation share it).
func (t *XAuthToken) ReplayKey(body []byte) [32]byte {
	h := sha256.New()
	h.Write(t.PubKey)
	h.Write(t.Message(body))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// VerifyXAuthToken checks t against the request (method, path and query as sent, body)
// at time now: the method is not DELETE or PUT; requestPath equals pathAndQuery; the
// timestamp is within XAuthWindow (in the future → auth.signature_invalid, too old →
// auth.signature_expired); and the signature verifies for t.PubKey. It never remembers
// the token: the node accepts each ReplayKey once.
func VerifyXAuthToken(t *XAuthToken, method, pathAndQuery string, body []byte, now time.Time) error {
	if strings.EqualFold(method, "DELETE") || strings.EqualFold(method, "PUT") {
		return sigInvalid("X-Auth-Token is not accepted on DELETE or PUT (the method is not signed)")
	}
	if len(t.PubKey) != 33 {
		return sigInvalid("X-Auth-Token pubkey must be 33 bytes")
	}
	if err := checkXAuthPath(t.RequestPath); err != nil {
		return err
	}
	if t.RequestPath != pathAndQuery {
		return sigInvalid("X-Auth-Token requestPath differs from the request's path and query")
	}
	if d := t.Timestamp.Sub(now); d > XAuthWindow {
		return sigInvalid("X-Auth-Token timestamp is in the future; check the client's clock")
	} else if d < -XAuthWindow {
		return newErr(CodeSignatureExpired, "X-Auth-Token timestamp too old")
	}
	if err := t.checkSignatureShape(); err != nil {
		return err
	}
	pub, err := btcec.ParsePubKey(t.PubKey)
	if err != nil {
		return sigInvalid("X-Auth-Token pubkey is not a secp256k1 point")
	}
	msg := t.Message(body)
	switch t.Scheme {
	case XAuthSchemeBSM:
		got, compressed, err := ecdsa.RecoverCompact(t.Sig, bsmDigest(msg))
		if err != nil || !compressed || !bytes.Equal(got.SerializeCompressed(), t.PubKey) {
			return sigInvalid("X-Auth-Token signature does not verify")
		}
		return nil
	case XAuthSchemeBRC77:
		keyID, sig, err := t.brc77Parts()
		if err != nil {
			return err
		}
		child, err := brc42ChildPublic(pub, keyID)
		if err != nil {
			return err
		}
		h := sha256.Sum256(msg)
		if !sig.Verify(h[:], child) {
			return sigInvalid("X-Auth-Token signature does not verify")
		}
		return nil
	}
	return sigInvalid("X-Auth-Token scheme must be bsm or brc77")
}

// bsmDigest is SHA-256(SHA-256(varint(24) ‖ "Bitcoin Signed Message:\n" ‖ varint(len) ‖ msg)).
func bsmDigest(msg []byte) []byte {
	var b bytes.Buffer
	writeCompactSize(&b, uint64(len(bsmMagic)))
	b.WriteString(bsmMagic)
	writeCompactSize(&b, uint64(len(msg)))
	b.Write(msg)
	first := sha256.Sum256(b.Bytes())
	second := sha256.Sum256(first[:])
	return second[:]
}

// writeCompactSize writes Bitcoin's variable-length integer.
func writeCompactSize(b *bytes.Buffer, n uint64) {
	var buf [9]byte
	switch {
	case n < 0xfd:
		b.WriteByte(byte(n))
	case n <= 0xffff:
		buf[0] = 0xfd
		binary.LittleEndian.PutUint16(buf[1:], uint16(n))
		b.Write(buf[:3])
	case n <= 0xffffffff:
		buf[0] = 0xfe
		binary.LittleEndian.PutUint32(buf[1:], uint32(n))
		b.Write(buf[:5])
	default:
		buf[0] = 0xff
		binary.LittleEndian.PutUint64(buf[1:], n)
		b.Write(buf[:9])
	}
}

// brc42Offset is h = HMAC-SHA256(key = compressed shared secret, data = invoice) as a
// scalar. For recipient "anyone" (private key 1) the shared secret is the sender's own
// public key, whichever side computes it.
func brc42Offset(senderPub *btcec.PublicKey, keyID []byte) (*btcec.ModNScalar, error) {
	mac := hmac.New(sha256.New, senderPub.SerializeCompressed())
	mac.Write([]byte(brc77Invoice + base64.StdEncoding.EncodeToString(keyID)))
	var h btcec.ModNScalar
	h.SetByteSlice(mac.Sum(nil))
	if h.IsZero() {
		return nil, sigInvalid("brc77 key derivation failed")
	}
	return &h, nil
}

// brc42ChildPublic is the BRC-42 child public key sender + h·G.
func brc42ChildPublic(senderPub *btcec.PublicKey, keyID []byte) (*btcec.PublicKey, error) {
	h, err := brc42Offset(senderPub, keyID)
	if err != nil {
		return nil, err
	}
	var hG, p, sum btcec.JacobianPoint
	btcec.ScalarBaseMultNonConst(h, &hG)
	senderPub.AsJacobian(&p)
	btcec.AddNonConst(&p, &hG, &sum)
	if (sum.X.IsZero() && sum.Y.IsZero()) || sum.Z.IsZero() {
		return nil, sigInvalid("brc77 key derivation failed")
	}
	sum.ToAffine()
	return btcec.NewPublicKey(&sum.X, &sum.Y), nil
}

// SignXAuthTokenBSM makes a bsm X-Auth-Token for a request to pathAndQuery with body, at
// now (milliseconds kept, as toISOString does). For clients and tests.
func SignXAuthTokenBSM(priv *btcec.PrivateKey, pathAndQuery string, body []byte, now time.Time) (string, error) {
	if priv == nil {
		return "", errors.New("auth: no private key")
	}
	if err := checkXAuthPath(pathAndQuery); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	ts := now.UTC().Truncate(time.Millisecond)
	sig := ecdsa.SignCompact(priv, bsmDigest(xauthMessage(pathAndQuery, ts, body)), true)
	return xauthHeader(priv, XAuthSchemeBSM, ts, pathAndQuery, sig), nil
}

// SignXAuthTokenBRC77 makes a brc77 X-Auth-Token (for anyone, with a fresh random
// 32-byte keyID) for a request to pathAndQuery with body, at now. For clients and tests.
func SignXAuthTokenBRC77(priv *btcec.PrivateKey, pathAndQuery string, body []byte, now time.Time) (string, error) {
	if priv == nil {
		return "", errors.New("auth: no private key")
	}
	if err := checkXAuthPath(pathAndQuery); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	keyID := make([]byte, 32)
	if _, err := rand.Read(keyID); err != nil {
		return "", fmt.Errorf("auth: random: %w", err)
	}
	pub := priv.PubKey()
	h, err := brc42Offset(pub, keyID)
	if err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	var k btcec.ModNScalar
	k.Set(&priv.Key).Add(h)
	if k.IsZero() {
		return "", errors.New("auth: brc77 key derivation failed")
	}
	child := btcec.PrivKeyFromScalar(&k)
	ts := now.UTC().Truncate(time.Millisecond)
	digest := sha256.Sum256(xauthMessage(pathAndQuery, ts, body))
	der := ecdsa.Sign(child, digest[:]).Serialize()
	blob := make([]byte, 0, brc77HeaderLen+len(der))
	blob = append(blob, brc77Version()...)
	blob = append(blob, pub.SerializeCompressed()...)
	blob = append(blob, 0x00)
	blob = append(blob, keyID...)
	blob = append(blob, der...)
	return xauthHeader(priv, XAuthSchemeBRC77, ts, pathAndQuery, blob), nil
}

func xauthHeader(priv *btcec.PrivateKey, scheme string, ts time.Time, path string, sig []byte) string {
	return hex.EncodeToString(priv.PubKey().SerializeCompressed()) + "|" + scheme + "|" +
		ts.Format(xauthTimeLayout) + "|" + path + "|" + base64.StdEncoding.EncodeToString(sig)
}
