package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

// TestPodDNSConfig: each DNS policy gives the resolv.conf the kubelet
// gives it.
func TestPodDNSConfig(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch example.test\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{cfg: Config{ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", ResolvConf: resolv}}
	show := func(c *runtimeapi.DNSConfig) string {
		return strings.Join(c.Servers, ",") + " | " + strings.Join(c.Searches, ",") + " | " + strings.Join(c.Options, ",")
	}
	cluster := "10.96.0.10 | ns.svc.cluster.local,svc.cluster.local,cluster.local | ndots:5"
	host := "192.0.2.53 | example.test | edns0"
	for _, c := range []struct {
		name   string
		policy corev1.DNSPolicy
		host   bool
		extra  *corev1.PodDNSConfig
		want   string
	}{
		{"ClusterFirst", corev1.DNSClusterFirst, false, nil, cluster},
		{"ClusterFirst on the host's network falls back to Default", corev1.DNSClusterFirst, true, nil, host},
		{"ClusterFirstWithHostNet", corev1.DNSClusterFirstWithHostNet, true, nil, cluster},
		{"Default", corev1.DNSDefault, false, nil, host},
		{"None with dnsConfig", corev1.DNSNone, false, &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.1"}, Searches: []string{"a.test"},
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "rotate"}}}, "192.0.2.1 | a.test | ndots:2,rotate"},
		{"ClusterFirst with dnsConfig", corev1.DNSClusterFirst, false, &corev1.PodDNSConfig{Nameservers: []string{"10.96.0.10"}, Searches: []string{"b.test", "cluster.local"},
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("1")}}},
			"10.96.0.10 | ns.svc.cluster.local,svc.cluster.local,cluster.local,b.test | ndots:1"},
	} {
		pod := &corev1.Pod{Spec: corev1.PodSpec{DNSPolicy: c.policy, HostNetwork: c.host, DNSConfig: c.extra}}
		pod.Namespace = "ns"
		if got := show(k.dnsConfig(pod)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
