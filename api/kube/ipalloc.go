package kube

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// A service's ClusterIP and node ports are allocated by writing a record
// per address in the same transaction as the service, with a
// must-not-exist precondition: two services can never get the same
// address, even when created at once through different servers. An
// update that changes the service's type or ports takes and gives back
// records in its transaction, and deleting the service deletes them in
// its own. A ClusterIP's record is an IPAddress object named by the
// address, as kube-apiserver keeps them (so an IPAddress a user creates
// reserves its address); a node port's is an internal key.
const (
	nodePortPrefix    = registryPrefix + "ranges/servicenodeports/"
	nodePortBase      = 30000
	nodePortRangeSize = 2768
)

type ipAllocator struct {
	// cidr is the range of --service-cidr, the default ServiceCIDR's.
	cidr        *net.IPNet
	store       *fsm.Store
	addresses   *resource.Resource
	serviceCIDR *resource.Resource
	objects     *objects
}

func newIPAllocator(cidr *net.IPNet, store *fsm.Store, reg *resource.Registry, o *objects) *ipAllocator {
	addresses, _ := reg.Lookup(networkingv1.SchemeGroupVersion.WithResource("ipaddresses"))
	serviceCIDR, _ := reg.Lookup(networkingv1.SchemeGroupVersion.WithResource("servicecidrs"))
	return &ipAllocator{cidr: cidr, store: store, addresses: addresses, serviceCIDR: serviceCIDR, objects: o}
}

func ipToUint(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func uintToIP(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

// usable is the number of addresses of cidr a Service may get: not the
// network and broadcast addresses.
func usable(cidr *net.IPNet) uint32 {
	ones, bits := cidr.Mask.Size()
	if bits-ones < 2 {
		return 0
	}
	return uint32(1)<<(bits-ones) - 2
}

func (a *ipAllocator) taken(key string) bool {
	_, found, _, err := a.store.Get(key)
	return err != nil || found
}

// addressKey is the key of the IPAddress object of ip.
func (a *ipAllocator) addressKey(ip string) string { return key(a.addresses, "", ip) }

// ranges are the ranges ClusterIPs come from: --service-cidr's, then
// those of the other ServiceCIDRs that are not being deleted, in name
// order.
func (a *ipAllocator) ranges(ctx context.Context) ([]*net.IPNet, error) {
	out := []*net.IPNet{a.cidr}
	res, err := a.store.List(ctx, fsm.ListOptions{Prefix: prefix(a.serviceCIDR, "")})
	if err != nil {
		return nil, err
	}
	for _, kv := range res.KVs {
		obj, err := a.objects.decodeShared(a.serviceCIDR, kv)
		if err != nil {
			return nil, err
		}
		c := obj.(*networkingv1.ServiceCIDR)
		if c.DeletionTimestamp != nil {
			continue
		}
		for _, s := range c.Spec.CIDRs {
			if _, n, err := net.ParseCIDR(s); err == nil && n.IP.To4() != nil && n.String() != a.cidr.String() {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// pick returns a free ClusterIP of the first range that has one. The
// first address of --service-cidr is never picked: it is the kubernetes
// Service's, which the leader creates (a service may still ask for it by
// name).
func (a *ipAllocator) pick(ranges []*net.IPNet) (net.IP, error) {
	for i, r := range ranges {
		first, n := ipToUint(r.IP)+1, usable(r)
		if i == 0 && n > 0 {
			first, n = first+1, n-1
		}
		ipOf := func(slot uint32) net.IP { return uintToIP(first + slot) }
		if slot, ok := free(n, func(slot uint32) bool { return a.taken(a.addressKey(ipOf(slot).String())) }); ok {
			return ipOf(slot), nil
		}
	}
	return nil, apierrors.NewInternalError(fmt.Errorf("no ClusterIP left in %s", joinRanges(ranges)))
}

func joinRanges(ranges []*net.IPNet) string {
	var s []string
	for _, r := range ranges {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

// takeAddress returns the operation that records ip as svc's: its
// IPAddress object, which must not exist.
func (a *ipAllocator) takeAddress(svc *corev1.Service, ip string) (fsm.Op, error) {
	addr := resource.ServiceIPAddress(svc.Namespace, svc.Name, ip)
	addr.UID, addr.CreationTimestamp = types.UID(uuid.NewString()), metav1.Now()
	k := a.addressKey(ip)
	value, err := a.objects.encodeSealed(a.addresses, k, addr)
	if err != nil {
		return fsm.Op{}, err
	}
	return fsm.Put(k, value, string(addr.UID), fsm.Cond{MustNotExist: true}), nil
}

// releaseAddress returns the operation that gives back svc's ip: the
// deletion of its IPAddress, unless that is gone or another object's
// (the address was given back another way and taken since).
func (a *ipAllocator) releaseAddress(svc *corev1.Service, ip string) []fsm.Op {
	kv, found, _, err := a.store.Get(a.addressKey(ip))
	if err != nil || !found {
		return nil
	}
	obj, err := a.objects.decodeShared(a.addresses, kv)
	if err != nil {
		return nil
	}
	if ns, name, ok := resource.AddressService(obj.(*networkingv1.IPAddress)); !ok || ns != svc.Namespace || name != svc.Name {
		return nil
	}
	return []fsm.Op{fsm.Delete(kv.Key, fsm.Cond{ModRevision: kv.ModRevision})}
}

// free returns a free slot of n, one that taken says nothing of: random,
// as kube-apiserver's allocators, then the next free one after it.
func free(n uint32, taken func(slot uint32) bool) (uint32, bool) {
	if n == 0 {
		return 0, false
	}
	start := rand.Uint32N(n)
	for i := range n {
		if slot := (start + i) % n; !taken(slot) {
			return slot, true
		}
	}
	return 0, false
}

func nodePortKey(port int32) string { return nodePortPrefix + strconv.Itoa(int(port)) }

// admitCreate decides what a new object needs from the rest of the
// store (a service's addresses, a pod's priority) and returns the
// operations that record or condition on it.
func (h *Handler) admitCreate(ctx context.Context, r *resource.Resource, obj runtime.Object) ([]fsm.Op, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return h.allocateAddresses(ctx, r, nil, o)
	case *corev1.Pod:
		sa, err := h.admitServiceAccount(ctx, o)
		if err != nil {
			return nil, err
		}
		priority, err := h.admitPriority(ctx, o)
		return append(sa, priority...), err
	case *networkingv1.Ingress:
		return nil, h.admitIngressClass(ctx, o)
	}
	return nil, nil
}

// admitUpdate is admitCreate for an update of old: a service whose type
// or ports changed gets and gives back addresses.
func (h *Handler) admitUpdate(ctx context.Context, r *resource.Resource, old, obj runtime.Object) ([]fsm.Op, error) {
	if svc, ok := obj.(*corev1.Service); ok {
		return h.allocateAddresses(ctx, r, old.(*corev1.Service), svc)
	}
	return nil, nil
}

// allocateAddresses gives svc the ClusterIP and node ports it needs that
// old (nil for a new service) did not hold, and returns the operations
// that take them and give back what old held and svc no longer does.
func (h *Handler) allocateAddresses(ctx context.Context, r *resource.Resource, old, svc *corev1.Service) ([]fsm.Op, error) {
	a := h.ips
	// An address the client names is refused as taken only on this
	// server's latest state: one given back through another server a
	// moment ago may not have reached it yet.
	takenNow := func(key string) (bool, error) {
		if !a.taken(key) {
			return false, nil
		}
		if err := h.objects.sync(ctx, consistency{linearizable: true}); err != nil {
			return false, err
		}
		return a.taken(key), nil
	}
	var ops []fsm.Op
	spec := field.NewPath("spec")
	take := func(key string) {
		ops = append(ops, fsm.Put(key, []byte(svc.Namespace+"/"+svc.Name), "", fsm.Cond{MustNotExist: true}))
	}
	heldIP := ""
	heldPorts := map[int32]bool{}
	if old != nil {
		if ip := old.Spec.ClusterIP; resource.NeedsClusterIP(old) && ip != corev1.ClusterIPNone {
			heldIP = ip
		}
		heldPorts = resource.NodePorts(old)
	}
	takeIP := func(ip string) error {
		op, err := a.takeAddress(svc, ip)
		ops = append(ops, op)
		return err
	}
	switch ip := svc.Spec.ClusterIP; {
	case !resource.NeedsClusterIP(svc), ip == corev1.ClusterIPNone, ip != "" && ip == heldIP:
		// None needed, headless, or kept.
	case ip == "":
		ranges, err := a.ranges(ctx)
		if err != nil {
			return nil, err
		}
		picked, err := a.pick(ranges)
		if err != nil {
			return nil, err
		}
		svc.Spec.ClusterIP = picked.String()
		if err := takeIP(svc.Spec.ClusterIP); err != nil {
			return nil, err
		}
	default:
		parsed := net.ParseIP(ip)
		inRange := func(r *net.IPNet) bool { return parsed != nil && r.Contains(parsed) }
		ranges, err := a.ranges(ctx)
		if err == nil && !slices.ContainsFunc(ranges, inRange) {
			// A ServiceCIDR created through another server a moment ago
			// may not have reached this one yet.
			if err := h.objects.sync(ctx, consistency{linearizable: true}); err != nil {
				return nil, err
			}
			ranges, err = a.ranges(ctx)
		}
		if err != nil {
			return nil, err
		}
		if parsed == nil || parsed.To4() == nil || !slices.ContainsFunc(ranges, inRange) {
			return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("clusterIPs").Index(0), ip,
				fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is %s", ip, ip, joinRanges(ranges)))})
		}
		taken, err := takenNow(a.addressKey(parsed.String()))
		if err != nil {
			return nil, err
		}
		if taken {
			return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("clusterIPs").Index(0), ip,
				fmt.Sprintf("failed to allocate IP %s: provided IP is already allocated", ip))})
		}
		svc.Spec.ClusterIP = parsed.String()
		if err := takeIP(svc.Spec.ClusterIP); err != nil {
			return nil, err
		}
	}
	if heldIP != "" && heldIP != svc.Spec.ClusterIP {
		ops = append(ops, a.releaseAddress(old, heldIP)...)
	}
	if svc.Spec.ClusterIP != "" {
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	// kept are the node ports svc holds after the update.
	kept := map[int32]bool{}
	// allocatePort gives *port a free node port when it is 0, or takes
	// the one the client named.
	allocatePort := func(port *int32, path *field.Path) error {
		switch {
		case *port == 0:
			slot, ok := free(nodePortRangeSize, func(slot uint32) bool {
				p := nodePortBase + int32(slot)
				return kept[p] || heldPorts[p] || a.taken(nodePortKey(p))
			})
			if !ok {
				return apierrors.NewInternalError(errors.New("no node port left in 30000-32767"))
			}
			*port = nodePortBase + int32(slot)
			take(nodePortKey(*port))
		case heldPorts[*port]:
		case *port < nodePortBase || *port >= nodePortBase+nodePortRangeSize:
			return invalid(r, svc.Name, field.ErrorList{field.Invalid(path, *port, "provided port is not in the valid range. The range of valid ports is 30000-32767")})
		default:
			taken, err := takenNow(nodePortKey(*port))
			if err != nil {
				return err
			}
			if taken {
				return invalid(r, svc.Name, field.ErrorList{field.Invalid(path, *port, "provided port is already allocated")})
			}
			take(nodePortKey(*port))
		}
		kept[*port] = true
		return nil
	}
	if resource.NeedsNodePorts(svc) {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			switch {
			case kept[p.NodePort]:
				continue // the same node port for another protocol
			case p.NodePort == 0 && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && !ptr.Deref(svc.Spec.AllocateLoadBalancerNodePorts, true):
				continue // a load balancer that reaches the pods without them
			}
			if err := allocatePort(&p.NodePort, spec.Child("ports").Index(i).Child("nodePort")); err != nil {
				return nil, err
			}
		}
	}
	if resource.NeedsHealthCheckNodePort(svc) {
		if kept[svc.Spec.HealthCheckNodePort] {
			return nil, invalid(r, svc.Name, field.ErrorList{field.Invalid(spec.Child("healthCheckNodePort"), svc.Spec.HealthCheckNodePort, "provided port is already allocated")})
		}
		if err := allocatePort(&svc.Spec.HealthCheckNodePort, spec.Child("healthCheckNodePort")); err != nil {
			return nil, err
		}
	}
	for _, port := range slices.Sorted(maps.Keys(heldPorts)) {
		if !kept[port] {
			ops = append(ops, fsm.Delete(nodePortKey(port), fsm.Cond{}))
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
		ops = append(ops, h.ips.releaseAddress(svc, ip)...)
	}
	for _, port := range slices.Sorted(maps.Keys(resource.NodePorts(svc))) {
		ops = append(ops, fsm.Delete(nodePortKey(port), fsm.Cond{}))
	}
	return ops
}
