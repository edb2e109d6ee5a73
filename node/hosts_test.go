package node

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestManagedHosts(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns"}, Spec: corev1.PodSpec{
		Subdomain:   "web",
		HostAliases: []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"foo.local", "bar.local"}}},
	}}
	got := managedHosts(pod, "10.244.0.7", "cluster.local")
	for _, want := range []string{
		"127.0.0.1\tlocalhost\n",
		"10.244.0.7\tweb-0.web.ns.svc.cluster.local\tweb-0\n",
		"\n# Entries added by HostAliases.\n1.2.3.4\tfoo.local\tbar.local\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
}

func TestPodHostname(t *testing.T) {
	long := strings.Repeat("a", 62) + "-b-c"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: long}}
	if h := podHostname(pod); h != strings.Repeat("a", 62) {
		t.Fatalf("host name of a pod named %q: %q", long, h)
	}
	pod.Spec.Hostname = "web"
	if h := podHostname(pod); h != "web" {
		t.Fatalf("host name with spec.hostname: %q", h)
	}
}
