package sched

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
)

// resources is what a pod requests or a node offers, in the units the
// filters compare: millicores, bytes and counts.
type resources struct {
	milliCPU int64
	memory   int64
	storage  int64
	pods     int64
	scalar   map[corev1.ResourceName]int64
}

func (r *resources) add(o resources, sign int64) {
	r.milliCPU += sign * o.milliCPU
	r.memory += sign * o.memory
	r.storage += sign * o.storage
	r.pods += sign * o.pods
	for name, v := range o.scalar {
		if r.scalar == nil {
			r.scalar = map[corev1.ResourceName]int64{}
		}
		r.scalar[name] += sign * v
	}
}

func resourcesOf(list corev1.ResourceList) resources {
	var r resources
	for name, q := range list {
		switch name {
		case corev1.ResourceCPU:
			r.milliCPU = q.MilliValue()
		case corev1.ResourceMemory:
			r.memory = q.Value()
		case corev1.ResourceEphemeralStorage:
			r.storage = q.Value()
		case corev1.ResourcePods:
			r.pods = q.Value()
		default:
			if r.scalar == nil {
				r.scalar = map[corev1.ResourceName]int64{}
			}
			r.scalar[name] = q.Value()
		}
	}
	return r
}

// Requests a container without any counts as for scoring, as
// kube-scheduler does, so that many best-effort pods still spread.
var nonZeroDefaults = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("100m"),
	corev1.ResourceMemory: resource.MustParse("200Mi"),
}

// hostPort is a port a pod binds on its node's addresses.
type hostPort struct {
	ip       string
	protocol corev1.Protocol
	port     int32
}

// podInfo is a pod with what scheduling derives from it, computed once.
type podInfo struct {
	pod     *corev1.Pod
	key     string
	req     resources // what the filters count
	nonZero resources // what the scores count
	ports   []hostPort
	// Terms of the pod's own required anti-affinity, which other pods
	// must respect.
	antiAffinity []affinityTerm
	// Terms of the pod's preferred (anti-)affinity, which attract or
	// repel other pods in the scores (signed weights).
	preferred []weightedTerm
}

func newPodInfo(pod *corev1.Pod) *podInfo {
	pi := &podInfo{pod: pod, key: podKey(pod)}
	pi.req = resourcesOf(resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{}))
	pi.req.pods = 1
	pi.nonZero = resourcesOf(resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{NonMissingContainerRequests: nonZeroDefaults}))
	for _, containers := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range containers {
			for _, p := range containers[i].Ports {
				if p.HostPort > 0 {
					proto := p.Protocol
					if proto == "" {
						proto = corev1.ProtocolTCP
					}
					pi.ports = append(pi.ports, hostPort{ip: p.HostIP, protocol: proto, port: p.HostPort})
				}
			}
		}
	}
	if a := pod.Spec.Affinity; a != nil {
		if a.PodAntiAffinity != nil {
			pi.antiAffinity = newAffinityTerms(pod, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
			for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				pi.preferred = append(pi.preferred, newWeightedTerm(pod, w, -1))
			}
		}
		if a.PodAffinity != nil {
			for _, w := range a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				pi.preferred = append(pi.preferred, newWeightedTerm(pod, w, 1))
			}
		}
	}
	return pi
}

// conflicts reports whether two host ports cannot both be bound;
// 0.0.0.0 (or no address) takes the port on every address.
func (p hostPort) conflicts(o hostPort) bool {
	if p.port != o.port || p.protocol != o.protocol {
		return false
	}
	wild := func(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }
	return wild(p.ip) || wild(o.ip) || p.ip == o.ip
}

// nodeInfo is the scheduler's view of one node: the node, the pods bound
// or assumed to it and what they request.
type nodeInfo struct {
	node *corev1.Node
	// What the filters read of every node, copied here from the node so
	// the walk over thousands of nodes touches little memory.
	ready         bool // the node's Ready condition is True
	unschedulable bool
	taints        []corev1.Taint
	allocatable   resources
	requested     resources
	nonZero       resources
	pods          map[string]*podInfo
	ports         []hostPort
}

func newNodeInfo() *nodeInfo { return &nodeInfo{pods: map[string]*podInfo{}} }

func (n *nodeInfo) setNode(node *corev1.Node) {
	n.node = node
	n.ready, n.unschedulable, n.taints = nodeReady(node), node.Spec.Unschedulable, node.Spec.Taints
	n.allocatable = resourcesOf(node.Status.Allocatable)
}

func (n *nodeInfo) addPod(pi *podInfo) {
	n.pods[pi.key] = pi
	n.requested.add(pi.req, 1)
	n.nonZero.add(pi.nonZero, 1)
	n.ports = append(n.ports, pi.ports...)
}

func (n *nodeInfo) removePod(key string) {
	pi, ok := n.pods[key]
	if !ok {
		return
	}
	delete(n.pods, key)
	n.requested.add(pi.req, -1)
	n.nonZero.add(pi.nonZero, -1)
	if len(pi.ports) > 0 {
		n.ports = n.ports[:0]
		for _, p := range n.pods {
			n.ports = append(n.ports, p.ports...)
		}
	}
}

// cache is the scheduler's own view of allocations: every node with the
// pods bound to it, plus the pods it has assumed onto a node while their
// binding is in flight, so that it never re-reads the cluster per pod.
// Informer events and the scheduling loop both change it, under mu.
type cache struct {
	mu    sync.Mutex
	nodes map[string]*nodeInfo
	order []*nodeInfo // the nodes, in the order the filters walk them
	// podNode is the node of every pod in the cache; assumed marks those
	// the informer has not yet confirmed.
	podNode map[string]string
	assumed map[string]bool
	// affine holds the pods whose own affinity terms bear on where other
	// pods go, so a cycle need not walk every pod to find them.
	affine map[string]*podInfo
	// nominated holds, per node, the pending pods that preempted there
	// (status.nominatedNodeName): what they will need is kept free from
	// pods of lower priority while their victims go.
	nominated map[string]map[string]*podInfo
	// feasible and scores are findNode's working memory, reused from
	// cycle to cycle (it runs with the cache locked) rather than made
	// afresh for every pod.
	feasible []*nodeInfo
	scores   []int64
}

func newCache() *cache {
	return &cache{nodes: map[string]*nodeInfo{}, podNode: map[string]string{}, assumed: map[string]bool{},
		affine: map[string]*podInfo{}, nominated: map[string]map[string]*podInfo{}}
}

// nominate records a pending pod's nominated node, or forgets it when it
// has none.
func (c *cache) nominate(pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := podKey(pod)
	c.unnominateLocked(key)
	if node := pod.Status.NominatedNodeName; node != "" && pod.Spec.NodeName == "" {
		if c.nominated[node] == nil {
			c.nominated[node] = map[string]*podInfo{}
		}
		c.nominated[node][key] = newPodInfo(pod)
	}
}

func (c *cache) unnominate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unnominateLocked(key)
}

func (c *cache) unnominateLocked(key string) {
	for node, pods := range c.nominated {
		if _, ok := pods[key]; ok {
			delete(pods, key)
			if len(pods) == 0 {
				delete(c.nominated, node)
			}
		}
	}
}

// withNominated is the node as a pod of priority prio sees it: with the
// pods nominated there of at least that priority (other than the pod
// itself) counted as if bound. Without any, it is the node itself.
func (c *cache) withNominated(n *nodeInfo, self string, prio int32) *nodeInfo {
	if len(c.nominated) == 0 {
		return n
	}
	var extra []*podInfo
	for key, p := range c.nominated[n.node.Name] {
		if key != self && corev1helpers.PodPriority(p.pod) >= prio {
			extra = append(extra, p)
		}
	}
	if len(extra) == 0 {
		return n
	}
	sim := newNodeInfo()
	sim.setNode(n.node)
	for _, p := range n.pods {
		sim.addPod(p)
	}
	for _, p := range extra {
		sim.addPod(p)
	}
	return sim
}

// info returns the node's entry, making one for a pod that names a node
// the informer has not shown yet.
func (c *cache) info(name string) *nodeInfo {
	n, ok := c.nodes[name]
	if !ok {
		n = newNodeInfo()
		c.nodes[name] = n
	}
	return n
}

func (c *cache) setNode(node *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.info(node.Name)
	if n.node == nil {
		c.order = append(c.order, n)
	}
	n.setNode(node)
}

func (c *cache) removeNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok || n.node == nil {
		return
	}
	n.node = nil
	for i, o := range c.order {
		if o == n {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
	if len(n.pods) == 0 {
		delete(c.nodes, name)
	}
}

// setPod records a bound pod the informer reports, confirming an assumed
// one. What a podInfo derives from the spec (requests, host ports,
// affinity terms) cannot change while the pod keeps its uid, since a pod
// update may not change it (validatePodUpdate): the podInfo already
// cached is kept with the new pod, so confirming a binding does not work
// out the pod's requests again.
func (c *cache) setPod(pod *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := podKey(pod)
	var pi *podInfo
	if old := c.cached(key); old != nil && old.pod.UID == pod.UID {
		kept := *old
		kept.pod = pod
		pi = &kept
	} else {
		pi = newPodInfo(pod)
	}
	c.removeLocked(key)
	c.addLocked(pi, pod.Spec.NodeName)
}

// cached is the podInfo of a pod bound or assumed to a node, or nil.
func (c *cache) cached(key string) *podInfo {
	node, ok := c.podNode[key]
	if !ok {
		return nil
	}
	return c.nodes[node].pods[key]
}

// assume places a pod on a node before its binding is stored.
func (c *cache) assume(pi *podInfo, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(pi.key)
	c.addLocked(pi, node)
	c.assumed[pi.key] = true
}

func (c *cache) addLocked(pi *podInfo, node string) {
	c.info(node).addPod(pi)
	c.podNode[pi.key] = node
	if len(pi.antiAffinity) > 0 || len(pi.preferred) > 0 {
		c.affine[pi.key] = pi
	}
}

// forget undoes assume after a failed binding, unless the informer has
// since confirmed the pod.
func (c *cache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.assumed[key] {
		c.removeLocked(key)
	}
}

func (c *cache) removePod(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
}

func (c *cache) removeLocked(key string) {
	name, ok := c.podNode[key]
	if !ok {
		return
	}
	delete(c.podNode, key)
	delete(c.assumed, key)
	delete(c.affine, key)
	n := c.nodes[name]
	n.removePod(key)
	if n.node == nil && len(n.pods) == 0 {
		delete(c.nodes, name)
	}
}
