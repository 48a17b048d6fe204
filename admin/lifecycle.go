package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/custos/custos/internal/api"
)

// ReshareKey moves a key's shares to a new committee of nodes and/or threshold, same
// public key (POST /v1/admin/keys/{key_id}/reshare). members nil keeps the key's
// committee, threshold 0 its threshold. The answer is the reshare request: active when
// the new shares are in use (its Key shows the new members, threshold and generation),
// or still scheduled (poll with WaitRequest) when the node's wait ran out; a failed
// reshare is an *APIError (client.CodeOf) and the old committee keeps the key.
func (a *Admin) ReshareKey(ctx context.Context, keyID string, members []string, threshold int) (*Request, error) {
	if keyID == "" {
		return nil, errors.New("admin: empty key id")
	}
	var r Request
	err := a.Do(ctx, http.MethodPost, "/v1/admin/keys/"+url.PathEscape(keyID)+"/reshare", api.ReshareBody{Members: members, Threshold: threshold}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// RefreshKey gives a key's committee fresh shares of the same key (POST
// /v1/admin/keys/{key_id}/refresh): a reshare to the same members and threshold.
func (a *Admin) RefreshKey(ctx context.Context, keyID string) (*Request, error) {
	if keyID == "" {
		return nil, errors.New("admin: empty key id")
	}
	var r Request
	if err := a.Do(ctx, http.MethodPost, "/v1/admin/keys/"+url.PathEscape(keyID)+"/refresh", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// WaitRequest polls a request until it is final, calling progress (if not nil) with
// every status it sees change.
func (a *Admin) WaitRequest(ctx context.Context, id string, poll time.Duration, progress func(*Request)) (*Request, error) {
	last := ""
	for {
		r, err := a.GetRequest(ctx, id)
		if err != nil {
			return nil, err
		}
		if progress != nil && r.Status != last {
			progress(r)
			last = r.Status
		}
		if api.Final(r.Status) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Members and membership changes (API.md "Key lifecycle").
type (
	// MemberList is GET /v1/admin/members.
	MemberList = api.MemberList
	// MemberBody names a node to add: its id, libp2p peer id (custosd init prints it),
	// the addresses the members dial it at and its API URL.
	MemberBody = api.MemberBody
)

// ListMembers returns every member with its status (active, joining, leaving) and the
// membership change running, if any.
func (a *Admin) ListMembers(ctx context.Context) (*MemberList, error) {
	var out MemberList
	if err := a.Do(ctx, http.MethodGet, "/v1/admin/members", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddMember adds a node (POST /v1/admin/members): it joins raft as a non-voter, catches
// up, becomes a voter, then every key is reshared to include it. The answer is the change
// request (202); follow it with WaitRequest (its Membership shows the phase and the keys
// reshared). The new node must be running with cluster.join set.
func (a *Admin) AddMember(ctx context.Context, m MemberBody) (*Request, error) {
	return a.memberChange(ctx, http.MethodPost, "/v1/admin/members", m)
}

// RemoveMember removes a node (DELETE /v1/admin/members/{id}) once every key is reshared
// away from it.
func (a *Admin) RemoveMember(ctx context.Context, id string) (*Request, error) {
	if id == "" {
		return nil, errors.New("admin: empty member id")
	}
	return a.memberChange(ctx, http.MethodDelete, "/v1/admin/members/"+url.PathEscape(id), nil)
}

// ReplaceMember replaces a dead node by a new one (POST /v1/admin/members/{id}/replace):
// every key of the dead node is reshared from k of the others to the others and the new
// node.
func (a *Admin) ReplaceMember(ctx context.Context, id string, m MemberBody) (*Request, error) {
	if id == "" {
		return nil, errors.New("admin: empty member id")
	}
	return a.memberChange(ctx, http.MethodPost, "/v1/admin/members/"+url.PathEscape(id)+"/replace", m)
}

func (a *Admin) memberChange(ctx context.Context, method, path string, body any) (*Request, error) {
	var r Request
	if err := a.Do(ctx, method, path, body, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
