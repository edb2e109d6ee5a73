package ctrl

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// podsByNode indexes the shared pod informer by spec.nodeName.
const podsByNode = "spec.nodeName"

func indexPodsByNode(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{pod.Spec.NodeName}, nil
}

// nodeLifecycleController watches the nodes' heartbeats, as Kubernetes'
// node lifecycle controller does: a node whose Lease has not been renewed
// for the grace period becomes Ready=Unknown; a node that is not Ready is
// tainted node.kubernetes.io/unreachable or not-ready (NoSchedule and
// NoExecute); and the pods on a node with NoExecute taints are evicted
// once their tolerations run out (300 s by default). A node whose agent
// the gossip pool found dead becomes Ready=Unknown at once, as if its
// grace period had run out; a Lease renewal seen after that verdict
// outweighs it, so a kubelet that still reaches the API (a gossip
// partition) can post its node Ready again.
//
// When every node is not Ready at once, the trouble is more likely in the
// control plane's view of them than in all of them, and evicting every pod
// of the cluster would only add to it: as Kubernetes does when all zones
// are fully disrupted, the NoExecute taints come off and nothing is
// evicted until a node is Ready again.
//
// A heartbeat is dated by when this controller saw the Lease change, not
// by the time written in it, so clocks need not agree, and a new leader
// gives every node a full grace period.
type nodeLifecycleController struct {
	*controller
	client kubernetes.Interface
	nodes  corelisters.NodeLister
	leases coordinationlisters.LeaseLister
	pods   cache.Indexer
	grace  time.Duration
	gossip NodeGossip

	mu   sync.Mutex
	seen map[string]heartbeat
	// dead is the gossip pool's last word on dead agents, by node.
	dead map[string]time.Time
	// allDown says every node is not Ready; checked is closed once that
	// has been looked at, before any node is synced.
	allDown atomic.Bool
	checked chan struct{}
	// zones paces the NoExecute taints of each failure zone.
	zones    map[string]*zonePace
	eviction EvictionRates
}

// zonePace is the pace of one zone's NoExecute taints.
type zonePace struct {
	qps     float32
	limiter flowcontrol.RateLimiter // nil when qps is 0
}

// heartbeat is the last Lease renewal seen of a node: its renewTime, when
// this controller first saw it, and whether it saw it change (rather than
// find it when it started).
type heartbeat struct {
	renew   time.Time
	at      time.Time
	renewed bool
}

func newNodeLifecycleController(cfg Config) *controller {
	c := &nodeLifecycleController{client: cfg.Client, grace: cfg.NodeMonitorGracePeriod, gossip: cfg.Gossip,
		seen: map[string]heartbeat{}, checked: make(chan struct{}), zones: map[string]*zonePace{},
		eviction: cfg.Eviction}
	c.controller = newController("node-lifecycle", cfg, c.sync)
	c.background = c.watch
	nodeInf, podInf := cfg.Informers.Core().V1().Nodes(), cfg.Informers.Core().V1().Pods()
	leaseInf := cfg.Informers.Coordination().V1().Leases()
	nodeInf.Informer().AddEventHandler(c.handler())
	leaseInf.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: func(obj any) bool {
			l, ok := obj.(*coordinationv1.Lease)
			return ok && l.Namespace == corev1.NamespaceNodeLease
		},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.queue.Add(obj.(*coordinationv1.Lease).Name) },
			UpdateFunc: func(_, obj any) { c.queue.Add(obj.(*coordinationv1.Lease).Name) },
		},
	})
	// The index is registered before the factory starts; it is the only
	// index on the shared pod informer.
	if err := podInf.Informer().AddIndexers(cache.Indexers{podsByNode: indexPodsByNode}); err != nil {
		c.logger.Error("indexing pods by node", "err", err)
	}
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod := obj.(*corev1.Pod); pod.Spec.NodeName != "" {
				c.queue.Add(pod.Spec.NodeName)
			}
		},
		UpdateFunc: func(old, obj any) {
			if o, p := old.(*corev1.Pod), obj.(*corev1.Pod); o.Spec.NodeName != p.Spec.NodeName || !equality.Semantic.DeepEqual(o.Spec.Tolerations, p.Spec.Tolerations) {
				c.queue.Add(p.Spec.NodeName)
			}
		},
	})
	c.nodes, c.leases, c.pods = nodeInf.Lister(), leaseInf.Lister(), podInf.Informer().GetIndexer()
	c.synced = append(c.synced, nodeInf.Informer().HasSynced, leaseInf.Informer().HasSynced, podInf.Informer().HasSynced)
	return c.controller
}

func (c *nodeLifecycleController) sync(ctx context.Context, name string) error {
	select {
	case <-c.checked:
	case <-ctx.Done():
		return ctx.Err()
	}
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		c.mu.Lock()
		delete(c.seen, name)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	now := time.Now()
	hb := c.heartbeat(name, now)
	silent := now.Sub(hb.at)
	lost, why := silent >= c.grace, "Kubelet stopped posting node status."
	c.mu.Lock()
	died, dead := c.dead[name]
	c.mu.Unlock()
	if !lost && dead && !(hb.renewed && hb.at.After(died)) {
		lost, why = true, "The node's agent stopped answering gossip."
	}
	ready := readyCondition(node)
	if lost && (ready == nil || ready.Status != corev1.ConditionUnknown) {
		if node, err = c.markUnknown(ctx, node, now, why); err != nil {
			return err
		}
		ready = readyCondition(node)
	}
	if ready != nil && ready.Status == corev1.ConditionUnknown {
		if err := c.markPodsNotReady(ctx, name, now); err != nil {
			return err
		}
	}
	node, paced, err := c.syncTaints(ctx, node, ready, now)
	if err != nil {
		return err
	}
	next, err := c.evict(ctx, node, now)
	if err != nil {
		return err
	}
	if paced && (next == 0 || taintRetry < next) {
		next = taintRetry
	}
	if silent < c.grace {
		left := c.grace - silent + 100*time.Millisecond
		if next == 0 || left < next {
			next = left
		}
	}
	if next > 0 {
		return requeueAfter(next)
	}
	return nil
}

// heartbeat returns the node's last Lease renewal seen.
func (c *nodeLifecycleController) heartbeat(name string, now time.Time) heartbeat {
	var renew time.Time
	if l, err := c.leases.Leases(corev1.NamespaceNodeLease).Get(name); err == nil && l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.Time
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	hb, ok := c.seen[name]
	if !ok || !hb.renew.Equal(renew) {
		hb = heartbeat{renew: renew, at: now, renewed: ok}
		c.seen[name] = hb
	}
	return hb
}

// zoneCheck is how often the controller looks at the zones' health; a
// node down for less than zoneSettle waits for its NoExecute taint (see
// settled); taintRetry is how soon a node whose NoExecute taint had to
// wait is tried again.
const (
	zoneCheck  = time.Second
	zoneSettle = 2 * zoneCheck
	taintRetry = time.Second
)

// watch follows what tells of nodes besides their objects: whether they
// are all down, and the gossip pool.
func (c *nodeLifecycleController) watch(ctx context.Context) {
	var wg sync.WaitGroup
	if c.gossip != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchGossip(ctx)
		}()
	}
	c.watchZones(ctx)
	wg.Wait()
}

// watchZones keeps allDown and the zones' pace current, and syncs every
// node when allDown changes.
func (c *nodeLifecycleController) watchZones(ctx context.Context) {
	t := time.NewTicker(zoneCheck)
	defer t.Stop()
	first := true
	for {
		if nodes, err := c.nodes.List(labels.Everything()); err == nil {
			if down := c.pace(nodes); c.allDown.Swap(down) != down {
				if down {
					c.logger.Warn("every node is not Ready: no pod is evicted until one is")
				} else {
					c.logger.Info("a node is Ready again: evictions resume")
				}
				for _, n := range nodes {
					c.queue.Add(n.Name)
				}
			}
		}
		if first {
			close(c.checked)
			first = false
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// pace sets each zone's NoExecute pace from how many of its nodes are
// Ready, as Kubernetes' zone states: Normal and FullDisruption go at the
// eviction rate, PartialDisruption at the secondary rate or not at all.
// It returns whether every node is down.
func (c *nodeLifecycleController) pace(nodes []*corev1.Node) bool {
	type count struct{ size, notReady int }
	counts := map[string]count{}
	down := 0
	for _, n := range nodes {
		z := counts[zoneOf(n)]
		z.size++
		if !nodeReady(n) {
			z.notReady++
			down++
		}
		counts[zoneOf(n)] = z
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, z := range counts {
		qps := c.eviction.NodeEvictionRate
		if z.notReady > 2 && z.notReady < z.size && float32(z.notReady)/float32(z.size) >= c.eviction.UnhealthyZoneThreshold {
			qps = 0
			if z.size > c.eviction.LargeClusterSizeThreshold {
				qps = c.eviction.SecondaryNodeEvictionRate
			}
		}
		if cur, ok := c.zones[name]; ok && cur.qps == qps {
			continue
		}
		if qps != c.eviction.NodeEvictionRate {
			c.logger.Warn("zone partly down: NoExecute taints slowed", "zone", name, "not_ready", z.notReady, "nodes", z.size, "per_second", qps)
		}
		pace := &zonePace{qps: qps}
		if qps > 0 {
			pace.limiter = flowcontrol.NewTokenBucketRateLimiter(qps, 1)
		}
		c.zones[name] = pace
	}
	for name := range c.zones {
		if _, ok := counts[name]; !ok {
			delete(c.zones, name)
		}
	}
	return len(nodes) > 0 && down == len(nodes)
}

// settled says whether the node has been not Ready for zoneSettle, long
// enough for the zone's health to count it and the nodes that went down
// with it: a rack that fails is judged as a whole, not by its first node
// (Kubernetes likewise updates every node before it judges the zones). A
// transition dated in the future (a skewed kubelet clock) is settled.
func settled(ready *corev1.NodeCondition, now time.Time) bool {
	if ready == nil {
		return true
	}
	at := ready.LastTransitionTime.Time
	return at.After(now) || !now.Before(at.Add(zoneSettle))
}

// mayTaint takes a token of the node's zone for one NoExecute taint.
func (c *nodeLifecycleController) mayTaint(node *corev1.Node) bool {
	c.mu.Lock()
	pace, ok := c.zones[zoneOf(node)]
	c.mu.Unlock()
	if !ok {
		// A zone not looked at yet: its first node goes at once.
		return true
	}
	return pace.limiter != nil && pace.limiter.TryAccept()
}

// zoneOf is the failure zone of a node, from its region and zone labels.
func zoneOf(n *corev1.Node) string {
	region, zone := n.Labels[corev1.LabelTopologyRegion], n.Labels[corev1.LabelTopologyZone]
	if region == "" && zone == "" {
		return ""
	}
	return region + "/" + zone
}

func nodeReady(n *corev1.Node) bool {
	r := readyCondition(n)
	return r != nil && r.Status == corev1.ConditionTrue
}

// watchGossip keeps the gossip pool's dead agents and syncs each node
// whose agent is newly dead.
func (c *nodeLifecycleController) watchGossip(ctx context.Context) {
	for {
		changed := c.gossip.Changed()
		dead := c.gossip.DeadNodes()
		c.mu.Lock()
		before := c.dead
		c.dead = dead
		c.mu.Unlock()
		for name, since := range dead {
			if was, ok := before[name]; !ok || !was.Equal(since) {
				c.queue.Add(name)
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func readyCondition(node *corev1.Node) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// markUnknown sets the node's conditions to Unknown, as for a kubelet
// that stopped posting its status; why is their message.
func (c *nodeLifecycleController) markUnknown(ctx context.Context, node *corev1.Node, now time.Time, why string) (*corev1.Node, error) {
	next := node.DeepCopy()
	t := metav1.NewTime(now)
	if readyCondition(next) == nil {
		next.Status.Conditions = append(next.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady})
	}
	for i := range next.Status.Conditions {
		cond := &next.Status.Conditions[i]
		if cond.Status == corev1.ConditionUnknown {
			continue
		}
		cond.Status, cond.Reason, cond.Message, cond.LastTransitionTime = corev1.ConditionUnknown, "NodeStatusUnknown", why, t
	}
	updated, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("mark node %s unknown: %w", node.Name, err)
	}
	c.recorder.Eventf(node, corev1.EventTypeNormal, "NodeNotReady", "Node %s status is now: NodeNotReady", node.Name)
	return updated, nil
}

// markPodsNotReady sets Ready=False on the pods of a node whose kubelet
// no longer posts its status, as Kubernetes' node lifecycle controller
// does: their endpoints leave their Services, which send new connections
// to pods on live nodes, long before the pods are evicted. The kubelet,
// back, posts them Ready again.
func (c *nodeLifecycleController) markPodsNotReady(ctx context.Context, node string, now time.Time) error {
	objs, err := c.pods.ByIndex(podsByNode, node)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		pod := obj.(*corev1.Pod)
		i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == corev1.PodReady })
		if i < 0 || pod.Status.Conditions[i].Status != corev1.ConditionTrue {
			continue
		}
		next := pod.DeepCopy()
		next.Status.Conditions[i].Status, next.Status.Conditions[i].LastTransitionTime = corev1.ConditionFalse, metav1.NewTime(now)
		if _, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("mark pod %s/%s not ready: %w", pod.Namespace, pod.Name, err)
		}
	}
	return nil
}

// syncTaints makes the node carry the unreachable or not-ready taints its
// Ready condition calls for, and no other of the two.
func (c *nodeLifecycleController) syncTaints(ctx context.Context, node *corev1.Node, ready *corev1.NodeCondition, now time.Time) (*corev1.Node, bool, error) {
	var want string
	switch {
	case ready == nil || ready.Status == corev1.ConditionUnknown:
		want = corev1.TaintNodeUnreachable
	case ready.Status == corev1.ConditionFalse:
		want = corev1.TaintNodeNotReady
	}
	allDown := c.allDown.Load()
	var taints []corev1.Taint
	has := map[corev1.TaintEffect]bool{}
	swapped := false // a NoExecute taint of the other key: no new eviction
	for _, t := range node.Spec.Taints {
		if t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady {
			if t.Key != want || (allDown && t.Effect == corev1.TaintEffectNoExecute) {
				swapped = swapped || (want != "" && t.Effect == corev1.TaintEffectNoExecute)
				continue
			}
			has[t.Effect] = true
		}
		taints = append(taints, t)
	}
	paced := false
	if want != "" {
		for _, e := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
			if has[e] {
				continue
			}
			t := corev1.Taint{Key: want, Effect: e}
			if e == corev1.TaintEffectNoExecute {
				if allDown || (!swapped && (!settled(ready, now) || !c.mayTaint(node))) {
					paced = !allDown
					continue
				}
				t.TimeAdded = &metav1.Time{Time: now}
			}
			taints = append(taints, t)
		}
	}
	taints = withConditionTaints(node, taints)
	if equality.Semantic.DeepEqual(taints, node.Spec.Taints) {
		return node, paced, nil
	}
	next := node.DeepCopy()
	next.Spec.Taints = taints
	updated, err := c.client.CoreV1().Nodes().Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("taint node %s: %w", node.Name, err)
	}
	return updated, paced, nil
}

// pressureTaints are the NoSchedule taints a node carries while its
// kubelet reports a pressure condition (Kubernetes' taint nodes by
// condition), so that only pods that tolerate it are scheduled there.
var pressureTaints = []struct {
	cond corev1.NodeConditionType
	key  string
}{
	{corev1.NodeMemoryPressure, corev1.TaintNodeMemoryPressure},
	{corev1.NodeDiskPressure, corev1.TaintNodeDiskPressure},
	{corev1.NodePIDPressure, corev1.TaintNodePIDPressure},
}

// withConditionTaints is taints with the pressure taints the node's
// conditions call for, and without those they no longer do.
func withConditionTaints(node *corev1.Node, taints []corev1.Taint) []corev1.Taint {
	for _, p := range pressureTaints {
		want := false
		for _, c := range node.Status.Conditions {
			want = want || (c.Type == p.cond && c.Status == corev1.ConditionTrue)
		}
		i := slices.IndexFunc(taints, func(t corev1.Taint) bool { return t.Key == p.key && t.Effect == corev1.TaintEffectNoSchedule })
		switch {
		case want && i < 0:
			taints = append(taints, corev1.Taint{Key: p.key, Effect: corev1.TaintEffectNoSchedule})
		case !want && i >= 0:
			taints = slices.Delete(slices.Clone(taints), i, i+1)
		}
	}
	return taints
}

// evict deletes the pods on the node whose tolerations of its NoExecute
// taints have run out, and returns when the next one runs out.
func (c *nodeLifecycleController) evict(ctx context.Context, node *corev1.Node, now time.Time) (time.Duration, error) {
	var noExecute []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute {
			noExecute = append(noExecute, t)
		}
	}
	if len(noExecute) == 0 {
		return 0, nil
	}
	objs, err := c.pods.ByIndex(podsByNode, node.Name)
	if err != nil {
		return 0, err
	}
	var next time.Duration
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		if !podActive(pod) {
			continue
		}
		at, ok := evictionTime(pod, noExecute)
		if !ok {
			continue
		}
		if left := at.Sub(now); left > 0 {
			if next == 0 || left < next {
				next = left
			}
			continue
		}
		if err := markDisrupted(ctx, c.client, pod, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", false); err != nil {
			return 0, err
		}
		if err := deletePod(ctx, c.client, pod); err != nil {
			return 0, err
		}
		c.recorder.Eventf(pod, corev1.EventTypeNormal, "TaintManagerEviction", "Marking for deletion Pod %s/%s", pod.Namespace, pod.Name)
	}
	return next, nil
}

// evictionTime is when the pod must leave a node with these NoExecute
// taints: at once for a taint it does not tolerate, else when the
// shortest tolerationSeconds since a taint was added runs out; false if
// it tolerates them all for ever.
func evictionTime(pod *corev1.Pod, taints []corev1.Taint) (time.Time, bool) {
	var at time.Time
	bounded := false
	for i := range taints {
		t := &taints[i]
		idx := slices.IndexFunc(pod.Spec.Tolerations, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(t) })
		if idx < 0 {
			return time.Time{}, true
		}
		secs := pod.Spec.Tolerations[idx].TolerationSeconds
		if secs == nil {
			continue
		}
		added := time.Time{}
		if t.TimeAdded != nil {
			added = t.TimeAdded.Time
		}
		end := added.Add(time.Duration(max(*secs, 0)) * time.Second)
		if !bounded || end.Before(at) {
			at, bounded = end, true
		}
	}
	return at, bounded
}
