package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/pontoon-dev/pontoon/fsm"
)

// admitPriority resolves a new pod's priority from its PriorityClass, as
// kube-apiserver's Priority admission plugin does: the named class (which
// must exist), else the global default class, else 0; a pod may not set a
// priority or preemption policy of its own that differs. The create is
// conditioned on the named class not having changed since it was read.
func (h *Handler) admitPriority(ctx context.Context, pod *corev1.Pod) ([]fsm.Op, error) {
	pcRes, _ := h.registry.Lookup(schedulingv1.SchemeGroupVersion.WithResource("priorityclasses"))
	var class *schedulingv1.PriorityClass
	var ops []fsm.Op
	if name := pod.Spec.PriorityClassName; name != "" {
		cur, err := h.objects.getShared(ctx, pcRes, "", name)
		if apierrors.IsNotFound(err) {
			return nil, apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, fmt.Errorf("no PriorityClass with name %s was found", name))
		}
		if err != nil {
			return nil, err
		}
		class = cur.obj.(*schedulingv1.PriorityClass)
		ops = append(ops, fsm.Check(key(pcRes, "", name), fsm.Cond{ModRevision: cur.rev}))
	} else {
		res, err := h.objects.store.List(ctx, fsm.ListOptions{Prefix: prefix(pcRes, "")})
		if err != nil {
			return nil, err
		}
		for _, kv := range res.KVs {
			obj, err := h.objects.decodeShared(pcRes, kv)
			if err != nil {
				return nil, err
			}
			// Of several global defaults, the lowest, as Kubernetes.
			if pc := obj.(*schedulingv1.PriorityClass); pc.GlobalDefault && (class == nil || pc.Value < class.Value) {
				class = pc
			}
		}
		if class != nil {
			pod.Spec.PriorityClassName = class.Name
		}
	}
	priority, policy := int32(0), corev1.PreemptLowerPriority
	if class != nil {
		priority = class.Value
		if class.PreemptionPolicy != nil {
			policy = *class.PreemptionPolicy
		}
	}
	if p := pod.Spec.Priority; p != nil && *p != priority {
		return nil, apierrors.NewForbidden(corev1.Resource("pods"), pod.Name,
			fmt.Errorf("the integer value of priority (%d) must not be provided in pod spec; priority admission controller computed %d from the given PriorityClass name", *p, priority))
	}
	if p := pod.Spec.PreemptionPolicy; p != nil && *p != policy {
		return nil, apierrors.NewForbidden(corev1.Resource("pods"), pod.Name,
			fmt.Errorf("the string value of PreemptionPolicy (%s) must not be provided in pod spec; priority admission controller computed %s from the given PriorityClass name", *p, policy))
	}
	pod.Spec.Priority, pod.Spec.PreemptionPolicy = &priority, &policy
	return ops, nil
}
