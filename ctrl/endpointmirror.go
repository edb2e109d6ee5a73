package ctrl

import (
	"context"
	"maps"
	"net"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

const (
	// mirrorManagedBy marks the slices the mirroring controller keeps, as
	// Kubernetes' does.
	mirrorManagedBy = "endpointslicemirroring-controller.k8s.io"
	// maxMirroredPerSubset is how many addresses of one subset are
	// mirrored, Kubernetes' default (--mirroring-max-endpoints-per-subset).
	maxMirroredPerSubset = 1000
)

// endpointMirrorController mirrors the Endpoints objects that users
// write for Services without a selector into EndpointSlices, as
// Kubernetes' EndpointSlice mirroring controller does: the service proxy
// and cluster DNS read only slices, so a Service whose endpoints are
// kept by hand (an external database, a server outside the cluster)
// works like any other. Endpoints labelled
// endpointslice.kubernetes.io/skip-mirror are left alone, and so are
// those of Services with a selector, whose slices the endpoints
// controller keeps.
type endpointMirrorController struct {
	*controller
	client    kubernetes.Interface
	services  corelisters.ServiceLister
	endpoints corelisters.EndpointsLister
	slices    discoverylisters.EndpointSliceLister
}

func newEndpointMirrorController(cfg Config) *controller {
	c := &endpointMirrorController{client: cfg.Client}
	c.controller = newController("endpointslicemirroring", cfg, c.sync)
	core := cfg.Informers.Core().V1()
	svcInf, epInf, sliceInf := core.Services(), core.Endpoints(), cfg.Informers.Discovery().V1().EndpointSlices()
	// A Service and its Endpoints share a key.
	svcInf.Informer().AddEventHandler(c.handler())
	epInf.Informer().AddEventHandler(c.handler())
	sliceInf.Informer().AddEventHandler(c.enqueueOwner(corev1.SchemeGroupVersion.WithKind("Endpoints")))
	c.services, c.endpoints, c.slices = svcInf.Lister(), epInf.Lister(), sliceInf.Lister()
	c.synced = append(c.synced, svcInf.Informer().HasSynced, epInf.Informer().HasSynced, sliceInf.Informer().HasSynced)
	return c.controller
}

func (c *endpointMirrorController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	have, err := c.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{
		discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: mirrorManagedBy}))
	if err != nil {
		return err
	}
	sort.Slice(have, func(i, j int) bool { return have[i].Name < have[j].Name })
	ep, err := c.endpoints.Endpoints(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	mirror := err == nil && ep.Labels[discoveryv1.LabelSkipMirror] != "true"
	if mirror {
		svc, err := c.services.Services(ns).Get(name)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		mirror = err == nil && svc.Spec.Selector == nil
	}
	if !mirror {
		return writeSlices(ctx, c.client, have, nil, metav1.ObjectMeta{Namespace: ns})
	}
	sliceLabels := maps.Clone(ep.Labels)
	if sliceLabels == nil {
		sliceLabels = map[string]string{}
	}
	sliceLabels[discoveryv1.LabelServiceName] = name
	sliceLabels[discoveryv1.LabelManagedBy] = mirrorManagedBy
	annotations := maps.Clone(ep.Annotations)
	delete(annotations, corev1.EndpointsLastChangeTriggerTime)
	delete(annotations, corev1.LastAppliedConfigAnnotation)
	if len(annotations) == 0 {
		annotations = nil
	}
	return writeSlices(ctx, c.client, have, mirroredSlices(ep), metav1.ObjectMeta{Namespace: ns, GenerateName: name + "-", Labels: sliceLabels,
		Annotations: annotations, OwnerReferences: []metav1.OwnerReference{controllerRef(ep, corev1.SchemeGroupVersion.WithKind("Endpoints"))}})
}

// mirroredSlices are the slices that hold ep: for each subset and
// address family, its ports and up to 100 endpoints a slice, the ready
// addresses then the not-ready ones; at most 1,000 addresses a subset,
// and none that is not an IP.
func mirroredSlices(ep *corev1.Endpoints) []discoveryv1.EndpointSlice {
	var out []discoveryv1.EndpointSlice
	for _, sub := range ep.Subsets {
		var ports []discoveryv1.EndpointPort
		for _, p := range sub.Ports {
			ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.Port), Protocol: ptr.To(p.Protocol), AppProtocol: p.AppProtocol})
		}
		byFamily := map[discoveryv1.AddressType][]discoveryv1.Endpoint{}
		count := 0
		add := func(addrs []corev1.EndpointAddress, ready bool) {
			for _, a := range addrs {
				ip := net.ParseIP(a.IP)
				if ip == nil || count == maxMirroredPerSubset {
					continue
				}
				count++
				family := discoveryv1.AddressTypeIPv4
				if ip.To4() == nil {
					family = discoveryv1.AddressTypeIPv6
				}
				e := discoveryv1.Endpoint{Addresses: []string{ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
					TargetRef: a.TargetRef, NodeName: a.NodeName}
				if a.Hostname != "" {
					e.Hostname = ptr.To(a.Hostname)
				}
				byFamily[family] = append(byFamily[family], e)
			}
		}
		add(sub.Addresses, true)
		add(sub.NotReadyAddresses, false)
		for _, family := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
			eps := byFamily[family]
			for i := 0; i < len(eps); i += maxSliceEndpoints {
				out = append(out, discoveryv1.EndpointSlice{AddressType: family, Ports: ports, Endpoints: eps[i:min(i+maxSliceEndpoints, len(eps))]})
			}
		}
	}
	return out
}
