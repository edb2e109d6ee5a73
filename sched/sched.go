// Package sched is the scheduler the Raft leader runs: an ordinary
// client-go client that places pending pods on nodes and binds them
// through the pods/binding subresource.
//
// It works as kube-scheduler does, in a smaller frame. Informers feed a
// cache that is the scheduler's own view of allocations (every node with
// the pods bound or assumed to it), so a cycle never reads the cluster.
// One loop takes pods from a priority queue; for each it walks the nodes
// from where the last cycle stopped, keeps those that pass every filter
// until it has enough (kube-scheduler's adaptive percentage of nodes),
// scores them, assumes the pod onto the best one and hands the binding to
// a pool of binders, so bindings overlap and the Raft log batches them. A
// pod that fits nowhere gets kube-scheduler's FailedScheduling event and
// PodScheduled=False condition, may preempt lower-priority pods (whose
// room it then keeps from others of lower priority), and waits until
// nodes or pods change.
package sched

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// Name is the scheduler name pods ask for (spec.schedulerName).
const Name = corev1.DefaultSchedulerName

// binders is how many bindings may be in flight at once.
const binders = 64

// Scheduler places pending pods on nodes.
type Scheduler struct {
	client     kubernetes.Interface
	cache      *cache
	queue      *queue
	namespaces corelisters.NamespaceLister
	synced     []toolscache.InformerSynced
	recorder   record.EventRecorder
	logger     *slog.Logger
	next       int // where the next cycle starts walking the nodes
	work       chan func(context.Context)
}

// New makes a scheduler on the informers of f; the caller starts f.
func New(client kubernetes.Interface, f informers.SharedInformerFactory, recorder record.EventRecorder, logger *slog.Logger) *Scheduler {
	s := &Scheduler{client: client, cache: newCache(), queue: newQueue(), recorder: recorder,
		logger: logger, work: make(chan func(context.Context), binders)}
	pods, nodes, ns := f.Core().V1().Pods().Informer(), f.Core().V1().Nodes().Informer(), f.Core().V1().Namespaces()
	pods.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    s.podChanged,
		UpdateFunc: func(_, obj any) { s.podChanged(obj) },
		DeleteFunc: s.podDeleted,
	})
	nodes.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.nodeChanged(nil, obj.(*corev1.Node)) },
		UpdateFunc: func(old, obj any) {
			s.nodeChanged(old.(*corev1.Node), obj.(*corev1.Node))
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				s.cache.removeNode(n.Name)
			}
		},
	})
	s.namespaces = ns.Lister()
	s.synced = []toolscache.InformerSynced{pods.HasSynced, nodes.HasSynced, ns.Informer().HasSynced}
	return s
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

func (s *Scheduler) podChanged(obj any) {
	pod := obj.(*corev1.Pod)
	key := podKey(pod)
	switch {
	case terminal(pod):
		// A finished pod no longer holds what it requested.
		s.queue.remove(key)
		s.cache.removePod(key)
		s.cache.unnominate(key)
		s.queue.clusterChanged()
	case pod.Spec.NodeName != "":
		s.queue.remove(key)
		s.cache.unnominate(key)
		s.cache.setPod(pod)
	case pod.DeletionTimestamp != nil, len(pod.Spec.SchedulingGates) > 0:
		// A gated pod waits until its gates are removed, an update
		// that brings it back here.
		s.queue.remove(key)
		s.cache.unnominate(key)
	case pod.Spec.SchedulerName == Name:
		s.cache.nominate(pod)
		s.queue.add(pod, key)
	}
}

func (s *Scheduler) podDeleted(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	s.queue.remove(key)
	s.cache.removePod(key)
	s.cache.unnominate(key)
	if pod.Spec.NodeName != "" {
		s.queue.clusterChanged()
	}
}

// nodeChanged updates the cache and retries unschedulable pods when
// something the filters look at has changed (not on every heartbeat).
func (s *Scheduler) nodeChanged(old, node *corev1.Node) {
	s.cache.setNode(node)
	if old != nil && nodeReady(old) == nodeReady(node) && old.Spec.Unschedulable == node.Spec.Unschedulable &&
		equality.Semantic.DeepEqual(old.Labels, node.Labels) && equality.Semantic.DeepEqual(old.Spec.Taints, node.Spec.Taints) &&
		equality.Semantic.DeepEqual(old.Status.Allocatable, node.Status.Allocatable) {
		return
	}
	s.queue.clusterChanged()
}

func (s *Scheduler) nsLabels(name string) labels.Set {
	ns, err := s.namespaces.Get(name)
	if err != nil {
		return nil
	}
	return ns.Labels
}

// Run schedules pods until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	if !toolscache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return
	}
	var wg sync.WaitGroup
	for range binders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case w := <-s.work:
					w(ctx)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.queue.run(ctx)
	}()
	for s.scheduleOne(ctx) {
	}
	wg.Wait()
}

// scheduleOne runs one cycle; it returns false when ctx has ended.
func (s *Scheduler) scheduleOne(ctx context.Context) bool {
	e, ok := s.queue.pop(ctx)
	if !ok {
		return false
	}
	d, err := s.cache.decide(e.pod, s.nsLabels, s.next)
	if err != nil {
		s.logger.Error("scheduling failed; the pod is retried with backoff", "pod", podKey(e.pod), "err", err)
		s.recorder.Eventf(e.pod, corev1.EventTypeWarning, "FailedScheduling", "internal error while scheduling the pod; the scheduler's log has it")
		s.queue.failed(podKey(e.pod))
		return true
	}
	s.next = d.next
	if d.node != "" {
		s.dispatch(ctx, func(ctx context.Context) { s.bind(ctx, d.pi, d.node) })
		return true
	}
	s.queue.failed(d.pi.key)
	s.dispatch(ctx, func(ctx context.Context) { s.unschedulable(ctx, d.pi.pod, d.fit, d.plan) })
	return true
}

// dispatch hands work to a binder, waiting for a free one.
func (s *Scheduler) dispatch(ctx context.Context, w func(context.Context)) {
	select {
	case s.work <- w:
	case <-ctx.Done():
	}
}

func (s *Scheduler) bind(ctx context.Context, pi *podInfo, node string) {
	pod := pi.pod
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	err := s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if err == nil {
		s.recorder.Eventf(pod, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, node)
		return
	}
	s.cache.forget(pi.key)
	if apierrors.IsNotFound(err) || ctx.Err() != nil {
		s.queue.remove(pi.key)
		return
	}
	s.logger.Warn("binding failed; retrying", "pod", pi.key, "node", node, "err", err)
	s.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedScheduling", "Binding rejected: %v", err)
	s.queue.failed(pi.key)
	s.queue.clusterChanged()
}

// unschedulable reports a pod that fits nowhere, as kube-scheduler does:
// a FailedScheduling event and the PodScheduled=False condition; and it
// carries out the preemption the cycle planned.
func (s *Scheduler) unschedulable(ctx context.Context, pod *corev1.Pod, fit *fitError, plan preemptionPlan) {
	msg := fit.Error()
	s.recorder.Event(pod, corev1.EventTypeWarning, "FailedScheduling", msg)
	if plan.node != "" {
		s.evict(ctx, pod, plan)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message == msg && plan.node == "" {
			return
		}
	}
	status := map[string]any{"conditions": []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: msg, LastTransitionTime: metav1.NewTime(time.Now()),
	}}}
	if plan.node != "" {
		status["nominatedNodeName"] = plan.node
	}
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return
	}
	_, err = s.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		s.logger.Warn("setting PodScheduled", "pod", podKey(pod), "err", fmt.Errorf("patch status: %w", err))
	}
}
