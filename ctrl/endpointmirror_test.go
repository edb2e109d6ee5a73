package ctrl

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
)

// TestEndpointMirroring: the Endpoints of a Service without a selector
// are mirrored into slices by address family, follow its changes, and
// go when the Service gets a selector; Endpoints marked skip-mirror and
// those of Services with a selector are never mirrored.
func TestEndpointMirroring(t *testing.T) {
	svc := func(name string, selector map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "db", Port: 5432}}}}
	}
	eps := func(name string, labels map[string]string, ready, notReady []string) *corev1.Endpoints {
		sub := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "db", Port: 5432, Protocol: corev1.ProtocolTCP}}}
		for _, ip := range ready {
			sub.Addresses = append(sub.Addresses, corev1.EndpointAddress{IP: ip})
		}
		for _, ip := range notReady {
			sub.NotReadyAddresses = append(sub.NotReadyAddresses, corev1.EndpointAddress{IP: ip})
		}
		return &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Labels: labels,
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-12-08T00:00:00Z", "team": "db"}},
			Subsets: []corev1.EndpointSubset{sub}}
	}
	client := fake.NewClientset(svc("external", nil), svc("skipped", nil), svc("selected", map[string]string{"app": "db"}),
		eps("external", map[string]string{"tier": "data"}, []string{"192.0.2.10", "not-an-ip"}, []string{"192.0.2.11", "2001:db8::10"}),
		eps("skipped", map[string]string{discoveryv1.LabelSkipMirror: "true"}, []string{"192.0.2.20"}, nil),
		eps("selected", nil, []string{"192.0.2.30"}, nil))
	// The fake client does not generate names.
	generated := 0
	client.PrependReactor("create", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.(k8stesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice)
		generated++
		s.Name = fmt.Sprintf("%s%d", s.GenerateName, generated)
		return false, nil, nil
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	c := newEndpointMirrorController(Config{Client: client, Informers: factory, Events: record.NewBroadcaster(), Logger: slog.Default()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	go c.run(ctx)

	// mirrored describes the mirrored slices of each Service: address
	// type and addresses with readiness.
	mirrored := func() string {
		list, err := client.DiscoveryV1().EndpointSlices("ns").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + mirrorManagedBy})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range list.Items {
			desc := fmt.Sprintf("%s %s", s.Labels[discoveryv1.LabelServiceName], s.AddressType)
			for _, e := range s.Endpoints {
				desc += fmt.Sprintf(" %s/%t", e.Addresses[0], *e.Conditions.Ready)
			}
			if s.Labels["tier"] != "data" || s.Annotations["team"] != "db" || s.Annotations[corev1.EndpointsLastChangeTriggerTime] != "" ||
				len(s.Ports) != 1 || *s.Ports[0].Port != 5432 || s.OwnerReferences[0].Kind != "Endpoints" {
				desc += fmt.Sprintf(" (labels %v, annotations %v, ports %v, owners %v)", s.Labels, s.Annotations, s.Ports, s.OwnerReferences)
			}
			out = append(out, desc)
		}
		sort.Strings(out)
		return strings.Join(out, "; ")
	}
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := mirrored(); got != want; got = mirrored() {
			if time.Now().After(deadline) {
				t.Fatalf("mirrored slices:\n got %s\nwant %s", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("external IPv4 192.0.2.10/true 192.0.2.11/false; external IPv6 2001:db8::10/false")

	if _, err := client.CoreV1().Endpoints("ns").Update(ctx, eps("external", map[string]string{"tier": "data"}, []string{"192.0.2.10", "192.0.2.12"}, nil), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("external IPv4 192.0.2.10/true 192.0.2.12/true")

	if _, err := client.CoreV1().Services("ns").Update(ctx, svc("external", map[string]string{"app": "db"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("")
}
