package ctrl

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
)

// TestServiceLBGivesNodeAddresses: a LoadBalancer Service gets the Ready
// nodes' addresses; with externalTrafficPolicy Local only those of nodes
// with a ready endpoint; one of another loadBalancerClass nothing.
func TestServiceLBGivesNodeAddresses(t *testing.T) {
	node := func(name, ip string, ready bool) *corev1.Node {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	}
	lb := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	local := lb("local")
	local.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	other := lb("other")
	other.Spec.LoadBalancerClass = ptr.To("example.com/lb")
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "local-x", Labels: map[string]string{discoveryv1.LabelServiceName: "local"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.2.5"}, NodeName: ptr.To("n2"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}
	client := fake.NewClientset(node("n1", "10.250.0.11", true), node("n2", "10.250.0.12", true), node("n3", "10.250.0.13", false),
		lb("all"), local, other, slice)
	factory := informers.NewSharedInformerFactory(client, 0)
	c := newServiceLBController(Config{Client: client, Informers: factory, Events: record.NewBroadcaster(), Logger: slog.Default()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	go c.run(ctx)

	ingress := func(name string) []string {
		s, err := client.CoreV1().Services("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		return ips
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(ingress("all"), []string{"10.250.0.11", "10.250.0.12"}) || !slices.Equal(ingress("local"), []string{"10.250.0.12"}) {
		if time.Now().After(deadline) {
			t.Fatalf("ingress: all %v, local %v", ingress("all"), ingress("local"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := ingress("other"); got != nil {
		t.Fatalf("a Service of another loadBalancerClass got %v", got)
	}
}
