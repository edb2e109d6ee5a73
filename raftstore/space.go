package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-dev/pontoon/fsm"
)

// ErrNoSpace refuses a write while a server's data dir is short of space,
// as etcd's NOSPACE alarm does: a server whose disk fills up in the middle
// of a commit can only stop, so writes stop first, while there is room to
// finish what is in flight. Reads, watches and deletes go on, and writes
// resume by themselves once space is freed.
var ErrNoSpace = errors.New("out of space")

// spaceCheckInterval is how often a server measures its data dir's free
// space.
const spaceCheckInterval = 500 * time.Millisecond

// space watches the free space of a data dir.
type space struct {
	dir string
	// reserve is the space kept free besides what the next snapshot (a
	// copy of the store) and the next log segment will take.
	reserve uint64
	store   *fsm.Store
	segment uint64 // the log store's preallocated segment size, 0 if none
	free    atomic.Uint64
	low     atomic.Bool
	// measured is when free was last read, in Unix nanoseconds.
	measured atomic.Int64
}

// freshWithin is how old a measurement a write may be admitted on: a
// statfs per write would cost little, but a burst of writes needs none.
const freshWithin = 20 * time.Millisecond

// measure reads the free space and decides whether it is low.
func (s *space) measure() error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	s.free.Store(free)
	s.low.Store(free < s.needed())
	s.measured.Store(time.Now().UnixNano())
	return nil
}

// current measures again unless the last measurement is fresh, so that
// writes stop within a few of the reserve being reached, not a check
// interval later.
func (s *space) current() {
	if time.Since(time.Unix(0, s.measured.Load())) > freshWithin {
		s.measure()
	}
}

// needed is the free space below which writes stop.
func (s *space) needed() uint64 {
	return s.reserve + uint64(max(s.store.Stats().FileSize, 0)) + s.segment
}

// status explains a low data dir, or returns nil.
func (s *space) status() error {
	if !s.low.Load() {
		return nil
	}
	return fmt.Errorf("%w: the data dir %s has %d MiB free, below the %d MiB kept for a snapshot of the store, the next log segment and --data-dir-reserve; writes are refused until space is freed",
		ErrNoSpace, s.dir, s.free.Load()>>20, s.needed()>>20)
}

// run measures the free space every spaceCheckInterval, for the metrics
// and /readyz (writes measure it themselves, see current), and logs when
// writes stop and resume.
func (s *space) run(ctx context.Context, logger *slog.Logger) {
	wasLow := false
	check := func() {
		if err := s.measure(); err != nil {
			logger.Warn("measuring the data dir's free space", "err", err)
		}
		if low := s.low.Load(); low != wasLow {
			wasLow = low
			if low {
				logger.Warn("data dir low on space: refusing writes", "err", s.status())
			} else {
				logger.Warn("data dir has space again: accepting writes", "free_mib", s.free.Load()>>20)
			}
		}
	}
	check()
	every(ctx, spaceCheckInterval, check)
}

// freesSpace reports whether txn only deletes and checks: it is let
// through while space is low, so that an operator can free some.
func freesSpace(txn *fsm.Txn) bool {
	for _, op := range txn.Ops {
		if op.Type == fsm.OpPut {
			return false
		}
	}
	return true
}

// checkSpace refuses txn while this server's data dir, or (on the leader)
// any other server's as last polled, is low on space.
func (n *Node) checkSpace(txn *fsm.Txn) error {
	if freesSpace(txn) {
		return nil
	}
	n.space.current()
	if err := n.space.status(); err != nil {
		return err
	}
	if !n.IsLeader() {
		return nil
	}
	if low := n.othersLow.Load(); low != nil {
		return *low
	}
	return nil
}

// noteOthersSpace records, after a poll, whether another server said its
// data dir is low on space; n.mu is held. Writes read it without a lock.
func (n *Node) noteOthersSpace() {
	for name, p := range n.polled {
		if p.err == nil && p.status.SpaceLow {
			err := fmt.Errorf("%w: server %s's data dir is low on space (%d MiB free); writes are refused until space is freed there", ErrNoSpace, name, p.status.FreeBytes>>20)
			n.othersLow.Store(&err)
			return
		}
	}
	n.othersLow.Store(nil)
}

// SpareSpace is how much the data dir can take before writes stop: what
// an upload may use.
func (n *Node) SpareSpace() uint64 {
	n.space.current()
	free, needed := n.space.free.Load(), n.space.needed()
	if free < needed {
		return 0
	}
	return free - needed
}
