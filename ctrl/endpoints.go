package ctrl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"

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

// The labels Kubernetes' EndpointSlice controller puts on its slices.
const (
	managedBy         = "endpointslice-controller.k8s.io"
	maxSliceEndpoints = 100
)

// endpointsController keeps, for every Service with a selector, the
// EndpointSlices and the Endpoints object that list the pods it selects:
// ready, serving and terminating, with their ports resolved by name, as
// Kubernetes' EndpointSlice and Endpoints controllers do.
type endpointsController struct {
	*controller
	client    kubernetes.Interface
	services  corelisters.ServiceLister
	pods      corelisters.PodLister
	nodes     corelisters.NodeLister
	slices    discoverylisters.EndpointSliceLister
	endpoints corelisters.EndpointsLister
}

func newEndpointsController(cfg Config) *controller {
	c := &endpointsController{client: cfg.Client}
	c.controller = newController("endpointslice", cfg, c.sync)
	core := cfg.Informers.Core().V1()
	svcInf, podInf, nodeInf := core.Services(), core.Pods(), core.Nodes()
	sliceInf, epInf := cfg.Informers.Discovery().V1().EndpointSlices(), core.Endpoints()
	svcInf.Informer().AddEventHandler(c.handler())
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(old, obj any) { c.podChanged(old); c.podChanged(obj) },
		DeleteFunc: c.podChanged,
	})
	sliceInf.Informer().AddEventHandler(c.enqueueOwner(corev1.SchemeGroupVersion.WithKind("Service")))
	c.services, c.pods, c.nodes = svcInf.Lister(), podInf.Lister(), nodeInf.Lister()
	c.slices, c.endpoints = sliceInf.Lister(), epInf.Lister()
	c.synced = append(c.synced, svcInf.Informer().HasSynced, podInf.Informer().HasSynced, nodeInf.Informer().HasSynced,
		sliceInf.Informer().HasSynced, epInf.Informer().HasSynced)
	return c.controller
}

// podChanged enqueues the services that select the pod.
func (c *endpointsController) podChanged(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	svcs, err := c.services.Services(pod.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range svcs {
		if s.Spec.Selector != nil && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

// portGroup is the endpoints that share one resolution of the service's
// ports (a named targetPort may resolve differently per pod).
type portGroup struct {
	ports     []discoveryv1.EndpointPort
	endpoints []discoveryv1.Endpoint
}

func (c *endpointsController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The slices go with their owner; the Endpoints object has none.
		err := c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete endpoints %s: %w", key, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if svc.Spec.Selector == nil || svc.DeletionTimestamp != nil {
		return nil
	}
	pods, err := c.pods.Pods(ns).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return err
	}
	groups := c.group(svc, pods)
	return errors.Join(c.syncSlices(ctx, svc, groups), c.syncEndpoints(ctx, svc, groups))
}

// group resolves each pod's ports and sorts its endpoint into a group.
func (c *endpointsController) group(svc *corev1.Service, pods []*corev1.Pod) []portGroup {
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	byPorts := map[string]*portGroup{}
	var order []string
	for _, pod := range pods {
		if pod.Status.PodIP == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		terminating := pod.DeletionTimestamp != nil
		ready := podReady(pod)
		ep := discoveryv1.Endpoint{
			Addresses: []string{pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{
				Ready:       ptr.To((ready && !terminating) || svc.Spec.PublishNotReadyAddresses),
				Serving:     ptr.To(ready || svc.Spec.PublishNotReadyAddresses),
				Terminating: ptr.To(terminating),
			},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}
		// A pod in the Service's subdomain (a StatefulSet's) is named
		// hostname.service in DNS.
		if pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name {
			ep.Hostname = ptr.To(pod.Spec.Hostname)
		}
		if pod.Spec.NodeName != "" {
			ep.NodeName = ptr.To(pod.Spec.NodeName)
			if n, err := c.nodes.Get(pod.Spec.NodeName); err == nil {
				if z, ok := n.Labels[corev1.LabelTopologyZone]; ok {
					ep.Zone = ptr.To(z)
				}
			}
		}
		ports := resolvePorts(svc, pod)
		k := portsKey(ports)
		g, ok := byPorts[k]
		if !ok {
			g = &portGroup{ports: ports}
			byPorts[k] = g
			order = append(order, k)
		}
		g.endpoints = append(g.endpoints, ep)
	}
	sort.Strings(order)
	out := make([]portGroup, 0, len(order))
	for _, k := range order {
		out = append(out, *byPorts[k])
	}
	return out
}

// resolvePorts maps the service's ports to the pod's: a named targetPort
// is looked up in the pod's container ports; a pod without it lacks
// that port.
func resolvePorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		port := sp.TargetPort.IntVal
		if sp.TargetPort.StrVal != "" {
			port = 0
			for _, ctr := range pod.Spec.Containers {
				for _, cp := range ctr.Ports {
					if cp.Name == sp.TargetPort.StrVal && cp.Protocol == sp.Protocol {
						port = cp.ContainerPort
					}
				}
			}
			if port == 0 {
				continue
			}
		}
		if port == 0 {
			port = sp.Port
		}
		out = append(out, discoveryv1.EndpointPort{Name: ptr.To(sp.Name), Protocol: ptr.To(sp.Protocol), Port: ptr.To(port), AppProtocol: sp.AppProtocol})
	}
	return out
}

func portsKey(ports []discoveryv1.EndpointPort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%s/%s/%d", *p.Name, *p.Protocol, *p.Port)
	}
	return strings.Join(parts, ",")
}

// endpointLabels are the labels a service's EndpointSlices and Endpoints
// carry: the service's own and, for a headless service, the headless mark.
func endpointLabels(svc *corev1.Service) map[string]string {
	out := map[string]string{}
	maps.Copy(out, svc.Labels)
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		out[corev1.IsHeadlessService] = ""
	}
	return out
}

// syncSlices writes the slices of a service: one per group and per 100
// endpoints, reusing the existing slices in name order.
func (c *endpointsController) syncSlices(ctx context.Context, svc *corev1.Service, groups []portGroup) error {
	existing, err := c.slices.EndpointSlices(svc.Namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name}))
	if err != nil {
		return err
	}
	var mine []*discoveryv1.EndpointSlice
	for _, s := range existing {
		if ownedBy(s, svc) {
			mine = append(mine, s)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Name < mine[j].Name })
	var want []discoveryv1.EndpointSlice
	for _, g := range groups {
		for i := 0; i < len(g.endpoints); i += maxSliceEndpoints {
			want = append(want, discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Ports: g.ports,
				Endpoints: g.endpoints[i:min(i+maxSliceEndpoints, len(g.endpoints))]})
		}
	}
	if len(want) == 0 {
		// A service with no endpoints still has one (empty) slice.
		want = append(want, discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{}})
	}
	sliceLabels := endpointLabels(svc)
	sliceLabels[discoveryv1.LabelServiceName] = svc.Name
	sliceLabels[discoveryv1.LabelManagedBy] = managedBy
	return writeSlices(ctx, c.client, mine, want, metav1.ObjectMeta{Namespace: svc.Namespace, GenerateName: svc.Name + "-", Labels: sliceLabels,
		OwnerReferences: []metav1.OwnerReference{controllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))}})
}

// writeSlices makes the slices have (in order) want's address types,
// ports and endpoints, and meta's labels and annotations: it updates
// those of have that differ, replaces one of another address type,
// creates what is missing from meta (a namespace, a generated name, an
// owner), and deletes the rest.
func writeSlices(ctx context.Context, client kubernetes.Interface, have []*discoveryv1.EndpointSlice, want []discoveryv1.EndpointSlice, meta metav1.ObjectMeta) error {
	slices := client.DiscoveryV1().EndpointSlices(meta.Namespace)
	for i, w := range want {
		w.Labels, w.Annotations = meta.Labels, meta.Annotations
		if i < len(have) && have[i].AddressType == w.AddressType {
			cur := have[i]
			if equality.Semantic.DeepEqual(cur.Endpoints, w.Endpoints) && equality.Semantic.DeepEqual(cur.Ports, w.Ports) &&
				equality.Semantic.DeepEqual(cur.Labels, w.Labels) && equality.Semantic.DeepEqual(cur.Annotations, w.Annotations) {
				continue
			}
			next := cur.DeepCopy()
			next.Endpoints, next.Ports, next.Labels, next.Annotations = w.Endpoints, w.Ports, w.Labels, w.Annotations
			if _, err := slices.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update endpoint slice %s: %w", cur.Name, err)
			}
			continue
		}
		if i < len(have) {
			// A slice's address type never changes: a new one replaces it.
			if err := slices.Delete(ctx, have[i].Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete endpoint slice %s: %w", have[i].Name, err)
			}
		}
		w.Namespace, w.GenerateName, w.OwnerReferences = meta.Namespace, meta.GenerateName, meta.OwnerReferences
		if _, err := slices.Create(ctx, &w, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create an endpoint slice %s: %w", meta.GenerateName, err)
		}
	}
	for _, extra := range have[min(len(want), len(have)):] {
		if err := slices.Delete(ctx, extra.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete endpoint slice %s: %w", extra.Name, err)
		}
	}
	return nil
}

// syncEndpoints writes the service's Endpoints object: one subset per
// group, ready and not-ready addresses; terminating pods are left out.
func (c *endpointsController) syncEndpoints(ctx context.Context, svc *corev1.Service, groups []portGroup) error {
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: endpointLabels(svc)}}
	for _, g := range groups {
		var sub corev1.EndpointSubset
		for _, e := range g.endpoints {
			if *e.Conditions.Terminating && !svc.Spec.PublishNotReadyAddresses {
				continue
			}
			addr := corev1.EndpointAddress{IP: e.Addresses[0], NodeName: e.NodeName, TargetRef: e.TargetRef}
			if *e.Conditions.Ready {
				sub.Addresses = append(sub.Addresses, addr)
			} else {
				sub.NotReadyAddresses = append(sub.NotReadyAddresses, addr)
			}
		}
		if len(sub.Addresses)+len(sub.NotReadyAddresses) == 0 {
			continue
		}
		for _, p := range g.ports {
			sub.Ports = append(sub.Ports, corev1.EndpointPort{Name: *p.Name, Port: *p.Port, Protocol: *p.Protocol, AppProtocol: p.AppProtocol})
		}
		ep.Subsets = append(ep.Subsets, sub)
	}
	cur, err := c.endpoints.Endpoints(svc.Namespace).Get(svc.Name)
	if apierrors.IsNotFound(err) {
		if _, err := c.client.CoreV1().Endpoints(svc.Namespace).Create(ctx, ep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create endpoints %s: %w", svc.Name, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(cur.Subsets, ep.Subsets) && equality.Semantic.DeepEqual(cur.Labels, ep.Labels) {
		return nil
	}
	next := cur.DeepCopy()
	next.Subsets, next.Labels = ep.Subsets, ep.Labels
	if _, err := c.client.CoreV1().Endpoints(svc.Namespace).Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update endpoints %s: %w", svc.Name, err)
	}
	return nil
}
