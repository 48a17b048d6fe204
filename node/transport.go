package node

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/protocol"
)

// tssTransport carries ceremony messages over the libp2p host's /custos/tss/1 protocol.
type tssTransport struct{ host *p2p.Host }

// Send implements protocol.Transport.
func (t *tssTransport) Send(ctx context.Context, to string, m *protocol.Message) error {
	pid, ok := t.host.PeerIDOf(to)
	if !ok {
		return fmt.Errorf("unknown node %q", to)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return t.host.SendFrame(ctx, pid, b)
}

// onFrame receives a ceremony frame; the sender is the authenticated libp2p peer of the
// stream, never a field of the payload.
func (n *Node) onFrame(from peer.ID, frame []byte) {
	id, ok := n.host.NodeIDOf(from)
	if !ok {
		n.met.dropped.WithLabelValues("unknown_peer").Inc()
		return
	}
	m, err := protocol.UnmarshalMessage(frame, id)
	if err != nil {
		n.met.dropped.WithLabelValues("malformed").Inc()
		return
	}
	n.engine.Deliver(m)
}
