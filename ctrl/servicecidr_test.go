package ctrl

import (
	"context"
	"log/slog"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/pontoon-dev/pontoon/api/resource"
)

// TestServiceCIDRHeldOnlyBy: a ServiceCIDR being deleted is held by an
// allocator's address that no other (live) ServiceCIDR contains, and by
// nothing else.
func TestServiceCIDRHeldOnlyBy(t *testing.T) {
	now := metav1.Now()
	cidr := func(name, r string, deleting bool) *networkingv1.ServiceCIDR {
		c := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{r}}}
		if deleting {
			c.DeletionTimestamp = &now
		}
		return c
	}
	addr := func(ip, managedBy string) *networkingv1.IPAddress {
		return &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: ip, Labels: map[string]string{networkingv1.LabelManagedBy: managedBy}}}
	}
	client := fake.NewClientset(
		cidr("kubernetes", "10.96.0.0/16", false), cidr("inside", "10.96.5.0/24", true),
		cidr("alone", "10.97.0.0/24", true), cidr("also-gone", "10.98.0.0/16", true), cidr("gone", "10.98.1.0/24", true),
		addr("10.96.5.7", resource.IPAllocatorName), addr("10.97.0.9", resource.IPAllocatorName), addr("10.98.1.1", resource.IPAllocatorName), addr("10.97.0.200", "someone-else"))
	factory := informers.NewSharedInformerFactory(client, 0)
	c := newServiceCIDRController(Config{Client: client, Informers: factory, Events: record.NewBroadcaster(), Logger: slog.Default()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		t.Fatal("caches did not sync")
	}
	sc := &serviceCIDRController{controller: c, client: client, cidrs: factory.Networking().V1().ServiceCIDRs().Lister(),
		addresses: factory.Networking().V1().IPAddresses().Lister()}
	for name, want := range map[string]string{
		"inside":    "",          // the default ServiceCIDR contains its address
		"alone":     "10.97.0.9", // only an allocator's address counts
		"gone":      "10.98.1.1", // the other one containing it is going too
		"also-gone": "10.98.1.1",
	} {
		cur, err := sc.cidrs.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := sc.heldOnlyBy(cur); got != want {
			t.Errorf("%s is held by %q, want %q", name, got, want)
		}
	}
}
