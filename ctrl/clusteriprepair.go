package ctrl

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pontoon-dev/pontoon/api/resource"
)

// clusterIPRepairController keeps the IPAddress objects that record
// Services' ClusterIPs true, as kube-apiserver's repair loop does. The
// API server writes a Service and its address's IPAddress in one
// transaction, so they only disagree after someone deletes an
// allocator's IPAddress by hand (the address would be handed out twice)
// or when a store from before IPAddresses existed is taken up: a Service
// whose address has no IPAddress gets one back, and an allocator's
// IPAddress whose Service no longer holds its address goes.
//
// Its keys are a Service's namespace/name or an address, which has no
// slash.
type clusterIPRepairController struct {
	*controller
	client    kubernetes.Interface
	services  corelisters.ServiceLister
	addresses networkinglisters.IPAddressLister
}

func newClusterIPRepairController(cfg Config) *controller {
	c := &clusterIPRepairController{client: cfg.Client}
	c.controller = newController("clusterip-repair", cfg, c.sync)
	svcInf, ipInf := cfg.Informers.Core().V1().Services(), cfg.Informers.Networking().V1().IPAddresses()
	svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: c.enqueue, UpdateFunc: func(_, obj any) { c.enqueue(obj) }})
	ipInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: c.enqueue, UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueueParent})
	c.services, c.addresses = svcInf.Lister(), ipInf.Lister()
	c.synced = append(c.synced, svcInf.Informer().HasSynced, ipInf.Informer().HasSynced)
	return c.controller
}

// enqueueParent enqueues the Service of a deleted IPAddress: it may
// still hold the address.
func (c *clusterIPRepairController) enqueueParent(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if addr, ok := obj.(*networkingv1.IPAddress); ok {
		if ref := addr.Spec.ParentRef; ref != nil && ref.Group == "" && ref.Resource == "services" {
			c.queue.Add(ref.Namespace + "/" + ref.Name)
		}
	}
}

func (c *clusterIPRepairController) sync(ctx context.Context, key string) error {
	if strings.Contains(key, "/") {
		return c.syncService(ctx, key)
	}
	return c.syncAddress(ctx, key)
}

// syncService gives back a Service's address its IPAddress when it has
// none.
func (c *clusterIPRepairController) syncService(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone || svc.DeletionTimestamp != nil {
		return nil
	}
	if _, err := c.addresses.Get(ip); !apierrors.IsNotFound(err) {
		return err
	}
	addr := resource.ServiceIPAddress(ns, name, ip)
	_, err = c.client.NetworkingV1().IPAddresses().Create(ctx, addr, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// Written with the Service, and not yet seen here.
		return nil
	case err != nil:
		return fmt.Errorf("record ClusterIP %s of %s: %w", ip, key, err)
	}
	c.recorder.Eventf(svc, corev1.EventTypeWarning, "ClusterIPNotAllocated", "Cluster IP %s was not recorded as allocated; repaired", ip)
	return nil
}

// syncAddress deletes an allocator's IPAddress whose Service does not
// hold the address, read from the API before (the cache may not have the
// Service yet).
func (c *clusterIPRepairController) syncAddress(ctx context.Context, ip string) error {
	addr, err := c.addresses.Get(ip)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ns, name, ok := resource.AddressService(addr)
	if !ok {
		return nil
	}
	if svc, err := c.services.Services(ns).Get(name); err == nil && svc.Spec.ClusterIP == ip {
		return nil
	}
	svc, err := c.client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && svc.Spec.ClusterIP == ip {
		return nil
	}
	err = c.client.NetworkingV1().IPAddresses().Delete(ctx, ip, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(addr.UID))})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete IPAddress %s that no Service holds: %w", ip, err)
	}
	c.logger.Info("deleted an IPAddress that no Service holds", "ip", ip, "service", ns+"/"+name)
	return nil
}
