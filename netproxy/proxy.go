package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Iptables is what the proxy needs of the node's iptables.
type Iptables interface {
	// Restore loads input as iptables-restore --noflush does: in one
	// transaction per table, leaving the chains it does not name alone.
	Restore(ctx context.Context, input []byte) error
	// Chains lists the chains of a table.
	Chains(ctx context.Context, table string) ([]string, error)
	// EnsureFirst makes rule a rule of the built-in chain, inserting it
	// first unless it is there.
	EnsureFirst(ctx context.Context, table, chain string, rule ...string) error
	// Exists reports whether the chain has the rule.
	Exists(ctx context.Context, table, chain string, rule ...string) (bool, error)
}

// Conntrack forgets the flows of a UDP service whose endpoint went, so
// that its clients' next datagrams pick a live endpoint.
type Conntrack interface {
	DeleteUDP(serviceIP net.IP, port int32, endpointIP net.IP) error
}

// ProxyConfig is what a Proxy is made from.
type ProxyConfig struct {
	Client    kubernetes.Interface
	Rules     Config
	Iptables  Iptables
	Conntrack Conntrack
	Logger    *slog.Logger
	// FullSyncPeriod is how often every chain is written again (and the
	// jumps to them checked); 0 means a minute.
	FullSyncPeriod time.Duration
	// CheckPeriod is how often the jumps to the proxy's chains are
	// looked for, to write everything again at once when something (a
	// firewall's restart, an operator) removed them; 0 means 5 s.
	CheckPeriod time.Duration
	// HealthCheckHost is the address the health-check node ports of
	// Services with externalTrafficPolicy Local are served on (the
	// node's); empty means every address.
	HealthCheckHost string
	// Metrics, when set, gets the proxy's metrics: how long its syncs
	// take, full and partial (kube-proxy's sync_proxy_rules_duration),
	// and how many loaded rules.
	Metrics prometheus.Registerer
}

// jumps are the rules of built-in chains that lead to the proxy's
// chains, as kube-proxy's.
func jumps() [][]string {
	return [][]string{
		{"nat", "PREROUTING", "-m", "comment", "--comment", "pontoon service portals", "-j", chainServices},
		{"nat", "OUTPUT", "-m", "comment", "--comment", "pontoon service portals", "-j", chainServices},
		{"nat", "POSTROUTING", "-m", "comment", "--comment", "pontoon postrouting rules", "-j", chainPostrouting},
		{"filter", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "pontoon external services", "-j", chainExternalServices},
		{"filter", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "pontoon external services", "-j", chainExternalServices},
		{"filter", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "pontoon service portals", "-j", chainServices},
		{"filter", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "pontoon service portals", "-j", chainServices},
		{"filter", "FORWARD", "-m", "comment", "--comment", "pontoon forwarding rules", "-j", chainForward},
	}
}

// Proxy keeps the node's iptables in step with the Services and
// EndpointSlices, as kube-proxy does: every change syncs (several changes
// close together sync once), a sync writes only the chains that changed,
// and a full sync on a timer writes everything and mends what was changed
// behind its back.
type Proxy struct {
	cfg      ProxyConfig
	log      *slog.Logger
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	queue    workqueue.TypedRateLimitingInterface[string]
	synced   []cache.InformerSynced
	health   *healthServers
	// syncDuration is how long the syncs took, by kind (full, partial);
	// restores counts those that loaded rules (a sync that changes
	// nothing loads none).
	syncDuration *prometheus.HistogramVec
	restores     *prometheus.CounterVec

	// last is what the last sync wrote; nil makes the next one full.
	last *Rules
	// cache holds each Service's rules, computed again only when its
	// objects change.
	cache serviceCache
	// udp are the endpoints each UDP service port sent to at the last
	// sync.
	udp map[udpPort][]net.IP
}

// The keys of the proxy's queue: every change leads to one sync of
// everything, which writes what changed or, full, everything.
const (
	syncKey     = "sync"
	fullSyncKey = "full"
)

// NewProxy makes a proxy; Run starts it.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Client == nil || cfg.Iptables == nil || cfg.Rules.ClusterCIDR == nil || cfg.Rules.ServiceCIDR == nil || cfg.Rules.NodeName == "" {
		return nil, errors.New("netproxy: a client, iptables, the node name and the cluster and service CIDRs are required")
	}
	if cfg.FullSyncPeriod == 0 {
		cfg.FullSyncPeriod = time.Minute
	}
	if cfg.CheckPeriod == 0 {
		cfg.CheckPeriod = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "proxy")
	syncDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pontoon_proxy_sync_duration_seconds",
		Help:    "How long the service proxy took to compute and load its rules, by kind of sync (full, partial).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"sync"})
	restores := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pontoon_proxy_restores_total",
		Help: "How many syncs of the service proxy loaded rules with iptables-restore, by kind of sync (full, partial).",
	}, []string{"sync"})
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{syncDuration, restores} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("netproxy: metrics: %w", err)
			}
		}
	}
	return &Proxy{cfg: cfg, log: log, udp: map[udpPort][]net.IP{}, cache: serviceCache{}, health: newHealthServers(cfg.HealthCheckHost, log),
		syncDuration: syncDuration, restores: restores,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "proxy"})}, nil
}

// Run syncs until ctx ends. The rules stay when it returns: the node's
// services keep working while the agent is down.
func (p *Proxy) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(p.cfg.Client, 0)
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	p.services, p.slices = svcInf.Lister(), sliceInf.Lister()
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.queue.Add(syncKey) },
		UpdateFunc: func(any, any) { p.queue.Add(syncKey) },
		DeleteFunc: func(any) { p.queue.Add(syncKey) },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), sliceInf.Informer()} {
		if _, err := inf.AddEventHandler(changed); err != nil {
			return err
		}
		p.synced = append(p.synced, inf.HasSynced)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	defer p.health.close()
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), p.synced...) {
		return ctx.Err()
	}
	go p.watchRules(ctx)
	p.queue.Add(fullSyncKey)
	for {
		key, quit := p.queue.Get()
		if quit {
			return nil
		}
		full := key == fullSyncKey || p.last == nil
		start := time.Now()
		err := p.sync(ctx, full)
		p.queue.Done(key)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Error("sync failed; retrying with a full sync", "err", err)
			p.last = nil
			p.queue.AddRateLimited(syncKey)
			continue
		}
		p.queue.Forget(key)
		took := time.Since(start)
		p.syncDuration.WithLabelValues(syncKind(full)).Observe(took.Seconds())
		p.log.Debug("synced", "sync", syncKind(full), "took", took)
	}
}

// watchRules asks for a full sync on the timer, and at once when a jump
// to the proxy's chains is gone.
func (p *Proxy) watchRules(ctx context.Context) {
	full := time.NewTicker(p.cfg.FullSyncPeriod)
	defer full.Stop()
	check := time.NewTicker(p.cfg.CheckPeriod)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-full.C:
			p.queue.Add(fullSyncKey)
		case <-check.C:
			for _, j := range jumps() {
				if ok, err := p.cfg.Iptables.Exists(ctx, j[0], j[1], j[2:]...); err == nil && !ok {
					p.log.Warn("the proxy's rules were changed behind its back; writing them again", "table", j[0], "chain", j[1])
					p.queue.Add(fullSyncKey)
					break
				}
			}
		}
	}
}

// syncKind names a sync in the metrics.
func syncKind(full bool) string {
	if full {
		return "full"
	}
	return "partial"
}

// sync writes the rules for what the informers hold.
func (p *Proxy) sync(ctx context.Context, full bool) error {
	services, err := p.services.List(labels.Everything())
	if err != nil {
		return err
	}
	endpointSlices, err := p.slices.List(labels.Everything())
	if err != nil {
		return err
	}
	rules, ports := computeCached(p.cfg.Rules, services, endpointSlices, p.cache)
	var input []byte
	if full {
		// The chains to delete are those the tables hold and the rules
		// no longer want: listed from the tables after a start or a
		// failure, else the last sync's (listing 100,000 rules takes
		// longer than loading them).
		existing := map[string][]string{}
		for _, table := range []string{"nat", "filter"} {
			if p.last != nil {
				existing[table] = slices.Collect(maps.Keys(p.last.table(table).Chains))
				continue
			}
			chains, err := p.cfg.Iptables.Chains(ctx, table)
			if err != nil {
				return err
			}
			existing[table] = chains
		}
		input = restoreInput(rules, nil, existing)
	} else {
		input = restoreInput(rules, p.last, nil)
	}
	if len(input) > 0 {
		if err := p.cfg.Iptables.Restore(ctx, input); err != nil {
			return fmt.Errorf("iptables-restore: %w", err)
		}
		p.restores.WithLabelValues(syncKind(full)).Inc()
	}
	if full {
		for _, j := range jumps() {
			if err := p.cfg.Iptables.EnsureFirst(ctx, j[0], j[1], j[2:]...); err != nil {
				return fmt.Errorf("jump from %s %s: %w", j[0], j[1], err)
			}
		}
	}
	p.last = &rules
	p.forgetStaleUDP(ports)
	p.health.sync(healthChecks(ports))
	return nil
}

// udpPort is a UDP service port: its ClusterIP and port.
type udpPort struct {
	ip   string
	port int32
}

// forgetStaleUDP deletes the conntrack entries of UDP service ports to
// endpoints they no longer send to.
func (p *Proxy) forgetStaleUDP(ports []servicePort) {
	now := map[udpPort][]net.IP{}
	for _, sp := range ports {
		if protocol(&sp.port.Protocol) != corev1.ProtocolUDP {
			continue
		}
		key := udpPort{sp.svc.Spec.ClusterIP, sp.port.Port}
		for _, e := range usable(sp.endpoints) {
			now[key] = append(now[key], net.ParseIP(e.ip))
		}
	}
	if p.cfg.Conntrack != nil {
		for key, old := range p.udp {
			for _, ip := range old {
				if !containsIP(now[key], ip) {
					if err := p.cfg.Conntrack.DeleteUDP(net.ParseIP(key.ip), key.port, ip); err != nil {
						p.log.Warn("deleting stale UDP flows", "service", key.ip, "port", key.port, "endpoint", ip, "err", err)
					}
				}
			}
		}
	}
	p.udp = now
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, i := range ips {
		if i.Equal(ip) {
			return true
		}
	}
	return false
}
