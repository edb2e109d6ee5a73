package kube

import (
	"context"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/pontoon-dev/pontoon/api/resource"
)

// defaultServiceCIDR names the ServiceCIDR of --service-cidr, as
// kube-apiserver names the one of --service-cluster-ip-range.
const defaultServiceCIDR = "kubernetes"

// systemObject is a cluster-scoped object every cluster has.
type systemObject struct {
	gvr schema.GroupVersionResource
	obj runtime.Object
}

// systemObjects are the system namespaces, the system priority classes
// and the default ServiceCIDR (--service-cidr's), as in Kubernetes.
func (h *Handler) systemObjects() []systemObject {
	var out []systemObject
	for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
		out = append(out, systemObject{corev1.SchemeGroupVersion.WithResource("namespaces"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}})
	}
	for _, pc := range resource.SystemPriorityClasses() {
		out = append(out, systemObject{schedulingv1.SchemeGroupVersion.WithResource("priorityclasses"), pc})
	}
	out = append(out, systemObject{networkingv1.SchemeGroupVersion.WithResource("servicecidrs"), &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: defaultServiceCIDR}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{h.cfg.ServiceCIDR.String()}}}})
	return out
}

// EnsureSystemObjects creates the system objects that do not exist. It is
// a leader duty: it runs on every new leader and retries until it has
// succeeded or ctx ends; creating is idempotent.
func (h *Handler) EnsureSystemObjects(ctx context.Context) {
	for _, o := range h.systemObjects() {
		h.ensure(ctx, o.gvr, o.obj)
	}
}

// ensure creates one cluster-scoped object unless it exists.
func (h *Handler) ensure(ctx context.Context, gvr schema.GroupVersionResource, obj runtime.Object) {
	r, _ := h.registry.Lookup(gvr)
	name := accessor(obj).GetName()
	for ctx.Err() == nil {
		if _, err := h.objects.get(r, "", name); err == nil {
			return
		}
		hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/", nil)
		hr.Header.Set("User-Agent", "pontoon-server")
		_, err := h.createObject(ctx, &request{Request: hr, gv: gvr.GroupVersion(), res: r}, obj.DeepCopyObject())
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		h.cfg.Logger.Warn("creating a system object failed; retrying", "resource", gvr.Resource, "name", name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
