package ctrl

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// lateLister is a pod lister after whose every list arrive runs: the
// informer showing a pod between the list and what the sync does next.
type lateLister struct {
	corelisters.PodLister
	arrive func()
}

func (l lateLister) Pods(ns string) corelisters.PodNamespaceLister {
	return lateNamespaceLister{l.PodLister.Pods(ns), l.arrive}
}

type lateNamespaceLister struct {
	corelisters.PodNamespaceLister
	arrive func()
}

func (l lateNamespaceLister) List(sel labels.Selector) ([]*corev1.Pod, error) {
	pods, err := l.PodNamespaceLister.List(sel)
	l.arrive()
	return pods, err
}

// A ReplicaSet sync that lists its pods just before the informer shows
// the last pod its expectations wait for makes no pod: it read the
// expectations (unsatisfied) before the list. Read after it, they would
// be satisfied by that pod, which the list lacks, and the sync would
// make it again (a leader's first syncs after a failover hit this).
func TestReplicaSetSyncReadsExpectationsBeforePods(t *testing.T) {
	var creates atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/pods") {
			creates.Add(1)
		}
		// Each write is answered with what was sent, as it was sent.
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}))
	defer api.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	podLabels := map[string]string{"app": "web"}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "rs-uid"},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}},
	}
	pod := func(name string) *corev1.Pod {
		p := podFromTemplate(&rs.Spec.Template, rs, replicaSetKind)
		p.Name = name
		return p
	}
	indexers := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	rsIndex, podIndex := cache.NewIndexer(cache.MetaNamespaceKeyFunc, indexers), cache.NewIndexer(cache.MetaNamespaceKeyFunc, indexers)
	if err := rsIndex.Add(rs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-0", "web-1"} {
		if err := podIndex.Add(pod(name)); err != nil {
			t.Fatal(err)
		}
	}

	const key = "default/web"
	c := &replicaSetController{replicaManager: replicaManager{client: client, expectations: newExpectations()}, replicaSets: appslisters.NewReplicaSetLister(rsIndex)}
	c.controller = newController("replicaset", quietConfig(t), c.sync)
	defer c.queue.ShutDown()
	// An earlier sync made web-2; the informer shows it, as an informer
	// does, in the store first and then to the handlers.
	c.expectations.expect(key, 1, nil)
	var once sync.Once
	c.pods = lateLister{PodLister: corelisters.NewPodLister(podIndex), arrive: func() {
		once.Do(func() {
			if err := podIndex.Add(pod("web-2")); err != nil {
				t.Error(err)
			}
			c.expectations.created(key)
		})
	}}

	if err := c.sync(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if n := creates.Load(); n != 0 {
		t.Fatalf("the sync made %d pods for a ReplicaSet of 3 with 3 pods", n)
	}
	// The next sync sees all three and makes none; with one gone, it makes
	// one (which shows that this test sees what a sync makes).
	if err := c.sync(t.Context(), key); err != nil || creates.Load() != 0 {
		t.Fatalf("the next sync: %d pods made (%v), want none", creates.Load(), err)
	}
	if err := podIndex.Delete(pod("web-0")); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(t.Context(), key); err != nil || creates.Load() != 1 {
		t.Fatalf("with a pod gone: %d pods made (%v), want one", creates.Load(), err)
	}
}
