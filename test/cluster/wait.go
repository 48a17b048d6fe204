//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Until calls cond every PollInterval until it returns true, and returns nil then; or
// ctx's error once ctx ends. cond runs at once first. It is how the harness waits for a
// condition instead of sleeping for a while.
func Until(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ErrNoLeader is returned when no running node knows a running leader.
var ErrNoLeader = errors.New("cluster: no leader")

// Leader returns the index of the current raft leader: the first running node (in index
// order) that names a leader, provided that node is running and says it leads (a
// follower's view may still name a leader that lost its office). It reads /debug/state,
// which commits nothing and needs no credential.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range c.N() {
		if !c.Running(i) {
			continue
		}
		l, err := c.leaderSeenBy(ctx, i)
		if err == nil {
			return l, nil
		}
		errs = append(errs, err)
	}
	return -1, errors.Join(append([]error{ErrNoLeader}, errs...)...)
}

// leaderSeenBy returns the leader node i names, once that node confirms it leads.
func (c *Cluster) leaderSeenBy(ctx context.Context, i int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	ds, err := c.DebugState(ctx, i)
	if err != nil {
		return -1, err
	}
	l := c.Index(ds.Leader)
	if l < 0 {
		return -1, fmt.Errorf("%s knows no leader (%q)", c.NodeID(i), ds.Leader)
	}
	if !c.Running(l) {
		return -1, fmt.Errorf("%s names %s, which is not running", c.NodeID(i), ds.Leader)
	}
	if l != i {
		if ds, err = c.DebugState(ctx, l); err != nil {
			return -1, err
		}
	}
	if ds.RaftState != "Leader" {
		return -1, fmt.Errorf("%s names %s, which is %s", c.NodeID(i), c.NodeID(l), ds.RaftState)
	}
	return l, nil
}

// WaitLeader waits until Leader returns a node that is not in exclude (after stopping the
// leader, exclude it to wait for the others' election), and returns it.
func (c *Cluster) WaitLeader(ctx context.Context, exclude ...int) (int, error) {
	l, err := -1, error(nil)
	werr := Until(ctx, func() bool {
		l, err = c.Leader(ctx)
		return err == nil && !slices.Contains(exclude, l)
	})
	if werr != nil {
		if err == nil {
			err = fmt.Errorf("the leader is still %s", c.NodeID(l))
		}
		return -1, fmt.Errorf("cluster: waiting for a leader (not %v): %w: %w", exclude, werr, err)
	}
	return l, nil
}

// Bounds of ForceRole.
const (
	// forceRoleTries is how many times ForceRole moves the leadership.
	forceRoleTries = 12
	// electionTimeout bounds one wait for an election.
	electionTimeout = 30 * time.Second
)

// ForceRole restarts nodes until node i is the raft leader (leader true) or a follower.
// When the leader is in the wrong place it is stopped and the others elect another; when
// i is to lead and another took over, that one is stopped too while a majority stays
// up; then every stopped node is started again and is waited for. Every node must be
// running when it is called.
func (c *Cluster) ForceRole(ctx context.Context, i int, leader bool) error {
	if i < 0 || i >= c.N() {
		return fmt.Errorf("cluster: ForceRole of node index %d of %d", i, c.N())
	}
	majority := c.N()/2 + 1
	for range forceRoleTries {
		rctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
		err := c.WaitReady(rctx, c.All()...)
		cancel()
		if err != nil {
			return err
		}
		ectx, cancel := context.WithTimeout(ctx, electionTimeout)
		l, err := c.WaitLeader(ectx)
		cancel()
		if err != nil {
			return err
		}
		if (l == i) == leader {
			return nil
		}
		var stopped []int
		for (l == i) != leader {
			if err := c.Stop(l); err != nil {
				return err
			}
			stopped = append(stopped, l)
			ectx, cancel := context.WithTimeout(ctx, electionTimeout)
			l, err = c.WaitLeader(ectx, stopped...)
			cancel()
			if err != nil {
				return err
			}
			if c.N()-len(stopped)-1 < majority {
				break // stopping one more would leave no majority
			}
		}
		for _, s := range stopped {
			if err := c.Start(s); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("cluster: %s is not the %s after %d leadership moves", c.NodeID(i), roleName(leader), forceRoleTries)
}

func roleName(leader bool) string {
	if leader {
		return "leader"
	}
	return "follower"
}

// WaitIdle waits until every listed node runs no ceremony (its /debug/state counts none
// running): after a keygen or signing returned, the other parties may still be ending
// theirs.
func (c *Cluster) WaitIdle(ctx context.Context, nodes ...int) error {
	for _, i := range nodes {
		var (
			ds  any
			err error
		)
		if werr := Until(ctx, func() bool {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			st, e := c.DebugState(pctx, i)
			ds, err = st, e
			return e == nil && st.Ceremonies == 0
		}); werr != nil {
			return fmt.Errorf("cluster: %s still runs ceremonies: %w (last state %+v, %v)", c.NodeID(i), werr, ds, err)
		}
	}
	return nil
}
