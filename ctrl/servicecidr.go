package ctrl

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pontoon-dev/pontoon/api/resource"
)

const (
	// serviceCIDRFinalizer holds a ServiceCIDR being deleted while
	// ClusterIPs only it contains are held, as Kubernetes' does.
	serviceCIDRFinalizer = "networking.k8s.io/service-cidr-finalizer"
	// serviceCIDRGrace is how long a deleted ServiceCIDR is kept after the
	// last of its addresses was given back: a Service's allocation that
	// read the range before it was deleted has committed by then.
	serviceCIDRGrace = 10 * time.Second
)

// serviceCIDRController keeps every ServiceCIDR Ready, which tells the
// API server's allocator it may hand out its addresses, and holds the
// deletion of one while a ClusterIP that only it contains is in use, as
// Kubernetes' ServiceCIDR controller does.
type serviceCIDRController struct {
	*controller
	client    kubernetes.Interface
	cidrs     networkinglisters.ServiceCIDRLister
	addresses networkinglisters.IPAddressLister
}

func newServiceCIDRController(cfg Config) *controller {
	c := &serviceCIDRController{client: cfg.Client}
	c.controller = newController("servicecidr", cfg, c.sync)
	net := cfg.Informers.Networking().V1()
	cidrInf, ipInf := net.ServiceCIDRs(), net.IPAddresses()
	cidrInf.Informer().AddEventHandler(c.handler())
	// An address given back may let a ServiceCIDR being deleted go.
	ipInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) { c.enqueueDeleting() }})
	c.cidrs, c.addresses = cidrInf.Lister(), ipInf.Lister()
	c.synced = append(c.synced, cidrInf.Informer().HasSynced, ipInf.Informer().HasSynced)
	return c.controller
}

// enqueueDeleting enqueues the ServiceCIDRs being deleted.
func (c *serviceCIDRController) enqueueDeleting() {
	all, err := c.cidrs.List(labels.Everything())
	if err != nil {
		return
	}
	for _, sc := range all {
		if sc.DeletionTimestamp != nil {
			c.queue.Add(sc.Name)
		}
	}
}

func (c *serviceCIDRController) sync(ctx context.Context, name string) error {
	sc, err := c.cidrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if sc.DeletionTimestamp == nil {
		if !slices.Contains(sc.Finalizers, serviceCIDRFinalizer) {
			next := sc.DeepCopy()
			next.Finalizers = append(next.Finalizers, serviceCIDRFinalizer)
			if sc, err = c.client.NetworkingV1().ServiceCIDRs().Update(ctx, next, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("add the finalizer of ServiceCIDR %s: %w", name, err)
			}
		}
		return c.setReady(ctx, sc, metav1.ConditionTrue, "", "Kubernetes Service CIDR is ready")
	}
	if !slices.Contains(sc.Finalizers, serviceCIDRFinalizer) {
		return nil
	}
	if held := c.heldOnlyBy(sc); held != "" {
		return c.setReady(ctx, sc, metav1.ConditionFalse, networkingv1.ServiceCIDRReasonTerminating,
			fmt.Sprintf("There are still IPAddresses referencing the ServiceCIDR (%s), please remove them or create a new ServiceCIDR", held))
	}
	if wait := serviceCIDRGrace - time.Since(sc.DeletionTimestamp.Time); wait > 0 {
		c.queue.AddAfter(name, wait)
		return nil
	}
	next := sc.DeepCopy()
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == serviceCIDRFinalizer })
	if _, err := c.client.NetworkingV1().ServiceCIDRs().Update(ctx, next, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove the finalizer of ServiceCIDR %s: %w", name, err)
	}
	return nil
}

// heldOnlyBy returns a ClusterIP in use that sc contains and no other
// ServiceCIDR does, or "".
func (c *serviceCIDRController) heldOnlyBy(sc *networkingv1.ServiceCIDR) string {
	all, err := c.cidrs.List(labels.Everything())
	if err != nil {
		return ""
	}
	var mine, others []*net.IPNet
	for _, o := range all {
		for _, s := range o.Spec.CIDRs {
			if _, n, err := net.ParseCIDR(s); err == nil && o.Name == sc.Name {
				mine = append(mine, n)
			} else if err == nil && o.DeletionTimestamp == nil {
				others = append(others, n)
			}
		}
	}
	addrs, err := c.addresses.List(labels.SelectorFromSet(labels.Set{networkingv1.LabelManagedBy: resource.IPAllocatorName}))
	if err != nil {
		return ""
	}
	contains := func(ip net.IP) func(*net.IPNet) bool { return func(n *net.IPNet) bool { return n.Contains(ip) } }
	for _, a := range addrs {
		ip := net.ParseIP(a.Name)
		if ip != nil && slices.ContainsFunc(mine, contains(ip)) && !slices.ContainsFunc(others, contains(ip)) {
			return a.Name
		}
	}
	return ""
}

// setReady sets sc's Ready condition unless it already says so.
func (c *serviceCIDRController) setReady(ctx context.Context, sc *networkingv1.ServiceCIDR, status metav1.ConditionStatus, reason, message string) error {
	if cur := meta.FindStatusCondition(sc.Status.Conditions, networkingv1.ServiceCIDRConditionReady); cur != nil &&
		cur.Status == status && cur.Reason == reason && cur.Message == message {
		return nil
	}
	next := sc.DeepCopy()
	meta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: networkingv1.ServiceCIDRConditionReady, Status: status, Reason: reason, Message: message})
	if _, err := c.client.NetworkingV1().ServiceCIDRs().UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status of ServiceCIDR %s: %w", sc.Name, err)
	}
	if status == metav1.ConditionFalse {
		c.recorder.Event(sc, corev1.EventTypeWarning, reason, message)
	}
	return nil
}
