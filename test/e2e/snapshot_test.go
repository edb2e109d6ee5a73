package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

func TestSnapshotSaveInspectRestore(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	leader := c.Leader(20 * time.Second)
	follower := c.Others(leader)[0]
	ctx := context.Background()
	waitSystemObjects(t, leader)
	for _, k := range []string{"a", "b", "c"} {
		if _, err := leader.Client().Put(ctx, k, []byte("saved"), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "snap.db")
	out, stderr, code := c.CLI(follower, "snapshot", "save", file)
	if code != 0 || !strings.Contains(out, "saved snapshot") {
		t.Fatalf("save: exit %d: %s %s", code, out, stderr)
	}
	out, stderr, code = c.CLI(follower, "snapshot", "inspect", file)
	if code != 0 {
		t.Fatalf("inspect: %s", stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "INDEX TERM SIZE OBJECTS" {
		t.Fatalf("inspect printed %q", out)
	}
	// a, b, c, the cluster ID, the leader marker, the four system
	// namespaces and their default service accounts, the two system
	// priority classes, the default ServiceCIDR, the kubernetes Service
	// with its ClusterIP's IPAddress, Endpoints and EndpointSlice, the
	// kube-dns Service with its ClusterIP's IPAddress.
	if f := strings.Fields(lines[1]); f[3] != "22" {
		t.Fatalf("inspect counts %s objects, want 22: %q", f[3], out)
	}

	// Change everything, then restore through another follower.
	leader.Client().Delete(ctx, "a", client.Cond{})
	leader.Client().Put(ctx, "b", []byte("changed"), client.Cond{})
	leader.Client().Put(ctx, "d", []byte("new"), client.Cond{})
	other := c.Others(leader)[1]
	if out, stderr, code := c.CLI(other, "snapshot", "restore", file); code != 0 {
		t.Fatalf("restore: exit %d: %s %s", code, out, stderr)
	}
	for _, s := range c.Servers {
		for k, want := range map[string]string{"a": "saved", "b": "saved", "d": ""} {
			kv, err := s.Client().Get(ctx, k, false)
			if want == "" {
				if client.Reason(err) != "NotFound" {
					t.Fatalf("%s: %s survived the restore: %v", s.Name, k, err)
				}
				continue
			}
			if err != nil || string(kv.Value) != want {
				t.Fatalf("%s: %s = %q (%v) after restore, want %q", s.Name, k, kv.Value, err, want)
			}
		}
	}
	if _, err := leader.Client().Put(ctx, "after", []byte("restore"), client.Cond{}); err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	waitConverged(t, c)

	// A truncated or damaged file is refused and the cluster is untouched.
	before, _ := leader.Client().Digest(ctx)
	good, _ := os.ReadFile(file)
	for name, b := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"damaged":   append(append([]byte{}, good[:100]...), append([]byte("XXXX"), good[104:]...)...),
	} {
		bad := filepath.Join(dir, name)
		os.WriteFile(bad, b, 0o600)
		for _, cmd := range [][]string{{"snapshot", "inspect", bad}, {"snapshot", "restore", bad}} {
			_, stderr, code := c.CLI(follower, cmd...)
			if code == 0 || !strings.Contains(stderr, "invalid snapshot") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("%s %s: exit %d, %q", strings.Join(cmd[:2], " "), name, code, stderr)
			}
		}
	}
	after, _ := leader.Client().Digest(ctx)
	if after != before {
		t.Fatalf("a refused snapshot changed the cluster: %v -> %v", before, after)
	}
}

// TestSnapshotsFollowTheStoreSize: a snapshot copies the whole store, so
// Raft takes the next one only after twice as many log entries as the
// store holds objects, never fewer than --raft-snapshot-threshold; a
// restart keeps that pace.
func TestSnapshotsFollowTheStoreSize(t *testing.T) {
	c := newCluster(t, 1, 47, "--raft-snapshot-threshold", "64", "--raft-snapshot-interval", "100ms")
	c.Start()
	s := c.Leader(20 * time.Second)
	ctx := context.Background()
	m := metrics(t, s)
	for _, name := range []string{"pontoon_raft_snapshot_threshold", "pontoon_raft_last_snapshot_index", "pontoon_fsm_keys"} {
		if _, ok := m[name]; !ok {
			t.Fatalf("/metrics has no %s", name)
		}
	}
	if got := m["pontoon_raft_snapshot_threshold"]; got != 64 {
		t.Fatalf("threshold of a near-empty store: %v, want 64", got)
	}
	put := func(i int) {
		t.Helper()
		if _, err := s.Client().Put(ctx, fmt.Sprint("k", i%500), []byte("v"), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 500 {
		put(i)
	}
	cluster.Eventually(t, 10*time.Second, func() error {
		if m := metrics(t, s); m["pontoon_raft_snapshot_threshold"] != 2*m["pontoon_fsm_keys"] {
			return fmt.Errorf("threshold %v with %v objects stored", m["pontoon_raft_snapshot_threshold"], m["pontoon_fsm_keys"])
		}
		return nil
	})
	// Rewriting the same keys, the log reaches the threshold.
	for i := 0; i%10 != 0 || metrics(t, s)["pontoon_raft_last_snapshot_index"] == 0; i++ {
		if i > 3000 {
			t.Fatal("no snapshot after 3,000 more entries")
		}
		put(i)
	}
	// Restarted, the server paces its snapshots from the store it opens,
	// with no snapshot check of before still under way.
	s.Stop()
	s.Start()
	c.Leader(20 * time.Second)
	m = metrics(t, s)
	keys, last := m["pontoon_fsm_keys"], m["pontoon_raft_last_snapshot_index"]
	for i := 0; ; i++ {
		if i > 5*int(keys) {
			t.Fatalf("no snapshot after %d more entries", i)
		}
		put(i)
		if i%10 != 0 {
			continue
		}
		if next := metrics(t, s)["pontoon_raft_last_snapshot_index"]; next != last {
			if next-last < 2*keys {
				t.Fatalf("snapshot at index %v, %v entries after the one at %v; want at least %v (twice the objects stored)", next, next-last, last, 2*keys)
			}
			return
		}
	}
}

// metrics are the unlabelled metrics on s's /metrics, by name.
func metrics(t *testing.T, s *cluster.Server) map[string]float64 {
	t.Helper()
	_, _, body := raw(t, s, http.MethodGet, "/metrics", "", "", "")
	m := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		m[name] = f
	}
	return m
}

// TestRestoreKilledAnyMomentConverges kills every server at several
// moments of an operator's restore, then starts the followers first and
// the old leader last: every server ends on the same state, either the
// one before the restore or the restored one, serving linearizable reads.
// hashicorp/raft's own restore left the old leader on an uncommitted
// state with a hole in its log, for good.
func TestRestoreKilledAnyMomentConverges(t *testing.T) {
	// The moments the servers are killed at, after the restore is sent:
	// before it starts, while records are staged, around the commit and
	// after it.
	for _, delay := range []time.Duration{0, 40 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond, 3 * time.Second} {
		t.Run(delay.String(), func(t *testing.T) {
			c := newCluster(t, 3, 21, "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
			c.Start()
			leader := c.Leader(20 * time.Second)
			ctx := context.Background()
			value := []byte(strings.Repeat("s", 1024))
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < 3000; i += 16 {
						if _, err := leader.Client().Put(ctx, fmt.Sprint("bulk/", i), value, client.Cond{}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			put := func(k, v string) {
				t.Helper()
				if _, err := leader.Client().Put(ctx, k, []byte(v), client.Cond{}); err != nil {
					t.Fatal(err)
				}
			}
			put("state", "saved")
			put("only-saved", "yes")
			file := filepath.Join(t.TempDir(), "snap.db")
			f, _ := os.Create(file)
			if err := leader.Client().SaveSnapshot(ctx, f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			put("state", "changed")
			put("only-changed", "yes")
			if _, err := leader.Client().Delete(ctx, "only-saved", client.Cond{}); err != nil {
				t.Fatal(err)
			}

			restored := make(chan error, 1)
			go func() {
				f, _ := os.Open(file)
				defer f.Close()
				_, err := leader.Client().RestoreSnapshot(ctx, f)
				restored <- err
			}()
			// Not a wait for state: the moment of the crash is the point.
			time.Sleep(delay)
			for _, s := range c.Servers {
				s.Kill()
			}
			t.Logf("killed %v after the restore was sent; the restore answered %v", delay, func() error {
				select {
				case err := <-restored:
					return err
				default:
					return errors.New("nothing yet")
				}
			}())
			for _, s := range c.Others(leader) {
				s.Start()
			}
			leader.Start()
			c.Leader(30 * time.Second)
			waitConverged(t, c)

			var states []string
			for _, s := range c.Servers {
				kv, err := s.Client().Get(ctx, "state", false)
				if err != nil {
					t.Fatalf("a linearizable read on %s: %v", s.Name, err)
				}
				_, saved := s.Client().Get(ctx, "only-saved", false)
				_, changed := s.Client().Get(ctx, "only-changed", false)
				switch {
				case string(kv.Value) == "saved" && saved == nil && client.Reason(changed) == metav1.StatusReasonNotFound,
					string(kv.Value) == "changed" && changed == nil && client.Reason(saved) == metav1.StatusReasonNotFound:
				default:
					t.Fatalf("%s holds a mix: state %q, only-saved %v, only-changed %v", s.Name, kv.Value, saved, changed)
				}
				if err := s.Ready(); err != nil {
					t.Fatalf("%s is not ready: %v", s.Name, err)
				}
				states = append(states, string(kv.Value))
			}
			t.Logf("every server on the %s state", states[0])
		})
	}
}

// TestSecretsEncryptedAtRest: with an EncryptionConfiguration, a Secret
// is ciphertext in the Raft log and in `snapshot save` files, reads back
// as written through every server, and moves to a new key as
// kube-apiserver's documentation rotates one: the new key first on every
// server, then every Secret rewritten by an update that changes nothing,
// then the old key dropped.
func TestSecretsEncryptedAtRest(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "encryption.yaml")
	keys := map[string]string{"key1": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)),
		"key2": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))}
	writeConfig := func(names ...string) {
		y := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n"
		for _, n := range names {
			y += fmt.Sprintf("      - {name: %s, secret: %s}\n", n, keys[n])
		}
		if err := os.WriteFile(conf, []byte(y+"  - identity: {}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("key1")
	c := newCluster(t, 3, 21, "--encryption-provider-config", conf)
	c.Start()
	leader := c.Leader(20 * time.Second)
	waitSystemObjects(t, leader)
	ctx := context.Background()
	const plain = "s3cret-at-rest"
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Data: map[string][]byte{"password": []byte(plain)}}
	if _, err := leader.Clientset().CoreV1().Secrets("default").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readsBack := func() {
		t.Helper()
		for _, s := range c.Servers {
			cluster.Eventually(t, 10*time.Second, func() error {
				got, err := s.Clientset().CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
				if err != nil || string(got.Data["password"]) != plain {
					return fmt.Errorf("%s reads the secret as %v (%v)", s.Name, got, err)
				}
				return nil
			})
		}
	}
	readsBack()
	// A snapshot saved through a follower does not show the value.
	file := filepath.Join(t.TempDir(), "snap.db")
	if out, stderr, code := c.CLI(c.Others(leader)[0], "snapshot", "save", file); code != 0 {
		t.Fatalf("save: exit %d: %s %s", code, out, stderr)
	}
	if b, err := os.ReadFile(file); err != nil || bytes.Contains(b, []byte(plain)) || !bytes.Contains(b, []byte("k8s:enc:aescbc:v1:key1:")) {
		t.Fatalf("the snapshot (%v) holds the Secret's value, or nothing encrypted with key1", err)
	}

	restartAll := func() {
		t.Helper()
		for _, s := range c.Servers {
			s.Stop()
		}
		for _, s := range c.Servers {
			s.Start()
		}
		leader = c.Leader(20 * time.Second)
	}
	writeConfig("key2", "key1")
	restartAll()
	readsBack()
	// An update that changes nothing rewrites a Secret stored with a key
	// that is no longer the first.
	cur, err := leader.Clientset().CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Clientset().CoreV1().Secrets("default").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	writeConfig("key2")
	restartAll()
	readsBack()

	// The Raft log never held the value: the Secret was written with
	// key1, then rewritten with key2.
	for _, s := range c.Servers {
		s.Stop()
	}
	cmds, err := c.Servers[0].Commands(math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	var writes []string
	for _, cmd := range cmds {
		for _, op := range cmd.Txn.Ops {
			if bytes.Contains(op.Value, []byte(plain)) {
				t.Fatalf("log entry %d holds the Secret's value in plain text at %s", cmd.Index, op.Key)
			}
			if op.Key == "/registry/core/secrets/default/db" {
				writes = append(writes, string(op.Value[:min(len(op.Value), len("k8s:enc:aescbc:v1:key1:"))]))
			}
		}
	}
	if !slices.Equal(writes, []string{"k8s:enc:aescbc:v1:key1:", "k8s:enc:aescbc:v1:key2:"}) {
		t.Fatalf("the Secret was written as %q, want with key1 then key2", writes)
	}
}
