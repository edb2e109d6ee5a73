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
// group on its way goes at once: a lone client waits for nothing.
type submitter struct {
	raft      *raft.Raft
	restoreMu *sync.RWMutex

	mu      sync.Mutex
	busy    bool // a group is on its way
	waiting []*submission
}

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

// send submits a group and starts collecting its outcome.
func (s *submitter) send(group []*submission) {
	futures := make([][]raft.ApplyFuture, len(group))
	s.restoreMu.RLock()
	for i, sub := range group {
		for _, cmd := range sub.cmds {
			futures[i] = append(futures[i], s.raft.Apply(cmd, time.Until(sub.deadline)))
		}
	}
	s.restoreMu.RUnlock()
	go s.collect(group, futures)
}

// collect waits for every entry of a group, in log order, hands each
// submission its results, then sends the group that waited meanwhile.
// A future is waited for here only: raft's futures are not safe to wait
// for from two goroutines.
func (s *submitter) collect(group []*submission, futures [][]raft.ApplyFuture) {
	for i, sub := range group {
		for _, f := range futures[i] {
			rev, err := outcome(f)
			sub.results = append(sub.results, applyResult{rev: rev, err: err})
		}
		close(sub.done)
	}
	s.mu.Lock()
	next := s.waiting
	s.waiting = nil
	s.busy = len(next) > 0
	s.mu.Unlock()
	if len(next) > 0 {
		s.send(next)
	}
}
