package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// The Kubernetes API benchmark: issue 3's figures, measured with client-go
// against a 3-server cluster. There is no kube-apiserver to run beside it
// on this machine; the reference figures for kube-apiserver 1.32
// on etcd 3.5 are quoted next to ours.
const (
	kubeWatchers    = 1000
	kubeWatchWrites = 200
	kubeListRuns    = 10
)

type kubeResult struct {
	creates      []latency // Protobuf, JSON
	createsTypes []string
	lists        []listResult
	watch        latency
	watchMissed  int64
	rss          memory
	cms, pods    int
	loadedPerSec float64
}

type listResult struct {
	name     string
	items    int
	p50, p99 time.Duration
}

func clientsetFor(s *cluster.Server, contentType string, timeout time.Duration) *kubernetes.Clientset {
	cfg := s.RESTConfig()
	cfg.Timeout = timeout
	if contentType == runtime.ContentTypeProtobuf {
		cfg.ContentType = contentType
		cfg.AcceptContentTypes = contentType
	}
	cfg.Transport = &http.Transport{DialContext: cfg.Dial, MaxIdleConnsPerHost: 2048}
	cfg.Dial = nil
	return kubernetes.NewForConfigOrDie(cfg)
}

// createNamespace creates a namespace and waits for its default
// ServiceAccount, which every pod created in it needs: a measurement that
// starts with pods does not include the controller's creating it.
func createNamespace(cs *kubernetes.Clientset, name string) {
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		log.Fatalf("create namespace %s: %v", name, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("namespace %s has no default service account after 30s: %v", name, err)
		}
	}
}

func benchConfigMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "yes"}},
		Data: map[string]string{"key": strings.Repeat("v", 256)}}
}

// populate creates n objects with 64 clients spread over the servers.
func populate(n int, create func(client, i int) error) float64 {
	var wg sync.WaitGroup
	var next atomic.Int64
	start := time.Now()
	for c := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				for err := create(c, i); err != nil; err = create(c, i) {
					log.Printf("populate: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

func measureKube(r *cluster.Runner, bin string, cfg config) kubeResult {
	c := cluster.New(r, cluster.Options{Bin: bin, Servers: 3, BaseIP: 41, Args: []string{"--log-level", "warn"}})
	c.Start()
	l := c.Leader(30 * time.Second)
	follower := c.Others(l)[0]
	var res kubeResult
	proto := make([]*kubernetes.Clientset, 3)
	for i, s := range c.Servers {
		proto[i] = clientsetFor(s, runtime.ContentTypeProtobuf, 30*time.Second)
	}
	ctx := context.Background()
	cluster.Eventually(r, 30*time.Second, func() error {
		_, err := proto[0].CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err
	})

	// LIST of 5,000 and 50,000 ConfigMaps, through a follower.
	createNamespace(proto[0], "list5k")
	createNamespace(proto[0], "list45k")
	res.loadedPerSec = populate(50000, func(client, i int) error {
		ns, name := "list45k", fmt.Sprintf("cm-%05d", i)
		if i < 5000 {
			ns = "list5k"
		}
		_, err := proto[client%3].CoreV1().ConfigMaps(ns).Create(ctx, benchConfigMap(name), metav1.CreateOptions{})
		return err
	})
	res.cms = 50000
	log.Printf("kube: loaded 50000 ConfigMaps at %.0f/s", res.loadedPerSec)
	fc := clientsetFor(follower, runtime.ContentTypeProtobuf, time.Minute)
	for _, lc := range []struct {
		name, ns, rv string
		items        int
	}{
		{"5,000 ConfigMaps, linearizable", "list5k", "", 5000},
		{"5,000 ConfigMaps, resourceVersion=0", "list5k", "0", 5000},
		{"50,000 ConfigMaps, linearizable", "", "", 50000},
		{"50,000 ConfigMaps, resourceVersion=0", "", "0", 50000},
	} {
		var ds []time.Duration
		for range kubeListRuns {
			t0 := time.Now()
			l, err := fc.CoreV1().ConfigMaps(lc.ns).List(ctx, metav1.ListOptions{ResourceVersion: lc.rv})
			if err != nil || len(l.Items) != lc.items {
				log.Fatalf("list %s: %v (%d items)", lc.name, err, len(l.Items))
			}
			ds = append(ds, time.Since(t0))
		}
		p50, p99 := durations(ds)
		res.lists = append(res.lists, listResult{name: lc.name, items: lc.items, p50: p50, p99: p99})
		log.Printf("kube: LIST %s: p50 %v, slowest %v", lc.name, p50, p99)
	}

	// Memory of one server holding 50,000 ConfigMaps and 10,000 pods.
	createNamespace(proto[0], "pods")
	populate(10000, func(client, i int) error {
		_, err := proto[client%3].CoreV1().Pods("pods").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", i), Labels: map[string]string{"app": "bench"}},
			// No scheduler serves them: this measures the API's memory, as
			// issue 3's reference does.
			Spec: corev1.PodSpec{SchedulerName: "none", Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}}}}, metav1.CreateOptions{})
		return err
	})
	res.pods = 10000
	res.rss = memoryOf(follower.PID())
	log.Printf("kube: follower RSS with 50000 ConfigMaps and 10000 pods: %d MiB (anonymous %d, file-backed %d)", res.rss.rss>>20, res.rss.anon>>20, res.rss.file>>20)

	res.watch, res.watchMissed = measureWatch(c, proto[0])
	log.Printf("kube: %d watchers: delivery p50 %v, p99 %v, %d missed", kubeWatchers, res.watch.p50, res.watch.p99, res.watchMissed)

	// Creates through the API with 16 client-go goroutines.
	for _, ct := range []string{runtime.ContentTypeProtobuf, runtime.ContentTypeJSON} {
		ns := "create-" + map[string]string{runtime.ContentTypeProtobuf: "protobuf", runtime.ContentTypeJSON: "json"}[ct]
		createNamespace(proto[0], ns)
		clients := make([]*kubernetes.Clientset, 3)
		for i, s := range c.Servers {
			clients[i] = clientsetFor(s, ct, 5*time.Second)
		}
		lat := load(16, cfg.duration, func(ctx context.Context, client, seq int) error {
			_, err := clients[client%3].CoreV1().ConfigMaps(ns).Create(ctx, benchConfigMap(fmt.Sprintf("c%d-%d", client, seq)), metav1.CreateOptions{})
			return err
		})
		res.creates, res.createsTypes = append(res.creates, lat), append(res.createsTypes, ct)
		log.Printf("kube: creates (%s): %.0f/s, p50 %v, p99 %v", ct, lat.perSec, lat.p50, lat.p99)
	}
	for _, s := range c.Servers {
		s.Kill()
	}
	return res
}

// measureWatch opens kubeWatchers watches spread over the servers, writes
// kubeWatchWrites objects one after the other, and measures the time from
// each write's acknowledgement to its delivery at every watcher.
func measureWatch(c *cluster.Cluster, writer *kubernetes.Clientset) (latency, int64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	createNamespace(writer, "watch")
	clients := make([]*kubernetes.Clientset, 3)
	for i, s := range c.Servers {
		clients[i] = clientsetFor(s, runtime.ContentTypeProtobuf, 0)
	}
	recv := make([][]int64, kubeWatchers)
	var ready, done sync.WaitGroup
	for w := range kubeWatchers {
		recv[w] = make([]int64, kubeWatchWrites)
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			// The bookmark that ends the (empty) initial events says the
			// server has opened the watch.
			isReady := sync.OnceFunc(ready.Done)
			defer isReady()
			wi, err := clients[w%3].CoreV1().ConfigMaps("watch").Watch(ctx, metav1.ListOptions{ResourceVersion: "0",
				SendInitialEvents: ptr.To(true), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, AllowWatchBookmarks: true})
			if err != nil {
				log.Printf("watcher %d: %v", w, err)
				return
			}
			defer wi.Stop()
			got := 0
			for ev := range wi.ResultChan() {
				if ev.Type == watch.Bookmark && ev.Object.(*corev1.ConfigMap).Annotations[metav1.InitialEventsAnnotationKey] == "true" {
					isReady()
				}
				if ev.Type != watch.Added {
					continue
				}
				var i int
				fmt.Sscanf(ev.Object.(*corev1.ConfigMap).Name, "w-%d", &i)
				recv[w][i] = time.Now().UnixNano()
				if got++; got == kubeWatchWrites {
					return
				}
			}
		}()
	}
	ready.Wait()
	acked := make([]int64, kubeWatchWrites)
	for i := range kubeWatchWrites {
		if _, err := writer.CoreV1().ConfigMaps("watch").Create(ctx, benchConfigMap(fmt.Sprintf("w-%d", i)), metav1.CreateOptions{}); err != nil {
			log.Fatalf("watch write: %v", err)
		}
		acked[i] = time.Now().UnixNano()
		time.Sleep(20 * time.Millisecond) // pacing: one write at a time, as the figure is per write
	}
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		cancel()
		<-finished
	}
	var all []time.Duration
	var missed int64
	for w := range kubeWatchers {
		for i := range kubeWatchWrites {
			if recv[w][i] == 0 {
				missed++
				continue
			}
			all = append(all, time.Duration(max(0, recv[w][i]-acked[i])))
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return latency{clients: kubeWatchers, p50: pct(all, 50), p99: pct(all, 99)}, missed
}

func (k kubeResult) markdown(b *strings.Builder) {
	b.WriteString("\n## Kubernetes API (issue 3)\n\n")
	b.WriteString("client-go 0.33 against 3 Pontoon servers on 127.0.0.41-43. No kube-apiserver can run beside it on this machine, so the reference column quotes the figures issue 3 gives for kube-apiserver 1.32 on etcd 3.5 on a machine like this one, measured the same way.\n\n")
	b.WriteString("### Creates (ConfigMaps, 16 client-go goroutines spread over the servers)\n\n| encoding | creates/s | p50 | p99 | kube-apiserver reference |\n|---|---|---|---|---|\n")
	for i, l := range k.creates {
		fmt.Fprintf(b, "| %s | %.0f | %s | %s | 680/s, p50 21 ms, p99 60 ms |\n", k.createsTypes[i], l.perSec, ms(l.p50), ms(l.p99))
	}
	fmt.Fprintf(b, "\n### LIST through a follower (Protobuf, %d runs)\n\n| list | median | slowest | kube-apiserver reference |\n|---|---|---|---|\n", kubeListRuns)
	for _, l := range k.lists {
		ref := ""
		if l.items == 5000 {
			ref = "about 60 ms"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", l.name, ms(l.p50), ms(l.p99), ref)
	}
	fmt.Fprintf(b, "\n### Watch delivery\n\n%d watchers spread over the 3 servers, %d creates one after the other: time from the create's acknowledgement to its delivery at each watcher (a delivery before the acknowledgement counts as 0).\n\n| p50 | p99 | deliveries missed |\n|---|---|---|\n| %s | %s | %d |\n",
		kubeWatchers, kubeWatchWrites, ms(k.watch.p50), ms(k.watch.p99), k.watchMissed)
	fmt.Fprintf(b, "\n### Memory\n\nOne follower holding %d ConfigMaps (256-byte values) and %d pods. kube-apiserver plus etcd hold about 480 MiB for 5,000 ConfigMaps.\n\n| resident | anonymous | file-backed |\n|---|---|---|\n| %d MiB | %d MiB | %d MiB |\n",
		k.cms, k.pods, k.rss.rss>>20, k.rss.anon>>20, k.rss.file>>20)
	b.WriteString("\n### Goals (issue 3)\n\n")
	goal := func(ok bool, text string) { writeGoal(b, ok, text) }
	for i, l := range k.creates {
		goal(l.perSec >= 2000 && l.p99 < 30*time.Millisecond, fmt.Sprintf("creates (%s) at least 2,000/s with p99 under 30 ms (%.0f/s, p99 %s)", k.createsTypes[i], l.perSec, ms(l.p99)))
	}
	goal(k.lists[0].p50 < 30*time.Millisecond, fmt.Sprintf("LIST of 5,000 under 30 ms (%s)", ms(k.lists[0].p50)))
	goal(k.watch.p99 < 50*time.Millisecond && k.watchMissed == 0, fmt.Sprintf("watch delivery p99 under 50 ms with %d watchers (%s)", kubeWatchers, ms(k.watch.p99)))
	goal(k.rss.rss < 600<<20, fmt.Sprintf("memory with 50,000 ConfigMaps and 10,000 pods under 600 MiB (%d MiB)", k.rss.rss>>20))
}
