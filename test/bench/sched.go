package main

import (
	"context"
	"fmt"
	"log"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// The leader's duties benchmark: issue 4's figures. Nodes are Node
// objects with capacity and Ready status and no kubelet; their Leases are
// not renewed, so the servers run with a node grace period longer than
// the benchmark.
const schedNodes = 5000

type schedResult struct {
	runs      []schedRun
	failovers []time.Duration
	rss       memory
	pods      int
}

// schedRun is one batch of pending pods: how fast they were created and
// how fast they were bound, from the first create.
type schedRun struct {
	pods             int
	created, bound   time.Duration
	createdPerSecond float64
	boundPerSecond   float64
}

func measureSched(r *cluster.Runner, bin string, cfg config) schedResult {
	c := cluster.New(r, cluster.Options{Bin: bin, Servers: 3, BaseIP: 51,
		Args: []string{"--log-level", "warn", "--node-monitor-grace-period", "1h"}})
	c.Start()
	c.Leader(30 * time.Second)
	clients := make([]*kubernetes.Clientset, 3)
	for i, s := range c.Servers {
		clients[i] = clientsetFor(s, runtime.ContentTypeProtobuf, 30*time.Second)
	}
	ctx := context.Background()
	cluster.Eventually(r, 30*time.Second, func() error {
		_, err := clients[0].CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	var res schedResult

	res.failovers = measureControllerFailover(r, c, cfg.rounds)

	res32 := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")}
	rate := populate(schedNodes, func(client, i int) error {
		cs := clients[client%3]
		name := fmt.Sprintf("node-%04d", i)
		_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{corev1.LabelHostname: name, corev1.LabelTopologyZone: fmt.Sprintf("zone-%d", i%3)}}}, metav1.CreateOptions{})
		if err != nil {
			if _, getErr := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); getErr != nil {
				return err
			}
		}
		status := fmt.Sprintf(`{"status":{"capacity":%s,"allocatable":%s,"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
			quantities(res32), quantities(res32), time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
		_, err = cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(status), metav1.PatchOptions{}, "status")
		return err
	})
	log.Printf("sched: %d nodes registered at %.0f/s", schedNodes, rate)

	// The memory goal is for 50,000 pods: measured after that run, before
	// the 10,000 pending pods of the next go on top.
	for _, n := range []int{50000, 10000} {
		run := schedulePods(r, c, clients, fmt.Sprintf("sched-%dk", n/1000), n)
		res.runs = append(res.runs, run)
		log.Printf("sched: %d pods: created at %.0f/s, all bound after %v: %.0f pods/s", n, run.createdPerSecond, run.bound.Round(time.Millisecond), run.boundPerSecond)
		if res.pods == 0 {
			res.pods = n
			res.rss = memoryOf(c.Leader(30 * time.Second).PID())
			log.Printf("sched: leader RSS with %d nodes and %d pods: %d MiB", schedNodes, n, res.rss.rss>>20)
		}
	}
	for _, s := range c.Servers {
		s.Kill()
	}
	return res
}

func quantities(l corev1.ResourceList) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, fmt.Sprintf("%q:%q", k, v.String()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// schedulePods creates n pods in a namespace with 64 clients spread over
// the servers while a watch on a follower counts them bound.
func schedulePods(r *cluster.Runner, c *cluster.Cluster, clients []*kubernetes.Clientset, ns string, n int) schedRun {
	ctx := context.Background()
	createNamespace(clients[0], ns)
	follower := c.Others(c.Leader(30 * time.Second))[0]
	wc := clientsetFor(follower, runtime.ContentTypeProtobuf, 0)
	w, err := wc.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		r.Fatalf("watch pods: %v", err)
	}
	defer w.Stop()
	var bound atomic.Int64
	done := make(chan time.Time, 1)
	go func() {
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || p.Spec.NodeName == "" || seen[p.Name] {
				continue
			}
			seen[p.Name] = true
			if bound.Add(1) == int64(n) {
				done <- time.Now()
				return
			}
		}
	}()
	start := time.Now()
	populate(n, func(client, i int) error {
		_, err := clients[client%3].CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Labels: map[string]string{"app": "sched"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			if _, getErr := clients[client%3].CoreV1().Pods(ns).Get(ctx, fmt.Sprintf("pod-%05d", i), metav1.GetOptions{}); getErr == nil {
				return nil
			}
		}
		return err
	})
	created := time.Since(start)
	var end time.Time
	select {
	case end = <-done:
	case <-time.After(10 * time.Minute):
		r.Fatalf("sched: only %d of %d pods bound after 10 minutes", bound.Load(), n)
	}
	run := schedRun{pods: n, created: created, bound: end.Sub(start)}
	run.createdPerSecond = float64(n) / created.Seconds()
	run.boundPerSecond = float64(n) / run.bound.Seconds()
	return run
}

// measureControllerFailover kill -9s the leader, scales a Deployment
// through a survivor as soon as one accepts writes, and times from the
// kill to the first write of the next leader's controllers (the
// ReplicaSet following the scale), over rounds rounds.
func measureControllerFailover(r *cluster.Runner, c *cluster.Cluster, rounds int) []time.Duration {
	ctx := context.Background()
	l := c.Leader(30 * time.Second)
	cs := clientsetFor(c.Others(l)[0], runtime.ContentTypeProtobuf, 5*time.Second)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "failover"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "failover"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "failover"}},
			Spec: corev1.PodSpec{SchedulerName: "none", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		r.Fatalf("create the failover deployment: %v", err)
	}
	var out []time.Duration
	for round := range rounds {
		l := c.Leader(30 * time.Second)
		survivor := c.Others(l)[round%2]
		cs := clientsetFor(survivor, runtime.ContentTypeProtobuf, 5*time.Second)
		replicas := int32(2 + round%2)
		cluster.Eventually(r, 30*time.Second, func() error {
			rs, err := cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=failover"})
			if err != nil || len(rs.Items) != 1 || *rs.Items[0].Spec.Replicas == replicas {
				return fmt.Errorf("replica sets not settled: %v", err)
			}
			return nil
		})
		t0 := time.Now()
		l.Kill()
		patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
		// Retried here every 10 ms: client-go would wait the second the
		// server's Retry-After asks for, and measure that instead.
		for {
			err := cs.AppsV1().RESTClient().Patch(types.MergePatchType).Namespace("default").Resource("deployments").Name("failover").
				Body(patch).MaxRetries(0).Do(ctx).Error()
			if err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		accepted := time.Since(t0)
		cluster.Eventually(r, 30*time.Second, func() error {
			rs, err := cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=failover", ResourceVersion: "0"})
			if err != nil || len(rs.Items) != 1 || *rs.Items[0].Spec.Replicas != replicas {
				return fmt.Errorf("replica set not scaled yet")
			}
			return nil
		})
		out = append(out, time.Since(t0))
		log.Printf("sched: failover round %d: controllers wrote %v after the kill (the scale was accepted after %v)", round+1, out[len(out)-1].Round(time.Millisecond), accepted.Round(time.Millisecond))
		l.Start()
	}
	c.Leader(30 * time.Second)
	return out
}

func (s schedResult) markdown(b *strings.Builder) {
	b.WriteString("\n## Scheduler and controllers (issue 4)\n\n")
	fmt.Fprintf(b, "3 Pontoon servers on 127.0.0.51-53, %d nodes (32 CPUs, 256 GiB, 110 pods each, three zones) registered through the API with no kubelet. Pods request 100m CPU and 128 MiB; they are created by 64 client-go goroutines spread over the servers while the scheduler runs, and counted bound from a watch on a follower. Throughput is pods over the time from the first create to the last binding, so it can be no higher than the create rate. kube-scheduler's own threshold for SchedulingBasic with 5,000 nodes is 680 to 810 pods/s; Nomad's C2M placed about 1,500 containers/s.\n\n", schedNodes)
	b.WriteString("| pending pods | created/s | all bound after | pods/s, creation to bound |\n|---|---|---|---|\n")
	for _, r := range s.runs {
		fmt.Fprintf(b, "| %d | %.0f | %s | %.0f |\n", r.pods, r.createdPerSecond, r.bound.Round(time.Millisecond), r.boundPerSecond)
	}
	p50, p99 := durations(append([]time.Duration(nil), s.failovers...))
	fmt.Fprintf(b, "\n### Controllers after a leader failure\n\n`kill -9` of the leader, then a Deployment scaled through a survivor as soon as it accepts writes (retried every 10 ms, not after the 1 s the server's Retry-After asks of client-go): time from the kill to the next leader's controllers scaling the ReplicaSet, over %d rounds. Kubernetes moves its controllers in 15 to 20 s (leader-election leases).\n\n| median | p99 |\n|---|---|\n| %s | %s |\n", len(s.failovers), ms(p50), ms(p99))
	fmt.Fprintf(b, "\n### Memory\n\nThe leader holding %d nodes and %d pods, with the scheduler's and the controllers' caches.\n\n| resident | anonymous | file-backed |\n|---|---|---|\n| %d MiB | %d MiB | %d MiB |\n",
		schedNodes, s.pods, s.rss.rss>>20, s.rss.anon>>20, s.rss.file>>20)
	b.WriteString("\n### Goals (issue 4)\n\n")
	for _, r := range s.runs {
		writeGoal(b, r.boundPerSecond >= 2000, fmt.Sprintf("at least 2,000 pods/s with %d pending pods (%.0f/s)", r.pods, r.boundPerSecond))
	}
	writeGoal(b, p99 < 2*time.Second, fmt.Sprintf("controllers back within 2 s of a failover, p99 (%s)", ms(p99)))
	writeGoal(b, s.rss.rss < 1<<30, fmt.Sprintf("leader memory with %d nodes and %d pods under 1 GiB (%d MiB)", schedNodes, s.pods, s.rss.rss>>20))
}
