package ctrl

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

var replicationControllerKind = corev1.SchemeGroupVersion.WithKind("ReplicationController")

// replicationControllerController runs the replica manager for
// ReplicationControllers, core/v1's ReplicaSets, as Kubernetes' replication
// manager runs the ReplicaSet controller: each is seen as a ReplicaSet
// (its selector as matchLabels), its pods are owned by the
// ReplicationController, and its status is written back to it.
type replicationControllerController struct {
	replicaManager
	rcs corelisters.ReplicationControllerLister
}

func newReplicationControllerController(cfg Config) *controller {
	c := &replicationControllerController{}
	rcInf := cfg.Informers.Core().V1().ReplicationControllers()
	c.rcs = rcInf.Lister()
	c.replicaManager = newReplicaManager(cfg, "replication", replicationControllerKind, rcInf.Informer(), func(ns string) map[string]labels.Selector {
		all, _ := c.rcs.ReplicationControllers(ns).List(labels.Everything())
		return selectors(all, selectorOf)
	}, c.sync)
	return c.controller
}

func (c *replicationControllerController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	rc, err := c.rcs.ReplicationControllers(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	client := c.client.CoreV1().ReplicationControllers(ns)
	return c.syncReplicas(ctx, key, replicated{obj: rc, gvk: replicationControllerKind, rs: replicaSetOf(rc), fresh: freshOwner(client, name),
		writeStatus: func(ctx context.Context, status appsv1.ReplicaSetStatus) error {
			rc := rc.DeepCopy()
			rc.Status = replicationControllerStatus(status)
			_, err := client.UpdateStatus(ctx, rc, metav1.UpdateOptions{})
			return err
		}})
}

// selectorOf is rc's selector, a set of labels, as a label selector.
func selectorOf(rc *corev1.ReplicationController) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: rc.Spec.Selector}
}

// replicaSetOf is rc seen as a ReplicaSet.
func replicaSetOf(rc *corev1.ReplicationController) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{ObjectMeta: rc.ObjectMeta, Spec: appsv1.ReplicaSetSpec{Replicas: rc.Spec.Replicas, MinReadySeconds: rc.Spec.MinReadySeconds,
		Selector: selectorOf(rc)}}
	if rc.Spec.Template != nil {
		rs.Spec.Template = *rc.Spec.Template
	}
	s := rc.Status
	rs.Status = appsv1.ReplicaSetStatus{Replicas: s.Replicas, FullyLabeledReplicas: s.FullyLabeledReplicas, ReadyReplicas: s.ReadyReplicas,
		AvailableReplicas: s.AvailableReplicas, ObservedGeneration: s.ObservedGeneration}
	for _, c := range s.Conditions {
		rs.Status.Conditions = append(rs.Status.Conditions, appsv1.ReplicaSetCondition{Type: appsv1.ReplicaSetConditionType(c.Type), Status: c.Status,
			LastTransitionTime: c.LastTransitionTime, Reason: c.Reason, Message: c.Message})
	}
	return rs
}

// replicationControllerStatus is a ReplicaSet's status as a
// ReplicationController's.
func replicationControllerStatus(s appsv1.ReplicaSetStatus) corev1.ReplicationControllerStatus {
	out := corev1.ReplicationControllerStatus{Replicas: s.Replicas, FullyLabeledReplicas: s.FullyLabeledReplicas, ReadyReplicas: s.ReadyReplicas,
		AvailableReplicas: s.AvailableReplicas, ObservedGeneration: s.ObservedGeneration}
	for _, c := range s.Conditions {
		out.Conditions = append(out.Conditions, corev1.ReplicationControllerCondition{Type: corev1.ReplicationControllerConditionType(c.Type), Status: c.Status,
			LastTransitionTime: c.LastTransitionTime, Reason: c.Reason, Message: c.Message})
	}
	return out
}
