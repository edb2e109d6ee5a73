package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestChaosKeepsEveryAcknowledgedWrite runs writers and linearizable readers
// while the leader is killed with kill -9, followers are killed and
// restarted, and a server is paused with SIGSTOP. Afterwards the history
// must be linearizable, every server must hold the same state, and every
// acknowledged write must be in every server's log exactly once.
func TestChaosKeepsEveryAcknowledgedWrite(t *testing.T) {
	c := newCluster(t, 3, 21, "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
	c.Start()
	c.Leader(20 * time.Second)

	w := newWorkload(t, c, 64)
	ctx, stop := context.WithCancel(context.Background())
	done := w.run(ctx, 8)

	phase := func(name string, f func()) {
		t.Logf("chaos: %s (%d operations so far)", name, w.history.Len())
		f()
		c.Leader(20 * time.Second)
		time.Sleep(time.Second) // let the writers run between faults
	}
	phase("kill -9 the leader", func() {
		l := c.Leader(20 * time.Second)
		l.Kill()
		c.Leader(20 * time.Second)
		l.Start()
	})
	phase("kill -9 a follower and restart it", func() {
		f := c.Others(c.Leader(20 * time.Second))[0]
		f.Kill()
		time.Sleep(time.Second)
		f.Start()
	})
	phase("SIGSTOP the leader for 3 s", func() {
		l := c.Leader(20 * time.Second)
		l.Signal(syscall.SIGSTOP)
		time.Sleep(3 * time.Second)
		l.Signal(syscall.SIGCONT)
	})
	phase("SIGSTOP a follower for 2 s", func() {
		f := c.Others(c.Leader(20 * time.Second))[1]
		f.Signal(syscall.SIGSTOP)
		time.Sleep(2 * time.Second)
		f.Signal(syscall.SIGCONT)
	})
	phase("kill -9 the leader again", func() {
		l := c.Leader(20 * time.Second)
		l.Kill()
		time.Sleep(500 * time.Millisecond)
		l.Start()
	})
	stop()
	done.Wait()

	w.verify(t)
}

// TestFiveServersSurviveLosingTwo kills two of five servers, the leader
// among them, under load.
func TestFiveServersSurviveLosingTwo(t *testing.T) {
	c := newCluster(t, 5, 21, "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
	c.Start()
	c.Leader(20 * time.Second)
	w := newWorkload(t, c, 32)
	ctx, stop := context.WithCancel(context.Background())
	done := w.run(ctx, 6)
	time.Sleep(time.Second)
	l := c.Leader(20 * time.Second)
	f := c.Others(l)[0]
	l.Kill()
	f.Kill()
	c.Leader(20 * time.Second)
	w.waitAcked(t, 10*time.Second, w.acked(), 50, "since losing two servers")
	l.Start()
	f.Start()
	time.Sleep(time.Second)
	stop()
	done.Wait()
	w.verify(t)
}
