//go:build linux

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos/custos/admin"
	"github.com/custos/custos/node/client"
	testcluster "github.com/custos/custos/test/cluster"
)

// TestTokenPolicy runs a cluster configured with "auth": {"require_audience": true,
// "max_token_ttl": "1h"}: user tokens must name this cluster ("dev") and live at most an
// hour.
func TestTokenPolicy(t *testing.T) {
	c := startCluster(t, testcluster.Options{Extra: map[string]any{
		"rate": noRateLimit(),
		"auth": map[string]any{"require_audience": true, "max_token_ttl": "1h"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	iss := c.hsIssuer()
	id, err := c.Admin().CreateUser(ctx, "ttl-user")
	wantOK(t, "create user (admin token without aud)", err)
	priv, pubHex := newEdPair(t)

	tests := []struct {
		name     string
		audience string
		ttl      time.Duration
		iat      time.Duration // issued at, relative to now
		status   int
		code     string
	}{
		{"no audience", "", 30 * time.Minute, 0, 401, "auth.wrong_audience"},
		{"this cluster", "dev", 30 * time.Minute, 0, 200, ""},
		{"another cluster", "staging", 30 * time.Minute, 0, 401, "auth.wrong_audience"},
		{"exactly the longest lifetime", "dev", time.Hour, 0, 200, ""},
		{"longer than max_token_ttl", "dev", 2 * time.Hour, 0, 401, "auth.token_invalid"},
		{"a day", "dev", 24 * time.Hour, 0, 401, "auth.token_invalid"},
		{"expired", "dev", 30 * time.Minute, -2 * time.Hour, 401, "auth.token_expired"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := iss.UserToken(id, pubHex, tt.ttl, tt.audience, time.Now().Add(tt.iat))
			wantOK(t, "mint", err)
			cl, err := client.New(c.API(i%3), tok, priv)
			wantOK(t, "client", err)
			_, err = cl.ListKeys(ctx)
			if tt.status == 200 {
				wantOK(t, tt.name, err)
				return
			}
			wantErr(t, tt.name, err, tt.status, tt.code)
		})
	}

	t.Run("admin SDK and CLI with an audience", func(t *testing.T) {
		dev, err := admin.New(c.adminKey(), c.API(1), admin.WithAudience("dev"))
		wantOK(t, "admin", err)
		u := c.newUserWith(ctx, "aud-user", func(id uint64, pub string) (string, error) { return dev.GenUserToken(id, pub, 45*time.Minute) })
		k := u.edKey(ctx, t, 2, "aud")
		u.signReq(ctx, t, 0, k.KeyID, "with an audience")
		// An admin token for another cluster is refused too.
		staging, _ := admin.New(c.adminKey(), c.API(0), admin.WithAudience("staging"))
		_, err = staging.ListUsers(ctx)
		wantErr(t, "admin token for another cluster", err, 401, "auth.wrong_audience")
		// The CLI mints tokens with --audience.
		conn := []string{"--admin-key-file", filepath.Join(c.Dir(), "admin.key"), "--url", c.API(0)}
		for _, tc := range []struct {
			args []string
			ok   bool
		}{
			{[]string{"--audience", "dev", "--ttl", "1h"}, true},
			{[]string{"--ttl", "1h"}, false},
		} {
			priv, pub := newEdPair(t)
			tok, err := custosCLI(t, nil, append(append([]string{"admin", "token", "--user-id", jsonNum(u.ID), "--public-key", pub}, tc.args...), conn...)...)
			wantOK(t, "cli token", err)
			cl, err := client.New(c.API(2), strings.TrimSpace(tok), priv)
			wantOK(t, "client", err)
			_, err = cl.ListKeys(ctx)
			if tc.ok {
				wantOK(t, "cli token with --audience dev", err)
			} else {
				wantErr(t, "cli token without --audience", err, 401, "auth.wrong_audience")
			}
		}
	})
}
