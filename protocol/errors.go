package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Ceremony failures are returned as *CeremonyError wrapping
// one of these (or a tss-lib error, or a context error); argument problems are
// returned as plain errors wrapping ErrInvalidArgument.
var (
	// ErrInvalidArgument: the caller passed something the engine cannot run
	// (bad committee, threshold, key material, digest...). Nothing was started.
	ErrInvalidArgument = errors.New("protocol: invalid argument")
	// ErrSessionReused: this session id already ran (or is running) in this process.
	ErrSessionReused = errors.New("protocol: session id already used")
	// ErrTooManySessions: MaxSessions ceremonies are already running.
	ErrTooManySessions = errors.New("protocol: too many sessions in flight")
	// ErrEngineClosed: the engine was closed.
	ErrEngineClosed = errors.New("protocol: engine closed")
	// ErrEquivocation: a party sent two different messages where it must send
	// one, or told different parties different things in a broadcast.
	ErrEquivocation = errors.New("protocol: equivocation")
	// ErrInvalidMessage: a party sent bytes that are not a valid message for
	// this ceremony (garbage, wrong type, wrong broadcast flag, failed checks).
	ErrInvalidMessage = errors.New("protocol: invalid message")
	// ErrPeerAborted: another committee member gave up on the session and
	// said so; it is blamed by nobody here (its own report names culprits).
	ErrPeerAborted = errors.New("protocol: a committee member aborted")
	// ErrPanic: tss-lib panicked while processing the ceremony.
	ErrPanic = errors.New("protocol: tss-lib panicked")
	// ErrBadSignature: the ceremony produced a signature that does not verify
	// against the (derived) public key. It is never returned to the caller.
	ErrBadSignature = errors.New("protocol: produced signature does not verify")
	// ErrInvalidShare: bytes that are not a usable key share of the curve
	// the caller named (truncated, garbage, another curve, failed structural
	// checks). ParseShare's errors wrap it; a share that fails it never signs.
	ErrInvalidShare = errors.New("protocol: invalid key share")
	// ErrInvalidPreParams: bytes that are not a usable set of ECDSA
	// pre-parameters. ParsePreParams's errors wrap it.
	ErrInvalidPreParams = errors.New("protocol: invalid pre-parameters")
	// ErrUnsupportedVersion: a share or pre-parameter encoding of a version
	// this build does not know, most likely written by a newer custos: run
	// that version (or newer) on this node. It comes wrapped together with
	// ErrInvalidShare or ErrInvalidPreParams.
	ErrUnsupportedVersion = errors.New("protocol: unsupported encoding version")
)

// CeremonyError is a failed ceremony. Culprits are the node ids the engine
// holds responsible (sorted, without this node); it is empty when no one can be
// blamed, e.g. a local failure or a timeout where every message arrived.
// For timeouts Err wraps context.DeadlineExceeded and Culprits names the
// parties whose messages for the current round (or whose echoes) never came.
type CeremonyError struct {
	Culprits []string
	Err      error
	// Aborted names the member whose abort notice ended the ceremony (Err wraps
	// ErrPeerAborted). It is not blamed — a member may give up honestly, its own
	// report names its culprits — but a retry should not count on it: a member
	// that aborts and never reports is otherwise never named anywhere.
	Aborted []string
}

// Error describes the failure and the parties blamed for it.
func (e *CeremonyError) Error() string {
	if len(e.Culprits) == 0 {
		return fmt.Sprintf("ceremony failed: %v", e.Err)
	}
	return fmt.Sprintf("ceremony failed (culprits: %s): %v", strings.Join(e.Culprits, ", "), e.Err)
}

// Unwrap returns the underlying cause.
func (e *CeremonyError) Unwrap() error { return e.Err }

func invalidArg(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
