package p2p

import (
	"errors"
	"fmt"
)

// Sentinel errors returned (wrapped) by this package.
var (
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("p2p: host closed")
	// ErrNotMember is returned when the remote peer is not in the current member set.
	ErrNotMember = errors.New("p2p: peer is not a cluster member")
	// ErrSelf is returned when a frame, call or dial targets this host itself.
	ErrSelf = errors.New("p2p: cannot send to self")
	// ErrFrameTooLarge is returned for a frame, RPC request or RPC response above its cap.
	ErrFrameTooLarge = errors.New("p2p: frame too large")
	// ErrBadMethod is returned for an RPC method name that is empty, too long or not
	// made of [A-Za-z0-9._/-].
	ErrBadMethod = errors.New("p2p: bad rpc method name")
	// ErrBadMessage is returned when the bytes read from a peer do not follow the wire
	// format.
	ErrBadMessage = errors.New("p2p: malformed message")
	// ErrBadIdentity is returned for a private key that is not a usable Ed25519 key.
	ErrBadIdentity = errors.New("p2p: bad identity key")
)

// RemoteError is the error a Call returns when the remote handler returned an error or
// could not serve the call (unknown method, malformed request, handler panic). Message is
// the remote error string, truncated to MaxRemoteErrorSize bytes.
type RemoteError struct {
	// Method is the RPC method that was called.
	Method string
	// Message is the error text the remote side sent back.
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("p2p: remote %s: %s", e.Method, e.Message)
}
