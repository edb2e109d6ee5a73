package kube

import (
	"context"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// systemNamespaces exist in every cluster, as in Kubernetes.
var systemNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// EnsureNamespaces creates the system namespaces that do not exist. It is
// a leader duty: it runs on every new leader and retries until it has
// succeeded or ctx ends; creating is idempotent.
func (h *Handler) EnsureNamespaces(ctx context.Context) {
	nsRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("namespaces"))
	for _, name := range systemNamespaces {
		for ctx.Err() == nil {
			_, _, err := h.objects.get(nsRes, "", name)
			if err == nil {
				break
			}
			hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/namespaces", nil)
			hr.Header.Set("User-Agent", "pontoon-server")
			_, err = h.createObject(ctx, &request{Request: hr, gv: corev1.SchemeGroupVersion, res: nsRes},
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
			if err == nil || apierrors.IsAlreadyExists(err) {
				break
			}
			h.cfg.Logger.Warn("creating a system namespace failed; retrying", "namespace", name, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}
