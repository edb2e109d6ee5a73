package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
	"github.com/pontoon-dev/pontoon/test/linearize"
)

// ack is an acknowledged write.
type ack struct {
	key, value string
	server     string
	revision   uint64
	at         time.Time
}

// workload runs clients that write unique values and read linearizably,
// each request to a random server, recording everything in a history.
type workload struct {
	t       testing.TB
	c       *cluster.Cluster
	history *linearize.History
	keys    int
	mu      sync.Mutex
	acks    []ack
	errs    map[string]int
	// targets, when set, picks the servers a client may use.
	targets func() []*cluster.Server
}

func newWorkload(t testing.TB, c *cluster.Cluster, keys int) *workload {
	return &workload{t: t, c: c, history: linearize.NewHistory(), keys: keys, errs: map[string]int{}}
}

// classify names a failed request's kind, and says whether a write that
// failed so may have been applied: a Status of 503 (no leader, nothing
// sent) and a failed dial definitely were not.
func classify(err error) (kind string, unknown bool) {
	var se *client.StatusError
	var oe *net.OpError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%d %s", se.Status.Code, se.Status.Reason), se.Status.Code != http.StatusServiceUnavailable
	case errors.As(err, &oe) && oe.Op == "dial":
		return "dial", false
	case errors.Is(err, context.DeadlineExceeded):
		return "client timeout", true
	default:
		return "connection lost", true
	}
}

// run starts clients that run until ctx ends. They also stop when the test
// ends: a test that fails before it stops them must not leave them writing
// to the next test's servers, which listen on the same addresses.
func (w *workload) run(ctx context.Context, clients int) *sync.WaitGroup {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	w.t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
			for seq := 0; ctx.Err() == nil; seq++ {
				servers := w.c.Servers
				if w.targets != nil {
					servers = w.targets()
				}
				s := servers[r.IntN(len(servers))]
				key := fmt.Sprintf("k%d", r.IntN(w.keys))
				w.step(ctx, id, seq, s, key, r.IntN(10) < 6)
			}
		}()
	}
	return &wg
}

func (w *workload) step(ctx context.Context, id, seq int, s *cluster.Server, key string, put bool) {
	opCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	call := w.history.Now()
	if put {
		value := fmt.Sprintf("c%d-%d", id, seq)
		rev, err := s.Client().Put(opCtx, key, []byte(value), client.Cond{})
		kind, unknown := "", false
		if err != nil {
			kind, unknown = classify(err)
		}
		w.history.Put(id, key, value, call, err == nil, unknown)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err == nil {
			w.acks = append(w.acks, ack{key: key, value: value, server: s.Name, revision: rev, at: time.Now()})
		} else {
			w.errs["put: "+kind]++
		}
		return
	}
	kv, err := s.Client().Get(opCtx, key, false)
	switch {
	case err == nil:
		w.history.Get(id, key, string(kv.Value), call)
	case client.Reason(err) == "NotFound":
		w.history.Get(id, key, "", call)
	default:
		kind, _ := classify(err)
		w.mu.Lock()
		w.errs["get: "+kind]++
		w.mu.Unlock()
	}
	if err != nil && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond) // back off from a server that is down
	}
}

// acked returns the number of acknowledged writes so far.
func (w *workload) acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// waitAcked waits until n more writes than before have been acknowledged.
func (w *workload) waitAcked(t *testing.T, timeout time.Duration, before, n int, what string) {
	t.Helper()
	cluster.Eventually(t, timeout, func() error {
		if got := w.acked() - before; got < n {
			return fmt.Errorf("only %d writes %s", got, what)
		}
		return nil
	})
}

// waitConverged waits until every running server has applied the same index
// with the same state, and returns that index.
func waitConverged(t *testing.T, c *cluster.Cluster) uint64 {
	t.Helper()
	var index uint64
	cluster.Eventually(t, 30*time.Second, func() error {
		var first string
		for i, s := range c.Servers {
			if !s.Running() {
				continue
			}
			d, err := s.Client().Digest(context.Background())
			if err != nil {
				return err
			}
			got := fmt.Sprintf("%d/%s", d.Index, d.SHA256)
			if i == 0 || first == "" {
				first, index = got, d.Index
			} else if got != first {
				return fmt.Errorf("%s is at %s, others at %s", s.Name, got, first)
			}
		}
		return nil
	})
	return index
}

// checkLogs stops every server and checks their Raft logs up to index:
// every acknowledged write is at its revision in every log, and no value is
// in the log twice (nothing was applied twice). It returns the committed
// writes as key=value.
func checkLogs(t *testing.T, c *cluster.Cluster, index uint64, acks []ack) map[string]bool {
	t.Helper()
	committed := map[string]bool{}
	for _, s := range c.Servers {
		s.Stop()
	}
	for _, s := range c.Servers {
		cmds, err := s.Commands(index)
		if err != nil {
			t.Fatal(err)
		}
		byIndex := map[uint64]string{}
		seen := map[string]uint64{}
		for _, cmd := range cmds {
			for _, op := range cmd.Txn.Ops {
				if op.Type != 1 || len(op.Key) < 4 || op.Key[:4] != "/kv/" {
					continue
				}
				v := string(op.Value)
				if prev, dup := seen[v]; dup {
					t.Fatalf("%s: value %s is in the log at %d and at %d: applied twice", s.Name, v, prev, cmd.Index)
				}
				seen[v] = cmd.Index
				byIndex[cmd.Index] = op.Key[4:] + "=" + v
				committed[op.Key[4:]+"="+v] = true
			}
		}
		for _, a := range acks {
			if got := byIndex[a.revision]; got != a.key+"="+a.value {
				t.Fatalf("%s: acknowledged write %s=%s (revision %d, via %s) is not in the log; entry there: %q",
					s.Name, a.key, a.value, a.revision, a.server, got)
			}
		}
	}
	return committed
}

// verify checks a finished workload: the servers converge, the logs hold
// every acknowledged write once, and the history is linearizable.
func (w *workload) verify(t *testing.T) {
	t.Helper()
	t.Logf("%d operations, %d acknowledged writes; failures: %v", w.history.Len(), len(w.acks), w.errs)
	if len(w.acks) < 100 {
		t.Fatalf("only %d writes were acknowledged", len(w.acks))
	}
	committed := checkLogs(t, w.c, waitConverged(t, w.c), w.acks)
	dropped := w.history.Resolve(func(key, value string) bool { return committed[key+"="+value] })
	t.Logf("%d writes of unknown outcome were never committed", dropped)
	if err := w.history.Check(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
}
