package ctrl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// ServerGossip is what the gossip pool knows of the API servers.
type ServerGossip interface {
	// APIServers returns the API addresses (host:port) of the servers
	// alive.
	APIServers() []string
	// Changed returns a channel closed at the next change of any member.
	Changed() <-chan struct{}
}

// apiServiceKey is the Service through which pods reach the API.
const apiServiceKey = metav1.NamespaceDefault + "/kubernetes"

// apiServiceController keeps the `kubernetes` Service in default, as
// kube-apiserver's bootstrap controller and endpoint reconciler do: its
// ClusterIP is the first address of the service range, its Endpoints and
// EndpointSlice list the servers alive, kept current as they join, leave
// and die. Kubernetes' e2e suite will not start without it, and pods find
// the API through it.
type apiServiceController struct {
	*controller
	client  kubernetes.Interface
	servers ServerGossip
	ip      string
	// dnsIP is the kube-dns Service's, which every agent's DNS serves.
	dnsIP string
}

func newAPIServiceController(cfg Config) *controller {
	c := &apiServiceController{client: cfg.Client, servers: cfg.Servers}
	c.controller = newController("kubernetes-service", cfg, c.sync)
	if cfg.Servers == nil || cfg.ServiceCIDR == nil {
		return c.controller
	}
	c.ip = ServiceAddress(cfg.ServiceCIDR, 1).String()
	c.dnsIP = ServiceAddress(cfg.ServiceCIDR, ClusterDNSIndex).String()
	core := cfg.Informers.Core().V1()
	only := cache.FilteringResourceEventHandler{
		FilterFunc: func(obj any) bool {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			return err == nil && key == apiServiceKey
		},
		Handler: c.handler(),
	}
	for _, inf := range []cache.SharedIndexInformer{core.Services().Informer(), core.Endpoints().Informer(), cfg.Informers.Discovery().V1().EndpointSlices().Informer()} {
		inf.AddEventHandler(only)
		c.synced = append(c.synced, inf.HasSynced)
	}
	// Servers join, leave and die: look again at every change of the pool,
	// and every 10 s whatever happens (kube-apiserver's reconcile period).
	c.background = func(ctx context.Context) {
		for {
			c.queue.Add(apiServiceKey)
			select {
			case <-ctx.Done():
				return
			case <-c.servers.Changed():
			case <-time.After(10 * time.Second):
			}
		}
	}
	return c.controller
}

func (c *apiServiceController) sync(ctx context.Context, key string) error {
	if c.servers == nil || c.ip == "" {
		return nil
	}
	addrs := c.servers.APIServers()
	if len(addrs) == 0 {
		return nil
	}
	var ips []string
	port := 0
	for _, a := range addrs {
		host, p, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		n, _ := strconv.Atoi(p)
		if port == 0 {
			port = n
		}
		if n == port && net.ParseIP(host).To4() != nil {
			ips = append(ips, host)
		}
	}
	slices.Sort(ips)
	ips = slices.Compact(ips)
	return errors.Join(c.syncService(ctx, port), c.syncEndpoints(ctx, ips, port), c.syncSlice(ctx, ips, port), c.syncDNSService(ctx))
}

// ClusterDNSIndex is which address of the service range the kube-dns
// Service has, as kubeadm gives it.
const ClusterDNSIndex = 10

// ServiceAddress is the nth address of the service range: the first is
// the kubernetes Service's, the tenth kube-dns's, as kubeadm has them.
// Agents find the cluster DNS there.
func ServiceAddress(cidr *net.IPNet, n byte) net.IP {
	ip := slices.Clone(cidr.IP.To4())
	ip[3] += n
	return ip
}

// syncDNSService makes the kube-dns Service in kube-system, as k3s and
// kubeadm install it: its ClusterIP is what pods' resolv.conf names, and
// every agent serves DNS there for its own pods (so it has no
// endpoints). One that exists is left as it is.
func (c *apiServiceController) syncDNSService(ctx context.Context) error {
	svcs := c.client.CoreV1().Services(metav1.NamespaceSystem)
	if _, err := svcs.Get(ctx, "kube-dns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: c.dnsIP, Ports: []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
		}},
	}
	if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the kube-dns service: %w", err)
	}
	return nil
}

func (c *apiServiceController) syncService(ctx context.Context, port int) error {
	ports := []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(int32(port))}}
	svcs := c.client.CoreV1().Services(metav1.NamespaceDefault)
	svc, err := svcs.Get(ctx, "kubernetes", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		svc = &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
				Labels: map[string]string{"component": "apiserver", "provider": "kubernetes"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: c.ip, Ports: ports,
				SessionAffinity: corev1.ServiceAffinityNone},
		}
		_, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the kubernetes service: %w", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(svc.Spec.Ports, ports) {
		return nil
	}
	svc.Spec.Ports = ports
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the kubernetes service: %w", err)
	}
	return nil
}

func (c *apiServiceController) syncEndpoints(ctx context.Context, ips []string, port int) error {
	subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}}}
	for _, ip := range ips {
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: ip})
	}
	want := []corev1.EndpointSubset{subset}
	eps := c.client.CoreV1().Endpoints(metav1.NamespaceDefault)
	cur, err := eps.Get(ctx, "kubernetes", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = eps.Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}}, Subsets: want}, metav1.CreateOptions{})
		return err
	}
	if err != nil || equality.Semantic.DeepEqual(cur.Subsets, want) {
		return err
	}
	cur.Subsets = want
	_, err = eps.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

func (c *apiServiceController) syncSlice(ctx context.Context, ips []string, port int) error {
	want := []discoveryv1.Endpoint{}
	for _, ip := range ips {
		want = append(want, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	ports := []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}}
	sliceClient := c.client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault)
	cur, err := sliceClient.Get(ctx, "kubernetes", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = sliceClient.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault, Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: want, Ports: ports}, metav1.CreateOptions{})
		return err
	}
	if err != nil || (equality.Semantic.DeepEqual(cur.Endpoints, want) && equality.Semantic.DeepEqual(cur.Ports, ports)) {
		return err
	}
	cur.Endpoints, cur.Ports = want, ports
	_, err = sliceClient.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
