package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxMessageSize caps one encoded ceremony message (envelope included).
// ECDSA keygen messages reach ~130 KiB, resharing messages ~170 KiB; 4 MiB leaves room without letting a
// peer make a node buffer arbitrary amounts.
const MaxMessageSize = 4 << 20

// envelopeVersion is the first byte of every encoded Message.
const envelopeVersion = 1

// headerSize is version(1) + session(32) + kind(1) + flags(1) + payload length(4).
const headerSize = 1 + 32 + 1 + 1 + 4

// MaxPayloadSize is the largest payload a Message may carry.
const MaxPayloadSize = MaxMessageSize - headerSize

// Bits of the flags byte: bit 0 is the broadcast flag; bits 1 and 2 carry
// the sender's PartyRole in a resharing (at most one of them set, only on
// MsgTSS). Keygen and signing messages leave bits 1 and 2 clear, so their
// encoding is what it was before resharing existed.
const (
	flagBroadcast = 0x01
	flagRoleOld   = 0x02
	flagRoleNew   = 0x04
	knownFlags    = flagBroadcast | flagRoleOld | flagRoleNew
)

// PartyRole says which of its sender's tss-lib parties sent a resharing
// message. In a resharing a node may be in both the old and the new
// committee and then runs two parties (with distinct party keys, see
// PartyKeyAt); the receiver needs to know which one spoke. The role is a
// claim of the sender, checked by the receiver: the sender (the
// authenticated peer) must be in that committee, and the message type must be
// one that committee sends.
type PartyRole uint8

const (
	// RoleNone: keygen and signing messages, echoes and aborts.
	RoleNone PartyRole = 0
	// RoleOld: sent by the sender's old-committee party.
	RoleOld PartyRole = 1
	// RoleNew: sent by the sender's new-committee party.
	RoleNew PartyRole = 2
)

// String names the role.
func (r PartyRole) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleOld:
		return "old"
	case RoleNew:
		return "new"
	default:
		return fmt.Sprintf("role(%d)", uint8(r))
	}
}

func (r PartyRole) valid() bool { return r <= RoleNew }

// MaxNodeIDLen caps node ids (they travel inside echo payloads).
const MaxNodeIDLen = 128

// maxTypeLen caps the tss-lib message type names carried in echoes.
const maxTypeLen = 128

// echoHashSize is the size of the broadcast hash carried in an echo.
const echoHashSize = 32

// MsgKind says what a Message's payload is.
type MsgKind uint8

const (
	// MsgTSS carries tss-lib wire bytes (the output of tss.Message.WireBytes).
	MsgTSS MsgKind = 1
	// MsgEcho carries the hash of a broadcast this node received from another
	// committee member, so that every member can check it saw the same bytes.
	MsgEcho MsgKind = 2
	// MsgAbort tells the other committee members that this node gave up on
	// the session (with a short printable reason), so they stop waiting for
	// it instead of running into their timeouts. It blames no one.
	MsgAbort MsgKind = 3
)

// MaxAbortReason caps the reason carried by a MsgAbort.
const MaxAbortReason = 256

// String names the kind.
func (k MsgKind) String() string {
	switch k {
	case MsgTSS:
		return "tss"
	case MsgEcho:
		return "echo"
	case MsgAbort:
		return "abort"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

func (k MsgKind) valid() bool { return k == MsgTSS || k == MsgEcho || k == MsgAbort }

// Message is one ceremony message. From is never encoded: the receiving side
// sets it from the authenticated peer of the stream.
type Message struct {
	// Session is the ceremony this message belongs to.
	Session SessionID
	// From is the sending node id, set by the receiver from the authenticated peer.
	From string
	// Broadcast says whether the sender broadcast the message (tss-lib's wire
	// bytes do not carry it). Only MsgTSS messages can be broadcasts.
	Broadcast bool
	// Kind says what Payload is.
	Kind MsgKind
	// Role says which of the sender's parties sent a resharing message
	// (RoleOld or RoleNew); RoleNone for everything else. Only MsgTSS
	// messages carry a role.
	Role PartyRole
	// Payload is tss-lib wire bytes (MsgTSS), an echo (MsgEcho) or a reason (MsgAbort).
	Payload []byte

	// local marks a message one of this node's own parties sent to its other
	// party in a resharing (never encoded; Deliver cannot produce it), and
	// toRole names that other party.
	local  bool
	toRole PartyRole
}

// Errors returned by UnmarshalMessage and MarshalBinary.
var (
	ErrMessageTooLarge = errors.New("protocol: message too large")
	ErrMalformed       = errors.New("protocol: malformed message")
)

// MarshalBinary encodes the envelope without From: version byte, session id,
// kind, flags (bit 0 = broadcast, bit 1 = sent by the old-committee party,
// bit 2 = sent by the new-committee party), payload length (uint32 big
// endian), payload.
func (m *Message) MarshalBinary() ([]byte, error) {
	if !m.Kind.valid() {
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, m.Kind)
	}
	if !m.Role.valid() || (m.Kind != MsgTSS && m.Role != RoleNone) {
		return nil, fmt.Errorf("%w: role %s on a %s message", ErrMalformed, m.Role, m.Kind)
	}
	if len(m.Payload) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: payload of %d bytes (max %d)", ErrMessageTooLarge, len(m.Payload), MaxPayloadSize)
	}
	if m.Kind != MsgTSS && m.Broadcast {
		return nil, fmt.Errorf("%w: only tss messages are broadcasts", ErrMalformed)
	}
	b := make([]byte, headerSize+len(m.Payload))
	b[0] = envelopeVersion
	copy(b[1:33], m.Session[:])
	b[33] = byte(m.Kind)
	if m.Broadcast {
		b[34] = flagBroadcast
	}
	switch m.Role {
	case RoleOld:
		b[34] |= flagRoleOld
	case RoleNew:
		b[34] |= flagRoleNew
	}
	binary.BigEndian.PutUint32(b[35:39], uint32(len(m.Payload)))
	copy(b[headerSize:], m.Payload)
	return b, nil
}

// UnmarshalMessage decodes an envelope strictly (exact length, known version,
// kind and flags, size caps, non-empty payload, well-formed echo and abort
// payloads, broadcast flag and role only on tss messages, at most one role) and sets From to from, the
// authenticated sender. The payload is copied. Everything accepted re-encodes
// to the same bytes.
func UnmarshalMessage(b []byte, from string) (*Message, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrMessageTooLarge, len(b), MaxMessageSize)
	}
	if from == "" || len(from) > MaxNodeIDLen {
		return nil, fmt.Errorf("%w: invalid sender id", ErrMalformed)
	}
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrMalformed, len(b))
	}
	if b[0] != envelopeVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[0])
	}
	m := &Message{From: from, Kind: MsgKind(b[33])}
	copy(m.Session[:], b[1:33])
	if !m.Kind.valid() {
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, b[33])
	}
	if b[34]&^knownFlags != 0 || b[34]&(flagRoleOld|flagRoleNew) == flagRoleOld|flagRoleNew {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, b[34])
	}
	m.Broadcast = b[34]&flagBroadcast != 0
	switch {
	case b[34]&flagRoleOld != 0:
		m.Role = RoleOld
	case b[34]&flagRoleNew != 0:
		m.Role = RoleNew
	}
	if m.Kind != MsgTSS && m.Role != RoleNone {
		return nil, fmt.Errorf("%w: only tss messages carry a role", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(b[35:39])
	if uint64(n) != uint64(len(b)-headerSize) {
		return nil, fmt.Errorf("%w: payload length %d does not match %d remaining bytes", ErrMalformed, n, len(b)-headerSize)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if m.Kind != MsgTSS && m.Broadcast {
		return nil, fmt.Errorf("%w: only tss messages are broadcasts", ErrMalformed)
	}
	switch m.Kind {
	case MsgEcho:
		if _, err := parseEcho(b[headerSize:]); err != nil {
			return nil, err
		}
	case MsgAbort:
		if _, err := parseAbort(b[headerSize:]); err != nil {
			return nil, err
		}
	}
	m.Payload = append([]byte(nil), b[headerSize:]...)
	return m, nil
}

// echo is the payload of a MsgEcho: "I received a broadcast of type Type from
// Origin whose bytes hash to Hash".
type echo struct {
	Origin string
	Type   string
	Hash   [echoHashSize]byte
}

// encode lays out: len(origin) u8, origin, len(type) u8, type, hash.
func (e echo) encode() []byte {
	b := make([]byte, 0, 2+len(e.Origin)+len(e.Type)+echoHashSize)
	b = append(b, byte(len(e.Origin)))
	b = append(b, e.Origin...)
	b = append(b, byte(len(e.Type)))
	b = append(b, e.Type...)
	b = append(b, e.Hash[:]...)
	return b
}

func parseEcho(b []byte) (echo, error) {
	var e echo
	bad := func(what string) (echo, error) {
		return echo{}, fmt.Errorf("%w: echo: %s", ErrMalformed, what)
	}
	if len(b) < 1 {
		return bad("empty")
	}
	n := int(b[0])
	b = b[1:]
	if n == 0 || n > MaxNodeIDLen || len(b) < n {
		return bad("bad origin length")
	}
	e.Origin, b = string(b[:n]), b[n:]
	if len(b) < 1 {
		return bad("truncated")
	}
	n = int(b[0])
	b = b[1:]
	if n == 0 || n > maxTypeLen || len(b) < n {
		return bad("bad type length")
	}
	e.Type, b = string(b[:n]), b[n:]
	if len(b) != echoHashSize {
		return bad("bad hash length")
	}
	copy(e.Hash[:], b)
	return e, nil
}

// abortPayload encodes a reason for MsgAbort: printable ASCII, at most
// MaxAbortReason bytes (anything else is replaced by '?').
func abortPayload(reason string) []byte {
	if len(reason) > MaxAbortReason {
		reason = reason[:MaxAbortReason]
	}
	b := []byte(reason)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) == 0 {
		b = []byte("aborted")
	}
	return b
}

func parseAbort(b []byte) (string, error) {
	if len(b) == 0 || len(b) > MaxAbortReason {
		return "", fmt.Errorf("%w: abort reason of %d bytes", ErrMalformed, len(b))
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("%w: abort reason is not printable ASCII", ErrMalformed)
		}
	}
	return string(b), nil
}
