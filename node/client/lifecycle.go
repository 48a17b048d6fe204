package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/custos/custos/internal/api"
)

// Derived is a BIP32 child of a secp256k1 key (POST /v1/keys/{key_id}/derive).
type Derived = api.Derived

// Key statuses of the lifecycle (API.md "Key lifecycle").
const (
	KeyActive            = api.KeyActive
	KeyDeletionScheduled = api.KeyDeletionScheduled
	KeyDeleted           = api.KeyDeleted
)

// Derive returns the non-hardened BIP32 child of a secp256k1 key at path ("m" or
// "m/0/7") with its xpub for network ("" = mainnet; testnet, regtest, signet, simnet).
// Anyone can derive the same child from the key's root xpub (Derive with path "m"),
// which is what a watch-only wallet needs.
func (c *Client) Derive(ctx context.Context, keyID, path, network string) (*Derived, error) {
	if keyID == "" {
		return nil, errors.New("client: empty key id")
	}
	var d Derived
	if err := c.Do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(keyID)+"/derive", api.DeriveBody{Path: path, Network: network}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DeleteKey schedules a key's deletion (DELETE /v1/keys/{key_id}). The request is signed
// as it is sent, which is the re-authentication the node asks for (a signature created
// in the last 60 s). It returns the deletion request (202): its Key shows
// deletion_scheduled and delete_at, or it waits for approval when a key.delete policy
// asks for one. Until delete_at, RestoreKey cancels; the key signs nothing meanwhile.
func (c *Client) DeleteKey(ctx context.Context, keyID string) (*Request, error) {
	if keyID == "" {
		return nil, errors.New("client: empty key id")
	}
	var r Request
	if err := c.Do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(keyID), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RestoreKey cancels a scheduled deletion before its delete_at (POST
// /v1/keys/{key_id}/restore) and returns the key, active again.
func (c *Client) RestoreKey(ctx context.Context, keyID string) (*Key, error) {
	if keyID == "" {
		return nil, errors.New("client: empty key id")
	}
	var k Key
	if err := c.Do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(keyID)+"/restore", nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}
