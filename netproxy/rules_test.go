package netproxy

import (
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func testConfig() Config {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	_, services, _ := net.ParseCIDR("10.96.0.0/16")
	return Config{NodeName: "n1", ClusterCIDR: cluster, ServiceCIDR: services}
}

func service(name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, Ports: ports}}
}

// ep is an endpoint on node, ready or (terminating, still serving) not.
type ep struct {
	ip, node string
	ready    bool
}

func slice(svc string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svc + "-abc",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: ptr.To(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(true), Terminating: ptr.To(!e.ready)}})
	}
	return s
}

// rulesText is every rule of a table, one per line.
func rulesText(t Table) string {
	var b strings.Builder
	for _, rules := range t.Chains {
		for _, r := range rules {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

func TestClusterIPSpreadsOverReadyEndpoints(t *testing.T) {
	r := Compute(testConfig(), []*corev1.Service{service("web", "10.96.0.20")},
		[]*discoveryv1.EndpointSlice{slice("web", 8080, ep{"10.244.1.5", "n1", true}, ep{"10.244.2.7", "n2", true})})
	svc := chainName("SVC", "ns/web:http", "tcp")
	nat := rulesText(r.NAT)
	for _, want := range []string{
		// The ClusterIP's shard, by its /24, and the rule there.
		"-A PONTOON-SERVICES -d 10.96.0.0/24 -j PONTOON-CIP-10-96-0",
		"-A PONTOON-CIP-10-96-0 " + `-m comment --comment "ns/web:http" -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j ` + svc,
		"-m statistic --mode random --probability 0.5000000000 -p tcp -j DNAT --to-destination 10.244.1.5:8080",
		`-m comment --comment "ns/web:http" -p tcp -j DNAT --to-destination 10.244.2.7:8080`,
		// Hairpin: the local endpoint reaching itself through its
		// service is masqueraded, so its reply comes back through the
		// node; the other node's endpoint is its node's business.
		"-A PONTOON-POSTROUTING -s 10.244.1.5/32 -d 10.244.1.5/32",
	} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat lacks %q:\n%s", want, nat)
		}
	}
	if rules := r.NAT.Chains[svc]; len(rules) != 3 || strings.Contains(rules[2], "statistic") {
		t.Errorf("the service chain: masquerade off-cluster clients, then one of two, then the other:\n%s", strings.Join(rules, "\n"))
	}
	if strings.Contains(nat, "-s 10.244.2.7/32 -d 10.244.2.7/32") || strings.Contains(nat, "PONTOON-SEP-") {
		t.Errorf("hairpin for another node's endpoint, or an endpoint chain without session affinity:\n%s", nat)
	}
	if strings.Contains(rulesText(r.Filter), "10.96.0.20") {
		t.Errorf("a service with endpoints is refused:\n%s", rulesText(r.Filter))
	}
}

func TestServiceWithoutEndpointsRefused(t *testing.T) {
	r := Compute(testConfig(), []*corev1.Service{service("empty", "10.96.0.30")}, nil)
	filter := rulesText(r.Filter)
	if !strings.Contains(filter, "-d 10.96.0.30/32 -p tcp -m tcp --dport 80") || !strings.Contains(filter, "tcp-reset") {
		t.Errorf("no refusal of a service without endpoints:\n%s", filter)
	}
	// Every other service address is refused after the services.
	last := r.Filter.Chains[chainServices][len(r.Filter.Chains[chainServices])-1]
	if !strings.Contains(last, "-d 10.96.0.0/16") || !strings.Contains(last, "REJECT") {
		t.Errorf("the service range is not refused last: %s", last)
	}
	if strings.Contains(rulesText(r.NAT), "10.96.0.30") {
		t.Errorf("a service without endpoints is translated:\n%s", rulesText(r.NAT))
	}
}

func TestTerminatingEndpointsOnlyWhenNoReadyOne(t *testing.T) {
	svc := service("web", "10.96.0.20")
	both := Compute(testConfig(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice("web", 80, ep{"10.244.1.5", "n1", true}, ep{"10.244.1.6", "n1", false})})
	if nat := rulesText(both.NAT); strings.Contains(nat, "10.244.1.6") || !strings.Contains(nat, "10.244.1.5") {
		t.Errorf("a terminating endpoint takes traffic beside a ready one:\n%s", nat)
	}
	draining := Compute(testConfig(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice("web", 80, ep{"10.244.1.6", "n1", false})})
	if nat := rulesText(draining.NAT); !strings.Contains(nat, "--to-destination 10.244.1.6:80") {
		t.Errorf("the last serving, terminating endpoint takes no traffic:\n%s", nat)
	}
}

func TestNodePortWithLocalTrafficPolicy(t *testing.T) {
	svc := service("web", "10.96.0.20", corev1.ServicePort{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP})
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	ext := chainName("EXT", "ns/web:http", "tcp")

	elsewhere := Compute(testConfig(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice("web", 80, ep{"10.244.2.7", "n2", true})})
	if !strings.Contains(rulesText(elsewhere.NAT), "--dport 30080 -j "+ext) {
		t.Errorf("pods and the node reach a Local node port without a local endpoint:\n%s", rulesText(elsewhere.NAT))
	}
	if f := rulesText(elsewhere.Filter); !strings.Contains(f, "--dport 30080") || !strings.Contains(f, "-j DROP") {
		t.Errorf("outside clients of a node without a local endpoint are not dropped:\n%s", f)
	}

	here := Compute(testConfig(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice("web", 80, ep{"10.244.1.5", "n1", true}, ep{"10.244.2.7", "n2", true})})
	local := chainName("SVL", "ns/web:http", "tcp")
	rules := here.NAT.Chains[ext]
	if len(rules) == 0 || !strings.HasSuffix(rules[len(rules)-1], "-j "+local) {
		t.Errorf("outside clients do not go to local endpoints:\n%s", strings.Join(rules, "\n"))
	}
	for _, r := range rules {
		if strings.Contains(r, chainMarkMasq) && !strings.Contains(r, "--src-type LOCAL") {
			t.Errorf("an outside client's address is not kept: %s", r)
		}
	}
	if l := here.NAT.Chains[local]; len(l) != 1 || !strings.HasSuffix(l[0], "-j DNAT --to-destination 10.244.1.5:80") {
		t.Errorf("the local chain does not send to the local endpoint alone:\n%s", strings.Join(l, "\n"))
	}
}

func TestSessionAffinity(t *testing.T) {
	svc := service("web", "10.96.0.20")
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	r := Compute(testConfig(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice("web", 80, ep{"10.244.1.5", "n1", true}, ep{"10.244.2.7", "n2", true})})
	nat := rulesText(r.NAT)
	if strings.Count(nat, "--rcheck --seconds 60 --reap") != 2 || strings.Count(nat, "--rsource --set") != 2 {
		t.Errorf("session affinity:\n%s", nat)
	}
	// Each endpoint's chain records the client, then translates.
	sep := chainName("SEP", "ns/web:http", "tcp", "10.244.1.5", "80")
	if rules := r.NAT.Chains[sep]; len(rules) != 2 || !strings.Contains(rules[0], "--name "+sep) || !strings.HasSuffix(rules[1], "--to-destination 10.244.1.5:80") {
		t.Errorf("the endpoint chain with session affinity:\n%s", strings.Join(rules, "\n"))
	}
}

func TestHeadlessAndExternalNameNotProxied(t *testing.T) {
	headless := service("db", corev1.ClusterIPNone)
	external := service("ext", "")
	external.Spec.Type = corev1.ServiceTypeExternalName
	r := Compute(testConfig(), []*corev1.Service{headless, external}, []*discoveryv1.EndpointSlice{slice("db", 5432, ep{"10.244.1.5", "n1", true})})
	if nat := rulesText(r.NAT); strings.Contains(nat, "ns/db") || strings.Contains(nat, "ns/ext") {
		t.Errorf("headless or ExternalName services proxied:\n%s", nat)
	}
}

func TestPartialSyncWritesWhatChanged(t *testing.T) {
	cfg := testConfig()
	services := []*corev1.Service{service("a", "10.96.0.20"), service("b", "10.96.0.21")}
	before := Compute(cfg, services, []*discoveryv1.EndpointSlice{slice("a", 80, ep{"10.244.1.5", "n1", true}), slice("b", 80, ep{"10.244.1.9", "n1", true})})
	after := Compute(cfg, services, []*discoveryv1.EndpointSlice{slice("a", 80, ep{"10.244.1.6", "n1", true}), slice("b", 80, ep{"10.244.1.9", "n1", true})})
	in := string(restoreInput(after, &before, nil))
	if !strings.Contains(in, ":"+chainName("SVC", "ns/a:http", "tcp")) || !strings.Contains(in, "--to-destination 10.244.1.6:80") {
		t.Errorf("the partial sync lacks the changed service:\n%s", in)
	}
	for _, unchanged := range []string{":" + chainName("SVC", "ns/b:http", "tcp"), ":" + chainServices, ":PONTOON-CIP-10-96-0"} {
		if strings.Contains(in, unchanged) {
			t.Errorf("the partial sync rewrites the unchanged %s:\n%s", unchanged, in)
		}
	}
	// A service gone takes its chain with it.
	gone := Compute(cfg, services[:1], []*discoveryv1.EndpointSlice{slice("a", 80, ep{"10.244.1.6", "n1", true})})
	if in := string(restoreInput(gone, &after, nil)); !strings.Contains(in, "-X "+chainName("SVC", "ns/b:http", "tcp")) || !strings.Contains(in, ":PONTOON-CIP-10-96-0") {
		t.Errorf("the partial sync after a service went:\n%s", in)
	}
	// A full sync deletes the proxy's chains it does not want, and only
	// those.
	stale := chainName("SVC", "ns/old:http", "tcp")
	full := string(restoreInput(after, nil, map[string][]string{"nat": {"PREROUTING", "KUBE-SERVICES", stale}}))
	if !strings.Contains(full, "-X "+stale) || strings.Contains(full, "KUBE-SERVICES") {
		t.Errorf("the full sync:\n%s", full)
	}
}

// TestCachedServicesComputedOnce: a Service whose objects are the same
// is not computed again, and its rules are those Compute gives.
func TestCachedServicesComputedOnce(t *testing.T) {
	cfg := testConfig()
	svcs, slices := manyServices(3)
	cache := serviceCache{}
	first, _ := computeCached(cfg, svcs, slices, cache)
	kept := cache["ns/s1"]
	changed := slices[2].DeepCopy()
	changed.Endpoints[0].Addresses[0] = "10.244.200.1"
	slices[2] = changed
	second, _ := computeCached(cfg, svcs, slices, cache)
	if cache["ns/s1"] != kept || cache["ns/s2"].slices[0] != changed {
		t.Fatal("the cache computed an unchanged service again, or kept a changed one")
	}
	if want := Compute(cfg, svcs, slices); string(restoreInput(second, nil, nil)) != string(restoreInput(want, nil, nil)) {
		t.Errorf("cached rules differ from computed ones")
	}
	if string(restoreInput(first, nil, nil)) == string(restoreInput(second, nil, nil)) {
		t.Error("the changed endpoint is not in the rules")
	}
	// A service gone leaves the cache.
	computeCached(cfg, svcs[:1], slices, cache)
	if len(cache) != 1 {
		t.Errorf("the cache holds %d services, want 1", len(cache))
	}
}

func TestWantedRoutes(t *testing.T) {
	node := func(name, cidr, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}}}
	}
	cfg := testConfig()
	got := wantedRoutes("n1", cfg.ServiceCIDR, []*corev1.Node{node("n1", "10.244.1.0/24", "10.250.0.11"), node("n2", "10.244.2.0/24", "10.250.0.12"), node("n3", "", "10.250.0.13")})
	if len(got) != 2 || got[0].Gateway != nil || got[0].Dst.String() != "10.96.0.0/16" || got[1].String() != "10.244.2.0/24 via 10.250.0.12" {
		t.Fatalf("routes: %v", got)
	}
}
