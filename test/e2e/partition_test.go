package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// TestPartitionedLeaderAcknowledgesNothing cuts the leader off from the two
// other servers with iptables: writes sent to it are never acknowledged,
// the majority elects a leader and goes on, and after healing all servers
// agree, with none of the minority's writes committed.
func TestPartitionedLeaderAcknowledgesNothing(t *testing.T) {
	c := newCluster(t, 3, 21, "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
	c.Start()
	old := c.Leader(20 * time.Second)
	majority := c.Others(old)

	w := newWorkload(t, c, 32)
	var minority atomic.Bool
	var targetMu sync.Mutex
	targets := c.Servers
	w.targets = func() []*cluster.Server {
		targetMu.Lock()
		defer targetMu.Unlock()
		return targets
	}
	ctx, stop := context.WithCancel(context.Background())
	done := w.run(ctx, 6)
	time.Sleep(time.Second)

	// Writers aimed only at the old leader, started once it is cut off.
	c.Partition(old)
	minority.Store(true)
	cut := time.Now()
	var minorityAcks atomic.Int64
	var minorityMu sync.Mutex
	var minorityValues []string
	mctx, mstop := context.WithCancel(context.Background())
	var mwg sync.WaitGroup
	defer func() {
		mstop()
		mwg.Wait()
	}()
	for i := range 4 {
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			for seq := 0; mctx.Err() == nil; seq++ {
				v := fmt.Sprintf("minority-%d-%d", i, seq)
				minorityMu.Lock()
				minorityValues = append(minorityValues, v)
				minorityMu.Unlock()
				octx, cancel := context.WithTimeout(mctx, 2*time.Second)
				if _, err := old.Client().Put(octx, fmt.Sprintf("m%d", i), []byte(v), client.Cond{}); err == nil {
					minorityAcks.Add(1)
				}
				cancel()
			}
		}()
	}

	// The majority elects a leader among themselves and accepts writes.
	var newLeader *cluster.Server
	cluster.Eventually(t, 10*time.Second, func() error {
		st, err := majority[0].Client().Status(context.Background())
		if err != nil {
			return err
		}
		if st.Leader == "" || st.Leader == old.Name {
			return fmt.Errorf("majority's leader is %q", st.Leader)
		}
		newLeader = c.Server(st.Leader)
		return nil
	})
	t.Logf("majority elected %s %v after the partition", newLeader.Name, time.Since(cut).Round(time.Millisecond))
	targetMu.Lock()
	targets = majority
	targetMu.Unlock()
	w.waitAcked(t, 10*time.Second, w.acked(), 100, "on the majority side")
	mstop()
	mwg.Wait()
	if n := minorityAcks.Load(); n != 0 {
		t.Fatalf("%d writes were acknowledged by the partitioned leader", n)
	}

	if len(minorityValues) == 0 {
		t.Fatal("no write was sent to the partitioned leader")
	}

	c.Heal()
	targetMu.Lock()
	targets = c.Servers
	targetMu.Unlock()
	time.Sleep(time.Second)
	stop()
	done.Wait()
	// The minority wrote only its own keys: none may exist on any server.
	for _, s := range c.Servers {
		for i := range 4 {
			_, err := s.Client().Get(context.Background(), fmt.Sprintf("m%d", i), false)
			if client.Reason(err) != metav1.StatusReasonNotFound {
				t.Fatalf("m%d on %s after healing: %v, want NotFound", i, s.Name, err)
			}
		}
	}
	w.verify(t)
	// verify stopped the servers: no log, whatever it held while cut off,
	// holds a minority write now.
	written := map[string]bool{}
	for _, v := range minorityValues {
		written[v] = true
	}
	for _, s := range c.Servers {
		cmds, err := s.Commands(^uint64(0))
		if err != nil {
			t.Fatalf("cannot check %s's log for the minority's writes: %v", s.Name, err)
		}
		if len(cmds) == 0 {
			t.Fatalf("%s's log holds no transaction to check", s.Name)
		}
		for _, cmd := range cmds {
			for _, op := range cmd.Txn.Ops {
				if written[string(op.Value)] {
					t.Fatalf("minority write %s is in %s's log at %d", op.Value, s.Name, cmd.Index)
				}
			}
		}
	}
}

// TestFollowersMoveOnFromAPausedLeader pauses the leader with SIGSTOP: its
// connections stay open and silent, as across a partition. The writes the
// followers were forwarding to it end within seconds of the next election
// (as unknown outcomes), and new writes through every follower are
// acknowledged by the new leader, instead of all of them waiting for their
// deadline.
func TestFollowersMoveOnFromAPausedLeader(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	old := c.Leader(20 * time.Second)
	followers := c.Others(old)

	// Writers that keep every forwarding sender of both followers busy.
	type outcome struct{ started, ended time.Time }
	var (
		mu       sync.Mutex
		outcomes []outcome
		acked    atomic.Int64
		wg       sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := followers[i%2]
			for seq := 0; ctx.Err() == nil; seq++ {
				wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				start := time.Now()
				if _, err := f.Client().Put(wctx, fmt.Sprintf("busy/%d/%d", i, seq), []byte("v"), client.Cond{}); err == nil {
					acked.Add(1)
				}
				cancel()
				mu.Lock()
				outcomes = append(outcomes, outcome{start, time.Now()})
				mu.Unlock()
			}
		}()
	}
	cluster.Eventually(t, 10*time.Second, func() error {
		if n := acked.Load(); n < 100 {
			return fmt.Errorf("%d writes acknowledged", n)
		}
		return nil
	})

	paused := time.Now()
	old.Signal(syscall.SIGSTOP)
	defer old.Signal(syscall.SIGCONT)
	// An operator request a follower proxies to the leader (it succeeds
	// or fails; it must not wait for the paused leader).
	operator := make(chan time.Time, 1)
	go func() {
		octx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		followers[0].Client().RemovePeer(octx, "nobody")
		operator <- time.Now()
	}()
	cluster.Eventually(t, 10*time.Second, func() error {
		for _, f := range followers {
			st, err := f.Client().Status(context.Background())
			if err != nil {
				return err
			}
			if st.Leader == "" || st.Leader == old.Name {
				return fmt.Errorf("%s sees leader %q", f.Name, st.Leader)
			}
		}
		return nil
	})
	elected := time.Now()
	t.Logf("new leader known %v after the pause", elected.Sub(paused).Round(time.Millisecond))

	// The deposed leader gets one heartbeat timeout to answer; 5 s is far
	// below the 10 s every forwarded write used to wait.
	const bound = 5 * time.Second
	for _, f := range followers {
		cluster.Eventually(t, bound, func() error {
			wctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := f.Client().Put(wctx, "after/"+f.Name, []byte("v"), client.Cond{})
			return err
		})
	}
	stop()
	wg.Wait()
	for _, o := range outcomes {
		if o.started.Before(paused) && o.ended.After(elected.Add(bound)) {
			t.Fatalf("a write forwarded before the pause ended %v after the election", o.ended.Sub(elected).Round(time.Millisecond))
		}
	}
	if ended := <-operator; ended.After(elected.Add(bound)) {
		t.Fatalf("an operator request proxied before the election ended %v after it", ended.Sub(elected).Round(time.Millisecond))
	}
}
