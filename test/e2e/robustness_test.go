package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/raftstore"
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
	// 3 MiB, one with the long key, and one that is fine.
	big := bytes.Repeat([]byte("v"), fsm.MaxValueSize)
	ops := []fsm.Op{fsm.Put("/kv/b1", big, "", fsm.Cond{}), fsm.Put("/kv/b2", big, "", fsm.Cond{})}
	replies := forwardBatch(t, c,
		&fsm.Txn{Ops: ops},
		&fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/"+longKey, nil, "", fsm.Cond{})}},
		&fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/fine", []byte("v"), "", fsm.Cond{})}})
	if len(replies) != 3 || !strings.Contains(replies[0].Error.Message, "over 2097152 bytes") ||
		!strings.Contains(replies[1].Error.Message, "the limit is 4096") || replies[2].Error != nil || replies[2].Revision == 0 {
		t.Fatalf("forwarded batch answered %+v", replies)
	}
	// Only the cluster's servers may forward: a batch without the
	// internal key, or with another cluster's, is refused and writes
	// nothing.
	for _, key := range []string{"", strings.Repeat("00", 32)} {
		if code, body := postBatchWithKey(c.Leader(10*time.Second), key, &fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/forged", []byte("v"), "", fsm.Cond{})}}); code != http.StatusForbidden {
			t.Fatalf("a batch with key %q answered %d: %s", key, code, body)
		}
	}
	if _, err := c.Leader(10*time.Second).Client().Get(context.Background(), "forged", true); client.Reason(err) != "NotFound" {
		t.Fatalf("a forged batch was written: %v", err)
	}
	// A batch larger than any follower sends is refused whole.
	var huge []*fsm.Txn
	for range 12 {
		huge = append(huge, &fsm.Txn{Ops: []fsm.Op{fsm.Put("/kv/huge", big, "", fsm.Cond{})}})
	}
	if code, _ := postBatch(c.Leader(10*time.Second), huge...); code != http.StatusRequestEntityTooLarge && code != 0 {
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

// forwardBatch posts txns to the leader's forwarding endpoint, again to
// whichever server leads when the one asked was no longer the leader (421:
// it did nothing), and returns the leader's replies.
func forwardBatch(t *testing.T, c *cluster.Cluster, txns ...*fsm.Txn) []forwardReply {
	t.Helper()
	var replies []forwardReply
	cluster.Eventually(t, 20*time.Second, func() error {
		code, body := postBatch(c.Leader(10*time.Second), txns...)
		if code == http.StatusMisdirectedRequest {
			return fmt.Errorf("the leader moved: %s", body)
		}
		if code != http.StatusOK || json.Unmarshal(body, &replies) != nil {
			t.Fatalf("forwarding endpoint answered %d: %.200s", code, body)
		}
		return nil
	})
	return replies
}

// postBatch posts txns to the leader's forwarding endpoint as a follower
// does, with the cluster's internal key; code 0 means the server closed
// the connection instead.
func postBatch(leader *cluster.Server, txns ...*fsm.Txn) (int, []byte) {
	return postBatchWithKey(leader, leader.Cluster().InternalKey(), txns...)
}

func postBatchWithKey(leader *cluster.Server, key string, txns ...*fsm.Txn) (int, []byte) {
	var body []byte
	for _, txn := range txns {
		b := txn.Marshal()
		body = binary.AppendUvarint(body, uint64(len(b)))
		body = append(body, b...)
	}
	req, err := http.NewRequest(http.MethodPost, leader.API()+"/pontoon/internal/apply", bytes.NewReader(body))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if key != "" {
		req.Header.Set(raftstore.InternalAuthHeader, key)
	}
	resp, err := cluster.HTTPClient().Do(req)
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
	// Writers go on until 2,000 writes are acknowledged, however slow the
	// machine; the deadline only bounds a cluster that stopped committing.
	var wg sync.WaitGroup
	var written atomic.Int64
	wctx, stop := context.WithTimeout(ctx, 60*time.Second)
	defer stop()
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; wctx.Err() == nil && written.Load() < 2000; seq++ {
				if _, err := leader.Client().Put(wctx, fmt.Sprintf("behind/%d/%d", i, seq), bytes.Repeat([]byte("v"), 100), client.Cond{}); err == nil {
					written.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	st, err := leader.Client().Status(ctx)
	if err != nil || st.CommitIndex < 2000 {
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

// TestRequestsBounded: a server sheds what would eat it, as kube-apiserver
// does. Writes beyond the in-flight limit get 429 with Retry-After while
// reads go on; bodies sent slowly are cut at the request timeout, 2,000
// connections that never send a request at the header timeout and 2,000
// idle keep-alive connections at the idle timeout; a JSON patch that
// copies itself thirty times is refused without the server's memory
// growing; a strategic merge patch that costs the server seconds of CPU
// starves neither Raft's heartbeats nor other writes; malformed
// parameters are 400s.
func TestRequestsBounded(t *testing.T) {
	c := newCluster(t, 3, 21, "--request-timeout", "8s", "--max-mutating-requests-inflight", "4")
	c.Start()
	leader := c.Leader(20 * time.Second)
	s := c.Others(leader)[0]
	ctx := context.Background()
	host := strings.TrimPrefix(s.API(), "http://")

	// Keep-alive connections left idle after a request; checked at the end,
	// once the idle timeout has passed.
	keptAlive := dialMany(t, host, 2000)
	for i, conn := range keptAlive {
		fmt.Fprintf(conn, "GET /livez HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("keep-alive connection %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	keptAliveSince := time.Now()

	// Four writes whose bodies never finish hold every write slot.
	var slow []net.Conn
	for i := range 4 {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "PUT /pontoon/v1/kv/slow%d HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\nx", i, host)
		slow = append(slow, conn)
	}
	cluster.Eventually(t, 5*time.Second, func() error {
		if n := get(t, s, "/metrics"); !strings.Contains(n, `pontoon_api_inflight_requests{request_kind="mutating"} 4`) {
			return errors.New("the four slow writes are not all in flight")
		}
		return nil
	})
	_, err := s.Client().Put(ctx, "fifth", []byte("v"), client.Cond{})
	if se, ok := err.(*client.StatusError); !ok || se.Status.Code != http.StatusTooManyRequests {
		t.Fatalf("a fifth write answered %v, want 429", err)
	}
	req, _ := http.NewRequest(http.MethodPut, s.API()+"/pontoon/v1/kv/x", strings.NewReader("v"))
	resp, err := cluster.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("beyond the limit: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	if _, err := s.Client().Get(ctx, "fifth", false); client.Reason(err) != metav1.StatusReasonNotFound {
		t.Fatalf("a read while the writes are full: %v", err)
	}
	for i, conn := range slow {
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("slow body %d: %v %v, want 504 at the request timeout", i, resp, err)
		}
	}
	cluster.Eventually(t, 6*time.Second, func() error {
		_, err := s.Client().Put(ctx, "fifth", []byte("v"), client.Cond{})
		return err
	})

	// Connections that send nothing are closed at the header timeout (10 s).
	for i, conn := range dialMany(t, host, 2000) {
		if err := closedBy(conn, time.Now().Add(20*time.Second)); err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
	}

	cs := s.Clientset()
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap("bomb", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := peakRSS(t, s)
	ops := []string{`{"op":"add","path":"/metadata/annotations","value":{"a":"` + strings.Repeat("a", 1000) + `"}}`}
	for i := range 30 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/metadata/annotations","path":"/metadata/annotations/c%d"}`, i))
	}
	_, err = cs.CoreV1().ConfigMaps("default").Patch(ctx, "bomb", types.JSONPatchType, []byte("["+strings.Join(ops, ",")+"]"), metav1.PatchOptions{})
	wantReason(t, err, http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge)
	if after := peakRSS(t, s); after-before > 256<<20 {
		t.Fatalf("the patch grew the server's peak memory from %d to %d MiB", before>>20, after>>20)
	}

	smpBomb(t, c, leader)

	for _, path := range []string{
		"/pontoon/v1/kv?continue=" + base64.RawURLEncoding.EncodeToString([]byte(`{"rv":18446744073709551615,"start":"/kv/a"}`)),
		"/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=abc",
	} {
		resp, err := cluster.HTTPClient().Get(s.API() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s answered %s, want 400", path, resp.Status)
		}
	}

	// The idle timeout is 90 s, as kube-apiserver's.
	for i, conn := range keptAlive {
		if err := closedBy(conn, keptAliveSince.Add(100*time.Second)); err != nil {
			t.Fatalf("idle keep-alive connection %d: %v", i, err)
		}
	}
}

// dialMany opens n connections to host, closed when the test ends.
func dialMany(t *testing.T, host string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[i] = conn
	}
	return conns
}

// closedBy waits until the server closes conn, and fails if that has not
// happened at deadline.
func closedBy(conn net.Conn, deadline time.Time) error {
	conn.SetReadDeadline(deadline)
	_, err := conn.Read(make([]byte, 1))
	switch {
	case err == nil:
		return errors.New("the server sent data")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("still open")
	}
	return nil
}

// smpBomb sends s two strategic merge patches whose merge is quadratic in
// the size of their lists (deleting 8,000 finalizers from an object
// holding 8,000 others costs the library seconds of CPU, and it cannot be
// cancelled), gives up on them after a second, as a client would, and then
// holds, for as long as the server keeps working on it, that no server
// changes its Raft term and that writes through every server go on.
func smpBomb(t *testing.T, c *cluster.Cluster, s *cluster.Server) {
	t.Helper()
	const n = 8000
	kept, deleted := make([]string, n), make([]string, n)
	for i := range n {
		kept[i], deleted[i] = fmt.Sprintf("example.com/k%05d", i), fmt.Sprintf("example.com/d%05d", i)
	}
	cs := s.Clientset()
	cm := configMap("smp", nil)
	cm.Finalizers = kept
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"$deleteFromPrimitiveList/finalizers": deleted, "finalizers": deleted}})
	if err != nil {
		t.Fatal(err)
	}
	terms := raftTerms(t, c)
	start, cpu := time.Now(), cpuTime(t, s)
	var sent sync.WaitGroup
	for range 2 {
		sent.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if _, err := cs.CoreV1().ConfigMaps("default").Patch(ctx, "smp", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err == nil {
				t.Error("the patch finished within a second; it no longer tests anything")
			}
		})
	}
	sent.Wait()
	// The server is busy with the patch while it uses more than half a
	// core; the hold ends two seconds after it no longer is.
	looked, busy := start, start
	for time.Since(busy) < 2*time.Second {
		seen := raftTerms(t, c)
		for i := range terms {
			if seen[i] != terms[i] {
				t.Fatalf("%s went from term %s to %s while %s worked on the patch", c.Servers[i].Name, terms[i], seen[i], s.Name)
			}
		}
		for _, other := range c.Servers {
			wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := other.Client().Put(wctx, "during-patch", []byte(other.Name), client.Cond{})
			cancel()
			if err != nil {
				t.Fatalf("a write through %s while %s worked on the patch: %v", other.Name, s.Name, err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		used, now := cpuTime(t, s), time.Now()
		if used-cpu > now.Sub(looked)/2 {
			busy = now
		}
		looked, cpu = now, used
	}
	t.Logf("%s was busy with the patches for %v; no term changed and every write went through", s.Name, busy.Sub(start).Round(time.Second))
}

// raftTerms is each server's Raft term, from its metrics.
func raftTerms(t *testing.T, c *cluster.Cluster) []string {
	t.Helper()
	var terms []string
	for _, s := range c.Servers {
		for _, l := range strings.Split(get(t, s, "/metrics"), "\n") {
			if v, ok := strings.CutPrefix(l, "pontoon_raft_term "); ok {
				terms = append(terms, v)
			}
		}
	}
	if len(terms) != len(c.Servers) {
		t.Fatalf("terms %v", terms)
	}
	return terms
}

// cpuTime is the CPU time the server process has used.
func cpuTime(t *testing.T, s *cluster.Server) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the line, in clock ticks (100 a second).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// peakRSS is the server process's peak resident memory (VmHWM).
func peakRSS(t *testing.T, s *cluster.Server) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestUnreadableObjectListedAndDeleted: a stored object that is not an
// object of its kind makes a listing fail naming its key (not a bare 500),
// and a delete with ignoreStoreReadErrorWithClusterBreakingPotential
// removes it, as kube-apiserver 1.32 does.
func TestUnreadableObjectListedAndDeleted(t *testing.T) {
	c, f, _ := kubeCluster(t, 21)
	ctx := context.Background()
	cs := f.Clientset()
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, configMap("fine", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const broken = "/registry/core/configmaps/default/broken"
	replies := forwardBatch(t, c, &fsm.Txn{Ops: []fsm.Op{fsm.Put(broken, []byte("not a config map"), "uid-broken", fsm.Cond{MustNotExist: true})}})
	if replies[0].Error != nil {
		t.Fatal(replies[0].Error)
	}

	_, stderr, code := c.Kubectl(f, "", "get", "configmaps", "-A")
	if code == 0 || !strings.Contains(stderr, broken) {
		t.Fatalf("kubectl get configmaps -A: exit %d: %s", code, stderr)
	}
	_, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if !apierrors.IsStoreReadError(err) {
		t.Fatalf("list: %v, want StorageReadError", err)
	}
	err = cs.CoreV1().ConfigMaps("default").Delete(ctx, "broken", metav1.DeleteOptions{})
	if !apierrors.IsStoreReadError(err) {
		t.Fatalf("a plain delete: %v, want StorageReadError", err)
	}
	if err := cs.CoreV1().ConfigMaps("default").Delete(ctx, "broken", metav1.DeleteOptions{IgnoreStoreReadErrorWithClusterBreakingPotential: ptr.To(true)}); err != nil {
		t.Fatalf("delete ignoring the read error: %v", err)
	}
	out, stderr, code := c.Kubectl(f, "", "get", "configmaps", "-n", "default", "-o", "name")
	if code != 0 || !strings.Contains(out, "configmap/fine") || strings.Contains(out, "broken") {
		t.Fatalf("after the delete: exit %d: %s%s", code, out, stderr)
	}
}

// TestDiskFull: with every data dir on a small tmpfs, writes are refused
// with 507 before the disk is full, as etcd's NOSPACE alarm; every server
// stays up and serves reads, /readyz and /metrics say why, deletes go
// through, and once space is freed writes resume without a restart. No
// acknowledged write is lost, across a restart too.
func TestDiskFull(t *testing.T) {
	c := newCluster(t, 3, 21, "--data-dir-reserve", "12Mi", "--raft-wal-segment-size", "4Mi",
		"--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
	for _, s := range c.Servers {
		s.MountTmpfs("64m")
	}
	c.Start()
	leader := c.Leader(20 * time.Second)
	for _, s := range c.Servers {
		// Most of the space goes to a file the test frees later.
		if err := os.WriteFile(filepath.Join(s.DataDir, "filler"), make([]byte, 24<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	follower := c.Others(leader)[0]
	ctx := context.Background()

	value := bytes.Repeat([]byte("d"), 64<<10)
	acked := map[string]bool{}
	var refused *client.StatusError
	for i := 0; refused == nil; i++ {
		if i == 2000 {
			t.Fatal("2,000 writes of 64 KiB went into 64 MiB disks")
		}
		k := fmt.Sprint("full/", i)
		_, err := follower.Client().Put(ctx, k, value, client.Cond{})
		switch se, _ := err.(*client.StatusError); {
		case err == nil:
			acked[k] = true
		case se != nil && se.Status.Code == http.StatusInsufficientStorage:
			refused = se
		default:
			t.Fatalf("write %d: %v", i, err)
		}
	}
	t.Logf("%d writes of 64 KiB before: %s", len(acked), refused.Status.Message)
	if !strings.Contains(refused.Status.Message, "out of space") || refused.Status.Reason != "InsufficientStorage" {
		t.Fatalf("refusal %+v", refused.Status)
	}
	for _, s := range c.Servers {
		if !s.Running() {
			t.Fatalf("%s stopped:\n%s", s.Name, s.Log())
		}
		if _, err := s.Client().Get(ctx, "full/0", false); err != nil {
			t.Fatalf("a read on %s while the disks are full: %v", s.Name, err)
		}
	}
	low := 0
	for _, s := range c.Servers {
		if err := s.Ready(); err != nil {
			low++
			if body := get(t, s, "/readyz"); !strings.Contains(body, "out of space") {
				t.Fatalf("%s's /readyz says %q", s.Name, body)
			}
			if body := get(t, s, "/metrics"); !strings.Contains(body, "pontoon_data_dir_space_low 1") {
				t.Fatalf("%s's metrics do not show the low space", s.Name)
			}
		}
	}
	if low == 0 {
		t.Fatal("no server says it is low on space")
	}
	if _, err := leader.Client().Delete(ctx, "full/0", client.Cond{}); err != nil {
		t.Fatalf("a delete while the disks are full: %v", err)
	}
	delete(acked, "full/0")

	for _, s := range c.Servers {
		if err := os.Remove(filepath.Join(s.DataDir, "filler")); err != nil {
			t.Fatal(err)
		}
	}
	cluster.Eventually(t, 10*time.Second, func() error {
		_, err := follower.Client().Put(ctx, "after", value, client.Cond{})
		return err
	})
	acked["after"] = true

	for _, s := range c.Servers {
		s.Kill()
	}
	c.Start()
	c.Leader(20 * time.Second)
	waitConverged(t, c)
	for _, s := range c.Servers {
		l, err := s.Client().List(ctx, "", 0, "", true)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, kv := range l.Items {
			if !bytes.Equal(kv.Value, value) {
				t.Fatalf("%s on %s holds %d bytes", kv.Key, s.Name, len(kv.Value))
			}
			got[kv.Key] = true
		}
		for k := range acked {
			if !got[k] {
				t.Fatalf("acknowledged %s is missing on %s after the restart", k, s.Name)
			}
		}
	}
}

func get(t *testing.T, s *cluster.Server, path string) string {
	t.Helper()
	resp, err := cluster.HTTPClient().Get(s.API() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
