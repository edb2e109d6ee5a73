package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// TestOversizedEntriesRefused: what the store cannot hold is refused with
// a 4xx Status naming the limit before it reaches the log, whichever
// server takes it and whether it came from a client or was forwarded by
// a follower (or by anything that speaks the forwarding protocol), and
// every server stays up. A 40,000-byte key once crashed every server on
// every restart.
func TestOversizedEntriesRefused(t *testing.T) {
	c, follower, _ := kubeCluster(t, 21)
	leader := c.Leader(10 * time.Second)
	ctx := context.Background()
	before := waitConverged(t, c)

	longKey := strings.Repeat("k", 40000)
	for _, s := range []*cluster.Server{leader, follower} {
		_, err := s.Client().Put(ctx, longKey, []byte("v"), client.Cond{})
		se, ok := err.(*client.StatusError)
		if !ok || se.Status.Code != http.StatusRequestEntityTooLarge || !strings.Contains(se.Status.Message, "the limit is 4096") {
			t.Fatalf("40,000-byte key through %s: %v", s.Name, err)
		}
	}
	_, err := follower.Clientset().CoreV1().ConfigMaps("default").Create(ctx, configMap(strings.Repeat("n", 40000), nil), metav1.CreateOptions{})
	wantReason(t, err, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid)

	// Straight to the leader's forwarding endpoint: one transaction of
	// 7.5 MiB, one with the long key, and one that is fine.
	big := bytes.Repeat([]byte("v"), fsm.MaxValueSize)
	var ops []fsm.Op
	for _, k := range []string{"/kv/b1", "/kv/b2", "/kv/b3", "/kv/b4", "/kv/b5"} {
		ops = append(ops, fsm.Put(k, big, "", fsm.Cond{}))
	}
	replies := forwardBatch(t, leader,
		&fsm.Txn{Ops: ops},
		&fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/"+longKey, nil, "", fsm.Cond{})}},
		&fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/fine", []byte("v"), "", fsm.Cond{})}})
	if len(replies) != 3 || !strings.Contains(replies[0].Error.Message, "over 2097152 bytes") ||
		!strings.Contains(replies[1].Error.Message, "the limit is 4096") || replies[2].Error != nil || replies[2].Revision == 0 {
		t.Fatalf("forwarded batch answered %+v", replies)
	}
	// A batch larger than any follower sends is refused whole.
	var huge []*fsm.Txn
	for range 12 {
		huge = append(huge, &fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/huge", big, "", fsm.Cond{})}})
	}
	if code, _ := postBatch(leader, huge...); code != http.StatusRequestEntityTooLarge && code != 0 {
		t.Fatalf("a %d MiB batch answered %d", 12*fsm.MaxValueSize>>20, code)
	}

	for _, s := range c.Servers {
		if !s.Running() {
			t.Fatalf("%s stopped:\n%s", s.Name, s.Log())
		}
	}
	if _, err := follower.Client().Put(ctx, "after", []byte("v"), client.Cond{}); err != nil {
		t.Fatalf("a write after the refusals: %v", err)
	}
	if after := waitConverged(t, c); after <= before {
		t.Fatalf("index %d after the write, %d before", after, before)
	}
	for _, k := range []string{"b1", "huge"} {
		if _, err := leader.Client().Get(ctx, k, false); client.Reason(err) != metav1.StatusReasonNotFound {
			t.Fatalf("%s after the refusals: %v", k, err)
		}
	}
}

// forwardReply is the leader's answer to one forwarded transaction.
type forwardReply struct {
	Revision uint64        `json:"revision"`
	Error    *fsm.TxnError `json:"error"`
}

func forwardBatch(t *testing.T, leader *cluster.Server, txns ...*fsm.Txn) []forwardReply {
	t.Helper()
	code, body := postBatch(leader, txns...)
	var replies []forwardReply
	if code != http.StatusOK || json.Unmarshal(body, &replies) != nil {
		t.Fatalf("forwarding endpoint answered %d: %.200s", code, body)
	}
	return replies
}

// postBatch posts txns to the leader's forwarding endpoint as a follower
// does; code 0 means the server closed the connection instead.
func postBatch(leader *cluster.Server, txns ...*fsm.Txn) (int, []byte) {
	var body []byte
	for _, txn := range txns {
		b := txn.Marshal()
		body = binary.AppendUvarint(body, uint64(len(b)))
		body = append(body, b...)
	}
	resp, err := cluster.HTTPClient().Post(leader.API()+"/pontoon/internal/apply", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestNotReadyWhileBehind: a follower paused while the others commit
// thousands of entries says it is not ready until it has applied them,
// though its own commit index catches up at once.
func TestNotReadyWhileBehind(t *testing.T) {
	const lag = 100
	c := newCluster(t, 3, 21, "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000", "--ready-max-lag", fmt.Sprint(lag))
	c.Start()
	leader := c.Leader(20 * time.Second)
	follower := c.Others(leader)[0]
	ctx := context.Background()

	follower.Signal(syscall.SIGSTOP)
	defer follower.Signal(syscall.SIGCONT)
	var wg sync.WaitGroup
	wctx, stop := context.WithTimeout(ctx, 4*time.Second)
	defer stop()
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; wctx.Err() == nil; seq++ {
				leader.Client().Put(wctx, fmt.Sprintf("behind/%d/%d", i, seq), bytes.Repeat([]byte("v"), 100), client.Cond{})
			}
		}()
	}
	wg.Wait()
	st, err := leader.Client().Status(ctx)
	if err != nil || st.CommitIndex < 5000 {
		t.Fatalf("only %d entries committed while the follower was paused (%v)", st.CommitIndex, err)
	}
	follower.Signal(syscall.SIGCONT)

	notReady := 0
	cluster.Eventually(t, 60*time.Second, func() error {
		lst, err := leader.Client().Status(ctx)
		if err != nil {
			return err
		}
		ready := follower.Ready() == nil
		fst, err := follower.Client().Status(ctx)
		if err != nil {
			return err
		}
		switch {
		case ready && fst.AppliedIndex+lag < lst.CommitIndex:
			t.Fatalf("ready with %d applied, %d committed before it was asked", fst.AppliedIndex, lst.CommitIndex)
		case !ready:
			notReady++
			return fmt.Errorf("not ready at %d of %d", fst.AppliedIndex, lst.CommitIndex)
		}
		return nil
	})
	if notReady == 0 {
		t.Fatal("the follower was never seen not ready after the pause")
	}
	t.Logf("%d entries behind; not ready for %d checks", st.CommitIndex, notReady)
}
