package ctrl

import (
	"context"
	"fmt"
	"net"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// serviceLBController gives LoadBalancer Services the addresses of the
// nodes as their ingress, as k3s' ServiceLB does on bare metal: every
// node's proxy takes traffic to those addresses at the service's ports.
// With externalTrafficPolicy Local, only the nodes with a ready endpoint
// are given, so traffic lands where it is served. A Service with a
// loadBalancerClass is another load balancer's.
type serviceLBController struct {
	*controller
	client   kubernetes.Interface
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	slices   discoverylisters.EndpointSliceLister
}

func newServiceLBController(cfg Config) *controller {
	c := &serviceLBController{client: cfg.Client}
	c.controller = newController("service-lb", cfg, c.sync)
	core := cfg.Informers.Core().V1()
	svcInf, nodeInf, sliceInf := core.Services(), core.Nodes(), cfg.Informers.Discovery().V1().EndpointSlices()
	c.services, c.nodes, c.slices = svcInf.Lister(), nodeInf.Lister(), sliceInf.Lister()
	svcInf.Informer().AddEventHandler(c.handler())
	// A node that comes, goes or changes readiness changes every
	// balancer; an endpoint only its Service's.
	all := func(any) {
		svcs, _ := c.services.List(labels.Everything())
		for _, s := range svcs {
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
				c.enqueue(s)
			}
		}
	}
	nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: all, UpdateFunc: func(_, o any) { all(o) }, DeleteFunc: all})
	oneService := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
			c.queue.Add(s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName])
		}
	}
	sliceInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: oneService, UpdateFunc: func(_, o any) { oneService(o) }, DeleteFunc: oneService})
	c.synced = append(c.synced, svcInf.Informer().HasSynced, nodeInf.Informer().HasSynced, sliceInf.Informer().HasSynced)
	return c.controller
}

func (c *serviceLBController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if svc.Spec.LoadBalancerClass != nil {
		return nil
	}
	var want []corev1.LoadBalancerIngress
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		ips, err := c.ingressIPs(svc)
		if err != nil {
			return err
		}
		for _, ip := range ips {
			want = append(want, corev1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
		}
	}
	if equality.Semantic.DeepEqual(svc.Status.LoadBalancer.Ingress, want) {
		return nil
	}
	svc = svc.DeepCopy()
	svc.Status.LoadBalancer.Ingress = want
	if _, err := c.client.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("load balancer of %s: %w", key, err)
	}
	return nil
}

// ingressIPs are the addresses of the Ready nodes (each node's external
// address, else its internal one), only those with a ready endpoint for
// externalTrafficPolicy Local, in order.
func (c *serviceLBController) ingressIPs(svc *corev1.Service) ([]string, error) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var serving map[string]bool
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		serving = map[string]bool{}
		sl, err := c.slices.EndpointSlices(svc.Namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name}))
		if err != nil {
			return nil, err
		}
		for _, s := range sl {
			for _, e := range s.Endpoints {
				if e.NodeName != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					serving[*e.NodeName] = true
				}
			}
		}
	}
	var ips []string
	for _, n := range nodes {
		if !nodeReady(n) || serving != nil && !serving[n.Name] {
			continue
		}
		if ip := nodeAddress(n); ip != "" {
			ips = append(ips, ip)
		}
	}
	slices.Sort(ips)
	return ips, nil
}

// nodeAddress is a node's IPv4 ExternalIP, else its InternalIP.
func nodeAddress(n *corev1.Node) string {
	for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && net.ParseIP(a.Address).To4() != nil {
				return a.Address
			}
		}
	}
	return ""
}
