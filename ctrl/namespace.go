package ctrl

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// namespaceController finishes the deletion of namespaces, as Kubernetes'
// does: it deletes everything in a Terminating namespace, and when nothing
// is left it removes the namespace's "kubernetes" finalizer, which lets
// the API remove the namespace.
type namespaceController struct {
	*controller
	client     kubernetes.Interface
	dynamic    dynamic.Interface
	discovery  discovery.DiscoveryInterface
	namespaces corelisters.NamespaceLister
}

// contentPoll is how often a namespace whose content is still going away
// (pods in their grace period, objects with finalizers) is looked at.
const contentPoll = time.Second

func newNamespaceController(cfg Config) *controller {
	c := &namespaceController{client: cfg.Client, dynamic: cfg.Dynamic, discovery: cfg.Discovery}
	c.controller = newController("namespace", cfg, c.syncNamespace)
	inf := cfg.Informers.Core().V1().Namespaces()
	inf.Informer().AddEventHandler(c.handler())
	c.namespaces = inf.Lister()
	c.synced = append(c.synced, inf.Informer().HasSynced)
	return c.controller
}

func (c *namespaceController) syncNamespace(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil || !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		return nil
	}
	remaining, err := c.deleteContent(ctx, name)
	if err != nil {
		return err
	}
	if remaining > 0 {
		c.logger.Debug("namespace content still going away", "namespace", name, "objects", remaining)
		return requeueAfter(contentPoll)
	}
	ns = ns.DeepCopy()
	ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
	if _, err := c.client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("finalize namespace %s: %w", name, err)
	}
	return nil
}

// deleteContent deletes every namespaced object in ns and returns how
// many are still there.
func (c *namespaceController) deleteContent(ctx context.Context, ns string) (int, error) {
	lists, err := c.discovery.ServerPreferredNamespacedResources()
	if err != nil {
		return 0, fmt.Errorf("discovery: %w", err)
	}
	remaining := 0
	background := metav1.DeletePropagationBackground
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			return 0, err
		}
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "deletecollection") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			res := c.dynamic.Resource(gv.WithResource(r.Name)).Namespace(ns)
			if err := res.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil {
				return 0, fmt.Errorf("delete %s in %s: %w", r.Name, ns, err)
			}
			left, err := res.List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, fmt.Errorf("list %s in %s: %w", r.Name, ns, err)
			}
			remaining += len(left.Items)
		}
	}
	return remaining, nil
}
