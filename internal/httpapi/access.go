package httpapi

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/custos/custos/internal/api"
	"github.com/custos/custos/internal/state"
)

// millis is an access-key or access-log time as the API writes it: milliseconds, UTC.
func millis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// accessKeyView is the access-key object of API.md: no expiry and not revoked are the
// zero time (written null).
func accessKeyView(ak *state.AccessKey) api.AccessKey {
	v := api.AccessKey{
		ID: ak.ID, Label: ak.Label, Scheme: ak.Scheme, PublicKey: hex.EncodeToString(ak.PublicKey),
		Permissions: ak.Permissions, KeyIDs: ak.KeyIDs, CreatedAt: millis(ak.CreatedAt),
	}
	if ak.ExpiresAt != 0 {
		v.ExpiresAt = millis(ak.ExpiresAt)
	}
	if ak.RevokedAt != 0 {
		v.RevokedAt = millis(ak.RevokedAt)
	}
	return v
}

// accessLogView is one entry of an access key's log, its operation named by its route.
func (s *Server) accessLogView(e state.AccessLogEntry) api.AccessLogEntry {
	return api.AccessLogEntry{Seq: e.Seq, Time: millis(e.Time), Route: s.opRoute(e.Op), Object: e.Object, Outcome: e.Outcome, Code: e.Code}
}

// opRoute names an operation's HTTP route ("GET /v1/keys/{key_id}"), for access-key logs:
// the pattern of the route table (apiRoutes) that commits it; an operation no route
// commits keeps its own name.
func (s *Server) opRoute(op string) string {
	if r, ok := s.routeOf[op]; ok {
		return r
	}
	return op
}

func (s *Server) hAccessCreate(x *exchange) *apiError {
	res, err := s.commit(x)
	if err != nil {
		return err
	}
	ak := s.st.AccessKey(res.AccessKeyID)
	if ak == nil {
		return errf(api.CodeInternal, "access key vanished")
	}
	x.w.Header().Set("Location", "/v1/access-keys/"+ak.ID)
	x.json(http.StatusCreated, accessKeyView(ak))
	return nil
}

func (s *Server) hAccessList(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	var out api.AccessKeyList
	out.AccessKeys, out.Next = page(s.st.AccessKeysOf(x.caller.UserID, after, limit+1), limit, func(k *state.AccessKey) string { return k.ID }, accessKeyView)
	x.json(http.StatusOK, out)
	return nil
}

func (s *Server) hAccessRevoke(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	x.noContent()
	return nil
}

func (s *Server) hAccessLog(x *exchange) *apiError {
	if _, err := s.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a log sequence number")
	if bad != "" {
		return errf(api.CodeRequestMalformed, "%s", bad)
	}
	entries, more := s.st.AccessLog(x.r.PathValue("id"), after, limit)
	out := api.AccessLog{Entries: make([]api.AccessLogEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, s.accessLogView(e))
	}
	if more && len(entries) > 0 {
		out.Next = strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	x.json(http.StatusOK, out)
	return nil
}

// keyScope is whose keys the caller sees: a user's own, or an access key's grantor's
// limited to its key_ids (nil = all).
func (s *Server) keyScope(x *exchange) (owner uint64, only []string, err *apiError) {
	if x.caller.Kind != state.CallerAccessKey {
		return x.caller.UserID, nil, nil
	}
	ak := s.st.AccessKey(x.caller.AccessKeyID)
	if ak == nil {
		return 0, nil, errf(api.CodeAuthTokenInvalid, "unknown access key")
	}
	return ak.Grantor, ak.KeyIDs, nil
}
