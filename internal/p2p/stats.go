package p2p

import "sync/atomic"

// Stats is a snapshot of the host's counters, all monotonic since New. The node exports
// them as Prometheus counters.
type Stats struct {
	// ConnsRefused counts connections the gater refused after the security handshake
	// because the remote peer is not a member (inbound and outbound).
	ConnsRefused uint64
	// StreamsRefused counts inbound streams (any protocol) reset because the remote peer
	// is not a member, checked on every stream and again on every tss frame.
	StreamsRefused uint64
	// StreamsDropped counts inbound streams reset for another reason: a raft stream while
	// no StreamLayer is open, a malformed RPC request, a stalled or truncated frame.
	StreamsDropped uint64
	// FramesSent counts frames written by SendFrame.
	FramesSent uint64
	// FramesReceived counts frames delivered to the frame handler.
	FramesReceived uint64
	// FramesDropped counts frames received while no frame handler was set.
	FramesDropped uint64
	// FramesOversizeIn counts inbound frames announced above MaxFrameSize (stream reset).
	FramesOversizeIn uint64
	// FramesOversizeOut counts SendFrame calls refused because the frame was too big.
	FramesOversizeOut uint64
	// SendFailures counts SendFrame calls that failed after the one re-open.
	SendFailures uint64
	// RPCServed counts RPC requests answered (successfully or with a remote error).
	RPCServed uint64
}

// counters holds the live counters behind Stats.
type counters struct {
	connsRefused      atomic.Uint64
	streamsRefused    atomic.Uint64
	streamsDropped    atomic.Uint64
	framesSent        atomic.Uint64
	framesReceived    atomic.Uint64
	framesDropped     atomic.Uint64
	framesOversizeIn  atomic.Uint64
	framesOversizeOut atomic.Uint64
	sendFailures      atomic.Uint64
	rpcServed         atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		ConnsRefused:      c.connsRefused.Load(),
		StreamsRefused:    c.streamsRefused.Load(),
		StreamsDropped:    c.streamsDropped.Load(),
		FramesSent:        c.framesSent.Load(),
		FramesReceived:    c.framesReceived.Load(),
		FramesDropped:     c.framesDropped.Load(),
		FramesOversizeIn:  c.framesOversizeIn.Load(),
		FramesOversizeOut: c.framesOversizeOut.Load(),
		SendFailures:      c.sendFailures.Load(),
		RPCServed:         c.rpcServed.Load(),
	}
}
