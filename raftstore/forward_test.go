package raftstore

import (
	"context"
	"testing"
	"time"
)

func forwardReqs(api string, n int) []*forwardReq {
	reqs := make([]*forwardReq, n)
	for i := range reqs {
		reqs[i] = &forwardReq{ctx: context.Background(), api: api}
	}
	return reqs
}

// send hands reqs to the forwarder one by one, in the background: a
// forwarder that stops taking them fails the test instead of hanging it.
func send(f *forwarder, reqs ...*forwardReq) {
	go func() {
		for _, r := range reqs {
			f.reqs <- r
		}
	}()
}

// gatherAsync gathers a batch in the background.
func gatherAsync(f *forwarder) <-chan []*forwardReq {
	got := make(chan []*forwardReq, 1)
	go func() { got <- f.gather(context.Background()) }()
	return got
}

func receive(t *testing.T, got <-chan []*forwardReq) []*forwardReq {
	t.Helper()
	select {
	case batch := <-got:
		return batch
	case <-time.After(10 * time.Second):
		t.Fatal("no batch within 10s")
		return nil
	}
}

// A batch waits for as many transactions as were answered since the last
// one left, because those clients come back at once; then the count
// starts again, and a lone transaction leaves at once.
func TestForwarderGathersWhatWasAnswered(t *testing.T) {
	f := &forwarder{reqs: make(chan *forwardReq), maxLinger: time.Hour}
	f.done(3, time.Now().Add(-time.Hour))
	got := gatherAsync(f)
	send(f, forwardReqs("a", 3)...)
	if batch := receive(t, got); len(batch) != 3 {
		t.Fatalf("batch of %d, want the 3 answered before", len(batch))
	}

	got = gatherAsync(f)
	send(f, forwardReqs("a", 1)...)
	if batch := receive(t, got); len(batch) != 1 {
		t.Fatalf("batch of %d, want 1", len(batch))
	}
}

// Clients that do not come back hold a batch for no longer than the last
// batch took.
func TestForwarderLingersNoLongerThanTheLastBatchTook(t *testing.T) {
	f := &forwarder{reqs: make(chan *forwardReq), maxLinger: time.Hour}
	const took = 20 * time.Millisecond
	f.done(3, time.Now().Add(-took))
	start := time.Now()
	got := gatherAsync(f)
	send(f, forwardReqs("a", 1)...)
	if batch := receive(t, got); len(batch) != 1 {
		t.Fatalf("batch of %d, want 1", len(batch))
	}
	if waited := time.Since(start); waited < took {
		t.Fatalf("the batch left after %v, before the %v it may wait", waited, took)
	}
}

// A transaction for another leader ends the batch and starts the next.
func TestForwarderBatchesByLeader(t *testing.T) {
	f := &forwarder{reqs: make(chan *forwardReq), maxLinger: time.Hour}
	f.done(3, time.Now().Add(-time.Hour))
	got := gatherAsync(f)
	other := forwardReqs("b", 1)[0]
	send(f, forwardReqs("a", 1)[0], other)
	if batch := receive(t, got); len(batch) != 1 || batch[0].api != "a" {
		t.Fatalf("got %d transactions, want the one for a", len(batch))
	}
	if batch := receive(t, gatherAsync(f)); len(batch) != 1 || batch[0] != other {
		t.Fatal("the transaction for b was not the next batch")
	}
}

// A batch holds at most maxForwardBytes, so the leader can bound what it
// reads; the transaction that would go over starts the next batch.
func TestForwarderBatchesByBytes(t *testing.T) {
	f := &forwarder{reqs: make(chan *forwardReq), maxLinger: time.Hour}
	f.done(3, time.Now().Add(-time.Hour))
	reqs := forwardReqs("a", 3)
	for _, r := range reqs {
		r.txn = make([]byte, maxForwardBytes/2)
	}
	got := gatherAsync(f)
	send(f, reqs...)
	if batch := receive(t, got); len(batch) != 2 {
		t.Fatalf("batch of %d halves of the limit, want 2", len(batch))
	}
	if batch := receive(t, gatherAsync(f)); len(batch) != 1 || batch[0] != reqs[2] {
		t.Fatal("the transaction over the limit was not the next batch")
	}
}
