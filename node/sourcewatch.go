package node

import (
	"context"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// source is a ConfigMap or Secret a pod's volumes show.
type source struct {
	secret          bool
	namespace, name string
}

// volumeSources are the ConfigMaps and Secrets the pod's volumes show.
func volumeSources(pod *corev1.Pod) []source {
	var out []source
	add := func(secret bool, name string) {
		s := source{secret, pod.Namespace, name}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			add(false, v.ConfigMap.Name)
		case v.Secret != nil:
			add(true, v.Secret.SecretName)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					add(false, src.ConfigMap.Name)
				}
				if src.Secret != nil {
					add(true, src.Secret.Name)
				}
			}
		}
	}
	return out
}

// sourceWatches keeps a watch on each ConfigMap and Secret that the pods
// of the node show in volumes, as the kubelet's watch-based manager does:
// one watch per object (field selector metadata.name, which is all a node
// may read), opened with the first pod that shows it and closed with the
// last; a change syncs those pods, which rewrite their volumes.
type sourceWatches struct {
	client  kubernetes.Interface
	enqueue func(podKey string)

	mu      sync.Mutex
	watches map[source]*sourceWatch
	// shown is what each pod shows, by pod key.
	shown map[string][]source
}

type sourceWatch struct {
	stop chan struct{}
	pods map[string]bool
	// store holds the object as the watch last saw it, once synced says
	// the first list is in.
	store  cache.Store
	synced func() bool
}

func newSourceWatches(client kubernetes.Interface, enqueue func(string)) *sourceWatches {
	return &sourceWatches{client: client, enqueue: enqueue, watches: map[source]*sourceWatch{}, shown: map[string][]source{}}
}

// track sets the sources the pod of key shows (none to forget it),
// opening and closing watches to match.
func (w *sourceWatches) track(ctx context.Context, key string, srcs []source) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.shown[key] {
		if slices.Contains(srcs, s) {
			continue
		}
		sw := w.watches[s]
		delete(sw.pods, key)
		if len(sw.pods) == 0 {
			close(sw.stop)
			delete(w.watches, s)
		}
	}
	for _, s := range srcs {
		sw, ok := w.watches[s]
		if !ok {
			sw = w.watch(ctx, s)
			w.watches[s] = sw
		}
		sw.pods[key] = true
	}
	if len(srcs) == 0 {
		delete(w.shown, key)
	} else {
		w.shown[key] = srcs
	}
}

// watch starts following one source, until its watch is closed or ctx
// ends.
func (w *sourceWatches) watch(ctx context.Context, s source) *sourceWatch {
	sw := &sourceWatch{stop: make(chan struct{}), pods: map[string]bool{}}
	var lw *cache.ListWatch
	obj := runtime.Object(&corev1.ConfigMap{})
	if s.secret {
		obj, lw = &corev1.Secret{}, namedListWatch(w.client.CoreV1().Secrets(s.namespace), s.name)
	} else {
		lw = namedListWatch(w.client.CoreV1().ConfigMaps(s.namespace), s.name)
	}
	changed := func(any) {
		w.mu.Lock()
		keys := make([]string, 0, len(sw.pods))
		for k := range sw.pods {
			keys = append(keys, k)
		}
		w.mu.Unlock()
		for _, k := range keys {
			w.enqueue(k)
		}
	}
	store, informer := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: obj,
		Handler: cache.ResourceEventHandlerFuncs{AddFunc: changed, UpdateFunc: func(_, o any) { changed(o) }, DeleteFunc: changed}})
	sw.store, sw.synced = store, informer.HasSynced
	go func() {
		stop := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
			case <-sw.stop:
			}
			close(stop)
		}()
		informer.Run(stop)
	}()
	return sw
}

// get is the source as its watch last saw it (nil when it does not
// exist); ok is false when no watch has listed it yet, and the caller
// reads it from the API instead.
func (w *sourceWatches) get(s source) (obj runtime.Object, ok bool) {
	w.mu.Lock()
	sw := w.watches[s]
	w.mu.Unlock()
	if sw == nil || !sw.synced() {
		return nil, false
	}
	item, exists, err := sw.store.GetByKey(s.namespace + "/" + s.name)
	if err != nil {
		return nil, false
	}
	if !exists {
		return nil, true
	}
	return item.(runtime.Object), true
}

// listWatcher is the list and watch of one kind's typed client.
type listWatcher[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// namedListWatch lists and watches the one object named name.
func namedListWatch[L runtime.Object](c listWatcher[L], name string) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return c.Watch(ctx, o)
		},
	}
}
