// Package ctrl holds the controllers the Raft leader runs. They are
// ordinary client-go clients, written as Kubernetes' sample-controller is:
// an informer feeds a work queue, and an idempotent sync(key) brings one
// object to its desired state. They reach the leader's API in-process and
// stop when leadership ends; their writes are fenced by it.
package ctrl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Config is what the controllers work with. The caller starts Informers
// after New, so the scheduler and the controllers share one cache.
type Config struct {
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Metadata  metadata.Interface
	Discovery discovery.DiscoveryInterface
	Informers informers.SharedInformerFactory
	Events    record.EventBroadcaster
	Logger    *slog.Logger

	// NodeMonitorGracePeriod is how long a node's Lease may go unrenewed
	// before the node is NotReady.
	NodeMonitorGracePeriod time.Duration
	// Gossip, when set, tells of nodes whose agent the gossip pool found
	// dead: they are NotReady without waiting for the grace period.
	Gossip NodeGossip
	// Servers, when set with ServiceCIDR, tells of the API servers alive,
	// for the kubernetes Service, whose ClusterIP is the first address of
	// ServiceCIDR.
	Servers     ServerGossip
	ServiceCIDR *net.IPNet
	// Eviction paces the NoExecute taints that evict pods from nodes.
	Eviction EvictionRates
	// ClusterCIDR is the range nodes' pod CIDRs come from, in ranges of
	// NodeCIDRMaskSize bits.
	ClusterCIDR      *net.IPNet
	NodeCIDRMaskSize int
	// TerminatedPodGCThreshold is how many finished pods may stay.
	TerminatedPodGCThreshold int
}

// EvictionRates are kube-controller-manager's settings of the same
// names: NodeEvictionRate is how many nodes a second, per zone, get the
// NoExecute taints that evict their pods; SecondaryNodeEvictionRate
// replaces it in a zone where at least UnhealthyZoneThreshold of the
// nodes (and more than two) are not Ready, and such a zone of no more
// than LargeClusterSizeThreshold nodes gets none. A rate of 0 taints
// nothing.
type EvictionRates struct {
	NodeEvictionRate, SecondaryNodeEvictionRate float32
	LargeClusterSizeThreshold                   int
	UnhealthyZoneThreshold                      float32
}

// NodeGossip is what the gossip pool knows of the nodes' agents. The
// server passes its pool in; the controllers, API clients, do not import
// the membership package.
type NodeGossip interface {
	// DeadNodes returns the nodes whose agent was found dead (failed,
	// not left), with when this server saw each one die.
	DeadNodes() map[string]time.Time
	// Changed returns a channel closed at the next change of any member.
	Changed() <-chan struct{}
}

// NewInformerFactory makes the informer factory the leader's scheduler
// and controllers share. As kube-controller-manager's and
// kube-scheduler's, its caches leave out managedFields, which no
// controller reads and which are a good part of every object; its pods
// share the parts they hold alike (podParts).
func NewInformerFactory(client kubernetes.Interface) informers.SharedInformerFactory {
	parts := newPodParts()
	return informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(func(obj any) (any, error) {
		if pod, ok := obj.(*corev1.Pod); ok {
			parts.share(pod)
		}
		return stripManagedFields(obj)
	}))
}

// stripManagedFields is an informer transform that drops managedFields.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil && m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Controllers is every controller the leader runs.
type Controllers struct {
	controllers []*controller
	// metadata holds the garbage collector's informers of the kinds
	// client-go has no typed informer for.
	metadata metadatainformer.SharedInformerFactory
}

// New makes the controllers and registers their informers; it asks the
// API which resources it serves, for the garbage collector.
func New(cfg Config) (*Controllers, error) {
	cs := &Controllers{metadata: metadatainformer.NewSharedInformerFactory(cfg.Metadata, 0)}
	gc, err := newGarbageCollector(cfg, cs.metadata)
	if err != nil {
		return nil, err
	}
	cs.controllers = []*controller{
		newNamespaceController(cfg),
		newServiceAccountController(cfg),
		newReplicaSetController(cfg),
		newReplicationControllerController(cfg),
		newDeploymentController(cfg),
		gc,
		newEndpointsController(cfg),
		newEndpointMirrorController(cfg),
		newServiceCIDRController(cfg),
		newClusterIPRepairController(cfg),
		newNodeLifecycleController(cfg),
		newNodeIPAMController(cfg),
		newPodGCController(cfg),
		newJobController(cfg),
		newCronJobController(cfg),
		newDaemonSetController(cfg),
		newStatefulSetController(cfg),
		newAPIServiceController(cfg),
		newServiceLBController(cfg),
	}
	return cs, nil
}

// Run runs every controller until ctx ends. The caller has started the
// shared typed informers.
func (cs *Controllers) Run(ctx context.Context) {
	cs.metadata.Start(ctx.Done())
	defer cs.metadata.Shutdown()
	var wg sync.WaitGroup
	for _, c := range cs.controllers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx)
		}()
	}
	wg.Wait()
}

// workers is how many keys each controller syncs at once, as
// kube-controller-manager's --concurrent-*-syncs (5 by default).
const workers = 5

// controller is a work queue of keys and the function that syncs one.
type controller struct {
	name   string
	queue  workqueue.TypedRateLimitingInterface[string]
	synced []cache.InformerSynced
	sync   func(ctx context.Context, key string) error
	// background, when set, runs beside the workers once the caches have
	// synced, for a controller that also listens to something else.
	background func(ctx context.Context)
	// recorder writes the events users see in kubectl describe, from
	// "<name>-controller".
	recorder record.EventRecorder
	logger   *slog.Logger
}

func newController(name string, cfg Config, sync func(context.Context, string) error) *controller {
	return &controller{
		name:     name,
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		sync:     sync,
		recorder: cfg.Events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: name + "-controller"}),
		logger:   cfg.Logger.With("controller", name),
	}
}

// enqueue adds the key of an informer's object.
func (c *controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		c.queue.Add(key)
	}
}

// handler enqueues every added, updated or deleted object.
func (c *controller) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	}
}

// run syncs keys until ctx ends, which shuts the queue down.
func (c *controller) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, c.queue.ShutDown)
	defer stop()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	// The queue never hands one key to two workers at once.
	var wg sync.WaitGroup
	if c.background != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.background(ctx)
		}()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	wg.Wait()
}

// writeStatus writes obj, whose status is status, through client's
// status subresource, unless status equals stored, the stored one.
func writeStatus[T metav1.Object, S any](ctx context.Context, client interface {
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}, obj T, stored, status S) error {
	if equality.Semantic.DeepEqual(stored, status) {
		return nil
	}
	if _, err := client.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// requeueAfter asks for a key to be synced again later without counting
// as a failure (work that is waiting for something else).
type requeueAfter time.Duration

func (r requeueAfter) Error() string { return fmt.Sprintf("requeue after %v", time.Duration(r)) }

func (c *controller) next(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	err := c.syncSafely(ctx, key)
	switch e := err.(type) {
	case nil:
		c.queue.Forget(key)
	case requeueAfter:
		c.queue.Forget(key)
		c.queue.AddAfter(key, time.Duration(e))
	default:
		if ctx.Err() == nil {
			c.logger.Warn("sync failed; retrying", "key", key, "err", err)
		}
		c.queue.AddRateLimited(key)
	}
	return true
}

// syncSafely runs sync and turns a panic into an error for the key, which
// is then retried with backoff. Unlike kube-controller-manager, which
// crashes on a panic and is restarted, a Pontoon server is also a Raft
// voter and an API server; and a panic caused by one object would come
// back on every server that leads next. The panic is logged with its stack.
func (c *controller) syncSafely(ctx context.Context, key string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("sync panicked; retrying", "key", key, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("sync of %s panicked: %v", key, r)
		}
	}()
	return c.sync(ctx, key)
}
