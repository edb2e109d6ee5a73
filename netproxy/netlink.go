package netproxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
)

// routeProtocol marks the routes the proxy makes (the kernel keeps it as
// the route's "proto"), so it finds its own and leaves others alone.
const routeProtocol = netlink.RouteProtocol(0x70)

// LinkRoutes is the node's main routing table through netlink. The
// service range is routed onto ServiceLink, the pod bridge (made here if
// no pod made it yet): a dummy device would do, but not every kernel has
// them.
type LinkRoutes struct {
	ServiceLink string
	// RouteLocalnet lets traffic that came in on the service link be
	// translated to the node's loopback addresses, as kube-proxy lets
	// it for localhost node ports: on a node whose servers listen on
	// 127.0.0.1 (`pontoon dev`), pods reach the API through the
	// kubernetes Service so.
	RouteLocalnet bool
}

// List returns the routes with the proxy's protocol.
func (t LinkRoutes) List() ([]Route, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Dst != nil {
			out = append(out, Route{Dst: r.Dst, Gateway: r.Gw})
		}
	}
	return out, nil
}

// Replace adds the route, or replaces one to the same destination.
func (t LinkRoutes) Replace(r Route) error {
	nr := &netlink.Route{Dst: r.Dst, Gw: r.Gateway, Protocol: routeProtocol}
	if r.Gateway == nil {
		link, err := t.serviceLink()
		if err != nil {
			return err
		}
		nr.LinkIndex, nr.Scope = link.Attrs().Index, netlink.SCOPE_LINK
	}
	return netlink.RouteReplace(nr)
}

// Delete removes the route.
func (t LinkRoutes) Delete(r Route) error {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: r.Dst, Protocol: routeProtocol}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, nr := range rs {
		if err := netlink.RouteDel(&nr); err != nil {
			return err
		}
	}
	return nil
}

// serviceLink is the service link, made and set up when missing.
func (t LinkRoutes) serviceLink() (netlink.Link, error) {
	link, err := netlink.LinkByName(t.ServiceLink)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: t.ServiceLink}}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("add link %s: %w", t.ServiceLink, err)
		}
		link, err = netlink.LinkByName(t.ServiceLink)
	}
	if err != nil {
		return nil, err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %s up: %w", t.ServiceLink, err)
		}
	}
	if t.RouteLocalnet {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+t.ServiceLink+"/route_localnet", []byte("1"), 0o644); err != nil {
			return nil, fmt.Errorf("route_localnet on %s: %w", t.ServiceLink, err)
		}
	}
	return link, nil
}

// localLabel marks the addresses the proxy gives the loopback device.
const localLabel = "lo:pontoon"

// AddLocalAddress makes ip an address of the node, on the loopback
// device: the cluster DNS Service's, which the node's DNS server listens
// on. (Not on the pod bridge: the CNI bridge plugin removes addresses it
// did not set there.)
func AddLocalAddress(ip net.IP) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)}, Label: localLabel}
	if err := netlink.AddrReplace(lo, addr); err != nil {
		return fmt.Errorf("address %s on lo: %w", ip, err)
	}
	return nil
}

// RemoveLocalAddresses removes the addresses AddLocalAddress gave.
func RemoveLocalAddresses() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addrs, err := netlink.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.Label == localLabel {
			if err := netlink.AddrDel(lo, &a); err != nil {
				return fmt.Errorf("address %s on lo: %w", a.IPNet, err)
			}
		}
	}
	return nil
}

// RemoveRoutes removes every route the proxy made.
func RemoveRoutes() error {
	t := LinkRoutes{}
	rs, err := t.List()
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := t.Delete(r); err != nil {
			return err
		}
	}
	return nil
}

// LinkConntrack is the kernel's connection tracking table through
// netlink.
type LinkConntrack struct{}

// DeleteUDP deletes the UDP flows to the service address and port that
// were sent to the endpoint.
func (LinkConntrack) DeleteUDP(serviceIP net.IP, port int32, endpointIP net.IP) error {
	f := &netlink.ConntrackFilter{}
	for _, err := range []error{
		f.AddProtocol(syscall.IPPROTO_UDP),
		f.AddIP(netlink.ConntrackOrigDstIP, serviceIP),
		f.AddPort(netlink.ConntrackOrigDstPort, uint16(port)),
		f.AddIP(netlink.ConntrackReplySrcIP, endpointIP),
	} {
		if err != nil {
			return err
		}
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, f)
	return err
}
