package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// TestReadAfterWriteOnAnotherServer: a write acknowledged by one server is
// seen by a linearizable read issued afterwards on any other server.
func TestReadAfterWriteOnAnotherServer(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	c.Leader(20 * time.Second)
	ctx := context.Background()
	for i := range 300 {
		w, r := c.Servers[i%3], c.Servers[(i+1+i/3%2)%3]
		v := fmt.Sprint("v", i)
		if _, err := w.Client().Put(ctx, "rw", []byte(v), client.Cond{}); err != nil {
			t.Fatal(err)
		}
		kv, err := r.Client().Get(ctx, "rw", false)
		if err != nil || string(kv.Value) != v {
			t.Fatalf("write %s via %s, read via %s: %q %v", v, w.Name, r.Name, kv.Value, err)
		}
	}
}

// TestPagedListAtOneRevision lists with limit/continue while another client
// writes: every page is at the first page's revision.
func TestPagedListAtOneRevision(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	c.Leader(20 * time.Second)
	ctx := context.Background()
	cl := c.Servers[0].Client()
	for i := range 50 {
		if _, err := cl.Put(ctx, fmt.Sprintf("p/%02d", i), []byte("before"), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Servers[1].Client().List(ctx, "p/", 10, "", false)
	if err != nil || len(page.Items) != 10 || page.Continue == "" {
		t.Fatalf("first page: %+v %v", page, err)
	}
	for i := range 50 {
		cl.Put(ctx, fmt.Sprintf("p/%02d", i), []byte("after"), client.Cond{})
	}
	n := len(page.Items)
	for page.Continue != "" {
		// Later pages may come from any server: the revision is in the token.
		page, err = c.Servers[n/10%3].Client().List(ctx, "p/", 10, page.Continue, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range page.Items {
			if string(kv.Value) != "before" {
				t.Fatalf("%s on a later page shows %q, written after the listing began", kv.Key, kv.Value)
			}
		}
		n += len(page.Items)
	}
	if n != 50 {
		t.Fatalf("pages held %d keys, want 50", n)
	}
	if _, err := cl.List(ctx, "p/", 10, "bm90IGEgdG9rZW4", false); client.Reason(err) != "BadRequest" {
		t.Fatalf("a bad continue token: %v", err)
	}
}

func TestErrorsAreStatuses(t *testing.T) {
	c := newCluster(t, 1, 45)
	c.Start()
	c.Leader(20 * time.Second)
	ctx := context.Background()
	cl := c.Servers[0].Client()
	if _, err := cl.Put(ctx, "x", []byte("1"), client.Cond{Create: true}); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		err    error
		reason string
	}{
		"create existing": {err: second(cl.Put(ctx, "x", []byte("2"), client.Cond{Create: true})), reason: "AlreadyExists"},
		"stale revision":  {err: second(cl.Put(ctx, "x", []byte("2"), client.Cond{Revision: 1})), reason: "Conflict"},
		"update missing":  {err: second(cl.Put(ctx, "y", []byte("2"), client.Cond{Update: true})), reason: "NotFound"},
		"delete missing":  {err: second(cl.Delete(ctx, "y", client.Cond{})), reason: "NotFound"},
		"too large":       {err: second(cl.Put(ctx, "big", make([]byte, 3<<19+1), client.Cond{})), reason: "RequestEntityTooLarge"},
	} {
		if got := client.Reason(tc.err); string(got) != tc.reason {
			t.Errorf("%s: reason %q (%v), want %s", name, got, tc.err, tc.reason)
		}
	}
	kv, err := cl.Get(ctx, "x", false)
	if err != nil || string(kv.Value) != "1" {
		t.Fatalf("refused writes changed x: %q %v", kv.Value, err)
	}
}

func second[T any](_ T, err error) error { return err }

// TestMemoryLimitFromCgroup starts a server in a memory cgroup of 1 GiB
// that the test makes: the server's Go runtime takes 90% of it as its
// memory limit (GOMEMLIMIT), so its collector works harder before the
// OOM killer would.
func TestMemoryLimitFromCgroup(t *testing.T) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		t.Skip("GOMEMLIMIT is set in the environment; the server honours it instead")
	}
	dir := memoryCgroup(t, 1<<30)
	script := filepath.Join(t.TempDir(), "pontoon-in-cgroup")
	err := os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+filepath.Join(dir, "cgroup.procs")+"\nexec "+bin+" \"$@\"\n"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	c := cluster.New(t, cluster.Options{Bin: script, Servers: 1, BaseIP: 47})
	c.Start()
	c.Leader(20 * time.Second)
	if _, _, metrics := raw(t, c.Servers[0], http.MethodGet, "/metrics", "", "", ""); !strings.Contains(metrics, "go_gc_gomemlimit_bytes 9.66367641e+08") {
		t.Fatalf("/metrics has no memory limit of 90%% of 1 GiB:\n%s", grepLines(metrics, "gomemlimit"))
	}
}

// memoryCgroup makes a memory cgroup with this limit below the test's own
// (cgroup v1 or v2) and returns its directory; it is removed when the
// test ends, after the processes the test started in it.
func memoryCgroup(t *testing.T, limit int64) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no cgroups here: %v", err)
	}
	var base, file string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case f[1] == "memory":
			base, file = filepath.Join("/sys/fs/cgroup/memory", f[2]), "memory.limit_in_bytes"
		case f[0] == "0" && f[1] == "" && base == "":
			base, file = filepath.Join("/sys/fs/cgroup", f[2]), "memory.max"
		}
	}
	if base == "" {
		t.Skip("no memory cgroup in /proc/self/cgroup")
	}
	dir := filepath.Join(base, fmt.Sprintf("pontoon-e2e-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup here: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.WriteFile(filepath.Join(dir, file), []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Skipf("cannot limit the memory of a cgroup here: %v", err)
	}
	return dir
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestHealthAndMetrics(t *testing.T) {
	c := newCluster(t, 1, 46)
	c.Start()
	c.Leader(20 * time.Second)
	if _, err := c.Servers[0].Client().Put(context.Background(), "m", nil, client.Cond{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		if code, _, body := raw(t, c.Servers[0], http.MethodGet, p, "", "", ""); code != http.StatusOK || body != "ok" {
			t.Fatalf("%s: %d %q", p, code, body)
		}
	}
	_, _, metrics := raw(t, c.Servers[0], http.MethodGet, "/metrics", "", "", "")
	want := []string{"pontoon_raft_state 2", "pontoon_raft_is_leader 1", "pontoon_raft_apply_duration_seconds_bucket",
		"pontoon_fsm_applied_index", "pontoon_fsm_keys", "pontoon_watch_history_events", "pontoon_raft_commit_index"}
	for _, m := range want {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics has no %q", m)
		}
	}
}
