package ctrl

import (
	"context"
	"errors"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// podGCPeriod is how often the pod garbage collector sweeps, as
// Kubernetes' (20 s).
const podGCPeriod = 20 * time.Second

// podGCController deletes, as Kubernetes' pod GC does, the pods bound to
// nodes that no longer exist (forcibly: no kubelet will finish them) and
// the oldest finished pods beyond --terminated-pod-gc-threshold. It has
// one key, swept every podGCPeriod.
type podGCController struct {
	*controller
	client    kubernetes.Interface
	pods      corelisters.PodLister
	nodes     corelisters.NodeLister
	threshold int
}

const podGCKey = "sweep"

func newPodGCController(cfg Config) *controller {
	c := &podGCController{client: cfg.Client, threshold: cfg.TerminatedPodGCThreshold}
	c.controller = newController("pod-garbage-collector", cfg, c.sync)
	podInf, nodeInf := cfg.Informers.Core().V1().Pods(), cfg.Informers.Core().V1().Nodes()
	// A deleted node's pods need not wait for the next sweep.
	nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) { c.queue.Add(podGCKey) }})
	c.pods, c.nodes = podInf.Lister(), nodeInf.Lister()
	c.synced = append(c.synced, podInf.Informer().HasSynced, nodeInf.Informer().HasSynced)
	c.queue.Add(podGCKey)
	return c.controller
}

func (c *podGCController) sync(ctx context.Context, _ string) error {
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	var errs []error
	var finished []*corev1.Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			finished = append(finished, p)
		}
		if p.Spec.NodeName == "" {
			continue
		}
		if _, err := c.nodes.Get(p.Spec.NodeName); !apierrors.IsNotFound(err) {
			continue
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			if err := markDisrupted(ctx, c.client, p, "DeletionByPodGC", "PodGC: node no longer exists", true); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, err)
		}
	}
	if c.threshold > 0 && len(finished) > c.threshold {
		sort.Slice(finished, func(i, j int) bool { return finished[i].CreationTimestamp.Before(&finished[j].CreationTimestamp) })
		for _, p := range finished[:len(finished)-c.threshold] {
			errs = append(errs, deletePod(ctx, c.client, p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return requeueAfter(podGCPeriod)
}
