package ctrl

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// podParts lets the pods of the leader's informer cache share the parts
// that pods made from one template hold alike: their labels, their
// containers' resource lists and their tolerations. Pods are most of the
// leader's heap (a decoded pod is about 3.5 KB, and a cluster holds tens
// of thousands), and the pods of one ReplicaSet, Job or DaemonSet differ
// mostly in name, uid and status; the parts shared here were about 1.2 KB
// of every pod of the scheduling benchmark. Objects in an informer cache
// are read-only to every handler and lister (client-go's contract, which
// the scheduler and the controllers keep: they deep-copy what they
// change), so pods may share them.
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

// The keys join a part's fields with NUL, which no label, resource name,
// quantity or toleration field holds.

func labelsKey(m map[string]string) (string, bool) {
	if len(m) == 0 {
		return "", false
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	return b.String(), true
}

func resourceListKey(l corev1.ResourceList) (string, bool) {
	if len(l) == 0 {
		return "", false
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(l)) {
		q := l[name]
		b.WriteString(string(name))
		b.WriteByte(0)
		b.WriteString(q.String())
		b.WriteByte(0)
	}
	return b.String(), true
}

func tolerationsKey(ts []corev1.Toleration) (string, bool) {
	if len(ts) == 0 {
		return "", false
	}
	var b strings.Builder
	for _, t := range ts {
		for _, f := range []string{t.Key, string(t.Operator), t.Value, string(t.Effect)} {
			b.WriteString(f)
			b.WriteByte(0)
		}
		if t.TolerationSeconds != nil {
			b.WriteString(strconv.FormatInt(*t.TolerationSeconds, 10))
		}
		b.WriteByte(0)
	}
	return b.String(), true
}
