package kube

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// A service's ClusterIP and node ports are allocated by writing a key per
// address in the same transaction as the service, with a must-not-exist
// precondition: two services can never get the same address, even when
// created at once through different servers. Deleting the service deletes
// the keys in the same transaction.
const (
	serviceIPPrefix   = registryPrefix + "ranges/serviceips/"
	nodePortPrefix    = registryPrefix + "ranges/servicenodeports/"
	nodePortBase      = 30000
	nodePortRangeSize = 2768
)

type ipAllocator struct {
	cidr  *net.IPNet
	store *fsm.Store
}

func newIPAllocator(cidr *net.IPNet, store *fsm.Store) *ipAllocator {
	return &ipAllocator{cidr: cidr, store: store}
}

func ipToUint(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func uintToIP(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

// size is the number of usable addresses: the network and broadcast
// addresses are not handed out.
func (a *ipAllocator) size() uint32 {
	ones, bits := a.cidr.Mask.Size()
	return uint32(1)<<(bits-ones) - 2
}

func (a *ipAllocator) taken(key string) bool {
	_, found, _, err := a.store.Get(key)
	return err != nil || found
}

// free returns a free slot of n, the one whose key keyOf gives is not in
// the store: random, as kube-apiserver's allocators, then the next free
// one after it.
func (a *ipAllocator) free(n uint32, keyOf func(slot uint32) string) (uint32, bool) {
	start := rand.Uint32N(n)
	for i := range n {
		if slot := (start + i) % n; !a.taken(keyOf(slot)) {
			return slot, true
		}
	}
	return 0, false
}

// pick returns a free ClusterIP.
func (a *ipAllocator) pick() (net.IP, error) {
	ipOf := func(slot uint32) net.IP { return uintToIP(ipToUint(a.cidr.IP) + 1 + slot) }
	slot, ok := a.free(a.size(), func(slot uint32) string { return serviceIPPrefix + ipOf(slot).String() })
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("no ClusterIP left in %s", a.cidr))
	}
	return ipOf(slot), nil
}

func nodePortKey(port int32) string { return nodePortPrefix + strconv.Itoa(int(port)) }

// admitCreate decides what a new object needs from the rest of the
// store (a service's addresses, a pod's priority) and returns the
// operations that record or condition on it.
func (h *Handler) admitCreate(ctx context.Context, r *resource.Resource, obj runtime.Object) ([]fsm.Op, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return h.allocateAddresses(r, o)
	case *corev1.Pod:
		return h.admitPriority(ctx, o)
	}
	return nil, nil
}

// allocateAddresses gives a new service its ClusterIP and node ports.
func (h *Handler) allocateAddresses(r *resource.Resource, svc *corev1.Service) ([]fsm.Op, error) {
	a := h.ips
	var ops []fsm.Op
	spec := field.NewPath("spec")
	switch ip := svc.Spec.ClusterIP; {
	case svc.Spec.Type == corev1.ServiceTypeExternalName || ip == corev1.ClusterIPNone:
	case ip == "":
		picked, err := a.pick()
		if err != nil {
			return nil, err
		}
		svc.Spec.ClusterIP = picked.String()
		ops = append(ops, fsm.Put(serviceIPPrefix+picked.String(), []byte(svc.Namespace+"/"+svc.Name), "", fsm.Cond{MustNotExist: true}))
	default:
		parsed := net.ParseIP(ip)
		if parsed == nil || parsed.To4() == nil || !a.cidr.Contains(parsed) {
			return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("clusterIPs").Index(0), ip,
				fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, ip, a.cidr))})
		}
		if a.taken(serviceIPPrefix + parsed.String()) {
			return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("clusterIPs").Index(0), ip,
				fmt.Sprintf("failed to allocate IP %s: provided IP is already allocated", ip))})
		}
		ops = append(ops, fsm.Put(serviceIPPrefix+parsed.String(), []byte(svc.Namespace+"/"+svc.Name), "", fsm.Cond{MustNotExist: true}))
	}
	if svc.Spec.ClusterIP != "" {
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			if p.NodePort == 0 {
				slot, ok := a.free(nodePortRangeSize, func(slot uint32) string { return nodePortKey(nodePortBase + int32(slot)) })
				if !ok {
					return nil, apierrors.NewInternalError(errors.New("no node port left in 30000-32767"))
				}
				p.NodePort = nodePortBase + int32(slot)
			} else if p.NodePort < nodePortBase || p.NodePort >= nodePortBase+nodePortRangeSize || a.taken(nodePortKey(p.NodePort)) {
				return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("ports").Index(i).Child("nodePort"), p.NodePort,
					"provided port is already allocated or not in the range 30000-32767")})
			}
			ops = append(ops, fsm.Put(nodePortKey(p.NodePort), []byte(svc.Namespace+"/"+svc.Name), "", fsm.Cond{MustNotExist: true}))
		}
	}
	return ops, nil
}

// releaseOnDelete returns the operations that free what obj holds.
func (h *Handler) releaseOnDelete(_ *resource.Resource, obj runtime.Object) []fsm.Op {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	var ops []fsm.Op
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		ops = append(ops, fsm.Delete(serviceIPPrefix+ip, fsm.Cond{}))
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			ops = append(ops, fsm.Delete(nodePortKey(p.NodePort), fsm.Cond{}))
		}
	}
	return ops
}
