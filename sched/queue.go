package sched

import (
	"container/heap"
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
)

// Backoff of a pod that did not fit, as kube-scheduler's defaults: it is
// retried after a cluster change, but not sooner than this after its last
// attempt, and at the latest after maxUnschedulable.
const (
	initialBackoff   = time.Second
	maxBackoff       = 10 * time.Second
	maxUnschedulable = 5 * time.Minute
)

// entry is a pending pod the queue knows.
type entry struct {
	pod     *corev1.Pod
	key     string
	added   time.Time
	index   int // in the active heap; -1 when not there
	state   entryState
	tries   int
	failed  time.Time
	retryOn bool // the cluster changed since the pod last failed
}

type entryState int

const (
	active        entryState = iota // waiting for a cycle
	inFlight                        // in a cycle or being bound
	unschedulable                   // failed; waiting for a change
)

// queue holds the pods waiting for a node: the active ones by priority,
// then by age, and the unschedulable ones until a change in the cluster
// may let them fit, as kube-scheduler's scheduling queue does.
type queue struct {
	mu      sync.Mutex
	wake    chan struct{} // signalled when a pod becomes active
	entries map[string]*entry
	heap    activeHeap
	now     func() time.Time
}

func newQueue() *queue {
	return &queue{wake: make(chan struct{}, 1), entries: map[string]*entry{}, now: time.Now}
}

// add queues a new pending pod, or updates the pod of a known one.
func (q *queue) add(pod *corev1.Pod, key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.entries[key]; ok {
		e.pod = pod
		if e.index >= 0 {
			heap.Fix(&q.heap, e.index)
		}
		return
	}
	e := &entry{pod: pod, key: key, added: q.now(), index: -1}
	q.entries[key] = e
	q.activate(e)
}

func (q *queue) activate(e *entry) {
	e.state = active
	heap.Push(&q.heap, e)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// remove forgets a pod that is bound or gone.
func (q *queue) remove(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.entries[key]
	if !ok {
		return
	}
	delete(q.entries, key)
	if e.index >= 0 {
		heap.Remove(&q.heap, e.index)
	}
}

// pop waits for an active pod and marks it in flight.
func (q *queue) pop(ctx context.Context) (*entry, bool) {
	for {
		q.mu.Lock()
		if q.heap.Len() > 0 {
			e := heap.Pop(&q.heap).(*entry)
			e.state = inFlight
			q.mu.Unlock()
			return e, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.wake:
		}
	}
}

// failed parks a pod whose cycle or binding failed until the cluster
// changes and its backoff has passed.
func (q *queue) failed(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.entries[key]
	if !ok || e.state != inFlight {
		return
	}
	e.state, e.tries, e.failed = unschedulable, e.tries+1, q.now()
}

// clusterChanged marks every unschedulable pod, and those in flight, for
// another try: a node or a freed allocation may make them fit.
func (q *queue) clusterChanged() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.entries {
		if e.state != active {
			e.retryOn = true
		}
	}
}

// flush moves back to active the unschedulable pods that are due.
func (q *queue) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for _, e := range q.entries {
		if e.state != unschedulable {
			continue
		}
		backoff := min(initialBackoff<<(e.tries-1), maxBackoff)
		if (e.retryOn && now.Sub(e.failed) >= backoff) || now.Sub(e.failed) >= maxUnschedulable {
			e.retryOn = false
			q.activate(e)
		}
	}
}

// run flushes the unschedulable pods until ctx ends.
func (q *queue) run(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			q.flush()
		}
	}
}

// activeHeap orders pods by priority, then by when they were queued.
type activeHeap []*entry

func (h activeHeap) Len() int { return len(h) }
func (h activeHeap) Less(i, j int) bool {
	pi, pj := corev1helpers.PodPriority(h[i].pod), corev1helpers.PodPriority(h[j].pod)
	if pi != pj {
		return pi > pj
	}
	return h[i].added.Before(h[j].added)
}
func (h activeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *activeHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *activeHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
