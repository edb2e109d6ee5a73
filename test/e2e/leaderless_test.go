package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// TestFollowerWithoutLeader pauses the other two servers of a 3-server
// cluster: the remaining follower keeps serving resourceVersion=0 reads
// and its open watches, fails linearizable reads and writes with a 5xx
// Status within a bounded time, answers /readyz and /healthz with 503
// while /livez stays 200, and serves them again once the others are back.
func TestFollowerWithoutLeader(t *testing.T) {
	_, f, _ := kubeCluster(t, 71)
	c := f.Clientset()
	ctx := context.Background()
	if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, configMap("before", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The watch's client has no overall timeout, unlike requests.
	cfg := f.RESTConfig()
	cfg.Timeout = 0
	w, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := nextEvent(t, w); ev.Type != watch.Added {
		t.Fatalf("first event %s", ev.Type)
	}

	var paused []*cluster.Server
	for _, s := range f.Cluster().Others(f) {
		s.Signal(syscall.SIGSTOP)
		paused = append(paused, s)
	}
	defer func() {
		for _, s := range paused {
			s.Signal(syscall.SIGCONT)
		}
	}()

	if _, err := c.CoreV1().ConfigMaps("default").Get(ctx, "before", metav1.GetOptions{ResourceVersion: "0"}); err != nil {
		t.Fatalf("resourceVersion=0 read without a leader: %v", err)
	}
	// Raw requests: client-go would retry a 503 with Retry-After.
	for _, req := range []struct{ name, method, path, body string }{
		{"linearizable read", "GET", "/api/v1/namespaces/default/configmaps/before", ""},
		{"write", "POST", "/api/v1/namespaces/default/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"during"}}`},
	} {
		start := time.Now()
		code, _, body := raw(t, f, req.method, req.path, "application/json", "", req.body)
		took := time.Since(start)
		if code < 500 || !strings.Contains(body, `"kind":"Status"`) || took > 15*time.Second {
			t.Fatalf("%s without a leader: %d after %v: %s; want a 5xx Status within 15s", req.name, code, took, body)
		}
		t.Logf("%s without a leader: %d after %v: %s", req.name, code, took.Round(time.Millisecond), body)
	}
	// Alive, but not ready: a load balancer sends clients elsewhere.
	cluster.Eventually(t, 15*time.Second, func() error {
		for p, want := range map[string]int{"/livez": 200, "/readyz": 503, "/healthz": 503} {
			if code, _, body := raw(t, f, "GET", p, "", "", ""); code != want {
				return fmt.Errorf("%s without a leader: %d %s, want %d", p, code, body, want)
			}
		}
		return nil
	})
	select {
	case ev, ok := <-w.ResultChan():
		t.Fatalf("the open watch ended or failed without a leader: %v %v", ev, ok)
	default:
	}

	for _, s := range paused {
		s.Signal(syscall.SIGCONT)
	}
	paused = nil
	cluster.Eventually(t, 20*time.Second, func() error {
		_, err := c.CoreV1().ConfigMaps("default").Create(ctx, configMap("after", nil), metav1.CreateOptions{})
		return err
	})
	for {
		ev := nextEvent(t, w)
		if ev.Type == watch.Added && ev.Object.(metav1.Object).GetName() == "after" {
			break
		}
	}
}
