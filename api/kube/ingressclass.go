package kube

import (
	"cmp"
	"context"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/pontoon-dev/pontoon/fsm"
)

// admitIngressClass gives a new Ingress that names no class the default
// IngressClass, as kube-apiserver's DefaultIngressClass admission plugin
// does: of the classes annotated as the default, the newest (then the
// first by name). An Ingress with the legacy class annotation keeps it.
func (h *Handler) admitIngressClass(ctx context.Context, ing *networkingv1.Ingress) error {
	if ing.Spec.IngressClassName != nil {
		return nil
	}
	if _, ok := ing.Annotations["kubernetes.io/ingress.class"]; ok {
		return nil
	}
	classRes, _ := h.registry.Lookup(networkingv1.SchemeGroupVersion.WithResource("ingressclasses"))
	res, err := h.objects.store.List(ctx, fsm.ListOptions{Prefix: prefix(classRes, "")})
	if err != nil {
		return err
	}
	var defaults []*networkingv1.IngressClass
	for _, kv := range res.KVs {
		obj, err := h.objects.decodeShared(classRes, kv)
		if err != nil {
			return err
		}
		if c := obj.(*networkingv1.IngressClass); c.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
			defaults = append(defaults, c)
		}
	}
	if len(defaults) == 0 {
		return nil
	}
	newest := slices.MinFunc(defaults, func(a, b *networkingv1.IngressClass) int {
		return cmp.Or(b.CreationTimestamp.Compare(a.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	ing.Spec.IngressClassName = &newest.Name
	return nil
}
