package client

import (
	"encoding/json"
	"net/http"
	"testing"
)

// FuzzParseAPIError feeds arbitrary answers to the error and object decoders.
func FuzzParseAPIError(f *testing.F) {
	f.Add([]byte(`{"type":"about:blank","title":"t","status":403,"code":"policy.blocked","detail":"d","request_id":"x","request":{"request_id":"r","status":"blocked","error":{"code":"policy.blocked","detail":"v"}}}`), "3")
	f.Add([]byte(`<html>bad gateway</html>`), "")
	f.Add([]byte(`{}`), "99999999999999")
	f.Add([]byte(`{"request":{"signature":{"recovery_id":"x"}}}`), "-1")
	f.Fuzz(func(t *testing.T, body []byte, retryAfter string) {
		resp := &http.Response{StatusCode: 418, Header: http.Header{"Retry-After": {retryAfter}}}
		e := parseAPIError(resp, body)
		if e.Status != 418 || e.RetryAfter < 0 || len(e.Error()) == 0 {
			t.Fatalf("bad error %#v", e)
		}
		var r Request
		_ = json.Unmarshal(body, &r)
		_ = NextCursor(json.RawMessage(body))
	})
}
