package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// failoverDialer connects to the first server of a list that answers,
// starting with the one that answered last: a client whose server died
// moves to another, as an agent does.
type failoverDialer struct {
	addrs   []string
	current atomic.Int32
}

func (d *failoverDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(cluster.ClientIP)}}
	start := int(d.current.Load())
	var err error
	for i := range d.addrs {
		n := (start + i) % len(d.addrs)
		var conn net.Conn
		if conn, err = dialer.DialContext(ctx, network, d.addrs[n]); err == nil {
			d.current.Store(int32(n))
			return conn, nil
		}
	}
	return nil, err
}

// seen is what an informer's handlers received, per object.
type seen struct {
	mu     sync.Mutex
	events map[string][]string // name -> "TYPE@rv"
	rvs    map[string][]uint64
}

func (s *seen) record(typ string, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	cm := obj.(*corev1.ConfigMap)
	rv, _ := strconv.ParseUint(cm.ResourceVersion, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[cm.Name] = append(s.events[cm.Name], fmt.Sprintf("%s@%d", typ, rv))
	s.rvs[cm.Name] = append(s.rvs[cm.Name], rv)
}

// TestInformerAcrossFailover runs a client-go informer on a follower while
// writes go through another server, kills the leader, then kills the
// server the informer watches: the informer resumes on another server from
// its resourceVersion, sees every acknowledged write once, and ends with a
// cache equal to a fresh list.
func TestInformerAcrossFailover(t *testing.T) {
	c := newCluster(t, 3, 61)
	c.Start()
	l := c.Leader(20 * time.Second)
	watched := c.Others(l)[0]
	writer := c.Others(l)[1]

	d := &failoverDialer{}
	for _, s := range append([]*cluster.Server{watched}, c.Others(watched)...) {
		d.addrs = append(d.addrs, s.IP+":6443")
	}
	cfg := watched.RESTConfig()
	cfg.Dial = d.DialContext
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"))
	inf := factory.Core().V1().ConfigMaps().Informer()
	got := &seen{events: map[string][]string{}, rvs: map[string][]uint64{}}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { got.record("ADD", obj) },
		UpdateFunc: func(_, obj any) { got.record("UPDATE", obj) },
		DeleteFunc: func(obj any) { got.record("DELETE", obj) },
	})
	stopInf := make(chan struct{})
	defer close(stopInf)
	cluster.Eventually(t, 20*time.Second, func() error {
		_, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		return err
	})
	factory.Start(stopInf)
	if !cache.WaitForCacheSync(stopInf, inf.HasSynced) {
		t.Fatal("informer did not sync")
	}

	// The writer creates, updates and deletes through its own server,
	// moving on when a request fails.
	wd := &failoverDialer{addrs: []string{writer.IP + ":6443", l.IP + ":6443", watched.IP + ":6443"}}
	wcfg := writer.RESTConfig()
	wcfg.Dial = wd.DialContext
	wcfg.Timeout = 5 * time.Second
	wcs := kubernetes.NewForConfigOrDie(wcfg)
	var mu sync.Mutex
	acked := map[string][]uint64{}
	var writes atomic.Int64
	ctx, stopWriting := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cms := wcs.CoreV1().ConfigMaps("default")
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("cm-%d", i%40)
			var rv string
			switch cur, err := cms.Get(ctx, name, metav1.GetOptions{}); {
			case err != nil:
				if out, err := cms.Create(ctx, configMap(name, map[string]string{"i": strconv.Itoa(i)}), metav1.CreateOptions{}); err == nil {
					rv = out.ResourceVersion
				}
			case i%7 == 0:
				if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err == nil {
					writes.Add(1)
				}
			default:
				cur.Data["i"] = strconv.Itoa(i)
				if out, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err == nil {
					rv = out.ResourceVersion
				}
			}
			if rv != "" {
				n, _ := strconv.ParseUint(rv, 10, 64)
				mu.Lock()
				acked[name] = append(acked[name], n)
				mu.Unlock()
				writes.Add(1)
			}
		}
	}()
	waitWrites := func(n int64) {
		t.Helper()
		target := writes.Load() + n
		cluster.Eventually(t, 30*time.Second, func() error {
			if w := writes.Load(); w < target {
				return fmt.Errorf("%d of %d writes", w, target)
			}
			return nil
		})
	}
	waitWrites(50)
	t.Logf("kill -9 the leader %s", l.Name)
	l.Kill()
	c.Leader(20 * time.Second)
	waitWrites(50)
	l.Start()
	t.Logf("kill -9 %s, the server the informer watches", watched.Name)
	watched.Kill()
	c.Leader(20 * time.Second)
	waitWrites(50)
	watched.Start()
	waitWrites(20)
	stopWriting()
	wg.Wait()

	// The cache ends equal to a fresh list. A write the writer gave up on
	// when it stopped may still commit, so the list is taken again until
	// both agree.
	cluster.Eventually(t, 20*time.Second, func() error {
		list, err := wcs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		want := map[string]string{}
		for _, cm := range list.Items {
			want[cm.Name] = cm.ResourceVersion
		}
		have := map[string]string{}
		for _, obj := range inf.GetStore().List() {
			cm := obj.(*corev1.ConfigMap)
			have[cm.Name] = cm.ResourceVersion
		}
		if fmt.Sprint(have) != fmt.Sprint(want) {
			return fmt.Errorf("cache %v, list %v", have, want)
		}
		return nil
	})
	got.mu.Lock()
	defer got.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for name, rvs := range got.rvs {
		if !sort.SliceIsSorted(rvs, func(i, j int) bool { return rvs[i] < rvs[j] }) {
			t.Errorf("%s: events out of order: %v", name, got.events[name])
		}
		for i := 1; i < len(rvs); i++ {
			if rvs[i] == rvs[i-1] {
				t.Errorf("%s: an event delivered twice: %v", name, got.events[name])
			}
		}
	}
	total := 0
	for name, rvs := range acked {
		for _, rv := range rvs {
			total++
			if !slices.Contains(got.rvs[name], rv) {
				t.Errorf("%s: acknowledged write at %d never reached the informer: %v", name, rv, got.events[name])
			}
		}
	}
	t.Logf("%d acknowledged writes, %d deletes, all seen once by the informer across two failovers", total, writes.Load()-int64(total))
}
