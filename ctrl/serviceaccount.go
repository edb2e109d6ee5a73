package ctrl

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// defaultServiceAccount is the account every namespace has.
const defaultServiceAccount = "default"

// serviceAccountController gives every active namespace its "default"
// service account, and gives it back when it is deleted, as Kubernetes'
// does.
type serviceAccountController struct {
	*controller
	client     kubernetes.Interface
	namespaces corelisters.NamespaceLister
	accounts   corelisters.ServiceAccountLister
}

func newServiceAccountController(cfg Config) *controller {
	c := &serviceAccountController{client: cfg.Client}
	c.controller = newController("serviceaccount", cfg, c.syncNamespace)
	nsInf, saInf := cfg.Informers.Core().V1().Namespaces(), cfg.Informers.Core().V1().ServiceAccounts()
	nsInf.Informer().AddEventHandler(c.handler())
	// A deleted default account requeues its namespace.
	saInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if sa, ok := obj.(*corev1.ServiceAccount); ok && sa.Name == defaultServiceAccount {
			c.queue.Add(sa.Namespace)
		}
	}})
	c.namespaces, c.accounts = nsInf.Lister(), saInf.Lister()
	c.synced = append(c.synced, nsInf.Informer().HasSynced, saInf.Informer().HasSynced)
	return c.controller
}

func (c *serviceAccountController) syncNamespace(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase != corev1.NamespaceActive || ns.DeletionTimestamp != nil {
		return nil
	}
	if _, err := c.accounts.ServiceAccounts(name).Get(defaultServiceAccount); err == nil {
		return nil
	}
	_, err = c.client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: defaultServiceAccount}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the default service account of %s: %w", name, err)
	}
	return nil
}
