package raftstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// submitter hands the leader's entries to Raft one group at a time: while
// a group is on its way (stored, replicated, applied), the entries that
// arrive wait, and then go to Raft together, back to back. Raft's leader
// loop takes what its queue holds when it wakes, so entries handed over
// one by one as they came made batches only as large as what arrived
// between two wakeups; grouped, a batch holds everything that arrived
// during the previous one, and under load every server fsyncs once for
// more writes (docs/store.md says how much). An entry that finds no
// group on its way, or being gathered, goes at once: a lone client waits
// for nothing.
type submitter struct {
	raft       *raft.Raft
	transferMu *sync.RWMutex

	mu      sync.Mutex
	busy    bool // a group is on its way, or the next one is being gathered
	waiting []*submission
	// While the next group is gathered: the entries that complete it, and
	// a channel closed once they wait.
	want int
	full chan struct{}
}

// maxLinger bounds how long the next group is gathered (see gather); it is
// otherwise as long as the last group took, so a slow disk that makes
// every group slow does not make the wait longer than this.
const maxLinger = 5 * time.Millisecond

type submission struct {
	cmds     [][]byte
	deadline time.Time
	results  []applyResult
	done     chan struct{} // closed once results are in
}

// applyResult is what became of one entry: its revision, or the error
// that refused it (a *fsm.TxnError), or why its fate is unknown.
type applyResult struct {
	rev uint64
	err error
}

// submit hands cmds to Raft, in one group with whatever else is waiting,
// and returns what became of each. If ctx ends while they wait, they are
// withdrawn, never submitted, and raft.ErrNotLeader (this package's "never
// appended") is returned; if it ends once they are submitted,
// ErrUnknownOutcome.
func (s *submitter) submit(ctx context.Context, cmds [][]byte) ([]applyResult, error) {
	sub := &submission{cmds: cmds, deadline: deadline(ctx), done: make(chan struct{})}
	s.mu.Lock()
	if s.busy {
		s.waiting = append(s.waiting, sub)
		if s.full != nil && s.waitingEntries() >= s.want {
			close(s.full)
			s.full = nil
		}
		s.mu.Unlock()
	} else {
		s.busy = true
		s.mu.Unlock()
		s.send([]*submission{sub})
	}
	select {
	case <-sub.done:
		return sub.results, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	i := slices.Index(s.waiting, sub)
	if i >= 0 {
		s.waiting = slices.Delete(s.waiting, i, i+1)
	}
	s.mu.Unlock()
	if i >= 0 {
		return nil, fmt.Errorf("%w: withdrawn before it was submitted: %w", raft.ErrNotLeader, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
}

// waitingEntries counts the entries that wait; s.mu is held.
func (s *submitter) waitingEntries() int {
	n := 0
	for _, sub := range s.waiting {
		n += len(sub.cmds)
	}
	return n
}

// send submits a group and starts collecting its outcome.
func (s *submitter) send(group []*submission) {
	futures := make([][]raft.ApplyFuture, len(group))
	s.transferMu.RLock()
	for i, sub := range group {
		for _, cmd := range sub.cmds {
			futures[i] = append(futures[i], s.raft.Apply(cmd, time.Until(sub.deadline)))
		}
	}
	s.transferMu.RUnlock()
	go s.collect(group, futures, time.Now())
}

// collect answers a group's submissions, then gathers and sends the next
// group.
func (s *submitter) collect(group []*submission, futures [][]raft.ApplyFuture, sent time.Time) {
	want := s.answer(group, futures)
	if next := s.gather(want, min(time.Since(sent), maxLinger)); len(next) > 0 {
		s.send(next)
	}
}

// answer waits for every entry of a group, in log order, and hands each
// submission its results. It returns how many entries the next group
// wants: those that waited meanwhile, and as many again as the group
// held. What waited is counted before the callers are answered: a
// caller's next write, however quick, is one of those the next group
// awaits. A future is waited for here only: raft's futures are not safe
// to wait for from two goroutines.
func (s *submitter) answer(group []*submission, futures [][]raft.ApplyFuture) int {
	var n int
	for i, sub := range group {
		for _, f := range futures[i] {
			rev, err := outcome(f)
			sub.results = append(sub.results, applyResult{rev: rev, err: err})
		}
		n += len(futures[i])
	}
	s.mu.Lock()
	want := s.waitingEntries() + n
	s.mu.Unlock()
	for _, sub := range group {
		close(sub.done)
	}
	return want
}

// gather returns the next group once want entries wait (see answer), or
// once linger has passed. The last group's callers have just been
// answered, and under load they come back with their next write at once:
// without the wait they would miss the group that leaves now and form the
// one after, so two groups of clients would take turns, each fsyncing for
// half of them. Gathered, they go together, and every server stores,
// replicates and applies fewer, larger batches for the same writes
// (docs/store.md). This is group commit as databases do it, a bounded
// wait for a number of writes (MySQL's binlog_group_commit_sync_delay and
// binlog_group_commit_sync_no_delay_count). A lone client is not held
// back: after a group of one with nothing waiting, its next entry goes at
// once. An empty result means that no group is on its way.
func (s *submitter) gather(want int, linger time.Duration) []*submission {
	s.mu.Lock()
	if want > 1 && s.waitingEntries() < want {
		full := make(chan struct{})
		s.want, s.full = want, full
		s.mu.Unlock()
		timer := time.NewTimer(linger)
		select {
		case <-full:
		case <-timer.C:
		}
		timer.Stop()
		s.mu.Lock()
		s.full = nil
	}
	next := s.waiting
	s.waiting = nil
	s.busy = len(next) > 0
	s.mu.Unlock()
	return next
}
