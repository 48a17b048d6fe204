package node

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/custos/custos/internal/state"
)

func rfc3339Nano(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

// accessKeyView is the access-key object of API.md.
func accessKeyView(ak *state.AccessKey) map[string]any {
	v := map[string]any{
		"id": ak.ID, "label": ak.Label, "scheme": ak.Scheme, "public_key": hex.EncodeToString(ak.PublicKey),
		"permissions": ak.Permissions, "key_ids": ak.KeyIDs, "expires_at": nil,
		"created_at": rfc3339Nano(ak.CreatedAt), "revoked_at": nil,
	}
	if ak.KeyIDs == nil {
		v["key_ids"] = []string{}
	}
	if ak.Permissions == nil {
		v["permissions"] = []string{}
	}
	if ak.ExpiresAt != 0 {
		v["expires_at"] = rfc3339Nano(ak.ExpiresAt)
	}
	if ak.RevokedAt != 0 {
		v["revoked_at"] = rfc3339Nano(ak.RevokedAt)
	}
	return v
}

// opRoute names an operation's HTTP route, for access-key logs.
func opRoute(op string) string {
	switch op {
	case state.OpClusterGet:
		return "GET /v1/cluster"
	case state.OpKeyCreate:
		return "POST /v1/keys"
	case state.OpKeyList:
		return "GET /v1/keys"
	case state.OpKeyGet:
		return "GET /v1/keys/{key_id}"
	case state.OpKeySign:
		return "POST /v1/keys/{key_id}/sign"
	case state.OpRequestGet:
		return "GET /v1/requests/{request_id}"
	case state.OpAccessCreate:
		return "POST /v1/access-keys"
	case state.OpAccessList:
		return "GET /v1/access-keys"
	case state.OpAccessRevoke:
		return "DELETE /v1/access-keys/{id}"
	case state.OpAccessLog:
		return "GET /v1/access-keys/{id}/log"
	case state.OpAuditList:
		return "GET /v1/audit"
	}
	return op
}

func (n *Node) hAccessCreate(x *exchange) *apiError {
	res, err := n.commit(x)
	if err != nil {
		return err
	}
	ak := n.fsm.AccessKey(res.AccessKeyID)
	if ak == nil {
		return errf("internal", "access key vanished")
	}
	x.w.Header().Set("Location", "/v1/access-keys/"+ak.ID)
	x.json(http.StatusCreated, accessKeyView(ak))
	return nil
}

func (n *Node) hAccessList(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	after, limit, bad := pageParams(x)
	if bad != "" {
		return errf("request.malformed", "%s", bad)
	}
	keys := n.fsm.AccessKeysOf(x.caller.UserID, after, limit+1)
	writePage(x, "access_keys", keys, limit, func(k *state.AccessKey) string { return k.ID }, accessKeyView)
	return nil
}

func (n *Node) hAccessRevoke(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	x.w.WriteHeader(http.StatusNoContent)
	x.status = http.StatusNoContent
	return nil
}

func (n *Node) hAccessLog(x *exchange) *apiError {
	if _, err := n.commit(x); err != nil {
		return err
	}
	after, limit, bad := numericPageParams(x, "a log sequence number")
	if bad != "" {
		return errf("request.malformed", "%s", bad)
	}
	entries, more := n.fsm.AccessLog(x.r.PathValue("id"), after, limit)
	list := make([]map[string]any, 0, len(entries))
	for _, e := range entries {
		list = append(list, map[string]any{
			"seq": e.Seq, "time": rfc3339Nano(e.Time), "route": opRoute(e.Op), "object": e.Object,
			"outcome": e.Outcome, "code": e.Code,
		})
	}
	out := map[string]any{"entries": list}
	if more && len(entries) > 0 {
		out["next"] = strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	x.json(http.StatusOK, out)
	return nil
}

// keyScope is whose keys the caller sees: a user's own, or an access key's grantor's
// limited to its key_ids (nil = all).
func (n *Node) keyScope(x *exchange) (owner uint64, only []string, err *apiError) {
	if x.caller.Kind != state.CallerAccessKey {
		return x.caller.UserID, nil, nil
	}
	ak := n.fsm.AccessKey(x.caller.AccessKeyID)
	if ak == nil {
		return 0, nil, errf("auth.token_invalid", "unknown access key")
	}
	return ak.Grantor, ak.KeyIDs, nil
}
