package netproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeIptables records what the proxy loads.
type fakeIptables struct {
	mu       sync.Mutex
	restores []string
	jumps    map[string]bool
	fail     bool
}

func (f *fakeIptables) Restore(_ context.Context, input []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		f.fail = false
		return fmt.Errorf("iptables-restore: line 3 failed")
	}
	f.restores = append(f.restores, string(input))
	return nil
}

func (f *fakeIptables) Chains(context.Context, string) ([]string, error) { return nil, nil }

func (f *fakeIptables) EnsureFirst(_ context.Context, table, chain string, rule ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jumps[table+" "+chain+" "+strings.Join(rule, " ")] = true
	return nil
}

func (f *fakeIptables) Exists(_ context.Context, table, chain string, rule ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jumps[table+" "+chain+" "+strings.Join(rule, " ")], nil
}

func (f *fakeIptables) loaded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.restores...)
}

type fakeConntrack struct {
	mu      sync.Mutex
	deleted []string
}

func (c *fakeConntrack) DeleteUDP(svc net.IP, port int32, ep net.IP) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deleted = append(c.deleted, fmt.Sprintf("%s:%d→%s", svc, port, ep))
	return nil
}

func (c *fakeConntrack) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deleted...)
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProxySyncs(t *testing.T) {
	dns := service("dns", "10.96.0.10", corev1.ServicePort{Name: "http", Port: 53, Protocol: corev1.ProtocolUDP})
	udpSlice := slice("dns", 53, ep{"10.244.1.5", "n1", true}, ep{"10.244.2.7", "n2", true})
	for i := range udpSlice.Ports {
		udpSlice.Ports[i].Protocol = &dns.Spec.Ports[0].Protocol
	}
	client := fake.NewClientset(service("web", "10.96.0.20"), slice("web", 80, ep{"10.244.1.5", "n1", true}), dns, udpSlice)
	ipt := &fakeIptables{jumps: map[string]bool{}}
	ct := &fakeConntrack{}
	p, err := NewProxy(ProxyConfig{Client: client, Rules: testConfig(), Iptables: ipt, Conntrack: ct, CheckPeriod: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// The first sync is full and makes the jumps.
	eventually(t, "a first sync", func() bool { return len(ipt.loaded()) > 0 })
	if first := ipt.loaded()[0]; !strings.Contains(first, "--to-destination 10.244.1.5:80") || !strings.Contains(first, ":"+chainServices) {
		t.Fatalf("the first sync:\n%s", first)
	}
	if ok, _ := ipt.Exists(ctx, "nat", "PREROUTING", jumps()[0][2:]...); !ok {
		t.Fatal("no jump from PREROUTING")
	}

	// An endpoint change is a partial sync.
	n := len(ipt.loaded())
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, slice("web", 80, ep{"10.244.1.6", "n1", true}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sync after the endpoint changed", func() bool {
		l := ipt.loaded()
		return len(l) > n && strings.Contains(l[len(l)-1], "10.244.1.6:80")
	})
	if last := ipt.loaded()[len(ipt.loaded())-1]; strings.Contains(last, ":"+chainName("SVC", "ns/dns:http", "udp")) {
		t.Errorf("a partial sync rewrote an unchanged service:\n%s", last)
	}

	// A UDP endpoint that goes takes its flows with it.
	udpSlice.Endpoints = udpSlice.Endpoints[:1]
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, udpSlice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale UDP flows deleted", func() bool {
		d := ct.list()
		return len(d) == 1 && d[0] == "10.96.0.10:53→10.244.2.7"
	})

	// A failed load is retried with a full sync; a jump removed behind
	// the proxy's back is put back.
	ipt.mu.Lock()
	ipt.fail = true
	delete(ipt.jumps, "nat PREROUTING "+strings.Join(jumps()[0][2:], " "))
	ipt.mu.Unlock()
	if _, err := client.CoreV1().Services("ns").Create(ctx, service("new", "10.96.0.30"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the jump put back and the new service written", func() bool {
		ok, _ := ipt.Exists(ctx, "nat", "PREROUTING", jumps()[0][2:]...)
		l := ipt.loaded()
		return ok && strings.Contains(l[len(l)-1], "10.96.0.30")
	})
}

// fakeRoutes is a routing table in memory.
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[string]Route
}

func (f *fakeRoutes) List() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeRoutes) Replace(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[r.Dst.String()] = r
	return nil
}

func (f *fakeRoutes) Delete(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst.String())
	return nil
}

func (f *fakeRoutes) has(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.routes {
		if r.String() == s {
			return true
		}
	}
	return false
}

func TestRoutesFollowNodes(t *testing.T) {
	node := func(name, cidr, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	}
	client := fake.NewClientset(node("n1", "10.244.1.0/24", "10.250.0.11"), node("n2", "10.244.2.0/24", "10.250.0.12"))
	_, stale, _ := net.ParseCIDR("10.244.9.0/24")
	table := &fakeRoutes{routes: map[string]Route{stale.String(): {Dst: stale, Gateway: net.ParseIP("10.250.0.19")}}}
	r, err := NewRoutes(RoutesConfig{Client: client, NodeName: "n1", ServiceCIDR: testConfig().ServiceCIDR, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, "routes to n2 and the service range, and the stale one gone", func() bool {
		return table.has("10.244.2.0/24 via 10.250.0.12") && table.has("10.96.0.0/16") && !table.has("10.244.9.0/24 via 10.250.0.19")
	})
	eventually(t, "NetworkUnavailable cleared", func() bool {
		n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == "RouteCreated" {
				return true
			}
		}
		return false
	})
	if _, err := client.CoreV1().Nodes().Create(ctx, node("n3", "10.244.3.0/24", "10.250.0.13"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route to n3 added and n2's removed", func() bool {
		return table.has("10.244.3.0/24 via 10.250.0.13") && !table.has("10.244.2.0/24 via 10.250.0.12")
	})
}

func TestHealthCheckNodePort(t *testing.T) {
	// A free port on loopback for the Service's health-check node port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	svc := service("web", "10.96.0.20", corev1.ServicePort{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP})
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = port
	client := fake.NewClientset(svc, slice("web", 80, ep{"10.244.1.5", "n1", true}, ep{"10.244.1.6", "n1", true}, ep{"10.244.2.7", "n2", true}))
	p, err := NewProxy(ProxyConfig{Client: client, Rules: testConfig(), Iptables: &fakeIptables{jumps: map[string]bool{}}, HealthCheckHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	check := func() (int, healthReply) {
		var reply healthReply
		resp, err := http.Get(url)
		if err != nil {
			return 0, reply
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&reply)
		return resp.StatusCode, reply
	}
	eventually(t, "200 with this node's two endpoints", func() bool {
		code, reply := check()
		return code == http.StatusOK && reply.LocalEndpoints == 2 && reply.Service.Name == "web" && reply.Service.Namespace == "ns"
	})

	// Without a local endpoint the node answers 503, so that a load
	// balancer sends elsewhere.
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, slice("web", 80, ep{"10.244.2.7", "n2", true}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "503 without a local endpoint", func() bool {
		code, reply := check()
		return code == http.StatusServiceUnavailable && reply.LocalEndpoints == 0
	})

	// The port closes when the Service no longer has the policy.
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	svc.Spec.HealthCheckNodePort = 0
	if _, err := client.CoreV1().Services("ns").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the health-check port closed", func() bool {
		code, _ := check()
		return code == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
