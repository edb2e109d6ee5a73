package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// Node describes a node the fake kubelet registers.
type Node struct {
	Name   string
	CPU    string // allocatable, e.g. "4"
	Memory string // allocatable, e.g. "8Gi"
	Pods   int    // allocatable pods; 110 if zero
	Labels map[string]string
	Taints []corev1.Taint
}

// FakeKubelet plays the kubelet for nodes made through the API, as the
// controller and scheduler tests need before there is a real one: it
// registers the nodes Ready with their capacity, renews their Leases,
// makes the pods bound to them Running and Ready (or finished, if Exit
// says so), and completes their graceful deletion.
type FakeKubelet struct {
	client kubernetes.Interface
	// Exit, if set, says which phase a started pod ends in (Succeeded or
	// Failed) and its containers' exit code; the pod is left Running when
	// it returns "".
	Exit func(*corev1.Pod) (corev1.PodPhase, int32)
	// Unready, if set, keeps the pods it names from becoming Ready.
	Unready func(*corev1.Pod) bool

	mu      sync.Mutex
	nodes   map[string]bool // name → lease renewed
	queue   workqueue.TypedRateLimitingInterface[string]
	pods    cache.Indexer
	cancel  context.CancelFunc
	stopped sync.WaitGroup
}

// LeaseDuration is what the fake kubelet writes on its Leases; it renews
// them every quarter of it.
const LeaseDuration = 4 * time.Second

// StartFakeKubelet registers nodes and plays their kubelet until t ends.
// Set Exit and Unready before any pod is bound.
func StartFakeKubelet(t TB, client kubernetes.Interface, nodes ...Node) *FakeKubelet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &FakeKubelet{client: client, nodes: map[string]bool{}, cancel: cancel,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	t.Cleanup(k.Stop)
	for _, n := range nodes {
		if err := k.AddNode(ctx, n); err != nil {
			t.Fatalf("register node %s: %v", n.Name, err)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, obj any) { k.enqueue(obj) },
	})
	k.pods = inf.GetIndexer()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	k.stopped.Add(9)
	go func() {
		defer k.stopped.Done()
		k.renewLeases(ctx)
	}()
	for range 8 {
		go func() {
			defer k.stopped.Done()
			for k.next(ctx) {
			}
		}()
	}
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
		factory.Shutdown()
	}()
	return k
}

// Stop stops the kubelet; its nodes stay as they are.
func (k *FakeKubelet) Stop() {
	k.cancel()
	k.stopped.Wait()
}

// AddNode registers one more node, Ready.
func (k *FakeKubelet) AddNode(ctx context.Context, n Node) error {
	pods := n.Pods
	if pods == 0 {
		pods = 110
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(n.CPU),
		corev1.ResourceMemory: resource.MustParse(n.Memory),
		corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
	}
	lbls := map[string]string{corev1.LabelHostname: n.Name, corev1.LabelOSStable: "linux"}
	for key, v := range n.Labels {
		lbls[key] = v
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: lbls}, Spec: corev1.NodeSpec{Taints: n.Taints}}
	if _, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The controllers write the node too (its pod CIDR).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cur.Status = corev1.NodeStatus{Capacity: res, Allocatable: res, Phase: corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}}}
		_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(n.Name), LeaseDurationSeconds: ptr.To(int32(LeaseDuration / time.Second)),
			RenewTime: &metav1.MicroTime{Time: time.Now()}}}
	if _, err := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	k.mu.Lock()
	k.nodes[n.Name] = true
	k.mu.Unlock()
	return nil
}

// StopRenewing stops renewing a node's Lease, as a kubelet that died.
func (k *FakeKubelet) StopRenewing(node string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nodes[node] = false
}

func (k *FakeKubelet) renewLeases(ctx context.Context) {
	t := time.NewTicker(LeaseDuration / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		var live []string
		for n, renew := range k.nodes {
			if renew {
				live = append(live, n)
			}
		}
		k.mu.Unlock()
		for _, n := range live {
			leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
			l, err := leases.Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				continue
			}
			l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			_, _ = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
	}
}

func (k *FakeKubelet) enqueue(obj any) {
	pod := obj.(*corev1.Pod)
	k.mu.Lock()
	_, mine := k.nodes[pod.Spec.NodeName]
	k.mu.Unlock()
	if mine {
		if key, err := cache.MetaNamespaceKeyFunc(pod); err == nil {
			k.queue.Add(key)
		}
	}
}

func (k *FakeKubelet) next(ctx context.Context) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	if err := k.syncPod(ctx, key); err != nil && ctx.Err() == nil {
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// syncPod moves one pod on: a deleted pod goes, a new pod starts, a
// started pod becomes Ready or ends as Exit says.
func (k *FakeKubelet) syncPod(ctx context.Context, key string) error {
	obj, ok, err := k.pods.GetByKey(key)
	if err != nil || !ok {
		return err
	}
	pod := obj.(*corev1.Pod)
	pods := k.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	// A node whose kubelet died posts no pod status; its pods' deletions
	// still go through, so that tests need not wait for the pod GC.
	k.mu.Lock()
	live := k.nodes[pod.Spec.NodeName]
	k.mu.Unlock()
	if !live || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	next := pod.DeepCopy()
	now := metav1.Now()
	ready := k.Unready == nil || !k.Unready(pod)
	phase, code := corev1.PodRunning, int32(0)
	if k.Exit != nil && pod.Status.Phase == corev1.PodRunning {
		if p, c := k.Exit(pod); p != "" {
			phase, code, ready = p, c, false
		}
	}
	if pod.Status.Phase == phase && PodReady(pod) == ready {
		return nil
	}
	next.Status.Phase = phase
	if next.Status.StartTime == nil {
		next.Status.StartTime = &now
	}
	next.Status.PodIP = fakePodIP(pod)
	next.Status.PodIPs = []corev1.PodIP{{IP: next.Status.PodIP}}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	setPodCondition(next, corev1.PodReady, cond, now)
	setPodCondition(next, corev1.ContainersReady, cond, now)
	next.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: ready, Started: ptr.To(phase == corev1.PodRunning)}
		if phase == corev1.PodRunning {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		} else {
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: code, FinishedAt: now}
		}
		next.Status.ContainerStatuses = append(next.Status.ContainerStatuses, cs)
	}
	_, err = pods.UpdateStatus(ctx, next, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func setPodCondition(pod *corev1.Pod, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) {
	for i := range pod.Status.Conditions {
		if c := &pod.Status.Conditions[i]; c.Type == t {
			if c.Status != s {
				c.Status, c.LastTransitionTime = s, now
			}
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// fakePodIP gives a pod an address in 10.244.0.0/16 from its uid.
func fakePodIP(pod *corev1.Pod) string {
	var h uint32
	for _, b := range []byte(pod.UID) {
		h = h*31 + uint32(b)
	}
	return fmt.Sprintf("10.244.%d.%d", h>>8&0xff, h&0xfd+1)
}
