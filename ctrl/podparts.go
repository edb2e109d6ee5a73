package ctrl

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// podParts lets the pods of the leader's informer cache share the parts
// that pods made from one template hold alike: their labels, their
// containers' resource lists and their tolerations. Pods are most of the
// leader's heap (a decoded pod is about 3.5 KB, and a cluster holds tens
// of thousands), and the pods of one ReplicaSet, Job or DaemonSet differ
// mostly in name, uid and status; sharing these parts took 96 MB off the
// leader's heap with the scheduling benchmark's 60,000 pods (heap
// profiles, docs/controllers.md). Objects in an informer cache are
// read-only to every handler and lister (client-go's contract, which the
// scheduler and the controllers keep: they deep-copy what they change),
// so pods may share them.
type podParts struct {
	mu          sync.Mutex
	labels      map[string]map[string]string
	lists       map[string]corev1.ResourceList
	tolerations map[string][]corev1.Toleration
}

// maxPodParts bounds each table; a table starts over when full, and the
// pods that share its entries keep them.
const maxPodParts = 4096

func newPodParts() *podParts {
	return &podParts{labels: map[string]map[string]string{}, lists: map[string]corev1.ResourceList{}, tolerations: map[string][]corev1.Toleration{}}
}

// share makes pod use the shared copy of each part an earlier pod held
// alike, and offers its own parts to the pods after it.
func (p *podParts) share(pod *corev1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pod.Labels = shared(p.labels, pod.Labels, labelsKey)
	pod.Spec.Tolerations = shared(p.tolerations, pod.Spec.Tolerations, tolerationsKey)
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			r := &cs[i].Resources
			r.Requests = shared(p.lists, r.Requests, resourceListKey)
			r.Limits = shared(p.lists, r.Limits, resourceListKey)
		}
	}
}

// shared returns the value in table under v's key, or v after putting it
// there. Empty values are left as they are: nil and empty differ to a
// deep comparison.
func shared[V any](table map[string]V, v V, key func(V) (string, bool)) V {
	k, ok := key(v)
	if !ok {
		return v
	}
	if s, found := table[k]; found {
		return s
	}
	if len(table) >= maxPodParts {
		clear(table)
	}
	table[k] = v
	return v
}

// partKey joins a part's fields with NUL, which no label, resource
// name, quantity or toleration field holds.
type partKey struct{ strings.Builder }

func (k *partKey) add(fields ...string) {
	for _, f := range fields {
		k.WriteString(f)
		k.WriteByte(0)
	}
}

// mapKey is the key of a map part, its entries in key order.
func mapKey[K ~string, V any](m map[K]V, value func(V) string) (string, bool) {
	if len(m) == 0 {
		return "", false
	}
	var k partKey
	for _, name := range slices.Sorted(maps.Keys(m)) {
		k.add(string(name), value(m[name]))
	}
	return k.String(), true
}

func labelsKey(m map[string]string) (string, bool) {
	return mapKey(m, func(v string) string { return v })
}

func resourceListKey(l corev1.ResourceList) (string, bool) {
	return mapKey(l, func(q resource.Quantity) string { return q.String() })
}

func tolerationsKey(ts []corev1.Toleration) (string, bool) {
	if len(ts) == 0 {
		return "", false
	}
	var k partKey
	for _, t := range ts {
		seconds := ""
		if t.TolerationSeconds != nil {
			seconds = strconv.FormatInt(*t.TolerationSeconds, 10)
		}
		k.add(t.Key, string(t.Operator), t.Value, string(t.Effect), seconds)
	}
	return k.String(), true
}
