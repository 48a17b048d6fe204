package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
)

// The Standard Webhooks headers of a delivery.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	// UserAgent is the User-Agent of every delivery.
	UserAgent = "custos-webhooks/1"
)

// Sign returns the Standard Webhooks signature of a delivery:
// "v1," + base64(HMAC-SHA256(secret, id + "." + ts + "." + body)).
func Sign(secret []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Headers returns the headers of a delivery of body with the event id id at unix time
// ts: webhook-id, webhook-timestamp, webhook-signature, Content-Type and User-Agent.
func Headers(secret []byte, id string, ts int64, body []byte) http.Header {
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(secret, id, ts, body))
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", UserAgent)
	return h
}
