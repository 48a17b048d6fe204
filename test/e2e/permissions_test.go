//go:build linux

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// matrixSubject is a caller that owns a key, a finished sign request and an access key,
// so that every route has something of its own to act on.
type matrixSubject struct {
	name    string
	clients []*client.Client
	keyID   string
	reqID   string
	akID    string // an access key of the subject's (users only)
}

// matrixRoute is one route and what it needs.
type matrixRoute struct {
	name string
	// perm is the permission the route needs; "" when none beyond owning the object
	// (GET /v1/requests/{id}: the request's owner; the access-key log: the grantor).
	perm string
	// usersOnly routes refuse every access key (403 perm.denied), whatever its grant:
	// POST /v1/keys, and all access-key management.
	usersOnly bool
	// ownOnly: an access key reads only the requests it made itself (API.md: "access
	// key (their own)"): its grantor's request in the matrix is 404 request.not_found
	// whatever its grant (e2e TestAccessKeys checks it reads its own).
	ownOnly bool
	call    func(ctx context.Context, c *client.Client, s *matrixSubject) error
	// allowedErr is the answer that shows the permission check passed when the call
	// cannot succeed for another reason: a grantor holding only access:manage has nothing
	// to grant, so its empty grant fails as a field value (400), checked after permission.
	allowedStatus int
	allowedCode   string
}

func matrixRoutes() []matrixRoute {
	return []matrixRoute{
		{name: "POST /v1/keys", perm: client.PermKeysCreate, usersOnly: true, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			_, _, err := c.CreateKey(ctx, "ed25519", 2, "matrix", "")
			return err
		}},
		{name: "GET /v1/keys", perm: client.PermKeysRead, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			ks, err := c.ListKeys(ctx)
			if err == nil && len(ks) == 0 {
				return fmt.Errorf("list answered no keys; the subject owns %s", s.keyID)
			}
			return err
		}},
		{name: "GET /v1/keys/{id}", perm: client.PermKeysRead, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			_, err := c.GetKey(ctx, s.keyID)
			return err
		}},
		{name: "POST /v1/keys/{id}/sign", perm: client.PermKeysSign, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			r, err := c.Sign(ctx, s.keyID, []byte("matrix "+s.name), "", "")
			if err == nil && r.Status != client.StatusSigned {
				return fmt.Errorf("sign answered %q", r.Status)
			}
			return err
		}},
		{name: "GET /v1/requests/{id}", perm: "", ownOnly: true, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			_, err := c.GetRequest(ctx, s.reqID)
			return err
		}},
		{name: "POST /v1/access-keys", perm: client.PermAccessManage, usersOnly: true, allowedStatus: 400, allowedCode: "request.malformed",
			call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
				pub, _, err := ed25519.GenerateKey(rand.Reader)
				if err != nil {
					return err
				}
				_, err = c.CreateAccessKey(ctx, client.AccessKeyGrant{Scheme: client.SchemeEd25519, PublicKey: hex.EncodeToString(pub), Permissions: []string{}})
				return err
			}},
		{name: "GET /v1/access-keys", perm: client.PermAccessManage, usersOnly: true, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			_, err := c.ListAccessKeys(ctx)
			return err
		}},
		{name: "GET /v1/access-keys/{id}/log", perm: "", usersOnly: true, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			_, err := c.AccessKeyLog(ctx, s.akID)
			return err
		}},
		// Last: it revokes the subject's access key.
		{name: "DELETE /v1/access-keys/{id}", perm: client.PermAccessManage, usersOnly: true, call: func(ctx context.Context, c *client.Client, s *matrixSubject) error {
			return c.RevokeAccessKey(ctx, s.akID)
		}},
	}
}

// TestPermissionMatrix calls every route as users holding exactly one permission each
// (and none), and as access keys granted exactly one permission each: each call is
// allowed or refused 403 perm.denied, as the route's permission says.
func TestPermissionMatrix(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{"rate": noRateLimit()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	check := func(t *testing.T, r matrixRoute, s *matrixSubject, node int, c *client.Client, allowed bool) {
		t.Helper()
		err := r.call(ctx, c, s)
		switch {
		case !allowed:
			wantErr(t, fmt.Sprintf("%s as %s via node %d", r.name, s.name, node+1), err, 403, "perm.denied")
		case r.allowedStatus != 0:
			wantErr(t, fmt.Sprintf("%s as %s via node %d (past the permission check)", r.name, s.name, node+1), err, r.allowedStatus, r.allowedCode)
		default:
			wantOK(t, fmt.Sprintf("%s as %s via node %d", r.name, s.name, node+1), err)
		}
	}

	t.Run("users", func(t *testing.T) {
		// Each user starts with every permission to make its key, request and access key,
		// then the admin leaves it exactly one (or none).
		for _, perm := range append(allPerms(), "") {
			name := perm
			if name == "" {
				name = "none"
			}
			u := c.newUser(ctx, "matrix-"+name, allPerms()...)
			k := u.edKey(ctx, t, 0, "matrix")
			s := &matrixSubject{name: "user with " + name, clients: u.Clients, keyID: k.KeyID, reqID: u.signReq(ctx, t, 1, k.KeyID, "setup")}
			s.akID = c.grantEd25519(ctx, t, u, []string{client.PermKeysRead}, nil, time.Time{}).ID
			var only []string
			if perm != "" {
				only = []string{perm}
			}
			wantOK(t, "set permissions", c.Admin().SetPermissions(ctx, u.ID, only))
			t.Run(name, func(t *testing.T) {
				for i, r := range matrixRoutes() {
					node := i % 3
					check(t, r, s, node, s.clients[node], r.perm == "" || r.perm == perm)
				}
			})
		}
	})

	t.Run("access keys", func(t *testing.T) {
		grantor := c.newUser(ctx, "matrix-grantor", allPerms()...)
		k := grantor.edKey(ctx, t, 0, "matrix")
		reqID := grantor.signReq(ctx, t, 2, k.KeyID, "setup")
		spare := c.grantEd25519(ctx, t, grantor, []string{client.PermKeysRead}, nil, time.Time{})
		for _, perm := range allPerms() {
			if perm == client.PermAccessManage {
				continue // never grantable (TestAccessKeys checks the refusal)
			}
			ak := c.grantEd25519(ctx, t, grantor, []string{perm}, nil, time.Time{})
			s := &matrixSubject{name: "access key with " + perm, clients: ak.clients, keyID: k.KeyID, reqID: reqID, akID: spare.ID}
			t.Run(perm, func(t *testing.T) {
				for i, r := range matrixRoutes() {
					node := (i + 1) % 3
					if r.ownOnly {
						wantErr(t, r.name+" (the grantor's) as "+s.name, r.call(ctx, s.clients[node], s), 404, "request.not_found")
						continue
					}
					check(t, r, s, node, s.clients[node], !r.usersOnly && (r.perm == "" || r.perm == perm))
				}
			})
		}
		// No access key's call revoked the spare key.
		ks, err := grantor.Clients[0].ListAccessKeys(ctx)
		wantOK(t, "list access keys", err)
		for _, ak := range ks {
			if !ak.RevokedAt.IsZero() {
				t.Fatalf("access key %s was revoked by an access key's call", ak.ID)
			}
		}
	})
}
