package resource

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAllocatorName marks the IPAddresses that record Services' ClusterIPs,
// as kube-apiserver's allocator marks them.
const IPAllocatorName = "ipallocator.k8s.io"

// ServiceIPAddress is the IPAddress that records ip as the ClusterIP of
// the Service namespace/name: the API server writes it with the Service,
// the repair controller writes it again when it is missing.
func ServiceIPAddress(namespace, name, ip string) *networkingv1.IPAddress {
	return &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: ip, Labels: map[string]string{
			networkingv1.LabelIPAddressFamily: string(corev1.IPv4Protocol), networkingv1.LabelManagedBy: IPAllocatorName}},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: namespace, Name: name}},
	}
}

// AddressService returns the Service whose ClusterIP addr records, if it
// is the allocator's record of one.
func AddressService(addr *networkingv1.IPAddress) (namespace, name string, ok bool) {
	ref := addr.Spec.ParentRef
	if addr.Labels[networkingv1.LabelManagedBy] != IPAllocatorName || ref == nil || ref.Group != "" || ref.Resource != "services" {
		return "", "", false
	}
	return ref.Namespace, ref.Name, true
}
