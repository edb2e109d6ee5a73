// Package netproxy is the service proxy of a node: it programs the node's
// iptables from Services and EndpointSlices as kube-proxy's iptables mode
// does, and routes the other nodes' pod CIDRs to them.
//
// The rules are computed by a pure function (Compute) from the objects and
// the node's settings, so they are tested in memory; the Proxy applies
// them with iptables-restore, one transaction per sync.
package netproxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// The chains the proxy owns. Built-in chains jump to the first ones; the
// per-service chains hang off them.
const (
	chainServices         = "PONTOON-SERVICES"
	chainExternalServices = "PONTOON-EXTERNAL-SERVICES"
	chainNodePorts        = "PONTOON-NODEPORTS"
	chainPostrouting      = "PONTOON-POSTROUTING"
	chainMarkMasq         = "PONTOON-MARK-MASQ"
	chainForward          = "PONTOON-FORWARD"

	chainPrefix = "PONTOON-"
	// masqMark marks the packets PONTOON-POSTROUTING masquerades.
	masqMark = "0x4000"
)

// Config is what the rules depend on besides the Services and their
// EndpointSlices.
type Config struct {
	// NodeName is this node, for traffic policies Local.
	NodeName string
	// ClusterCIDR is the range of every pod's address; ServiceCIDR that
	// of the ClusterIPs.
	ClusterCIDR, ServiceCIDR *net.IPNet
	// ClusterDNS is the cluster DNS Service's address, which the node
	// serves itself (an address of its own): the proxy leaves it alone.
	ClusterDNS net.IP
}

// Rules are the proxy's chains in the nat and filter tables.
type Rules struct {
	NAT, Filter Table
}

// Table is the chains of one table, each with its rules in order.
type Table struct {
	Chains map[string][]string
}

func newTable() Table { return Table{Chains: map[string][]string{}} }

func (t Table) add(chain string, rule ...string) {
	t.Chains[chain] = append(t.Chains[chain], "-A "+chain+" "+strings.Join(rule, " "))
}

// chain declares a chain, with no rules yet.
func (t Table) chain(name string) {
	if _, ok := t.Chains[name]; !ok {
		t.Chains[name] = nil
	}
}

// endpoint is one address a service port sends to.
type endpoint struct {
	ip   string
	port int32
	// local: on this node.
	local bool
	// ready endpoints take traffic; serving terminating ones only when
	// no ready one is left.
	ready, serving bool
}

// servicePort is one port of a Service, with what the rules need.
type servicePort struct {
	svc  *corev1.Service
	port corev1.ServicePort
	// name is ns/name:port, as kube-proxy names a service port.
	name      string
	endpoints []endpoint
}

// Compute returns the rules for services and their EndpointSlices.
func Compute(cfg Config, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) Rules {
	rules, _ := computeCached(cfg, services, slices, serviceCache{})
	return rules
}

// serviceCache keeps, by Service (ns/name), the rules computed for it and
// the objects they came from. Informers never change an object they have
// handed out, so the same objects make the same rules: a sync computes
// again only the Services whose Service or EndpointSlices changed, which
// keeps a one-Service change cheap among thousands.
type serviceCache map[string]*cachedService

type cachedService struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	ports  []servicePort
	rules  Rules
	// hairpin are its endpoints on this node that traffic may go to,
	// which may reach themselves through it.
	hairpin []string
}

// computeCached returns the rules for services and their EndpointSlices,
// and their proxied ports in a stable order, computing again only what
// cache does not hold; it leaves in cache the Services it was given.
func computeCached(cfg Config, services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, cache serviceCache) (Rules, []servicePort) {
	byService := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range endpointSlices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			byService[s.Namespace+"/"+name] = append(byService[s.Namespace+"/"+name], s)
		}
	}
	type keyed struct {
		key string
		svc *corev1.Service
	}
	sorted := make([]keyed, 0, len(services))
	for _, svc := range services {
		if proxied(cfg, svc) {
			sorted = append(sorted, keyed{svc.Namespace + "/" + svc.Name, svc})
		}
	}
	slices.SortFunc(sorted, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	r := baseRules()
	var ports []servicePort
	seen := make(map[string]bool, len(sorted))
	local := map[string]bool{}
	for _, k := range sorted {
		key, svc := k.key, k.svc
		seen[key] = true
		own := byService[key]
		slices.SortFunc(own, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
		c := cache[key]
		if c == nil || c.svc != svc || !slices.Equal(c.slices, own) {
			sp := portsOf(cfg, svc, own)
			c = &cachedService{svc: svc, slices: own, ports: sp, rules: serviceRules(cfg, sp), hairpin: hairpin(sp)}
			cache[key] = c
		}
		ports = append(ports, c.ports...)
		r.merge(c.rules)
		for _, ip := range c.hairpin {
			local[ip] = true
		}
	}
	for key := range cache {
		if !seen[key] {
			delete(cache, key)
		}
	}
	r.finish(cfg, local)
	return r, ports
}

// hairpin are the endpoints of this node that traffic to the ports may
// go to.
func hairpin(ports []servicePort) []string {
	var out []string
	for _, sp := range ports {
		for _, e := range append(usable(sp.endpoints), usable(localOnly(sp.endpoints))...) {
			if e.local && !slices.Contains(out, e.ip) {
				out = append(out, e.ip)
			}
		}
	}
	return out
}

// baseRules are the rules that come before the Services'.
func baseRules() Rules {
	r := Rules{NAT: newTable(), Filter: newTable()}
	for _, c := range []string{chainServices, chainNodePorts, chainPostrouting, chainMarkMasq} {
		r.NAT.chain(c)
	}
	for _, c := range []string{chainServices, chainExternalServices, chainForward} {
		r.Filter.chain(c)
	}
	r.NAT.add(chainMarkMasq, "-j MARK --or-mark", masqMark)
	// A cluster whose FORWARD policy is DROP (as Docker sets it) still
	// forwards service traffic and its replies.
	r.Filter.add(chainForward, "-m mark --mark", masqMark+"/"+masqMark, "-j ACCEPT")
	r.Filter.add(chainForward, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	// Where route_localnet lets service traffic reach the node's
	// loopback addresses, nothing else from outside does.
	r.Filter.add(chainExternalServices, "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate DNAT",
		`-m comment --comment "only translated traffic reaches the node's loopback addresses"`, "-j DROP")
	return r
}

// merge adds a Service's rules: its own chains, and its rules of the
// shared chains after those already there.
func (r Rules) merge(f Rules) {
	for _, t := range []struct{ into, from Table }{{r.NAT, f.NAT}, {r.Filter, f.Filter}} {
		for chain, rules := range t.from.Chains {
			if have, ok := t.into.Chains[chain]; ok {
				t.into.Chains[chain] = append(have, rules...)
			} else {
				// Clipped, so that an append to a shared chain copies
				// rather than writes into the cached Service's rules.
				t.into.Chains[chain] = slices.Clip(rules)
			}
		}
	}
}

// finish adds what follows the Services' rules: the jumps to the
// ClusterIP shards, hairpin masquerade for the endpoints of this node
// (local), node ports, and the refusal of every service address no
// Service holds, so that it is never routed on.
func (r Rules) finish(cfg Config, local map[string]bool) {
	var shards []string
	for chain := range r.NAT.Chains {
		if strings.HasPrefix(chain, shardPrefix) {
			shards = append(shards, chain)
		}
	}
	slices.Sort(shards)
	jumps := make([]string, len(shards))
	for i, chain := range shards {
		jumps[i] = "-A " + chainServices + " -d " + shardCIDR(chain) + " -j " + chain
	}
	r.NAT.Chains[chainServices] = append(jumps, r.NAT.Chains[chainServices]...)
	r.NAT.add(chainServices, "-m addrtype --dst-type LOCAL -j", chainNodePorts)

	clusterCIDR := cfg.ClusterCIDR.String()
	// Pods reaching out of the cluster leave with the node's address.
	r.NAT.add(chainPostrouting, "-s", clusterCIDR, "!", "-d", clusterCIDR, `-m comment --comment "pod traffic leaving the cluster"`, "-j MASQUERADE --random-fully")
	// A pod that reaches itself through a Service (hairpin) is
	// masqueraded, so that its reply comes back through the node: only a
	// pod of this node can, and only once translated to itself.
	for _, ip := range slices.Sorted(maps.Keys(local)) {
		r.NAT.add(chainPostrouting, "-s", ip+"/32", "-d", ip+"/32", `-m comment --comment "hairpin"`, "-j MASQUERADE")
	}
	r.NAT.add(chainPostrouting, "-m mark ! --mark", masqMark+"/"+masqMark, "-j RETURN")
	r.NAT.add(chainPostrouting, "-j MARK --xor-mark", masqMark)
	r.NAT.add(chainPostrouting, `-m comment --comment "service traffic requiring SNAT"`, "-j MASQUERADE --random-fully")

	if cfg.ClusterDNS != nil {
		r.Filter.add(chainServices, "-d", cfg.ClusterDNS.String()+"/32", `-m comment --comment "the node's cluster DNS"`, "-j RETURN")
	}
	r.Filter.add(chainServices, "-d", cfg.ServiceCIDR.String(), "-p tcp", `-m comment --comment "no service holds this address"`, "-j REJECT --reject-with tcp-reset")
	r.Filter.add(chainServices, "-d", cfg.ServiceCIDR.String(), `-m comment --comment "no service holds this address"`, "-j REJECT")
}

// serviceRules are the rules of one Service's ports.
func serviceRules(cfg Config, ports []servicePort) Rules {
	r := Rules{NAT: newTable(), Filter: newTable()}
	for _, sp := range ports {
		r.addServicePort(cfg, sp)
	}
	return r
}

// The ClusterIP rules are split by the /24 of the address into chains of
// their own (shards), to which PONTOON-SERVICES jumps by destination: a
// new connection goes through a few dozen rules rather than every
// Service's, and a change to one Service rewrites only its shard.
const shardPrefix = chainPrefix + "CIP-"

// shardChain is the shard of a ClusterIP.
func shardChain(ip net.IP) string {
	v4 := ip.To4()
	return fmt.Sprintf("%s%d-%d-%d", shardPrefix, v4[0], v4[1], v4[2])
}

// shardCIDR is the range of a shard chain.
func shardCIDR(chain string) string {
	return strings.ReplaceAll(strings.TrimPrefix(chain, shardPrefix), "-", ".") + ".0/24"
}

// portsOf are the ports of svc with their endpoints from its
// EndpointSlices, in a stable order.
func portsOf(cfg Config, svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) []servicePort {
	key := svc.Namespace + "/" + svc.Name
	var out []servicePort
	for _, p := range svc.Spec.Ports {
		sp := servicePort{svc: svc, port: p, name: key + ":" + p.Name}
		seen := map[string]bool{}
		for _, s := range endpointSlices {
			for _, sport := range s.Ports {
				if ptrValue(sport.Name) != p.Name || sport.Port == nil || protocol(sport.Protocol) != protocol(&p.Protocol) {
					continue
				}
				for _, e := range s.Endpoints {
					ready := e.Conditions.Ready == nil || *e.Conditions.Ready
					serving := ready
					if e.Conditions.Serving != nil {
						serving = *e.Conditions.Serving
					}
					for _, addr := range e.Addresses {
						id := net.JoinHostPort(addr, strconv.Itoa(int(*sport.Port)))
						if seen[id] || net.ParseIP(addr).To4() == nil {
							continue
						}
						seen[id] = true
						sp.endpoints = append(sp.endpoints, endpoint{ip: addr, port: *sport.Port,
							local: e.NodeName != nil && *e.NodeName == cfg.NodeName, ready: ready, serving: serving})
					}
				}
			}
		}
		slices.SortFunc(sp.endpoints, func(a, b endpoint) int {
			return strings.Compare(net.JoinHostPort(a.ip, strconv.Itoa(int(a.port))), net.JoinHostPort(b.ip, strconv.Itoa(int(b.port))))
		})
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b servicePort) int {
		return strings.Compare(a.name+string(a.port.Protocol), b.name+string(b.port.Protocol))
	})
	return out
}

// proxied reports whether the proxy programs svc: ExternalName and
// headless Services have no address to proxy, and the cluster DNS is the
// node's.
func proxied(cfg Config, svc *corev1.Service) bool {
	ip := svc.Spec.ClusterIP
	if cfg.ClusterDNS != nil && ip == cfg.ClusterDNS.String() {
		return false
	}
	return svc.Spec.Type != corev1.ServiceTypeExternalName && ip != "" && ip != corev1.ClusterIPNone && net.ParseIP(ip).To4() != nil
}

func ptrValue(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func protocol(p *corev1.Protocol) corev1.Protocol {
	if p == nil || *p == "" {
		return corev1.ProtocolTCP
	}
	return *p
}

// usable are the endpoints traffic goes to: the ready ones, or, when none
// is, the serving terminating ones (so connections drain to a pod being
// deleted only while nothing else can take them).
func usable(eps []endpoint) []endpoint {
	var ready, serving []endpoint
	for _, e := range eps {
		switch {
		case e.ready:
			ready = append(ready, e)
		case e.serving:
			serving = append(serving, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return serving
}

func localOnly(eps []endpoint) []endpoint {
	var out []endpoint
	for _, e := range eps {
		if e.local {
			out = append(out, e)
		}
	}
	return out
}

// chainName is a per-service-port or per-endpoint chain: prefix and a
// hash of what it is for, 28 characters at most as iptables allows.
func chainName(prefix string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "|")))
	return chainPrefix + prefix + "-" + base32.StdEncoding.EncodeToString(sum[:])[:16]
}

func (r Rules) addServicePort(cfg Config, sp servicePort) {
	svc, p := sp.svc, sp.port
	proto := strings.ToLower(string(protocol(&p.Protocol)))
	svcChain := chainName("SVC", sp.name, proto)
	localChain := chainName("SVL", sp.name, proto)
	extChain := chainName("EXT", sp.name, proto)
	comment := fmt.Sprintf("-m comment --comment %q", sp.name)
	clusterIP := svc.Spec.ClusterIP + "/32"
	// A TCP client is refused with a reset, which ends its connect at
	// once; an ICMP error that comes back before connect has returned
	// (as on one machine) only ends it at the SYN's first retry.
	reject := "-j REJECT"
	if proto == "tcp" {
		reject = "-j REJECT --reject-with tcp-reset"
	}
	match := func(dst string, port int32) string {
		return fmt.Sprintf("-d %s -p %s -m %s --dport %d", dst, proto, proto, port)
	}

	all := usable(sp.endpoints)
	local := usable(localOnly(sp.endpoints))
	internalLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	internal, internalChain := all, svcChain
	if internalLocal {
		internal, internalChain = local, localChain
	}
	externalLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		(svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer)
	external := all
	if externalLocal {
		external = local
	}

	// Traffic to the ClusterIP.
	if len(internal) > 0 {
		shard := shardChain(net.ParseIP(svc.Spec.ClusterIP))
		r.NAT.add(shard, comment, match(clusterIP, p.Port), "-j", internalChain)
	} else {
		r.Filter.add(chainServices, comment, match(clusterIP, p.Port), `-m comment --comment "has no endpoints"`, reject)
	}

	// Traffic from outside: node ports, external IPs, load-balancer
	// addresses.
	var externalDst []string
	for _, ip := range svc.Spec.ExternalIPs {
		if net.ParseIP(ip).To4() != nil {
			externalDst = append(externalDst, ip)
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if net.ParseIP(in.IP).To4() != nil {
				externalDst = append(externalDst, in.IP)
			}
		}
	}
	nodePort := p.NodePort != 0 && (svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer)
	// Outside traffic goes through the EXT chain when some endpoint may
	// take it: a local one, or, for policy Local, any (which pods and
	// the node itself may reach).
	toExt := len(external) > 0 || externalLocal && len(all) > 0
	for _, dst := range externalDst {
		if toExt {
			r.NAT.add(chainServices, comment, match(dst+"/32", p.Port), "-j", extChain)
		} else {
			r.Filter.add(chainExternalServices, comment, match(dst+"/32", p.Port), `-m comment --comment "has no endpoints"`, reject)
		}
	}
	if nodePort {
		nodePortMatch := fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, p.NodePort)
		if toExt {
			r.NAT.add(chainNodePorts, comment, nodePortMatch, "-j", extChain)
		} else {
			r.Filter.add(chainExternalServices, comment, "-m addrtype --dst-type LOCAL", nodePortMatch, `-m comment --comment "has no endpoints"`, reject)
		}
	}
	if (nodePort || len(externalDst) > 0) && toExt {
		if externalLocal {
			// Pods and the node itself go to any endpoint; other clients
			// only to this node's, keeping their source address; a node
			// without one drops them, so a load balancer's health check
			// sends them elsewhere.
			r.NAT.add(extChain, "-s", cfg.ClusterCIDR.String(), `-m comment --comment "pod traffic for a Local service goes to any endpoint"`, "-j", svcChain)
			r.NAT.add(extChain, "-m addrtype --src-type LOCAL -j", chainMarkMasq)
			r.NAT.add(extChain, "-m addrtype --src-type LOCAL -j", svcChain)
			if len(local) > 0 {
				r.NAT.add(extChain, "-j", localChain)
			} else {
				for _, dst := range externalDst {
					r.Filter.add(chainExternalServices, comment, match(dst+"/32", p.Port), "-m addrtype ! --src-type LOCAL", "!", "-s", cfg.ClusterCIDR.String(), `-m comment --comment "no local endpoints"`, "-j DROP")
				}
				if nodePort {
					r.Filter.add(chainExternalServices, comment, "-m addrtype --dst-type LOCAL", fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, p.NodePort),
						"-m addrtype ! --src-type LOCAL", "!", "-s", cfg.ClusterCIDR.String(), `-m comment --comment "no local endpoints"`, "-j DROP")
				}
			}
		} else {
			r.NAT.add(extChain, `-m comment --comment "masquerade traffic from outside"`, "-j", chainMarkMasq)
			r.NAT.add(extChain, "-j", svcChain)
		}
	}

	// The endpoint chains, and the chains that pick among them.
	affinity := svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP
	timeout := int32(corev1.DefaultClientIPServiceAffinitySeconds)
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		timeout = *c.ClientIP.TimeoutSeconds
	}
	// With session affinity each endpoint has a chain of its own, which
	// records the client (recent) before it translates; otherwise the
	// picking rules translate themselves, which keeps the chains few:
	// iptables-nft takes far longer to load many chains than many rules.
	written := map[string]bool{}
	pick := func(chain string, eps []endpoint, masqOffCluster bool) {
		r.NAT.chain(chain)
		if masqOffCluster {
			// Clients outside the cluster's pods reach a pod through the
			// node, so replies come back through it.
			r.NAT.add(chain, comment, "!", "-s", cfg.ClusterCIDR.String(), match(clusterIP, p.Port), "-j", chainMarkMasq)
		}
		targets := make([]string, len(eps))
		for i, e := range eps {
			dnat := "-p " + proto + " -j DNAT --to-destination " + net.JoinHostPort(e.ip, strconv.Itoa(int(e.port)))
			if !affinity {
				targets[i] = dnat
				continue
			}
			sep := chainName("SEP", sp.name, proto, e.ip, strconv.Itoa(int(e.port)))
			targets[i] = "-j " + sep
			if !written[sep] {
				written[sep] = true
				r.NAT.chain(sep)
				r.NAT.add(sep, comment, "-m recent --name", sep, "--mask 255.255.255.255 --rsource --set")
				r.NAT.add(sep, comment, dnat)
			}
			r.NAT.add(chain, comment, "-m recent --name", sep, fmt.Sprintf("--rcheck --seconds %d --reap", timeout), "--mask 255.255.255.255 --rsource", targets[i])
		}
		for i, target := range targets {
			if left := len(targets) - i; left > 1 {
				r.NAT.add(chain, comment, "-m statistic --mode random --probability", fmt.Sprintf("%.10f", 1/float64(left)), target)
			} else {
				r.NAT.add(chain, comment, target)
			}
		}
	}
	if len(all) > 0 {
		pick(svcChain, all, true)
	}
	if len(local) > 0 && (externalLocal || internalLocal) {
		pick(localChain, local, false)
	}
}
