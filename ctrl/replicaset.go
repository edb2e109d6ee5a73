package ctrl

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// burstReplicas caps the pods one sync creates or deletes, as Kubernetes'
// ReplicaSet controller does, so one large owner does not starve others.
const burstReplicas = 500

var replicaSetKind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// replicaManager keeps an owner's spec.replicas pods running and
// reports them in its status: the ReplicaSet controller's work, which the
// ReplicationController controller shares.
type replicaManager struct {
	*controller
	client       kubernetes.Interface
	pods         corelisters.PodLister
	expectations *expectations
}

// replicated is an owner of replicas as the replica manager sees it: a
// ReplicaSet, or a ReplicationController seen as one.
type replicated struct {
	// obj is the owner itself, which events are about.
	obj runtime.Object
	gvk schema.GroupVersionKind
	// rs is the owner as a ReplicaSet: its metadata, spec and status.
	rs *appsv1.ReplicaSet
	// fresh reads the owner from the API (claimer.fresh).
	fresh func(ctx context.Context) (metav1.Object, error)
	// writeStatus writes a new status to the owner.
	writeStatus func(ctx context.Context, status appsv1.ReplicaSetStatus) error
}

// replicaSetController runs the replica manager for ReplicaSets.
type replicaSetController struct {
	replicaManager
	replicaSets appslisters.ReplicaSetLister
}

// newReplicaManager makes the replica manager of the owners of kind gvk,
// which owners informs of: sync runs for an owner when it changes and when
// one of its pods does, and for the owners whose selectors (by namespace)
// match an orphan pod.
func newReplicaManager(cfg Config, name string, gvk schema.GroupVersionKind, owners cache.SharedIndexInformer,
	selectors func(namespace string) map[string]labels.Selector, sync func(context.Context, string) error) replicaManager {
	m := replicaManager{controller: newController(name, cfg, sync), client: cfg.Client, expectations: newExpectations()}
	podInf := cfg.Informers.Core().V1().Pods()
	owners.AddEventHandler(m.handler())
	podInf.Informer().AddEventHandler(m.observePods(m.expectations, gvk))
	podInf.Informer().AddEventHandler(m.enqueueAdopters(selectors))
	m.pods = podInf.Lister()
	m.synced = append(m.synced, owners.HasSynced, podInf.Informer().HasSynced)
	return m
}

func newReplicaSetController(cfg Config) *controller {
	c := &replicaSetController{}
	rsInf := cfg.Informers.Apps().V1().ReplicaSets()
	c.replicaSets = rsInf.Lister()
	c.replicaManager = newReplicaManager(cfg, "replicaset", replicaSetKind, rsInf.Informer(), func(ns string) map[string]labels.Selector {
		all, _ := c.replicaSets.ReplicaSets(ns).List(labels.Everything())
		return selectors(all, func(rs *appsv1.ReplicaSet) *metav1.LabelSelector { return rs.Spec.Selector })
	}, c.sync)
	return c.controller
}

func (c *replicaSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	rs, err := c.replicaSets.ReplicaSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	client := c.client.AppsV1().ReplicaSets(ns)
	return c.syncReplicas(ctx, key, replicated{obj: rs, gvk: replicaSetKind, rs: rs, fresh: freshOwner(client, name),
		writeStatus: func(ctx context.Context, status appsv1.ReplicaSetStatus) error {
			rs := rs.DeepCopy()
			rs.Status = status
			_, err := client.UpdateStatus(ctx, rs, metav1.UpdateOptions{})
			return err
		}})
}

// syncReplicas claims the owner's pods, makes or deletes pods until
// spec.replicas of them are active, and writes its status.
func (c *replicaManager) syncReplicas(ctx context.Context, key string, r replicated) error {
	rs := r.rs
	satisfied := c.expectations.satisfied(key) // before the pods are listed (expectations)
	pods, err := claimPods(ctx, c.client, c.pods, &claimer{owner: rs, gvk: r.gvk, selector: rs.Spec.Selector, fresh: r.fresh})
	if err != nil {
		return err
	}
	var manageErr error
	if satisfied && rs.DeletionTimestamp == nil {
		manageErr = c.manage(ctx, key, r, pods)
	}
	status, wait := replicaSetStatus(rs, pods, time.Now())
	if manageErr != nil {
		status.Conditions = []appsv1.ReplicaSetCondition{{Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			Reason: "FailedCreate", Message: manageErr.Error(), LastTransitionTime: metav1.Now()}}
	}
	if !equality.Semantic.DeepEqual(rs.Status, status) {
		if err := r.writeStatus(ctx, status); err != nil && !apierrors.IsNotFound(err) {
			return errors.Join(manageErr, fmt.Errorf("update status of %s: %w", key, err))
		}
	}
	if manageErr != nil {
		return manageErr
	}
	if wait > 0 {
		return requeueAfter(wait)
	}
	return nil
}

// ownedPods lists the pods the owner controls, by its selector.
func ownedPods(lister corelisters.PodLister, owner metav1.Object, selector *metav1.LabelSelector) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("selector of %s/%s: %w", owner.GetNamespace(), owner.GetName(), err)
	}
	all, err := lister.Pods(owner.GetNamespace()).List(sel)
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, p := range all {
		if ownedBy(p, owner) {
			out = append(out, p)
		}
	}
	return out, nil
}

// manage creates or deletes pods of the owner until spec.replicas of
// them are active, recording what it does in the expectations and as
// events.
func (c *replicaManager) manage(ctx context.Context, key string, r replicated, pods []*corev1.Pod) error {
	rs := r.rs
	var active []*corev1.Pod
	for _, p := range pods {
		if podActive(p) {
			active = append(active, p)
		}
	}
	diff := len(active) - int(ptr.Deref(rs.Spec.Replicas, 1))
	switch {
	case diff < 0:
		n := min(-diff, burstReplicas)
		c.expectations.expect(key, n, nil)
		pod := podFromTemplate(&rs.Spec.Template, rs, r.gvk)
		return c.createPods(ctx, c.client, c.expectations, key, r.obj, n, func(int) *corev1.Pod {
			// Each its own copy: encoding writes the kind into the object.
			return pod.DeepCopy()
		})
	case diff > 0:
		rankForDeletion(active)
		victims := active[:min(diff, burstReplicas)]
		c.expectations.expect(key, 0, podKeys(victims))
		if err := deletePods(ctx, c.client, c.expectations, key, victims, func(p *corev1.Pod) {
			c.recorder.Eventf(r.obj, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
		}); err != nil {
			return fmt.Errorf("delete pods of %s: %w", key, err)
		}
	}
	return nil
}

// replicaSetStatus counts the pods of a ReplicaSet; it also returns when
// a ready pod becomes available, if one is waiting for minReadySeconds.
func replicaSetStatus(rs *appsv1.ReplicaSet, pods []*corev1.Pod, now time.Time) (appsv1.ReplicaSetStatus, time.Duration) {
	s := appsv1.ReplicaSetStatus{ObservedGeneration: rs.Generation}
	tmpl := labels.SelectorFromSet(rs.Spec.Template.Labels)
	var wait time.Duration
	for _, p := range pods {
		if !podActive(p) {
			continue
		}
		s.Replicas++
		if tmpl.Matches(labels.Set(p.Labels)) {
			s.FullyLabeledReplicas++
		}
		if podReady(p) {
			s.ReadyReplicas++
		}
		ok, left := podAvailable(p, rs.Spec.MinReadySeconds, now)
		if ok {
			s.AvailableReplicas++
		} else if left > 0 && (wait == 0 || left < wait) {
			wait = left
		}
	}
	for _, c := range rs.Status.Conditions {
		if c.Type != appsv1.ReplicaSetReplicaFailure {
			s.Conditions = append(s.Conditions, c)
		}
	}
	return s, wait
}
