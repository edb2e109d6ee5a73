package raftstore

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
)

// gatedFSM counts the commands it applies; the first batch waits until
// release is closed, which keeps the first group on its way.
type gatedFSM struct {
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	applied map[string]bool
}

func (f *gatedFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *gatedFSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			f.applied[string(l.Data)] = true
		}
	}
	f.mu.Unlock()
	if len(f.applied) > 0 {
		f.once.Do(func() { <-f.release })
	}
	results := make([]any, len(logs))
	for i, l := range logs {
		results[i] = &fsm.Result{Revision: l.Index}
	}
	return results
}

func (f *gatedFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *gatedFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// waitFor polls ok until it holds, for at most 10 seconds.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Entries that arrive while a group is on its way wait and go next, all
// together; one whose caller gives up while waiting never reaches Raft.
func TestSubmitterHoldsEntriesWhileAGroupIsOnItsWay(t *testing.T) {
	fsm := &gatedFSM{release: make(chan struct{}), applied: map[string]bool{}}
	conf := raft.DefaultConfig()
	conf.LocalID = "s1"
	conf.BatchApplyCh = true
	conf.LogOutput = io.Discard
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	store := raft.NewInmemStore()
	addr, trans := raft.NewInmemTransport("s1")
	if err := raft.BootstrapCluster(conf, store, store, raft.NewInmemSnapshotStore(), trans,
		raft.Configuration{Servers: []raft.Server{{ID: "s1", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(fsm.release) }) }
	t.Cleanup(release) // before the shutdown, which waits for the FSM
	waitFor(t, "leadership", func() bool { return r.State() == raft.Leader })
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}

	s := &submitter{raft: r, transferMu: &sync.RWMutex{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		res, err := s.submit(ctx, [][]byte{[]byte("first")})
		if err == nil {
			err = res[0].err
		}
		first <- err
	}()
	waitFor(t, "the first entry to reach the FSM", func() bool { fsm.mu.Lock(); defer fsm.mu.Unlock(); return fsm.applied["first"] })
	held := r.LastIndex()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.submit(ctx, [][]byte{{'w', byte(i)}})
			if err == nil {
				err = res[0].err
			}
			errs <- err
		}()
	}
	abandoned, abandon := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := s.submit(abandoned, [][]byte{[]byte("abandoned")})
		gaveUp <- err
	}()
	waiting := func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiting) }
	waitFor(t, "21 submissions to wait", func() bool { return waiting() == 21 })
	abandon()
	if err := <-gaveUp; !errors.Is(err, raft.ErrNotLeader) || !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned submission: %v", err)
	}
	if got := r.LastIndex(); got != held || waiting() != 20 {
		t.Fatalf("while the first group was on its way, the log grew from %d to %d; %d wait", held, got, waiting())
	}

	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := r.LastIndex(); got != held+20 {
		t.Fatalf("log at %d after 20 more entries, want %d", got, held+20)
	}
	fsm.mu.Lock()
	defer fsm.mu.Unlock()
	if len(fsm.applied) != 21 || fsm.applied["abandoned"] {
		t.Fatalf("applied %d commands (abandoned one: %v), want 21", len(fsm.applied), fsm.applied["abandoned"])
	}
}

// The next group waits for the entries gather is told to want (those that
// waited while the last group was on its way, and as many again as it
// held), up to the linger; after a group of one with nothing waiting,
// nothing is held back.
func TestSubmitterGathersTheNextGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &submitter{busy: true}
	submit := func(cmd string) {
		go s.submit(ctx, [][]byte{[]byte(cmd)})
	}
	entries := func() int { s.mu.Lock(); defer s.mu.Unlock(); return s.waitingEntries() }
	gathered := make(chan []*submission, 1)
	gather := func(want int, linger time.Duration) []*submission {
		t.Helper()
		go func() { gathered <- s.gather(want, linger) }()
		select {
		case g := <-gathered:
			return g
		case <-ctx.Done():
			t.Fatalf("gathering %d entries did not end", want)
			return nil
		}
	}

	// A group of two went while one entry waited: the next takes three.
	submit("waited")
	waitFor(t, "the first entry to wait", func() bool { return entries() == 1 })
	go func() { gathered <- s.gather(3, time.Hour) }()
	waitFor(t, "the gathering", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.full != nil })
	submit("back 1")
	waitFor(t, "a second entry to wait", func() bool { return entries() == 2 })
	select {
	case g := <-gathered:
		t.Fatalf("a group of %d left before the last group came back", len(g))
	default:
	}
	submit("back 2")
	if g := <-gathered; len(g) != 3 || !s.busy {
		t.Fatalf("gathered %d submissions (busy %v), want 3 on their way", len(g), s.busy)
	}

	// Callers that do not come back are waited for no longer than linger.
	submit("alone")
	waitFor(t, "an entry to wait", func() bool { return entries() == 1 })
	if g := gather(5, 10*time.Millisecond); len(g) != 1 {
		t.Fatalf("gathered %d submissions after the linger, want 1", len(g))
	}

	// A lone client whose next write came back before the gathering: it
	// goes at once.
	submit("lone, quick")
	waitFor(t, "an entry to wait", func() bool { return entries() == 1 })
	if g := gather(1, time.Hour); len(g) != 1 || !s.busy {
		t.Fatalf("gathered %d submissions (busy %v), want the lone client's next", len(g), s.busy)
	}

	// A lone client not back yet: no group is on its way.
	if g := gather(1, time.Hour); len(g) != 0 || s.busy {
		t.Fatalf("gathered %d submissions (busy %v) with nothing waiting", len(g), s.busy)
	}
}

// appliedFuture is an entry Raft has applied at its index.
type appliedFuture uint64

func (f appliedFuture) Error() error  { return nil }
func (f appliedFuture) Index() uint64 { return uint64(f) }
func (f appliedFuture) Response() any { return &fsm.Result{Revision: uint64(f)} }

// A group's callers get their revisions, and the next group wants what
// waited before they were answered, however quickly one comes back, and
// as many again as the group held.
func TestSubmitterAnswersAGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &submitter{busy: true}
	go s.submit(ctx, [][]byte{[]byte("waited")})
	waitFor(t, "an entry to wait", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.waitingEntries() == 1 })
	group := []*submission{{cmds: [][]byte{[]byte("a")}, done: make(chan struct{})}, {cmds: [][]byte{[]byte("b")}, done: make(chan struct{})}}
	back := make(chan struct{})
	go func() {
		<-group[0].done
		go s.submit(ctx, [][]byte{[]byte("a again")})
		close(back)
	}()
	if want := s.answer(group, [][]raft.ApplyFuture{{appliedFuture(7)}, {appliedFuture(8)}}); want != 3 {
		t.Fatalf("the next group wants %d entries, want 3", want)
	}
	for i, sub := range group {
		if len(sub.results) != 1 || sub.results[0] != (applyResult{rev: uint64(7 + i)}) {
			t.Fatalf("submission %d answered %+v", i, sub.results)
		}
	}
	<-back
}
