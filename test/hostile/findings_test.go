//go:build linux

package hostile

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/custos/custos/internal/p2p"
	"github.com/custos/custos/test/cluster"
)

// TestHostileMemberFindings holds the hostile-member scenarios that custos did not handle
// when this package was written, one subtest each, on one cluster (see the package's
// report for the fixes). They fail until the fixes are in.
func TestHostileMemberFindings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real custosd processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := setup(ctx, t, false, actGarbage)

	t.Run("transport refusals are counted in metrics", func(t *testing.T) {
		transportCounters(ctx, t, e)
	})
	t.Run("an aborting member is rescheduled around", func(t *testing.T) {
		abortingMember(ctx, t, e)
	})
	// Last: its junk stays held for 30 s.
	t.Run("a pending flood does not starve honest ceremonies", func(t *testing.T) {
		pendingFlood(ctx, t, e)
	})
}

// Counters the node must export for what its p2p layer refuses before any frame reaches
// the ceremony engine (internal/p2p.Stats).
const (
	metricConnsRefused   = "custos_p2p_connections_refused_total"
	metricStreamsDropped = "custos_p2p_streams_dropped_total"
	metricOversize       = "custos_p2p_frames_oversize_total"
)

// transportCounters: a non-member's connection refused by the gater, an oversize frame
// announcement and a truncated frame are cut by the p2p layer before the ceremony engine
// sees anything, so custos_p2p_dropped_messages_total never counts them. An operator must
// still see them: each must raise a counter on GET /metrics.
func transportCounters(ctx context.Context, t *testing.T, e *env) {
	c, hp := e.c, e.hp
	stranger, pids := newStranger(t, e)
	for _, i := range e.honest {
		id := c.NodeID(i)
		before, err := c.Metrics(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		// A non-member dials.
		if r := tryProtocol(ctx, stranger, pids[id], p2p.ProtocolRPC); r.Usable {
			t.Fatalf("a non-member used %s on %s", r.Proto, id)
		}
		// A member announces a frame above the limit, then cuts one short.
		s, err := hp.freshStream(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write(binary.BigEndian.AppendUint32(nil, p2p.MaxFrameSize+1))
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadAll(s)
		_ = s.Reset()
		s, err = hp.freshStream(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write(append(binary.BigEndian.AppendUint32(nil, 500), randomBytes(20)...))
		_ = s.CloseWrite()
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadAll(s)
		_ = s.Reset()

		var (
			after   map[string]float64
			missing []string
		)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = cluster.Until(wctx, func() bool {
			var err error
			if after, err = c.Metrics(ctx, i); err != nil {
				t.Fatal(err)
			}
			missing = nil
			for _, name := range []string{metricConnsRefused, metricOversize, metricStreamsDropped} {
				v, ok := after[name]
				if !ok || v-before[name] < 1 {
					missing = append(missing, name)
				}
			}
			return len(missing) == 0
		})
		cancel()
		if err != nil {
			t.Errorf("%s: GET /metrics has no rise of %v after a refused non-member, an oversize frame and a truncated frame (the p2p layer's Stats are not exported): %v", id, missing, err)
		} else {
			t.Logf("%s: %s %v, %s %v, %s %v", id, metricConnsRefused, after[metricConnsRefused], metricOversize, after[metricOversize], metricStreamsDropped, after[metricStreamsDropped])
		}
	}
}
