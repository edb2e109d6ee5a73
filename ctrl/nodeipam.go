package ctrl

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// errCIDRFull says the cluster CIDR has no free node range left.
var errCIDRFull = errors.New("no pod CIDR left in the cluster CIDR")

// nodeIPAMController gives every node a spec.podCIDR, a range of
// --node-cidr-mask-size bits from --cluster-cidr, never the same twice,
// as Kubernetes' range allocator does. The ranges in use are rebuilt from
// the nodes each time the controller starts.
type nodeIPAMController struct {
	*controller
	client kubernetes.Interface
	nodes  corelisters.NodeLister
	alloc  *cidrAllocator
}

func newNodeIPAMController(cfg Config) *controller {
	c := &nodeIPAMController{client: cfg.Client, alloc: newCIDRAllocator(cfg.ClusterCIDR, cfg.NodeCIDRMaskSize)}
	c.controller = newController("node-ipam", cfg, c.sync)
	inf := cfg.Informers.Core().V1().Nodes()
	reg, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.observe(obj.(*corev1.Node)) },
		UpdateFunc: func(_, obj any) { c.observe(obj.(*corev1.Node)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok && n.Spec.PodCIDR != "" {
				c.alloc.release(n.Spec.PodCIDR)
			}
		},
	})
	if err != nil {
		c.logger.Error("watching nodes", "err", err)
	}
	c.nodes = inf.Lister()
	// Allocation waits until this handler has seen every node, so the
	// ranges in use are all known.
	c.synced = append(c.synced, inf.Informer().HasSynced, reg.HasSynced)
	return c.controller
}

func (c *nodeIPAMController) observe(n *corev1.Node) {
	if n.Spec.PodCIDR != "" {
		c.alloc.occupy(n.Spec.PodCIDR)
		return
	}
	c.queue.Add(n.Name)
}

func (c *nodeIPAMController) sync(ctx context.Context, name string) error {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || node.Spec.PodCIDR != "" {
		return err
	}
	cidr, err := c.alloc.allocate()
	if err != nil {
		c.recorder.Eventf(node, corev1.EventTypeNormal, "CIDRNotAvailable", "Node %s status is now: CIDRNotAvailable", name)
		return err
	}
	// No resourceVersion precondition, as in Kubernetes: a node's pod CIDR
	// can only go from unset to set, so a node that got one meanwhile
	// refuses this patch.
	patch, err := json.Marshal(map[string]any{
		"spec": map[string]any{"podCIDR": cidr, "podCIDRs": []string{cidr}},
	})
	if err != nil {
		return err
	}
	if _, err := c.client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		c.alloc.release(cidr)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("set the pod CIDR of node %s: %w", name, err)
	}
	c.recorder.Eventf(node, corev1.EventTypeNormal, "CIDRAssignmentSucceeded", "Node %s was given pod CIDR %s", name, cidr)
	return nil
}

// cidrAllocator hands out the node ranges of an IPv4 cluster CIDR.
type cidrAllocator struct {
	mu    sync.Mutex
	base  uint32
	ones  int // node prefix length
	count uint32
	used  map[uint32]bool
	next  uint32 // where the search for a free range starts
}

func newCIDRAllocator(cluster *net.IPNet, nodeOnes int) *cidrAllocator {
	ones, _ := cluster.Mask.Size()
	return &cidrAllocator{base: binary.BigEndian.Uint32(cluster.IP.To4()), ones: nodeOnes,
		count: 1 << (nodeOnes - ones), used: map[uint32]bool{}}
}

func (a *cidrAllocator) index(cidr string) (uint32, bool) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil || n.IP.To4() == nil {
		return 0, false
	}
	i := (binary.BigEndian.Uint32(n.IP.To4()) - a.base) >> (32 - a.ones)
	return i, i < a.count
}

func (a *cidrAllocator) occupy(cidr string) {
	if i, ok := a.index(cidr); ok {
		a.mu.Lock()
		a.used[i] = true
		a.mu.Unlock()
	}
}

func (a *cidrAllocator) release(cidr string) {
	if i, ok := a.index(cidr); ok {
		a.mu.Lock()
		delete(a.used, i)
		a.mu.Unlock()
	}
}

func (a *cidrAllocator) allocate() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.count {
		i := (a.next + k) % a.count
		if a.used[i] {
			continue
		}
		a.used[i], a.next = true, i+1
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, a.base+i<<(32-a.ones))
		return fmt.Sprintf("%s/%d", ip, a.ones), nil
	}
	return "", errCIDRFull
}
