package clusterdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Config is what a Server is made from.
type Config struct {
	Client kubernetes.Interface
	// Domain is the cluster domain, as "cluster.local".
	Domain string
	// Listen is the address served, UDP and TCP: the cluster DNS
	// Service's ClusterIP, port 53, made local to the node.
	Listen string
	// Upstreams are the resolvers (host:port) other names are forwarded
	// to.
	Upstreams []string
	Logger    *slog.Logger
}

// Server answers DNS for the pods of a node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	zone  Zone
	store *informerStore
	fwd   *forwarder
}

// New makes a server; Run starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.Domain == "" || cfg.Listen == "" {
		return nil, errors.New("clusterdns: a client, the cluster domain and an address to listen on are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "dns"), zone: Zone(dns.Fqdn(strings.ToLower(cfg.Domain))),
		fwd: newForwarder(cfg.Upstreams)}, nil
}

// UpstreamsFrom reads the resolvers of a resolv.conf, leaving out skip
// (the cluster DNS itself, were the node's resolv.conf to name it).
func UpstreamsFrom(path string, skip string) ([]string, error) {
	c, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolvers of %s: %w", path, err)
	}
	var out []string
	for _, s := range c.Servers {
		if s != skip {
			out = append(out, net.JoinHostPort(s, c.Port))
		}
	}
	return out, nil
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(s.cfg.Client, 0)
	svcInf := factory.Core().V1().Services().Informer()
	sliceInf := factory.Discovery().V1().EndpointSlices().Informer()
	if err := svcInf.AddIndexers(cache.Indexers{byIP: serviceIPs}); err != nil {
		return err
	}
	if err := sliceInf.AddIndexers(cache.Indexers{byService: sliceService, byIP: sliceIPs}); err != nil {
		return err
	}
	s.store = &informerStore{services: svcInf.GetIndexer(), slices: sliceInf.GetIndexer()}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.HasSynced, sliceInf.HasSynced) {
		return ctx.Err()
	}

	udp, err := net.ListenPacket("udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	tcp, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		udp.Close()
		return fmt.Errorf("dns: %w", err)
	}
	servers := []*dns.Server{{PacketConn: udp, Handler: s}, {Listener: tcp, Handler: s}}
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errs <- srv.ActivateAndServe() }()
	}
	s.log.Info("serving cluster DNS", "addr", s.cfg.Listen, "domain", s.cfg.Domain, "upstreams", s.cfg.Upstreams)
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	for _, srv := range servers {
		srv.Shutdown()
	}
	return err
}

// ServeDNS answers one query: the cluster's names from the store, the
// rest through the upstreams.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	var m *dns.Msg
	switch {
	case len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery:
		m = new(dns.Msg)
		m.Rcode = dns.RcodeNotImplemented
	case s.zone.Owns(r.Question[0].Name):
		q := r.Question[0]
		m = s.zone.Answer(s.store, q)
		if m.Rcode == dns.RcodeNameError && dns.IsSubDomain("in-addr.arpa.", strings.ToLower(q.Name)) {
			// An address the cluster does not hold is the upstreams' to
			// name.
			m = s.fwd.exchange(r)
		} else if len(m.Answer) == 1 && q.Qtype != dns.TypeCNAME {
			// An ExternalName Service's target is resolved too, as CoreDNS
			// does, so clients get the addresses in one answer.
			if cname, ok := m.Answer[0].(*dns.CNAME); ok && !s.zone.Owns(cname.Target) {
				target := new(dns.Msg)
				target.SetQuestion(cname.Target, q.Qtype)
				m.Answer = append(m.Answer, s.fwd.exchange(target).Answer...)
			}
		}
	default:
		m = s.fwd.exchange(r)
	}
	m.Id, m.Response, m.Opcode, m.Question = r.Id, true, r.Opcode, r.Question
	m.RecursionDesired, m.RecursionAvailable = r.RecursionDesired, true
	size := dns.MinMsgSize
	if o := r.IsEdns0(); o != nil {
		size = int(o.UDPSize())
	}
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		m.Truncate(size)
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("writing a DNS reply", "err", err)
	}
}

// The indexes of the store.
const (
	byIP      = "ip"
	byService = "service"
)

func serviceIPs(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, nil
	}
	return []string{svc.Spec.ClusterIP}, nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}

func sliceIPs(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Addresses...)
	}
	return out, nil
}

// informerStore reads the informers' indexes.
type informerStore struct {
	services, slices cache.Indexer
}

func (s *informerStore) Service(ns, name string) *corev1.Service {
	obj, ok, err := s.services.GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	return obj.(*corev1.Service)
}

func (s *informerStore) Slices(ns, name string) []*discoveryv1.EndpointSlice {
	return indexed[*discoveryv1.EndpointSlice](s.slices, byService, ns+"/"+name)
}

func (s *informerStore) ServiceByIP(ip string) *corev1.Service {
	if svcs := indexed[*corev1.Service](s.services, byIP, ip); len(svcs) > 0 {
		return svcs[0]
	}
	return nil
}

func (s *informerStore) SlicesByIP(ip string) []*discoveryv1.EndpointSlice {
	return indexed[*discoveryv1.EndpointSlice](s.slices, byIP, ip)
}

func indexed[T any](idx cache.Indexer, index, key string) []T {
	objs, err := idx.ByIndex(index, key)
	if err != nil {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(T))
	}
	return out
}

// forwarder sends questions to the upstreams, and keeps their answers
// for their TTL.
type forwarder struct {
	upstreams []string
	udp, tcp  *dns.Client

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct {
	name        string
	qtype, qcls uint16
}

type cached struct {
	msg     *dns.Msg
	expires time.Time
}

// Bounds of the cache: entries kept, and how long an answer may be kept
// whatever its TTL.
const (
	cacheEntries = 10000
	cacheMaxTTL  = time.Hour
)

func newForwarder(upstreams []string) *forwarder {
	return &forwarder{upstreams: upstreams, cache: map[cacheKey]cached{},
		udp: &dns.Client{Net: "udp", Timeout: 2 * time.Second}, tcp: &dns.Client{Net: "tcp", Timeout: 2 * time.Second}}
}

// exchange answers r from the cache or the first upstream that answers;
// SERVFAIL when none does.
func (f *forwarder) exchange(r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	key := cacheKey{strings.ToLower(q.Name), q.Qtype, q.Qclass}
	now := time.Now()
	f.mu.Lock()
	c, ok := f.cache[key]
	f.mu.Unlock()
	if ok && now.Before(c.expires) {
		m := c.msg.Copy()
		left := uint32(c.expires.Sub(now) / time.Second)
		for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range rrs {
				if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl > left {
					rr.Header().Ttl = left
				}
			}
		}
		return m
	}
	for _, up := range f.upstreams {
		m, _, err := f.udp.Exchange(r, up)
		if err == nil && m.Truncated {
			m, _, err = f.tcp.Exchange(r, up)
		}
		if err != nil {
			continue
		}
		if d := cacheFor(m); d > 0 {
			f.mu.Lock()
			if len(f.cache) >= cacheEntries {
				for k, c := range f.cache {
					if len(f.cache) < cacheEntries && now.Before(c.expires) {
						break
					}
					delete(f.cache, k)
				}
			}
			f.cache[key] = cached{msg: m.Copy(), expires: now.Add(d)}
			f.mu.Unlock()
		}
		return m
	}
	m := new(dns.Msg)
	m.Rcode = dns.RcodeServerFailure
	return m
}

// cacheFor is how long an upstream's answer is kept: its smallest TTL, or
// for a name that does not exist (or has no such record), its SOA's
// negative TTL; errors are not kept.
func cacheFor(m *dns.Msg) time.Duration {
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return 0
	}
	rrs := m.Answer
	if len(rrs) == 0 {
		rrs = m.Ns
	}
	least := uint32(cacheMaxTTL / time.Second)
	found := false
	for _, rr := range rrs {
		ttl := rr.Header().Ttl
		if soa, ok := rr.(*dns.SOA); ok && soa.Minttl < ttl {
			ttl = soa.Minttl
		}
		if ttl < least {
			least = ttl
		}
		found = true
	}
	if !found {
		return 0
	}
	return time.Duration(least) * time.Second
}
