package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Route is a route the node holds: to Dst through Gateway, or, without
// one, onto the proxy's service link.
type Route struct {
	Dst     *net.IPNet
	Gateway net.IP
}

func (r Route) String() string {
	if r.Gateway == nil {
		return r.Dst.String()
	}
	return r.Dst.String() + " via " + r.Gateway.String()
}

// RouteTable is the node's routing table, as far as the proxy's own
// routes go.
type RouteTable interface {
	// List returns the routes the proxy made.
	List() ([]Route, error)
	Replace(Route) error
	Delete(Route) error
}

// RoutesConfig is what Routes are made from.
type RoutesConfig struct {
	Client   kubernetes.Interface
	NodeName string
	// ServiceCIDR gets a route of its own onto the service link, so that
	// the node and its pods reach every service address (and are refused
	// at once for one no Service holds) without a default route.
	ServiceCIDR *net.IPNet
	Table       RouteTable
	Logger      *slog.Logger
}

// Routes routes each other node's pod CIDR to that node's address, as
// flannel's host-gw backend does, following the Node objects: pod
// traffic between nodes keeps its source address. Once the routes are in
// place, the node's NetworkUnavailable condition is cleared, as a cloud's
// route controller does.
type Routes struct {
	cfg   RoutesConfig
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[string]
}

// NewRoutes makes the node's route keeper; Run starts it.
func NewRoutes(cfg RoutesConfig) (*Routes, error) {
	if cfg.Client == nil || cfg.Table == nil || cfg.NodeName == "" || cfg.ServiceCIDR == nil {
		return nil, errors.New("netproxy: routes need a client, a route table, the node name and the service CIDR")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Routes{cfg: cfg, log: cfg.Logger.With("component", "routes"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "routes"})}, nil
}

// wantedRoutes are the routes the node should hold: one per other node
// with a pod CIDR and an InternalIP, and the service range's.
func wantedRoutes(me string, serviceCIDR *net.IPNet, nodes []*corev1.Node) []Route {
	out := []Route{{Dst: serviceCIDR}}
	for _, n := range nodes {
		if n.Name == me || n.Spec.PodCIDR == "" {
			continue
		}
		_, dst, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil || dst.IP.To4() == nil {
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip := net.ParseIP(a.Address); a.Type == corev1.NodeInternalIP && ip.To4() != nil {
				out = append(out, Route{Dst: dst, Gateway: ip.To4()})
				break
			}
		}
	}
	return out
}

// Run keeps the routes until ctx ends; they stay when it returns, so pod
// traffic flows while the agent is down.
func (r *Routes) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(r.cfg.Client, 0)
	nodes := factory.Core().V1().Nodes()
	enqueue := func(any) { r.queue.Add(syncKey) }
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		// Routes removed behind the agent's back come back within a
		// minute.
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.queue.Add(syncKey)
			}
		}
	}()
	r.queue.Add(syncKey)
	announced := false
	for {
		key, quit := r.queue.Get()
		if quit {
			return nil
		}
		all, err := nodes.Lister().List(labels.Everything())
		if err == nil {
			err = r.sync(all)
		}
		if err == nil && !announced {
			if err = r.announce(ctx); err == nil {
				announced = true
			}
		}
		r.queue.Done(key)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.Error("routes", "err", err)
			r.queue.AddRateLimited(key)
			continue
		}
		r.queue.Forget(key)
	}
}

// sync makes the table hold exactly the wanted routes.
func (r *Routes) sync(nodes []*corev1.Node) error {
	want := wantedRoutes(r.cfg.NodeName, r.cfg.ServiceCIDR, nodes)
	have, err := r.cfg.Table.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range want {
		if slices.ContainsFunc(have, func(h Route) bool { return sameRoute(h, w) }) {
			continue
		}
		if err := r.cfg.Table.Replace(w); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", w, err))
			continue
		}
		r.log.Info("route added", "route", w.String())
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(w Route) bool { return sameRoute(h, w) }) {
			if err := r.cfg.Table.Delete(h); err != nil {
				errs = append(errs, fmt.Errorf("route %s: %w", h, err))
				continue
			}
			r.log.Info("route removed", "route", h.String())
		}
	}
	return errors.Join(errs...)
}

func sameRoute(a, b Route) bool {
	return a.Dst.String() == b.Dst.String() && a.Gateway.Equal(b.Gateway)
}

// announce clears the node's NetworkUnavailable condition.
func (r *Routes) announce(ctx context.Context) error {
	now := metav1.Now()
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"status":"False","reason":"RouteCreated","message":"Pontoon's agent created the routes to the other nodes","lastTransitionTime":%q,"lastHeartbeatTime":%q}]}}`,
		corev1.NodeNetworkUnavailable, now.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	_, err := r.cfg.Client.CoreV1().Nodes().PatchStatus(ctx, r.cfg.NodeName, []byte(patch))
	if err != nil {
		return fmt.Errorf("clearing NetworkUnavailable: %w", err)
	}
	return nil
}
