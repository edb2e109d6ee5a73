package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/pontoon-dev/pontoon/fsm"
)

// defaultServiceAccountWait bounds how long a pod's create waits for its
// namespace's "default" ServiceAccount, which the leader's ServiceAccount
// controller creates just after the namespace: about as long as
// kube-apiserver's admission retries (ten lookups 100 to 200 ms apart).
const defaultServiceAccountWait = 2 * time.Second

// admitServiceAccount does for a new pod what kube-apiserver's
// ServiceAccount admission plugin does, but for the token volume (there
// is no TokenRequest API yet): a pod that names no ServiceAccount runs as
// "default", and a pod is refused unless its ServiceAccount exists. A
// mirror pod is left alone, as there. The create is conditioned on the
// ServiceAccount still existing.
func (h *Handler) admitServiceAccount(ctx context.Context, pod *corev1.Pod) ([]fsm.Op, error) {
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return nil, nil
	}
	name := pod.Spec.ServiceAccountName
	if name == "" {
		name = "default"
	}
	pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount = name, name
	saRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("serviceaccounts"))
	wait := time.Duration(0)
	if name == "default" {
		wait = defaultServiceAccountWait
	}
	deadline := time.Now().Add(wait)
	for {
		_, err := h.objects.getShared(ctx, saRes, pod.Namespace, name)
		switch {
		case err == nil:
			return []fsm.Op{fsm.Check(key(saRes, pod.Namespace, name), fsm.Cond{MustExist: true})}, nil
		case !apierrors.IsNotFound(err):
			return nil, err
		case time.Now().After(deadline):
			return nil, apierrors.NewForbidden(corev1.Resource("pods"), pod.Name,
				fmt.Errorf("error looking up service account %s/%s: serviceaccount %q not found", pod.Namespace, name, name))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
