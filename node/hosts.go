package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hostsMount writes the pod's /etc/hosts as the kubelet manages it and
// mounts it into the container, unless the container mounts /etc/hosts
// itself or the pod has no IP yet. A host-network pod's file is the node's
// own with the pod's hostAliases added.
func (k *Kubelet) hostsMount(pod *corev1.Pod, c *corev1.Container, podIP string) (*runtimeapi.Mount, error) {
	if podIP == "" {
		return nil, nil
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/hosts" {
			return nil, nil
		}
	}
	var content string
	if pod.Spec.HostNetwork {
		b, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return nil, err
		}
		content = string(b) + hostAliases(pod)
	} else {
		content = managedHosts(pod, podIP, k.cfg.ClusterDomain)
	}
	// A volume name is a DNS label: ".etc-hosts" is never one.
	path := filepath.Join(k.podVolumeDir(pod), ".etc-hosts")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return nil, err
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: path}, nil
}

// managedHosts is the kubelet's hosts file of a pod: localhost, the pod's
// own name (with its subdomain's, when it has one), and its hostAliases.
func managedHosts(pod *corev1.Pod, podIP, domain string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	hostname := podHostname(pod)
	if pod.Spec.Subdomain != "" && domain != "" {
		fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, hostname, pod.Spec.Subdomain, pod.Namespace, domain, hostname)
	} else {
		fmt.Fprintf(&b, "%s\t%s\n", podIP, hostname)
	}
	b.WriteString(hostAliases(pod))
	return b.String()
}

// podHostname is the pod's host name as the kubelet makes it: its
// spec.hostname, else its name, cut to 63 characters without a trailing
// '-' or '.' (a pod name may be longer than a host name may).
func podHostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// hostAliases are the lines the pod's hostAliases add to its hosts file.
func hostAliases(pod *corev1.Pod) string {
	if len(pod.Spec.HostAliases) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range pod.Spec.HostAliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
	return b.String()
}
