// Package clusterdns is the cluster DNS every agent serves to the pods of
// its node: names of Services, their endpoints and pods in the cluster
// domain, from the Services and EndpointSlices it watches, as the
// Kubernetes DNS specification says (and CoreDNS's kubernetes plugin
// answers); other names are forwarded to the node's resolvers and
// cached.
//
// Answers are computed by a pure function of the question and a Store,
// so the records are tested in memory; the Server adds the sockets, the
// forwarding and the cache.
package clusterdns

import (
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ttl is the TTL of every cluster record, CoreDNS's default.
const ttl = 5

// Store is what the answers are read from.
type Store interface {
	// Service is the Service ns/name, or nil.
	Service(ns, name string) *corev1.Service
	// Slices are the EndpointSlices of the Service ns/name.
	Slices(ns, name string) []*discoveryv1.EndpointSlice
	// ServiceByIP is the Service whose ClusterIP is ip, or nil.
	ServiceByIP(ip string) *corev1.Service
	// SlicesByIP are the EndpointSlices with an endpoint at ip.
	SlicesByIP(ip string) []*discoveryv1.EndpointSlice
}

// Zone is the cluster domain, as "cluster.local.".
type Zone string

// Owns reports whether name is the zone's to answer: in the cluster
// domain, or a reverse name of an IPv4 address.
func (z Zone) Owns(name string) bool {
	name = strings.ToLower(name)
	return dns.IsSubDomain(string(z), name) || dns.IsSubDomain("in-addr.arpa.", name)
}

// Answer answers a question the zone owns. The reply has its rcode,
// answers and, for a name that does not exist or has no record of the
// type asked, the zone's SOA.
func (z Zone) Answer(s Store, q dns.Question) *dns.Msg {
	m := new(dns.Msg)
	m.Authoritative = true
	name := strings.ToLower(q.Name)
	var rrs []dns.RR
	var exists bool
	if dns.IsSubDomain("in-addr.arpa.", name) {
		rrs, exists = z.reverse(s, name)
	} else {
		rrs, exists = z.forward(s, name)
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY || rr.Header().Rrtype == dns.TypeCNAME {
			rr.Header().Name = q.Name
			m.Answer = append(m.Answer, rr)
		}
	}
	switch {
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{z.soa()}
	case len(m.Answer) == 0:
		m.Ns = []dns.RR{z.soa()}
	}
	return m
}

func (z Zone) soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: string(z), Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: "ns.dns." + string(z), Mbox: "hostmaster." + string(z), Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}
}

func a(ip string) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip).To4()}
}

// forward answers a name in the cluster domain; exists says whether the
// name exists at all (with no record of some type it is NODATA, not
// NXDOMAIN).
func (z Zone) forward(s Store, name string) ([]dns.RR, bool) {
	rel := strings.TrimSuffix(strings.TrimSuffix(name, string(z)), ".")
	labels := dns.SplitDomainName(rel)
	if rel == "" {
		return nil, true
	}
	n := len(labels)
	switch {
	case n >= 1 && (labels[n-1] == "svc" || labels[n-1] == "pod") && n <= 2:
		// The zone's own structure: svc, pod, NS.svc exist, with no
		// records.
		return nil, true
	case n == 3 && labels[n-1] == "pod":
		// a-b-c-d.NS.pod: the address in its name, as kube-dns and
		// CoreDNS ("pods insecure") answer.
		ip := net.ParseIP(strings.ReplaceAll(labels[0], "-", "."))
		if ip == nil || ip.To4() == nil {
			return nil, false
		}
		return []dns.RR{a(ip.String())}, true
	case n >= 3 && labels[n-1] == "svc":
		return z.service(s, labels[:n-1])
	}
	return nil, false
}

// service answers [_port._proto.][hostname.]SVC.NS.svc.
func (z Zone) service(s Store, labels []string) ([]dns.RR, bool) {
	n := len(labels)
	ns, name := labels[n-1], labels[n-2]
	svc := s.Service(ns, name)
	if svc == nil {
		return nil, false
	}
	svcName := name + "." + ns + ".svc." + string(z)
	rest := labels[:n-2]
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	eps := readyEndpoints(s.Slices(ns, name))
	switch {
	case len(rest) == 0 && svc.Spec.Type == corev1.ServiceTypeExternalName:
		return []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: dns.Fqdn(svc.Spec.ExternalName)}}, true
	case len(rest) == 0 && !headless:
		var rrs []dns.RR
		for _, ip := range svc.Spec.ClusterIPs {
			if net.ParseIP(ip).To4() != nil {
				rrs = append(rrs, a(ip))
			}
		}
		if len(rrs) == 0 && net.ParseIP(svc.Spec.ClusterIP).To4() != nil {
			rrs = append(rrs, a(svc.Spec.ClusterIP))
		}
		return append(rrs, z.srvAll(svc, svcName, eps, headless)...), true
	case len(rest) == 0:
		var rrs []dns.RR
		for _, e := range eps {
			rrs = append(rrs, a(e.ip))
		}
		return append(rrs, z.srvAll(svc, svcName, eps, headless)...), true
	case len(rest) == 1 && headless:
		// HOSTNAME.SVC: the endpoint with that hostname (or dashed IP).
		var rrs []dns.RR
		for _, e := range eps {
			if e.label() == rest[0] {
				rrs = append(rrs, a(e.ip))
			}
		}
		return rrs, len(rrs) > 0
	case len(rest) == 2 && strings.HasPrefix(rest[0], "_") && strings.HasPrefix(rest[1], "_"):
		// _PORT._PROTO.SVC: SRV for a named port.
		var rrs []dns.RR
		for _, rr := range z.srvAll(svc, svcName, eps, headless) {
			srv := rr.(*dns.SRV)
			if srv.Hdr.Name == rest[0]+"."+rest[1] {
				srv.Hdr.Name = ""
				rrs = append(rrs, srv)
			}
		}
		return rrs, len(rrs) > 0
	}
	return nil, false
}

// srvAll are the SRV records of a Service's named ports, each with its
// "_port._proto" in the header's name until the caller sets it: one to
// the Service's name, or, headless, one per endpoint.
func (z Zone) srvAll(svc *corev1.Service, svcName string, eps []endpoint, headless bool) []dns.RR {
	var out []dns.RR
	for _, p := range svc.Spec.Ports {
		if p.Name == "" {
			continue
		}
		proto := strings.ToLower(string(p.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		owner := "_" + p.Name + "._" + proto
		srv := func(target string, port int32) dns.RR {
			return &dns.SRV{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
				Priority: 0, Weight: 100, Port: uint16(port), Target: target}
		}
		if !headless {
			out = append(out, srv(svcName, p.Port))
			continue
		}
		for _, e := range eps {
			if port, ok := e.ports[p.Name]; ok {
				out = append(out, srv(e.label()+"."+svcName, port))
			}
		}
	}
	return out
}

// reverse answers a PTR question: a ClusterIP names its Service, an
// endpoint address of a headless Service its hostname there.
func (z Zone) reverse(s Store, name string) ([]dns.RR, bool) {
	labels := dns.SplitDomainName(strings.TrimSuffix(name, "in-addr.arpa."))
	if len(labels) != 4 {
		return nil, false
	}
	slices.Reverse(labels)
	ip := net.ParseIP(strings.Join(labels, "."))
	if ip == nil {
		return nil, false
	}
	ptr := func(target string) dns.RR {
		return &dns.PTR{Hdr: dns.RR_Header{Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: target}
	}
	if svc := s.ServiceByIP(ip.String()); svc != nil {
		return []dns.RR{ptr(svc.Name + "." + svc.Namespace + ".svc." + string(z))}, true
	}
	var rrs []dns.RR
	for _, sl := range s.SlicesByIP(ip.String()) {
		svcName := sl.Labels[discoveryv1.LabelServiceName]
		svc := s.Service(sl.Namespace, svcName)
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			continue
		}
		for _, e := range readyEndpoints([]*discoveryv1.EndpointSlice{sl}) {
			if e.ip == ip.String() && e.hostname != "" {
				rrs = append(rrs, ptr(e.hostname+"."+svcName+"."+sl.Namespace+".svc."+string(z)))
			}
		}
	}
	return rrs, len(rrs) > 0
}

// endpoint is a ready address of a Service.
type endpoint struct {
	ip, hostname string
	ports        map[string]int32
}

// label is the endpoint's name under its Service: its hostname, or its
// address with dashes.
func (e endpoint) label() string {
	if e.hostname != "" {
		return e.hostname
	}
	return strings.ReplaceAll(e.ip, ".", "-")
}

// readyEndpoints are the ready IPv4 endpoints of slices, each address
// once, in order.
func readyEndpoints(sl []*discoveryv1.EndpointSlice) []endpoint {
	byIP := map[string]*endpoint{}
	for _, s := range sl {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				ep := byIP[addr]
				if ep == nil {
					ep = &endpoint{ip: addr, ports: map[string]int32{}}
					byIP[addr] = ep
				}
				if e.Hostname != nil {
					ep.hostname = *e.Hostname
				}
				for _, p := range s.Ports {
					if p.Name != nil && p.Port != nil {
						ep.ports[*p.Name] = *p.Port
					}
				}
			}
		}
	}
	out := make([]endpoint, 0, len(byIP))
	for _, e := range byIP {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b endpoint) int { return strings.Compare(a.ip, b.ip) })
	return out
}
